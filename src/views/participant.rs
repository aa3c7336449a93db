//! The participant's side: the claim form and what comes after it.

use maud::{Markup, html};

use super::layout::{page, page_following, page_refreshing};
use crate::model::DesktopKind;

/// What the form remembers when it is shown again after a problem.
pub struct FormState<'a> {
    pub email: &'a str,
    pub error: Option<&'a str>,
    /// The workshop has a join code: ask for it.
    pub ask_join_code: bool,
    /// The desktops offered (`desktop.mode`), the default first.
    pub desktops: &'static [DesktopKind],
    /// No VM was free: offer the queue, with what the participant sent.
    pub waitlist: Option<JoinOffer<'a>>,
}

/// What the "Join the waitlist" form sends again: the claim's own fields.
#[derive(Clone, Copy)]
pub struct JoinOffer<'a> {
    pub crd_command: &'a str,
    pub desktop: Option<&'a str>,
    pub join_code: Option<&'a str>,
}

impl Default for FormState<'_> {
    fn default() -> Self {
        FormState {
            email: "",
            error: None,
            ask_join_code: false,
            desktops: &[DesktopKind::Crd],
            waitlist: None,
        }
    }
}

fn join_form(email: &str, offer: &JoinOffer) -> Markup {
    html! {
        section.waitlist #waitlist-offer {
            p { "Join the queue instead: you are given a VM as soon as one is free, in the order people joined." }
            form method="post" action="/api/waitlist/join" {
                input type="hidden" name="email" value=(email);
                input type="hidden" name="crd_command" value=(offer.crd_command);
                @if let Some(desktop) = offer.desktop {
                    input type="hidden" name="desktop" value=(desktop);
                }
                @if let Some(code) = offer.join_code {
                    input type="hidden" name="join_code" value=(code);
                }
                button type="submit" { "Join the waitlist" }
            }
        }
    }
}

fn crd_field(label: &str, required: bool) -> Markup {
    html! {
        label for="crd_command" { (label) }
        textarea #crd_command name="crd_command" required[required] rows="4" maxlength="4096"
            placeholder="DISPLAY= /opt/google/chrome-remote-desktop/start-host --code=\"4/0A…\" …" {}
    }
}

pub fn landing(free: u64, form: &FormState) -> Markup {
    page(
        "Get your VM",
        &["/assets/participant.js"],
        html! {
            (event_bar())
            h1 { "Get your workshop desktop" }
            p.free { "Available VMs: " strong #free-count { (free) } }
            @if let Some(error) = form.error {
                p.error role="alert" { (error) }
            }
            @if let Some(offer) = &form.waitlist {
                (join_form(form.email, offer))
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
                @match form.desktops {
                    [DesktopKind::Browser] => {
                        input type="hidden" name="desktop" value="browser";
                    }
                    [DesktopKind::Crd] => {
                        (crd_field("Chrome Remote Desktop command", true))
                    }
                    _ => {
                        fieldset.desktop-choice {
                            legend { "How do you want your desktop?" }
                            label {
                                input type="radio" name="desktop" value="browser" checked;
                                " In this browser tab (nothing to install, no Google account)"
                            }
                            label {
                                input type="radio" name="desktop" value="crd";
                                " With Chrome Remote Desktop (paste its command below)"
                            }
                        }
                        (crd_field("Chrome Remote Desktop command (only for Chrome Remote Desktop)", false))
                    }
                }
                button type="submit" { "Get my desktop" }
            }
            @if form.desktops.contains(&DesktopKind::Crd) {
            section.help {
                h2 { "Where do I get the command?" }
                ol {
                    li { "Open " a href="https://remotedesktop.google.com/headless" { "remotedesktop.google.com/headless" } " and sign in with your Google account." }
                    li { "Click " em { "Begin" } ", then " em { "Next" } ", then " em { "Authorize" } "." }
                    li { "Copy the command shown under " em { "Debian Linux" } " and paste it above." }
                }
                p { "The command works once and only for a few minutes: paste it soon after copying it." }
            }
            }
        },
    )
}

/// The workshop event's name, countdown and warnings: filled, shown and kept current by
/// `participant.js` from the live seat stream (hidden when there is no event).
pub fn event_bar() -> Markup {
    html! {
        div.event-bar #event-bar hidden {
            span.event-name #event-name {}
            span.event-countdown #event-countdown role="timer" {}
            p.event-warning #event-warning role="alert" hidden {}
        }
    }
}

/// The idle warning (`pool::idle`): when the seat is to be released, and the "I'm still
/// here" button; shown and filled by `participant.js` from the live seat stream. `back`: the
/// page the button returns to without script.
pub fn idle_banner(back: &str) -> Markup {
    html! {
        div.idle-banner #idle-banner role="alert" hidden {
            p {
                "Your seat looks unused. It goes to someone waiting "
                span #idle-release {}
                " unless you are still here."
            }
            form #idle-form method="post" action="/api/my-vm/active" {
                input type="hidden" name="back" value=(back);
                button type="submit" { "I'm still here" }
            }
        }
    }
}

