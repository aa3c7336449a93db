//! The browser desktop pages: a slim bar (status, notices, the instructor's controls) over
//! the noVNC screen, driven by `assets/desktop.js`.

use maud::{DOCTYPE, Markup, html};

use super::layout::head_start;

struct Screen<'a> {
    title: &'a str,
    socket: &'a str,
    view_only: bool,
    /// The participant's page learns whether the instructor is viewing.
    events: Option<&'a str>,
    /// The participant's classroom panel (hand, announcements, broadcast).
    classroom: Option<Markup>,
}

fn shell(screen: &Screen, bar: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_start(&format!("{} · LabLink", screen.title)))
                script type="module" src="/assets/desktop.js" {}
                @if screen.events.is_some() {
                    script src="/assets/participant.js" defer {}
                }
                @if screen.classroom.is_some() {
                    script type="module" src="/assets/classroom.js" {}
                }
            }
            body.desktop-page data-desktop="connecting" {
                header.desktop-bar {
                    a.brand href="/" { "LabLink" }
                    p #desktop-status role="status" { "Connecting to the desktop…" }
                    (bar)
                }
                @if screen.events.is_some() {
                    (super::participant::event_bar())
                    (super::participant::idle_banner("/desktop"))
                }
                @if let Some(classroom) = &screen.classroom {
                    (classroom)
                }
                div #desktop-screen
                    data-ws=(screen.socket)
                    data-view-only=(if screen.view_only { "true" } else { "false" })
                    data-events=[screen.events] {}
            }
        }
    }
}

/// `GET /desktop`: the participant's own desktop; `raised`: their hand is up.
pub fn participant(hostname: &str, raised: bool) -> Markup {
    shell(
        &Screen {
            title: "Your desktop",
            socket: "/desktop/ws",
            view_only: false,
            events: Some("/desktop/events"),
            classroom: Some(super::classroom::panel(
                super::classroom::On::Desktop,
                raised,
            )),
        },
        html! {
            span.desktop-host { (hostname) }
            p #desktop-notice role="status" hidden { "The instructor is viewing your screen" }
            a.desktop-link href="/my-vm" { "Your seat" }
        },
    )
}

/// `GET /broadcast`: the desktop the instructor broadcasts, view-only (for participants
/// whose seat page cannot hold it).
pub fn broadcast() -> Markup {
    shell(
        &Screen {
            title: "The instructor's screen",
            socket: "/broadcast/ws",
            view_only: true,
            events: None,
            classroom: None,
        },
        html! {
            span.desktop-mode { "The instructor's screen (view only)" }
            a.desktop-link href="/my-vm" { "Your seat" }
        },
    )
}

/// What the instructor's view of a desktop offers besides the picture.
pub struct Instructor<'a> {
    pub hostname: &'a str,
    pub participant: Option<&'a str>,
    /// Driving the desktop (not only watching).
    pub control: bool,
    /// The CSRF token of the console's forms.
    pub csrf: &'a str,
    /// This desktop is being broadcast to every participant.
    pub broadcasting: bool,
    /// The viewer may start and stop a broadcast (the admin, not a helper).
    pub may_broadcast: bool,
}

/// `GET /admin/desktop/{host}`: the instructor's view of a VM's desktop: take over and
/// give back, broadcast it and stop.
pub fn instructor(peek: &Instructor) -> Markup {
    let Instructor {
        hostname,
        participant,
        control,
        csrf,
        broadcasting,
        may_broadcast,
    } = *peek;
    let socket = format!(
        "/admin/desktop/{hostname}/ws{}",
        if control { "?control=1" } else { "" }
    );
    let title = format!("Desktop of {hostname}");
    shell(
        &Screen {
            title: &title,
            socket: &socket,
            view_only: !control,
            events: None,
            classroom: None,
        },
        html! {
            span.desktop-host {
                (hostname)
                @if let Some(p) = participant { " · " (p) }
            }
            @if control {
                span.desktop-mode.control { "You have control of this desktop (the participant is told)" }
                a.desktop-link #give-back href=(format!("/admin/desktop/{hostname}")) { "Give back" }
            } @else {
                span.desktop-mode { "View only" }
                a.desktop-link #take-control href=(format!("/admin/desktop/{hostname}?control=1")) { "Take over" }
            }
            @if broadcasting && !may_broadcast {
                span.desktop-mode.control #on-air { "Broadcasting to every participant" }
            } @else if broadcasting {
                form.desktop-form method="post" action="/admin/broadcast/stop" {
                    input type="hidden" name="csrf_token" value=(csrf);
                    input type="hidden" name="back" value=(format!("/admin/desktop/{hostname}"));
                    span.desktop-mode.control #on-air { "Broadcasting to every participant" }
                    " "
                    button.small #broadcast-stop type="submit" { "Stop broadcast" }
                }
            } @else if may_broadcast && !csrf.is_empty() {
                form.desktop-form method="post" action="/admin/broadcast" {
                    input type="hidden" name="csrf_token" value=(csrf);
                    input type="hidden" name="hostname" value=(hostname);
                    input type="hidden" name="back" value=(format!("/admin/desktop/{hostname}"));
                    button.small #broadcast-start type="submit" { "Broadcast to everyone" }
                }
            }
            a.desktop-link href="/admin/hands" { "Raised hands" }
            a.desktop-link href="/admin/instances" { "Instances" }
        },
    )
}
