//! `/admin/accounts`: the console's accounts besides the admin (helpers): who they are,
//! when each last signed in; adding one, giving one a new password, removing one.

use maud::{Markup, html};

use super::{Flash, Viewer, csrf_field, flash, shell, time};
use crate::model::{Account, MAX_ACCOUNT_NAME_LEN, MIN_PASSWORD_LEN, Role};

pub fn page(viewer: &Viewer, accounts: &[Account], message: Option<&Flash>) -> Markup {
    shell(
        viewer,
        "/admin/accounts",
        "Accounts",
        html! {
            h1 { "Accounts" }
            (flash(message))
            p { "Helpers sign in at " code { "/admin/login" } " with their own name and password. They see the console's pages, peek at and take over participants' desktops, answer raised hands and post announcements; they cannot launch, destroy, reboot or delete VMs, release or move seats, manage tokens, accounts, schedules or the event, or download participants' data or backups. You, " strong { (viewer.user) } ", are the admin (from the configuration)." }
            section.panel {
                h2 { "New account" }
                form.inline method="post" action="/admin/accounts" {
                    (csrf_field(viewer))
                    label for="account-name" { "Name" }
                    input #account-name type="text" name="name" required autocomplete="off" spellcheck="false" maxlength=(MAX_ACCOUNT_NAME_LEN) placeholder="maria";
                    label for="account-role" { "Role" }
                    select #account-role name="role" {
                        @for role in Role::GRANTABLE {
                            option value=(role.as_str()) { (role.as_str()) }
                        }
                    }
                    label for="account-password" { "Password" }
                    input #account-password type="password" name="password" required autocomplete="new-password" minlength=(MIN_PASSWORD_LEN);
                    button type="submit" { "Add account" }
                }
            }
            @if accounts.is_empty() {
                p.note #accounts-none { "No accounts besides the admin." }
            } @else {
                div.scroll {
                    table.pool #accounts {
                        thead { tr { th { "Name" } th { "Role" } th { "Created" } th { "By" } th { "Last sign-in" } th { "From" } th { "New password" } th {} } }
                        tbody {
                            @for account in accounts {
                                tr id={"account-" (account.name)} {
                                    td { (account.name) }
                                    td { (account.role.as_str()) }
                                    td { (time(account.created_at)) }
                                    td { (account.created_by) }
                                    td.last-sign-in { (account.last_sign_in_at.map_or_else(|| "never".to_owned(), time)) }
                                    td { (account.last_sign_in_from.as_deref().unwrap_or("—")) }
                                    td {
                                        form.inline method="post" action={"/admin/accounts/" (account.name) "/password"} {
                                            (csrf_field(viewer))
                                            input type="password" name="password" required autocomplete="new-password" minlength=(MIN_PASSWORD_LEN) aria-label={"New password for " (account.name)};
                                            button.small type="submit" { "Set" }
                                        }
                                    }
                                    td {
                                        form method="post" action={"/admin/accounts/" (account.name) "/remove"} {
                                            (csrf_field(viewer))
                                            button.small.danger type="submit" { "Remove" }
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
