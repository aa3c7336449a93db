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
                div #desktop-screen
                    data-ws=(screen.socket)
                    data-view-only=(if screen.view_only { "true" } else { "false" })
                    data-events=[screen.events] {}
            }
        }
    }
}

/// `GET /desktop`: the participant's own desktop.
pub fn participant(hostname: &str) -> Markup {
    shell(
        &Screen {
            title: "Your desktop",
            socket: "/desktop/ws",
            view_only: false,
            events: Some("/desktop/events"),
        },
        html! {
            span.desktop-host { (hostname) }
            p #desktop-notice role="status" hidden { "The instructor is viewing your screen" }
            a.desktop-link href="/my-vm" { "Your seat" }
        },
    )
}

/// `GET /admin/desktop/{host}`: the instructor's view of a VM's desktop.
pub fn instructor(hostname: &str, participant: Option<&str>, control: bool) -> Markup {
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
        },
        html! {
            span.desktop-host {
                (hostname)
                @if let Some(p) = participant { " · " (p) }
            }
            @if control {
                span.desktop-mode.control { "You are controlling this desktop" }
                a.desktop-link href=(format!("/admin/desktop/{hostname}")) { "Back to view only" }
            } @else {
                span.desktop-mode { "View only" }
                a.desktop-link #take-control href=(format!("/admin/desktop/{hostname}?control=1")) { "Take control" }
            }
            a.desktop-link href="/admin/instances" { "Instances" }
        },
    )
}
