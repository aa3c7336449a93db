//! `/admin/login`.

use maud::{Markup, html};

use crate::views::layout::page;

pub fn page_for(next: &str, user: &str, error: Option<&str>) -> Markup {
    page(
        "Admin sign-in",
        &[],
        html! {
            h1 { "Admin sign-in" }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form method="post" action="/admin/login" {
                input type="hidden" name="next" value=(next);
                label for="username" { "User name" }
                input #username type="text" name="username" required autocomplete="username" value=(user);
                label for="password" { "Password" }
                input #password type="password" name="password" required autocomplete="current-password";
                button type="submit" { "Sign in" }
            }
        },
    )
}
