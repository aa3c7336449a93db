//! `/admin/token`: the agents' bearer token (shown only when newly made) and its rotation.

use maud::{Markup, html};

use super::{Flash, Viewer, csrf_field, flash, shell};

/// What the admin types to rotate the token.
pub const ROTATE_CONFIRMATION: &str = "rotate";

pub fn page(
    viewer: &Viewer,
    fingerprint: &str,
    new_token: Option<&str>,
    problem: Option<&Flash>,
) -> Markup {
    shell(
        viewer,
        "/admin/token",
        "Agent token",
        html! {
            h1 { "Agent token" }
            (flash(problem))
            p { "VM agents send this bearer token with every report. VMs launched by LabLink get it automatically; for machines you set up yourself, pass it as " code { "API_TOKEN" } " or " code { "--token-file" } "." }
            @if let Some(token) = new_token {
                div.ok role="status" {
                    p { strong { "New token — copy it now; it is not shown again:" } }
                    pre.secret #new-token { (token) }
                }
            }
            p { "Current token fingerprint (SHA-256, first 12 hex digits): " code #token-fingerprint { (fingerprint) } }
            p.note { "On the allocator host, " code { "lablink token" } " prints the token, and the file " code { "api-token" } " in the data directory holds it." }
            section.panel.danger-zone {
                h2 { "Rotate" }
                p { "Makes a new token at once. VMs running with the old token are refused from then on (their agents stop): relaunch them, or give them the new token." }
                form method="post" action="/admin/token/rotate" {
                    (csrf_field(viewer))
                    label for="confirm" { "Type " code { (ROTATE_CONFIRMATION) } " to confirm" }
                    input #confirm type="text" name="confirm" required autocomplete="off" spellcheck="false";
                    button.danger type="submit" { "Rotate the token" }
                }
            }
        },
    )
}
