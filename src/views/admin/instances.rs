//! `/admin/instances`: every VM, updated live, with its actions.

use maud::{Markup, html};

use super::pool::{counts, instance_rows};
use super::{Viewer, shell};
use crate::model::Counts;
use crate::model::{Run, SeatSeries, Vm};

pub fn page(
    viewer: &Viewer,
    pool: &[Vm],
    sessions: &[SeatSeries],
    current: Option<&Run>,
) -> Markup {
    shell(
        viewer,
        "/admin/instances",
        "Instances",
        html! {
            h1 { "Instances" }
            div #flash aria-live="polite" {}
            @if let Some(run) = current {
                p.busy { "In progress: " a href={"/admin/runs/" (run.id)} { "run #" (run.id) " — " (run.action.describe()) } }
            }
            div hx-ext="sse" sse-connect="/admin/events/pool?view=instances" {
                section.cards.compact #counts sse-swap="counts" { (counts(&Counts::of(pool))) }
                div.scroll {
                    table.pool {
                        thead { tr {
                            th { "#" } th { "Hostname" } th { "Status" } th { "GPU" } th { "In use" } th { "Activity" }
                            th { "Participant" } th { "PIN" } th { "Terraform" } th { "Cloud-init" }
                            th { "Container" } th { "Total" } th { "Actions" }
                        } }
                        tbody #instances sse-swap="instances" { (instance_rows(pool, sessions, viewer)) }
                    }
                }
            }
        },
    )
}
