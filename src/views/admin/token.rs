//! `/admin/token`: the agents' bearer token (shown only when newly made) and its rotation;
//! the VMs' own credentials: which names hold one, minting one for a machine of the manual
//! provider (shown once), revoking one.

use maud::{Markup, html};

use super::{Flash, Viewer, csrf_field, flash, shell};

/// What the admin types to rotate the token.
pub const ROTATE_CONFIRMATION: &str = "rotate";

/// What the token page shows besides the fingerprint.
#[derive(Default)]
pub struct Shown<'a> {
    pub new_token: Option<&'a str>,
    /// A VM credential just minted: (hostname, credential).
    pub minted: Option<(&'a str, &'a str)>,
    pub problem: Option<&'a Flash>,
}

pub fn page(viewer: &Viewer, fingerprint: &str, names: &[String], shown: &Shown) -> Markup {
    let Shown {
        new_token,
        minted,
        problem,
    } = *shown;
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
            section.panel #vm-credentials {
                h2 { "VM credentials" }
                p { "Each VM acts with its own credential, bound to one launch of it: it dies when the VM is destroyed or revoked, or when the token above is rotated. LabLink makes them for the VMs it launches; for a machine you set up yourself, mint one here (or " code { "lablink token --vm NAME" } ") and give it to that machine's agent as " code { "API_TOKEN" } " or " code { "--token-file" } ". Only names holding a credential can register." }
                @if let Some((host, credential)) = minted {
                    div.ok role="status" {
                        p { strong { "Credential for " (host) " — copy it now; it is not shown again:" } }
                        pre.secret #minted-credential { (credential) }
                    }
                }
                form.inline method="post" action="/admin/token/mint" {
                    (csrf_field(viewer))
                    label for="mint-hostname" { "Machine name" }
                    input #mint-hostname type="text" name="hostname" required autocomplete="off" spellcheck="false" maxlength="253" placeholder="lab-pc-1";
                    button type="submit" { "Mint a credential" }
                }
                @if names.is_empty() {
                    p.note { "No VM holds a credential." }
                } @else {
                    table.pool #credential-names {
                        thead { tr { th { "Name" } th { "Revoke (type the name)" } } }
                        tbody {
                            @for name in names {
                                tr {
                                    td.host { (name) }
                                    td {
                                        form.inline method="post" action={"/admin/instances/" (name) "/revoke"} {
                                            (csrf_field(viewer))
                                            input type="text" name="confirm" required autocomplete="off" maxlength="253" aria-label={"type " (name) " to revoke"};
                                            button.small.danger type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
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