pub struct Assigned<'a> {
    pub hostname: &'a str,
    /// `None` when the visitor only knew the e-mail address.
    pub pin: Option<&'a str>,
    pub rejoined: bool,
    pub rotated: bool,
    /// Their VM had stopped responding; this is a new one.
    pub reseated: bool,
    /// Go on to the seat page, which follows the seat (moves, failures) by itself.
    pub follow: bool,
    pub desktop: DesktopKind,
}

/// Seconds before the claim's answer moves on to the seat page.
const FOLLOW_AFTER: u32 = 5;

pub fn assigned(a: &Assigned) -> Markup {
    let next = match a.desktop {
        DesktopKind::Crd => "/my-vm",
        DesktopKind::Browser => "/desktop",
    };
    page_refreshing(
        "Your VM",
        &[],
        a.follow.then_some((FOLLOW_AFTER, next)),
        html! {
            @if a.reseated {
                h1 { "You have a new VM" }
                p { "Your previous VM stopped responding, so you were given this one. Your files from the old VM are kept for your instructor." }
            } @else if a.rejoined {
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
            @if a.desktop == DesktopKind::Browser {
                p.next { a.button #open-desktop href="/desktop" { "Open your desktop" } }
                p.note { "Your desktop opens in this browser tab; keep the tab open while you work. You come back to it from this browser at " a href="/desktop" { "/desktop" } "." }
            } @else if let Some(pin) = a.pin {
                h2 { "What next" }
                ol {
                    li { "Open " a href="https://remotedesktop.google.com/access/" { "remotedesktop.google.com/access" } " with the same Google account." }
                    li { "Within a minute or two, " strong { (a.hostname) } " appears in your device list." }
                    li { "Click it and enter the PIN " strong { (pin) } "." }
                }
                p.note { "Keep this page or write the PIN down. If your desktop does not appear, ask your instructor." }
                @if a.follow {
                    p.note { "Your seat's page, which keeps itself up to date: " a href="/my-vm" { "/my-vm" } }
                }
            } @else {
                p.note {
                    "Use the PIN you were shown the first time. To pass a new Chrome Remote Desktop code to this VM, "
                    "submit the form from the browser you first used; if you lost the PIN or changed browsers, ask your instructor."
                }
            }
        },
    )
}

/// Where a participant's seat stands, as their seat page shows it.
pub enum Seat<'a> {
    Ready {
        hostname: &'a str,
        pin: &'a str,
        /// The VM is restarting; the desktop comes back by itself.
        coming_back: bool,
        desktop: DesktopKind,
    },
    /// The VM stopped responding: a new seat is offered.
    Unresponsive {
        hostname: &'a str,
        email: &'a str,
        last_seen_seconds: Option<u64>,
    },
    /// The seat was taken back (released by the instructor, or the VM could not be
    /// repaired): a new one is offered.
    Released { email: &'a str },
    /// This e-mail holds a VM claimed in another browser (which VM is not said: the
    /// cookie's e-mail proves nothing without the claim's token).
    OtherBrowser,
    /// This browser waits in the queue: number `position` of `waiting`.
    Waiting { position: u64, waiting: u64 },
    /// The e-mail waits in the queue, joined from another browser.
    WaitingElsewhere,
    /// This browser has claimed nothing.
    Unknown,
}

impl Seat<'_> {
    pub fn state(&self) -> &'static str {
        match self {
            Seat::Ready {
                coming_back: true, ..
            } => "rebooting",
            Seat::Ready { .. } => "ready",
            Seat::Unresponsive { .. } => "unresponsive",
            Seat::Released { .. } => "released",
            Seat::OtherBrowser | Seat::WaitingElsewhere => "other-browser",
            Seat::Waiting { .. } => "waiting",
            Seat::Unknown => "none",
        }
    }

    pub fn hostname(&self) -> &str {
        match self {
            Seat::Ready { hostname, .. } | Seat::Unresponsive { hostname, .. } => hostname,
            Seat::Released { .. }
            | Seat::OtherBrowser
            | Seat::Waiting { .. }
            | Seat::WaitingElsewhere
            | Seat::Unknown => "",
        }
    }
}

/// Seconds between automatic reloads of a seat page that has no form to lose, in a browser
/// without script (with script, `assets/participant.js` follows the seat's live events).
const SEAT_REFRESH: u32 = 15;

fn new_seat_form(email: &str, ask_join_code: bool, desktop: DesktopKind, button: &str) -> Markup {
    html! {
        form method="post" action="/api/request_vm" {
            input type="hidden" name="email" value=(email);
            input type="hidden" name="reseat" value="1";
            input type="hidden" name="desktop" value=(desktop.as_str());
            @if ask_join_code {
                label for="join_code" { "Workshop join code" }
                input #join_code type="text" name="join_code" required autocomplete="off" maxlength="128";
            }
            @if desktop == DesktopKind::Crd {
                (crd_field("A fresh Chrome Remote Desktop command", true))
            }
            button type="submit" { (button) }
        }
        @if desktop == DesktopKind::Crd {
            p.note {
                "Get the command at "
                a href="https://remotedesktop.google.com/headless" { "remotedesktop.google.com/headless" }
                " (Begin, Next, Authorize, then copy the Debian Linux line)."
            }
        }
    }
}

