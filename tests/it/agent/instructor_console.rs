//! The instructor's console with a room of three real seats: `lablink agent` on three VMs,
//! each starting its own X and VNC server (TigerVNC's Xvnc) for its browser seat, painted
//! a colour of its own, claimed by three participants; headless Chromium signed in to the
//! console. `Room` sets the three seats up once; each check of the console is a function
//! taking it, run in turn by the one test (a new check is one more function and line).
//! Needs Xvnc, xsetroot, xdotool and Chromium (`.ci/run` installs them).

use std::time::Duration;

use fantoccini::Client;
use serde_json::Value;

use super::x_display::{Display, require_tools};
use super::{AgentProc, Gpu, LONG_POLL, Rig, Token};
use crate::browser::{
    Driver, browser, require_browser, screenshot_dir, shoot, sign_in, start_driver, wait_css,
};
use crate::helpers::{
    ADMIN_PASSWORD, TestServer, free_port, html_field, mint_credential, wait_for,
};

/// One participant's seat.
struct Seat {
    host: String,
    email: String,
    colour: (u8, u8, u8),
    /// Their claim cookie (`name=value`), for their page and desktop.
    cookie: String,
    /// Their VM's X display, in `Room::displays`.
    display: usize,
}

struct Room {
    s: TestServer,
    driver: Driver,
    /// The console, signed in.
    console: Client,
    seats: Vec<Seat>,
    agents: Vec<AgentProc>,
    displays: Vec<Display>,
    /// Kept for the rigs' files while the agents run.
    _rigs: Vec<Rig>,
}

const COLOURS: [(u8, u8, u8); 3] = [(204, 51, 51), (51, 170, 85), (40, 90, 200)];
const PARTICIPANTS: [&str; 3] = ["ada@example.org", "bob@example.org", "cyd@example.org"];

impl Room {
    async fn open() -> Room {
        require_tools();
        require_browser();
        let s = TestServer::start_with(|c| {
            c.server.long_poll_seconds = LONG_POLL;
            c.desktop.mode = "browser".into();
            c.desktop.thumbnail_seconds = 1;
        })
        .await;
        let rigs: Vec<Rig> = ["walla", "wallb", "wallc"].map(Rig::new).into();
        let displays: Vec<Display> = rigs.iter().map(|_| Display::free()).collect();
        let mut agents = Vec::new();
        for (rig, display) in rigs.iter().zip(&displays) {
            let port = free_port().to_string();
            let credential = mint_credential(&s, &rig.vm).await;
            agents.push(rig.agent(
                &s.base,
                Token::Flag(&credential),
                Gpu::Fake,
                &[
                    "--vnc",
                    "xvnc",
                    "--vnc-display",
                    &display.name,
                    "--vnc-port",
                    &port,
                ],
            ));
        }
        wait_for(60, "three VMs free", || async {
            (s.free_count().await == 3).then_some(())
        })
        .await;
        let mut seats = Vec::new();
        for email in PARTICIPANTS {
            let claimed = s
                .client
                .post(s.url("/api/request_vm"))
                .form(&[("email", email)])
                .send()
                .await
                .expect("claim");
            assert_eq!(claimed.status(), 200);
            let cookie = claimed
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .expect("a claim cookie")
                .to_owned();
            let page = claimed.text().await.expect("the claim's page");
            let host = html_field(&page, "hostname")
                .unwrap_or_else(|| panic!("{email} has no VM: {page}"));
            let i = rigs.iter().position(|r| r.vm == host).expect("a rig's VM");
            // The agent starts the seat's Xvnc once it hears of the claim.
            displays[i].paint(COLOURS[i]).await;
            seats.push(Seat {
                host,
                email: email.to_owned(),
                colour: COLOURS[i],
                cookie,
                display: i,
            });
        }
        let driver = start_driver().await;
        let console = browser(&driver, 1280, 800).await;
        sign_in(&console, &s.base, ADMIN_PASSWORD).await;
        Room {
            s,
            driver,
            console,
            seats,
            agents,
            displays,
            _rigs: rigs,
        }
    }

    async fn close(self) {
        let _ = self.console.close().await;
        drop(self.driver);
        for mut agent in self.agents {
            agent.stop(30).await;
        }
    }
}

fn close_to(a: (u8, u8, u8), b: (u8, u8, u8)) -> bool {
    let d = |x: u8, y: u8| x.abs_diff(y) <= 12;
    d(a.0, b.0) && d(a.1, b.1) && d(a.2, b.2)
}

