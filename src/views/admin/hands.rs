//! `/admin/hands`: the classroom: raised hands (oldest first, with waiting time, live),
//! the broadcast, and announcements.

use maud::{Markup, html};

use super::{Viewer, csrf_field, shell, time};
use crate::pool::announce::{Announcement, MAX_CHARS};
use crate::pool::broadcast::OnAir;
use crate::pool::hands::Hand;

/// A seat the instructor may broadcast: its VM and participant.
pub struct Broadcastable {
    pub hostname: String,
    pub participant: Option<String>,
}

pub struct Classroom<'a> {
    pub hands: &'a [Hand],
    pub on_air: Option<&'a OnAir>,
    pub seats: &'a [Broadcastable],
    pub announcements: &'a [Announcement],
}

pub fn page(viewer: &Viewer, room: &Classroom) -> Markup {
    shell(
        viewer,
        "/admin/hands",
        "Raised hands",
        html! {
            h1 { "Raised hands" }
            div hx-ext="sse" sse-connect="/admin/hands/events" {
                div #hands sse-swap="hands" { (queue(viewer, room.hands)) }
                h2 { "Broadcast" }
                div #broadcast-state sse-swap="broadcast" { (on_air(viewer, room.on_air)) }
            }
            @if !viewer.is_admin() {
            } @else if room.seats.is_empty() {
                p.note { "No desktop can be broadcast now: none of the VMs has a browser desktop connected." }
            } @else {
                form.inline #broadcast-form method="post" action="/admin/broadcast" {
                    (csrf_field(viewer))
                    input type="hidden" name="back" value="/admin/hands";
                    label for="broadcast-host" { "Show this desktop to every participant " }
                    select #broadcast-host name="hostname" {
                        @for seat in room.seats {
                            option value=(seat.hostname) {
                                (seat.hostname)
                                @if let Some(p) = &seat.participant { " · " (p) }
                            }
                        }
                    }
                    " "
                    button type="submit" { "Broadcast" }
                }
            }
            h2 { "Announce" }
            form #announce-form method="post" action="/admin/announce" {
                (csrf_field(viewer))
                label for="announce-text" { "Shown at once on every participant's page, and on their desktops where the agent can." }
                textarea #announce-text name="text" rows="3" maxlength=(MAX_CHARS) required {}
                button type="submit" { "Announce" }
            }
            @if !room.announcements.is_empty() {
                ul.announcements #announcements {
                    @for a in room.announcements {
                        li { span.when { (time(a.at)) " · " (a.by) } " " (a.text) }
                    }
                }
            }
        },
    )
}

/// The queue, oldest first: who, where, how long they wait, who has it.
pub fn queue(viewer: &Viewer, hands: &[Hand]) -> Markup {
    html! {
        @if hands.is_empty() {
            p.note #hands-empty { "No hand is raised." }
        } @else {
            div.scroll {
                table.pool #hands-queue {
                    thead { tr { th { "#" } th { "Seat" } th { "Participant" } th { "Waiting" } th { "Taken by" } th {} } }
                    tbody {
                        @for (i, hand) in hands.iter().enumerate() {
                            tr.hand data-host=(hand.hostname) data-id=(hand.id) {
                                td { (i + 1) }
                                td { a href=(format!("/admin/desktop/{}", hand.hostname)) { (hand.hostname) } }
                                td { (hand.participant) }
                                td { (waiting(viewer, hand)) }
                                td.taken-by { (hand.taken_by.as_deref().unwrap_or("—")) }
                                td.actions {
                                    @if hand.taken_by.is_none() {
                                        (action(viewer, hand.id, "take", "Take"))
                                    }
                                    (action(viewer, hand.id, "done", "Done"))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn action(viewer: &Viewer, id: u64, verb: &str, label: &str) -> Markup {
    html! {
        form method="post" action=(format!("/admin/hands/{id}/{verb}")) {
            (csrf_field(viewer))
            button.small type="submit" { (label) }
        }
    }
}

fn waiting(viewer: &Viewer, hand: &Hand) -> String {
    let seconds = (viewer.now - hand.raised_at).num_seconds().max(0);
    match seconds {
        0..60 => "under a minute".to_owned(),
        60..120 => "1 min".to_owned(),
        s => format!("{} min", s / 60),
    }
}

/// What is broadcast, and the stop button.
pub fn on_air(viewer: &Viewer, on_air: Option<&OnAir>) -> Markup {
    html! {
        @match on_air {
            Some(b) if !viewer.is_admin() => {
                p #on-air { "Broadcasting " a href=(format!("/admin/desktop/{}", b.hostname)) { (b.hostname) } " (by " (b.by) ", since " (time(b.since)) ")" }
            }
            Some(b) => {
                form.inline method="post" action="/admin/broadcast/stop" {
                    (csrf_field(viewer))
                    input type="hidden" name="back" value="/admin/hands";
                    span #on-air { "Broadcasting " a href=(format!("/admin/desktop/{}", b.hostname)) { (b.hostname) } " (by " (b.by) ", since " (time(b.since)) ")" }
                    " "
                    button.small #broadcast-stop type="submit" { "Stop broadcast" }
                }
            }
            None => p.note #off-air { "Nothing is broadcast." }
        }
    }
}
