//! `/admin/wall`: every seat at a glance. A tile per VM: the latest picture of a browser
//! seat's desktop (or a status card), the participant, status, GPU use, in-use and idle
//! time. Live: the stream (`/admin/wall/events`) sends a tile only when it changed (its
//! picture's address carries the picture's version, so the image reloads only then), and
//! the whole grid when VMs come or go. Filter and sort are `assets/wall.js`'s, in the page.

use maud::{Markup, html};

use super::{Viewer, shell};
use crate::model::{DesktopKind, Health, VmStatus};
use crate::pool::thumbnails::Tile;

/// The picture's size on the wall (the agents send 320 pixels wide).
const IMG_WIDTH: u32 = 320;
const IMG_HEIGHT: u32 = 180;

pub fn page(viewer: &Viewer, tiles: &[Tile]) -> Markup {
    shell(
        viewer,
        "/admin/wall",
        "Seat wall",
        html! {
            h1 { "Seat wall" }
            form.wall-controls #wall-controls role="search" {
                label { "Find " input type="search" #wall-filter placeholder="VM or participant"; }
                label { "Status "
                    select #wall-status {
                        option value="" { "all" }
                        @for status in VmStatus::ALL {
                            option value=(status.as_str()) { (status.as_str()) }
                        }
                        option value="unhealthy" { "unhealthy" }
                        option value="seated" { "with a participant" }
                        option value="free" { "free" }
                    }
                }
                // Filled by wall.js from its list of orders.
                label { "Sort " select #wall-sort {} }
                span.note #wall-shown {}
            }
            div #flash aria-live="polite" {}
            div hx-ext="sse" sse-connect="/admin/wall/events" {
                div.wall #wall sse-swap="grid" { (grid(tiles)) }
            }
            script src="/assets/wall.js" defer {}
        },
    )
}

/// Every tile.
pub fn grid(tiles: &[Tile]) -> Markup {
    html! {
        @if tiles.is_empty() {
            p.note { "No VMs yet. " a href="/admin/create" { "Launch some." } }
        }
        @for t in tiles {
            div.tile id={"tile-" (t.vm.hostname)} sse-swap={"tile-" (t.vm.hostname)} {
                (tile(t))
            }
        }
    }
}

/// Whether the tile shows trouble: an unhealthy GPU, an error, a silent agent.
fn unhealthy(t: &Tile) -> bool {
    t.vm.unresponsive_since.is_some()
        || t.vm.status == Some(VmStatus::Error)
        || t.vm.health == Some(Health::Unhealthy)
}

/// "42 s", "3 min", "2 h".
fn short(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// A tile's content (the tile itself stays, so the live stream swaps only this).
pub fn tile(t: &Tile) -> Markup {
    let vm = &t.vm;
    let host = vm.hostname.as_str();
    let status = vm.status.map_or("none", |s| s.as_str());
    let seat = vm.assignment.as_ref();
    let browser = seat.is_some_and(|a| a.desktop == DesktopKind::Browser);
    let bad = unhealthy(t);
    let idle_seconds = t.idle.map_or(-1, |d| d.num_seconds());
    let hand_seconds = t.hand_waiting.map_or(-1, |d| d.num_seconds().max(0));
    html! {
        div.tile-body.unhealthy[bad].hand[t.hand_waiting.is_some()]
            data-name=(host)
            data-status=(status)
            data-seated=(if seat.is_some() { "1" } else { "0" })
            data-unhealthy=(if bad { "1" } else { "0" })
            data-idle=(idle_seconds)
            data-hand=(hand_seconds)
            data-text={(host) " " (seat.map_or("", |a| a.email.as_str()))}
        {
            @if let (true, Some(version)) = (browser, t.thumbnail) {
                a.shot href={"/admin/desktop/" (host)} title={"Peek at " (host) " (view only)"} {
                    img src={"/admin/wall/" (host) "/thumbnail?v=" (version)} loading="lazy"
                        width=(IMG_WIDTH) height=(IMG_HEIGHT) alt={"desktop of " (host)};
                }
            } @else {
                @let card = html! {
                    span.status.(status) { (status) }
                    @if seat.is_none() {
                        span { "free" }
                    } @else if browser {
                        span { "no picture yet" }
                    } @else {
                        span { "Chrome Remote Desktop" }
                    }
                };
                @if browser {
                    a.status-card href={"/admin/desktop/" (host)} title={"Peek at " (host) " (view only)"} { (card) }
                } @else {
                    div.status-card { (card) }
                }
            }
            div.facts {
                @if let Some(waiting) = t.hand_waiting {
                    a.hand-up href="/admin/hands" title="Raised hands" { "Needs help · " (short(waiting)) }
                    br;
                }
                strong.host { (host) }
                " " span.status.(status) { (status) }
                @if vm.unresponsive_since.is_some() {
                    " " span.status.unresponsive { "unresponsive" }
                }
                @if vm.health == Some(Health::Unhealthy) {
                    " " span.status.error { "GPU unhealthy" }
                }
                br;
                span.assignee { (seat.map_or("—", |a| a.email.as_str())) }
                br;
                span.note {
                    "GPU " (t.gpu_pct.map_or_else(|| "—".to_owned(), |p| format!("{p:.0} %")))
                    " · " (if vm.in_use { "in use" } else { "not in use" })
                    @if let Some(idle) = t.idle.filter(|d| d.num_seconds() >= 60) {
                        " · idle " (short(idle))
                    }
                }
            }
        }
    }
}
