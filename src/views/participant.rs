//! The participant's side: the claim form and what comes after it.

use maud::{Markup, html};

use super::layout::page;

/// What the form remembers when it is shown again after a problem.
#[derive(Default)]
pub struct FormState<'a> {
    pub email: &'a str,
    pub error: Option<&'a str>,
    /// The workshop has a join code: ask for it.
    pub ask_join_code: bool,
}

pub fn landing(free: u64, form: &FormState) -> Markup {
    page(
        "Get your VM",
        &["/assets/participant.js"],
        html! {
            h1 { "Get your workshop desktop" }
            p.free { "Available VMs: " strong #free-count { (free) } }
            @if let Some(error) = form.error {
                p.error role="alert" { (error) }
            }
            form method="post" action="/api/request_vm" {
                label for="email" { "Your e-mail address" }
                input #email type="email" name="email" required autocomplete="email"
                    maxlength="254" value=(form.email);
                @if form.ask_join_code {
                    label for="join_code" { "Workshop join code" }
                    input #join_code type="text" name="join_code" required autocomplete="off"
                        maxlength="128";
                }
                label for="crd_command" { "Chrome Remote Desktop command" }
                textarea #crd_command name="crd_command" required rows="4" maxlength="4096"
                    placeholder="DISPLAY= /opt/google/chrome-remote-desktop/start-host --code=\"4/0A…\" …" {}
                button type="submit" { "Get my VM" }
            }
            section.help {
                h2 { "Where do I get the command?" }
                ol {
                    li { "Open " a href="https://remotedesktop.google.com/headless" { "remotedesktop.google.com/headless" } " and sign in with your Google account." }
                    li { "Click " em { "Begin" } ", then " em { "Next" } ", then " em { "Authorize" } "." }
                    li { "Copy the command shown under " em { "Debian Linux" } " and paste it above." }
                }
                p { "The command works once and only for a few minutes: paste it soon after copying it." }
            }
        },
    )
}

pub struct Assigned<'a> {
    pub hostname: &'a str,
    /// `None` when the visitor only knew the e-mail address.
    pub pin: Option<&'a str>,
    pub rejoined: bool,
    pub rotated: bool,
}

pub fn assigned(a: &Assigned) -> Markup {
    page(
        "Your VM",
        &[],
        html! {
            @if a.rejoined {
                h1 { "Welcome back" }
                p { "This is the VM you were given earlier with this e-mail address." }
                @if a.rotated {
                    p { "Your new Chrome Remote Desktop code has been passed to it." }
                }
            } @else {
                h1 { "Your VM is ready" }
            }
            dl.assignment {
                dt { "Assigned hostname" } dd #hostname { (a.hostname) }
                @if let Some(pin) = a.pin {
                    dt { "PIN" } dd #pin { (pin) }
                }
            }
            @if let Some(pin) = a.pin {
                h2 { "What next" }
                ol {
                    li { "Open " a href="https://remotedesktop.google.com/access/" { "remotedesktop.google.com/access" } " with the same Google account." }
                    li { "Within a minute or two, " strong { (a.hostname) } " appears in your device list." }
                    li { "Click it and enter the PIN " strong { (pin) } "." }
                }
                p.note { "Keep this page or write the PIN down. If your desktop does not appear, ask your instructor." }
            } @else {
                p.note {
                    "Use the PIN you were shown the first time. To pass a new Chrome Remote Desktop code to this VM, "
                    "submit the form from the browser you first used; if you lost the PIN or changed browsers, ask your instructor."
                }
            }
        },
    )
}
