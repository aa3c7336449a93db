//! The budget's figures as the dashboard and the event page show them.

use maud::{Markup, html};

use crate::model::budget::CostFigures;

fn usd(v: f64) -> String {
    format!("${v:.2}")
}

/// `provider`: the local and manual providers are priced as the real pool would be.
pub fn section(f: &CostFigures, provider: &str) -> Markup {
    let scope = match f.event {
        Some(_) => "this event",
        None => "outside events",
    };
    let horizon = match f.event {
        Some(_) => format!("to the end ({:.1} h left)", f.hours_left),
        None => "over the next hour".to_owned(),
    };
    html! {
        section #cost {
            h2 { "Cost" }
            @if f.price_per_hour.is_none() {
                p.warning #cost-unknown role="alert" {
                    "No price is known for " code { (f.machine_type) } ": the cost is unknown"
                    @if f.cap.is_some() { " and budget.cap_usd cannot be enforced" }
                    ". Add it to budget.prices (" code { (f.machine_type) "=USD_per_hour" } ")."
                }
            }
            @if let (true, Some(cap), Some(projected)) = (f.warn, f.cap, f.projected) {
                p.warning #budget-warning role="alert" {
                    "The projected cost " (usd(projected)) " is "
                    (format!("{:.0}", projected * 100.0 / cap)) " % of the budget cap " (usd(cap))
                    @if projected > cap { ": launches that add to it are refused" }
                    "."
                }
            }
            dl.assignment {
                dt { "Spent (" (scope) ")" } dd #cost-spent {
                    @if f.price_per_hour.is_some() { (usd(f.spent)) } @else { "unknown" }
                }
                dt { "Projected " (horizon) } dd #cost-projected {
                    @match f.projected { Some(p) => (usd(p)), None => "unknown" }
                }
                dt { "Cap" } dd #cost-cap {
                    @match f.cap { Some(c) => (usd(c)), None => "none (budget.cap_usd)" }
                }
                dt { "Price" } dd {
                    (f.vms) " VM(s) of " code { (f.machine_type) }
                    @if let Some(p) = f.price_per_hour { " at " (format!("${p:.4}")) " per hour" }
                }
            }
            @if provider != "terraform" {
                p.note {
                    "The " (provider) " provider's VMs are priced as " (f.machine_type)
                    " instances: the figures simulate what the real pool would cost."
                }
            }
        }
    }
}
