//! The participant's side of the classroom: the "I need help" button, the latest
//! announcement, the notice while the instructor has control of their desktop, and the
//! instructor's broadcast. Filled and kept current by `assets/classroom.js` from the live
//! stream `/api/my-vm/classroom`; without script the buttons still work (the page reloads).

use maud::{Markup, html};

/// Where the panel sits: the desktop page shows a broadcast over the participant's own
/// desktop, the seat page inside the page (with a link to `/broadcast`, full size).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum On {
    Desktop,
    Seat,
}

impl On {
    fn back(self) -> &'static str {
        match self {
            On::Desktop => "/desktop",
            On::Seat => "/my-vm",
        }
    }
}

/// `raised`: the participant's hand is up as the page is made.
pub fn panel(on: On, raised: bool) -> Markup {
    let back = on.back();
    html! {
        div.classroom #classroom data-events="/api/my-vm/classroom" {
            p.announcement #announcement role="status" hidden {
                strong { "Announcement: " } span #announcement-text {}
            }
            p.control-notice #control-notice role="alert" hidden { "The instructor has control of your desktop" }
            p.given-back #given-back role="status" hidden { "The instructor gave your desktop back" }
            form.hand #hand-raise-form method="post" action="/api/my-vm/hand" hidden[raised] {
                input type="hidden" name="back" value=(back);
                button #hand-raise type="submit" { "I need help" }
            }
            form.hand #hand-lower-form method="post" action="/api/my-vm/hand/lower" hidden[!raised] {
                input type="hidden" name="back" value=(back);
                span #hand-state role="status" { "Your hand is raised" }
                " "
                button.link #hand-lower type="submit" { "Lower my hand" }
            }
            div.broadcast-note #broadcast-note role="status" hidden {
                "The instructor is showing their screen"
                @if on == On::Seat {
                    " — " a #broadcast-link href="/broadcast" { "full size" }
                }
            }
            div.broadcast-note #broadcast-yours role="status" hidden {
                "Your desktop is being shown to everyone"
            }
        }
        div #broadcast-screen .on-seat[on == On::Seat] hidden {}
    }
}