/// `GET /my-vm`: the participant's seat, kept up to date (by script from live events, or
/// by a plain reload without script).
/// `saved_files`: archives of this participant's files kept by the allocator (rescued
/// when a seat of theirs ended), linked to `/my-files`.
/// `raised`: the participant's hand is up (`pool::hands`).
pub fn seat(
    seat: &Seat,
    ask_join_code: bool,
    desktop: DesktopKind,
    saved_files: usize,
    raised: bool,
) -> Markup {
    let refresh = match seat {
        Seat::Ready { .. } | Seat::OtherBrowser | Seat::Waiting { .. } | Seat::WaitingElsewhere => {
            Some((SEAT_REFRESH, "/my-vm"))
        }
        _ => None,
    };
    let ready = matches!(seat, Seat::Ready { .. });
    let scripts: &[&str] = if ready {
        &["/assets/participant.js", "/assets/classroom.js"]
    } else {
        &["/assets/participant.js"]
    };
    page_following(
        "Your seat",
        scripts,
        refresh,
        html! {
            (event_bar())
            @if ready {
                (idle_banner("/my-vm"))
                (super::classroom::panel(super::classroom::On::Seat, raised))
            }
            div #seat data-state=(seat.state()) data-host=(seat.hostname()) data-saved-files=(saved_files) {
                @match seat {
                    Seat::Ready { hostname, coming_back, desktop: DesktopKind::Browser, .. } => {
                        h1 { "Your desktop" }
                        @if *coming_back {
                            p.warning role="status" { "Your VM is restarting. Your desktop comes back by itself in a few minutes; keep this page open." }
                        }
                        dl.assignment {
                            dt { "Assigned hostname" } dd #hostname { (hostname) }
                        }
                        p.next { a.button #open-desktop href="/desktop" { "Open your desktop" } }
                        p.note { "This page follows your seat: if your instructor moves you, the new VM shows here." }
                    }
                    Seat::Ready { hostname, pin, coming_back, .. } => {
                        h1 { "Your VM" }
                        @if *coming_back {
                            p.warning role="status" { "Your VM is restarting. Your desktop comes back by itself in a few minutes; keep this page open." }
                        }
                        dl.assignment {
                            dt { "Assigned hostname" } dd #hostname { (hostname) }
                            dt { "PIN" } dd #pin { (pin) }
                        }
                        p { "Connect at " a href="https://remotedesktop.google.com/access/" { "remotedesktop.google.com/access" } " with the same Google account: click " strong { (hostname) } " and enter the PIN." }
                        p.note {
                            "Not in your device list after a few minutes? Chrome Remote Desktop codes expire quickly: get a fresh command and submit it with your e-mail on the "
                            a href="/" { "start page" }
                            ", from this browser. Your VM and PIN stay the same."
                        }
                        p.note { "This page follows your seat: if your instructor moves you, the new VM shows here." }
                    }
                    Seat::Unresponsive { hostname, email, last_seen_seconds } => {
                        h1 { "Your VM stopped responding" }
                        p.error role="alert" {
                            (hostname) " has not answered"
                            @if let Some(s) = last_seen_seconds { " for " (s) " s" }
                            ". Your files on it are kept. Take a new seat now:"
                        }
                        (new_seat_form(email, ask_join_code, desktop, "Give me another VM"))
                    }
                    Seat::Released { email } => {
                        h1 { "Your seat was taken back" }
                        p.error role="alert" { "Your instructor released your seat, or your VM could not be repaired. Your files are kept. Take a new seat:" }
                        (new_seat_form(email, ask_join_code, desktop, "Give me a VM"))
                    }
                    Seat::OtherBrowser => {
                        h1 { "Your VM" }
                        p { "Your e-mail address holds a VM claimed in another browser. Use that browser to see it and its PIN, or ask your instructor." }
                    }
                    Seat::Waiting { position, waiting } => {
                        h1 { "You are in the queue" }
                        p.queue role="status" {
                            "You are number " strong #position { (position) } " in the queue ("
                            span #waiting { (waiting) } " waiting)."
                        }
                        p { "Keep this page open: your VM shows here as soon as one is free for you." }
                        form method="post" action="/api/waitlist/leave" {
                            button.link type="submit" { "Leave the queue" }
                        }
                    }
                    Seat::WaitingElsewhere => {
                        h1 { "In the queue in another browser" }
                        p { "Your e-mail address is in the queue, joined from another browser. Keep that browser's page open: your VM shows there." }
                    }
                    Seat::Unknown => {
                        h1 { "No seat in this browser" }
                        p { "This browser has not claimed a VM. " a href="/" { "Get one here." } }
                    }
                }
                @if saved_files > 0 {
                    p #saved-files { a href="/my-files" { "Your saved files (" (saved_files) ")" } }
                }
            }
        },
    )
}