/// The colour at the centre of each tile's picture, by host, read in the page through a
/// canvas (tiles without a loaded picture are left out).
async fn tile_colours(console: &Client) -> Vec<(String, (u8, u8, u8))> {
    let read = console
        .execute(
            r#"
            const out = [];
            for (const img of document.querySelectorAll(".tile img")) {
              if (!img.complete || img.naturalWidth === 0) continue;
              const c = document.createElement("canvas");
              c.width = img.naturalWidth;
              c.height = img.naturalHeight;
              const g = c.getContext("2d");
              g.drawImage(img, 0, 0);
              const p = g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
              out.push([img.closest(".tile").id.replace(/^tile-/, ""), p[0], p[1], p[2]]);
            }
            return out;
            "#,
            vec![],
        )
        .await
        .expect("read the tiles' pixels");
    read.as_array()
        .expect("an array")
        .iter()
        .map(|t| {
            let n = |i: usize| t[i].as_u64().expect("a channel") as u8;
            (
                t[0].as_str().expect("a host").to_owned(),
                (n(1), n(2), n(3)),
            )
        })
        .collect()
}

/// The wall shows every seat's own colour on its tile, live (the page is not reloaded
/// while the pictures arrive), and a tile opens the view-only peek.
/// Waits until every seat's tile shows `want(seat)`.
async fn wait_tiles(room: &Room, want: impl Fn(&Seat) -> (u8, u8, u8)) {
    let mut last = Vec::new();
    for _ in 0..300 {
        last = tile_colours(&room.console).await;
        let all = room.seats.iter().all(|seat| {
            last.iter()
                .any(|(host, colour)| *host == seat.host && close_to(*colour, want(seat)))
        });
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for seat in &room.seats {
        let shown = last.iter().find(|(host, _)| *host == seat.host);
        assert!(
            shown.is_some_and(|(_, c)| close_to(*c, want(seat))),
            "{}'s tile ({}) shows {shown:?}, not {:?}; all: {last:?}",
            seat.host,
            seat.email,
            want(seat)
        );
    }
}

async fn the_wall_shows_each_seat_in_its_colour(room: &Room) {
    let console = &room.console;
    // Each participant's own page names the seat the wall shows for them.
    for seat in &room.seats {
        assert_eq!(
            room.s.my_vm(&seat.cookie).await["hostname"],
            seat.host.as_str()
        );
    }
    console
        .goto(&room.s.url("/admin/wall"))
        .await
        .expect("open the wall");
    wait_css(console, "#wall .tile").await;
    wait_tiles(room, |seat| seat.colour).await;
    let text = console.source().await.expect("page source");
    for seat in &room.seats {
        assert!(text.contains(&seat.email), "{} not on the wall", seat.email);
    }
    shoot(console, "seat-wall").await;

    // A desktop that changes is on the wall within seconds, without a reload.
    console
        .execute("window.__wall_marker = 7; return true;", vec![])
        .await
        .expect("mark the page");
    let yellow = (230, 200, 40);
    let changed = &room.seats[2];
    room.displays[changed.display].paint(yellow).await;
    wait_tiles(room, |seat| {
        if seat.host == changed.host {
            yellow
        } else {
            seat.colour
        }
    })
    .await;
    let marker = console
        .execute("return window.__wall_marker || null;", vec![])
        .await
        .expect("read the mark");
    assert_eq!(marker, serde_json::json!(7), "the wall was reloaded");

    // Filtering by a participant leaves their tile alone.
    crate::browser::fill(console, "#wall-filter", &room.seats[1].email).await;
    crate::browser::wait_text(console, "#wall-shown", "1 of 3").await;
    let visible: Value = console
        .execute(
            "return [...document.querySelectorAll('.tile')].filter(t => !t.hidden).map(t => t.id);",
            vec![],
        )
        .await
        .expect("visible tiles");
    assert_eq!(
        visible,
        serde_json::json!([format!("tile-{}", room.seats[1].host)])
    );
    crate::browser::fill(console, "#wall-filter", "").await;
    crate::browser::wait_text(console, "#wall-shown", "3 of 3").await;

    // A tile opens the view-only peek of its seat.
    let host = &room.seats[0].host;
    crate::browser::click(console, &format!("#tile-{host} a.shot")).await;
    wait_css(console, "body[data-desktop=connected]").await;
    let url = console.current_url().await.expect("url");
    assert!(
        url.path().ends_with(&format!("/admin/desktop/{host}")),
        "{url}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvnc, xsetroot, xdotool and Chromium (.ci/run installs them)"]
async fn the_instructor_console_with_three_real_seats() {
    let room = Room::open().await;
    the_wall_shows_each_seat_in_its_colour(&room).await;
    room.close().await;
    // The wall's picture for the README is the screenshot this run kept.
    assert!(screenshot_dir().join("seat-wall.png").is_file());
}
