//! `/admin/waitlist`: who waits for a VM, in the order they are seated.

use maud::{Markup, html};

use super::{Viewer, csrf_field, shell, time};
use crate::model::WaitEntry;

pub fn page(viewer: &Viewer, entries: &[WaitEntry], enabled: bool, max: u64) -> Markup {
    shell(
        viewer,
        "/admin/waitlist",
        "Waitlist",
        html! {
            h1 { "Waitlist" }
            p.note {
                @if enabled {
                    "Participants who find no VM free may join (at most " (max) "). The first in line gets the next VM that is free."
                } @else {
                    "Joining is off (waitlist.enabled); whoever still waits is seated as VMs free up."
                }
            }
            @if entries.is_empty() {
                p.note #waitlist-empty { "Nobody is waiting." }
            } @else {
                div.scroll {
                    table.pool #waitlist {
                        thead { tr { th { "#" } th { "E-mail" } th { "Desktop" } th { "Waiting since" } th {} } }
                        tbody {
                            @for (i, e) in entries.iter().enumerate() {
                                tr {
                                    td { (i + 1) }
                                    td { (e.email) }
                                    td { (e.desktop.as_str()) }
                                    td { (time(e.joined_at)) " (" (ago(viewer, e)) ")" }
                                    td {
                                        @if viewer.is_admin() { form method="post" action="/admin/waitlist/remove" {
                                            (csrf_field(viewer))
                                            input type="hidden" name="email" value=(e.email);
                                            button.small type="submit" { "Remove" }
                                        } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn ago(viewer: &Viewer, entry: &WaitEntry) -> String {
    let minutes = (viewer.now - entry.joined_at).num_minutes().max(0);
    match minutes {
        0 => "just now".to_owned(),
        1 => "1 min".to_owned(),
        m => format!("{m} min"),
    }
}
