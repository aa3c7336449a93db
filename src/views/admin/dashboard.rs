//! `/admin`: the pool at a glance, live.

use maud::{Markup, html};

use super::pool::{Counts, counts, startup_chart};
use super::runs::run_list;
use super::{Viewer, shell};
use crate::model::{Run, Vm};

pub fn page(viewer: &Viewer, provider: &str, pool: &[Vm], recent: &[Run]) -> Markup {
    shell(
        viewer,
        "/admin",
        "Dashboard",
        html! {
            h1 { "Dashboard" }
            p.note { "Provider: " strong { (provider) } }
            div hx-ext="sse" sse-connect="/admin/events/pool?view=dashboard" {
                section.cards #counts sse-swap="counts" { (counts(&Counts::of(pool))) }
                h2 { "Startup durations" }
                div #chart sse-swap="chart" { (startup_chart(pool)) }
            }
            h2 { "Recent runs" }
            (run_list(recent))
        },
    )
}
