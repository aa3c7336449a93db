//! `/admin/create` (launch) and `/admin/instances/delete` (destroy everything, exports).

use maud::{Markup, html};

use super::runs::panel;
use super::{Viewer, csrf_field, shell};
use crate::model::Run;

/// What the admin types to destroy the whole pool.
pub const DESTROY_CONFIRMATION: &str = "destroy all";

pub fn launch_page(viewer: &Viewer, provider: &str, current: Option<(&Run, &[String])>) -> Markup {
    shell(
        viewer,
        "/admin/create",
        "Launch VMs",
        html! {
            h1 { "Launch VMs" }
            p.note { "Provider: " strong { (provider) } ". New VMs register themselves and appear on the instances page as they boot." }
            div #flash aria-live="polite" {}
            form.inline method="post" action="/api/launch" hx-post="/api/launch" hx-target="#run-panel" {
                (csrf_field(viewer))
                label for="num_vms" { "Number of VMs" }
                input #num_vms type="number" name="num_vms" min="1" max="500" value="1" required;
                button type="submit" { "Launch" }
            }
            div #run-panel {
                @if let Some((run, lines)) = current { (panel(run, lines, Some(viewer.csrf))) }
            }
        },
    )
}

pub fn delete_page(viewer: &Viewer, vm_count: usize, extension: &str) -> Markup {
    shell(
        viewer,
        "/admin/instances/delete",
        "Teardown and data",
        html! {
            h1 { "Teardown and data" }
            div #flash aria-live="polite" {}
            section.panel {
                h2 { "Download data" }
                p { "The participants' " code { "." (extension) } " files from every VM's desktop (not in " code { "models/" } " or " code { "predictions/" } "), as one zip:" }
                p.buttons {
                    a.button href="/api/scp-client" download { "Participants' files (zip)" }
                }
                p { "Startup timings and assignments of every VM, for your records:" }
                p.buttons {
                    a.button href="/admin/export.csv" download { "Pool export (CSV)" }
                    " "
                    a.button href="/admin/export.json" download { "Pool export (JSON)" }
                }
            }
            section.panel.danger-zone {
                h2 { "Destroy all VMs" }
                p { "Destroys all " strong { (vm_count) } " VM(s) and everything on them. Participants lose their desktops at once. Download what you need first." }
                form method="post" action="/destroy" hx-post="/destroy" hx-target="#run-panel" {
                    (csrf_field(viewer))
                    label for="confirm" { "Type " code { (DESTROY_CONFIRMATION) } " to confirm" }
                    input #confirm type="text" name="confirm" required autocomplete="off"
                        pattern=(DESTROY_CONFIRMATION) spellcheck="false";
                    button.danger type="submit" { "Destroy all VMs" }
                }
            }
            div #run-panel {}
        },
    )
}
