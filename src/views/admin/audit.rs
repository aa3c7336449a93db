//! `/admin/audit`: every admin action, newest first.

use maud::{Markup, html};

use super::{Viewer, shell, time};
use crate::model::AuditEntry;

pub fn page(viewer: &Viewer, entries: &[AuditEntry]) -> Markup {
    shell(
        viewer,
        "/admin/audit",
        "Audit log",
        html! {
            h1 { "Audit log" }
            @if entries.is_empty() {
                p.note { "No admin actions yet." }
            } @else {
                div.scroll {
                    table.pool #audit {
                        thead { tr { th { "When" } th { "Who" } th { "From" } th { "Action" } th { "Detail" } } }
                        tbody {
                            @for e in entries {
                                tr {
                                    td { (time(e.at)) }
                                    td { (e.actor) }
                                    td { (e.from.as_deref().unwrap_or("—")) }
                                    td.action { (e.action) }
                                    td { (e.detail) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
