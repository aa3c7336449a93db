//! `/admin/api-tokens`: the admin API tokens that scripts and `lablink login` use: which
//! exist and when each was last used, making one (its text shown once), revoking one.

use maud::{Markup, html};

use super::{Flash, Viewer, csrf_field, flash, shell, time};
use crate::model::{AdminToken, MAX_TOKEN_NAME_LEN, TokenScope};

/// A token just made: (name, text).
pub type Made<'a> = (&'a str, &'a str);

pub fn page(
    viewer: &Viewer,
    tokens: &[AdminToken],
    made: Option<Made>,
    message: Option<&Flash>,
) -> Markup {
    shell(
        viewer,
        "/admin/api-tokens",
        "API tokens",
        html! {
            h1 { "API tokens" }
            (flash(message))
            p { "Scripts and the command line sign in with an API token instead of the admin password: send it as " code { "Authorization: Bearer <token>" } ", or run " code { "lablink login" } " once on your computer. A " strong { "read-only" } " token may only read (GET); an " strong { "admin" } " token may do what you can here, except manage API tokens." }
            @if let Some((name, text)) = made {
                div.ok role="status" {
                    p { strong { "Token \"" (name) "\" — copy it now; it is not shown again:" } }
                    pre.secret #new-api-token { (text) }
                    p.note { "Keep it like a password: store it in your CI's secrets or a file only you can read." }
                }
            }
            section.panel {
                h2 { "New token" }
                form.inline method="post" action="/admin/api-tokens" {
                    (csrf_field(viewer))
                    label for="token-name" { "Name" }
                    input #token-name type="text" name="name" required autocomplete="off" spellcheck="false" maxlength=(MAX_TOKEN_NAME_LEN) placeholder="ci";
                    label for="token-scope" { "Scope" }
                    select #token-scope name="scope" {
                        @for scope in TokenScope::ALL {
                            option value=(scope.as_str()) { (label(scope)) }
                        }
                    }
                    button type="submit" { "Create token" }
                }
            }
            @if tokens.is_empty() {
                p.note #api-tokens-none { "No API tokens." }
            } @else {
                div.scroll {
                    table.pool #api-tokens {
                        thead { tr { th { "Name" } th { "Scope" } th { "Created" } th { "By" } th { "Last used" } th { "From" } th {} } }
                        tbody {
                            @for token in tokens {
                                tr id={"api-token-" (token.id)} {
                                    td { (token.name) }
                                    td { (label(token.scope)) }
                                    td { (time(token.created_at)) }
                                    td { (token.created_by) }
                                    td.last-used { (token.last_used_at.map_or_else(|| "never".to_owned(), time)) }
                                    td { (token.last_used_from.as_deref().unwrap_or("—")) }
                                    td {
                                        form method="post" action={"/admin/api-tokens/" (token.id) "/revoke"} {
                                            (csrf_field(viewer))
                                            button.small.danger type="submit" { "Revoke" }
                                        }
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

fn label(scope: TokenScope) -> &'static str {
    match scope {
        TokenScope::ReadOnly => "read-only",
        TokenScope::Admin => "admin",
    }
}
