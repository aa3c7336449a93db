//! `/admin`: the pool at a glance, live.

use maud::{Markup, html};

use super::pool::{counts, startup_chart};
use super::runs::run_list;
use super::{Viewer, shell};
use crate::model::Counts;
use crate::model::budget::CostFigures;
use crate::model::{Run, Vm};

/// `open_claims`: the participant page is reachable from other machines without a gate
/// (`Config::anyone_can_claim`).
pub fn page(
    viewer: &Viewer,
    provider: &str,
    open_claims: bool,
    pool: &[Vm],
    recent: &[Run],
    cost: &CostFigures,
) -> Markup {
    shell(
        viewer,
        "/admin",
        "Dashboard",
        html! {
            h1 { "Dashboard" }
            @if open_claims {
                p.warning #open-claims role="alert" {
                    "Anyone who reaches this page can take seats with made-up e-mail addresses: \
                     set access.join_code or access.allowed_emails."
                }
            }
            p.note { "Provider: " strong { (provider) } }
            div hx-ext="sse" sse-connect="/admin/events/pool?view=dashboard" {
                section.cards #counts sse-swap="counts" { (counts(&Counts::of(pool))) }
                h2 { "Startup durations" }
                div #chart sse-swap="chart" { (startup_chart(pool)) }
            }
            (super::cost::section(cost, provider))
            h2 { "Recent runs" }
            (run_list(recent))
        },
    )
}
