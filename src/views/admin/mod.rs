//! The admin console: a shared shell (navigation, sign-out, the CSRF token every form and
//! htmx request carries) and one module per page.

pub mod accounts;
pub mod allocator_log;
pub mod api_tokens;
pub mod audit;
pub mod cost;
pub mod dashboard;
pub mod event;
pub mod hands;
pub mod instances;
pub mod login;
pub mod logs;
pub mod pool;
pub mod report;
pub mod runs;
pub mod schedules;
pub mod sessions;
pub mod teardown;
pub mod token;
pub mod waitlist;
pub mod wall;

use maud::{DOCTYPE, Markup, html};

use super::layout::head_start;
use crate::model::Role;

/// Whoever is signed in, as the shell shows it.
pub struct Viewer<'a> {
    pub user: &'a str,
    /// Pages leave out what this role may not use (the server refuses it anyway).
    pub role: Role,
    /// Empty when the admin signed in with HTTP Basic (no forms need it then).
    pub csrf: &'a str,
    /// What "N s ago" is counted from.
    pub now: chrono::DateTime<chrono::Utc>,
}

impl Viewer<'_> {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The navigation; the entries after the first `HELPER_NAV` are the admin's only.
const NAV: [(&str, &str); 16] = [
    ("/admin", "Dashboard"),
    ("/admin/event", "Event"),
    ("/admin/instances", "Instances"),
    ("/admin/wall", "Seat wall"),
    ("/admin/scheduled-destruction", "Schedules"),
    ("/admin/waitlist", "Waitlist"),
    ("/admin/hands", "Hands"),
    ("/admin/sessions", "Sessions"),
    ("/admin/create", "Launch"),
    ("/admin/instances/delete", "Teardown & data"),
    ("/admin/token", "Agent token"),
    ("/admin/api-tokens", "API tokens"),
    ("/admin/accounts", "Accounts"),
    ("/admin/audit", "Audit log"),
    ("/admin/allocator-log", "Allocator log"),
    ("/admin/rescues", "Rescued files"),
];
/// How many of `NAV`'s first entries a helper may open.
const HELPER_NAV: usize = 7;

/// htmx settings that keep it inside the CSP: no injected styles, no eval.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true}"#;

pub fn shell(viewer: &Viewer, active: &str, title: &str, body: Markup) -> Markup {
    let headers = serde_json::json!({ "X-CSRF-Token": viewer.csrf }).to_string();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_start(&format!("{title} · LabLink admin")))
                meta name="htmx-config" content=(HTMX_CONFIG);
                script src="/assets/vendor/htmx.min.js" defer {}
                script src="/assets/vendor/htmx-ext-sse.min.js" defer {}
            }
            body.admin hx-headers=(headers) {
                header.top {
                    a.brand href="/admin" { "LabLink" }
                    nav.main {
                        @for (href, label) in NAV.iter().take(if viewer.is_admin() { NAV.len() } else { HELPER_NAV }) {
                            a href=(href) aria-current=[(*href == active).then_some("page")] { (label) }
                        }
                    }
                    @if !viewer.csrf.is_empty() {
                        form.signout method="post" action="/admin/logout" {
                            (csrf_field(viewer))
                            span.who { (viewer.user) @if !viewer.is_admin() { " (" (viewer.role.as_str()) ")" } }
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main.wide { (body) }
            }
        }
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(viewer.csrf); }
}

pub fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |s| format!("{s:.1}s"))
}

pub fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// An inline message box (success or problem) shown above a page's content.
pub fn flash(message: Option<&Flash>) -> Markup {
    match message {
        Some(Flash::Done(text)) => html! { p.ok role="status" { (text) } },
        Some(Flash::Problem(text)) => html! { p.error role="alert" { (text) } },
        None => html! {},
    }
}

pub enum Flash {
    Done(String),
    Problem(String),
}
