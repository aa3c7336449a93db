//! The instructor's console with a room of three real seats: `lablink agent` on three VMs,
//! each starting its own X and VNC server (TigerVNC's Xvnc) for its browser seat, painted
//! a colour of its own (red, green, blue), claimed by three participants; the third is the
//! instructor's own desktop. Headless Chromium holds the console, signed in, and one
//! participant's page. `Room` sets the seats up once; each check of issue 19 is a function
//! taking it, run in turn by the one test (a new check is one more function and line): the
//! wall shows the colours; a raised hand is on the console within 2 s and first on the
//! wall; a broadcast of the instructor's desktop shows on the participant's desktop page
//! and inside their seat page; an
//! announcement reaches it; a helper sees the wall and is refused launch and destroy.
//! Every step keeps a screenshot. Needs Xvnc, xsetroot, xdotool and Chromium (`.ci/run`
//! installs them).

use std::time::{Duration, Instant};

use fantoccini::Client;
use reqwest::Method;
use serde_json::{Value, json};

use super::browser_desktop::{wait_screen, xvnc_agents};
use super::x_display::{Display, require_tools};
use super::{AgentProc, LONG_POLL, Rig};
use crate::browser::{
    Driver, browser, click, fill, require_browser, screenshot_dir, shoot, sign_in, sign_in_as,
    start_driver, wait_css, wait_text,
};
use crate::helpers::{ADMIN_PASSWORD, Auth, TestServer, html_field, wait_for};

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
    /// The participant whose page is open in `page`: seat 1 or 2, whichever the wall
    /// lists later by name (so that sorting their raised hand first is seen to move it).
    pupil: usize,
    /// `pupil`'s page, with their claim cookie.
    page: Client,
    agents: Vec<AgentProc>,
    displays: Vec<Display>,
    /// Kept for the rigs' files while the agents run.
    _rigs: Vec<Rig>,
}

/// Each seat's colour, in the order they are claimed.
const COLOURS: [(u8, u8, u8); 3] = [(204, 51, 51), (51, 170, 85), (40, 90, 200)];
const PARTICIPANTS: [&str; 3] = ["ada@example.org", "bob@example.org", "teacher@example.org"];
/// The instructor's own desktop (blue): a seat they claimed like anyone else.
const INSTRUCTOR: usize = 2;
/// How soon a raised hand must show in an open console.
const HAND_SHOWN_WITHIN: Duration = Duration::from_secs(2);
const HELPER: &str = "maria";
const HELPER_PASSWORD: &str = "correct horse battery staple";

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
        let agents = xvnc_agents(&s, &rigs, &displays).await;
        let mut seats = Vec::new();
        for email in PARTICIPANTS {
            let claimed = s.claim(email, "").await;
            assert_eq!(claimed.status, 200, "{}", claimed.html);
            let cookie = claimed.cookie.clone().expect("a claim cookie");
            let page = claimed.html;
            let host = html_field(&page, "hostname")
                .unwrap_or_else(|| panic!("{email} has no VM: {page}"));
            let i = rigs.iter().position(|r| r.vm == host).expect("a rig's VM");
            let colour = COLOURS[seats.len()];
            // The agent starts the seat's Xvnc once it hears of the claim.
            displays[i].paint(colour).await;
            seats.push(Seat {
                host,
                email: email.to_owned(),
                colour,
                cookie,
                display: i,
            });
        }
        let pupil = if seats[0].host > seats[1].host { 0 } else { 1 };
        let driver = start_driver().await;
        let console = browser(&driver, 1280, 800).await;
        sign_in(&console, &s.base, ADMIN_PASSWORD).await;
        let page = browser(&driver, 1000, 760).await;
        page.goto(&s.url("/")).await.expect("open /");
        // The claim cookie as their browser got it at the claim (WebDriver's own cookie
        // call is refused by Chromium for a host without a domain name).
        page.execute(
            "document.cookie = arguments[0] + '; path=/'; return true;",
            vec![json!(seats[pupil].cookie)],
        )
        .await
        .expect("set the claim cookie");
        Room {
            s,
            driver,
            console,
            seats,
            pupil,
            page,
            agents,
            displays,
            _rigs: rigs,
        }
    }

    fn pupil(&self) -> &Seat {
        &self.seats[self.pupil]
    }

    async fn close(self) {
        let _ = self.page.close().await;
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

/// Waits until every seat's tile on the wall open in `wall` shows `want(seat)`.
async fn wait_tiles(room: &Room, wall: &Client, want: impl Fn(&Seat) -> (u8, u8, u8)) {
    let mut last = Vec::new();
    for _ in 0..300 {
        last = tile_colours(wall).await;
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

/// The hosts of the wall's tiles, in the order shown.
async fn wall_order(console: &Client) -> Vec<String> {
    let order = console
        .execute(
            "return [...document.querySelectorAll('#wall .tile')].map(t => t.id.replace(/^tile-/, ''));",
            vec![],
        )
        .await
        .expect("the wall's order");
    serde_json::from_value(order).expect("hosts")
}

/// Marks the page object; [`same_page`] then proves it was never reloaded.
async fn mark(client: &Client) {
    client
        .execute("window.__room_marker = 7; return true;", vec![])
        .await
        .expect("mark the page");
}

async fn same_page(client: &Client, what: &str) {
    let marker = client
        .execute("return window.__room_marker || null;", vec![])
        .await
        .expect("read the mark");
    assert_eq!(marker, json!(7), "{what} was reloaded");
}

/// The wall shows every seat's own colour on its tile, live (the page is not reloaded
/// while the pictures arrive), and a tile opens the view-only peek.
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
    wait_tiles(room, console, |seat| seat.colour).await;
    let text = console.source().await.expect("page source");
    for seat in &room.seats {
        assert!(text.contains(&seat.email), "{} not on the wall", seat.email);
    }
    shoot(console, "seat-wall").await;

    // A desktop that changes is on the wall within seconds, without a reload.
    mark(console).await;
    let yellow = (230, 200, 40);
    let changed = &room.seats[1];
    room.displays[changed.display].paint(yellow).await;
    wait_tiles(room, console, |seat| {
        if seat.host == changed.host {
            yellow
        } else {
            seat.colour
        }
    })
    .await;
    same_page(console, "the wall").await;
    room.displays[changed.display].paint(changed.colour).await;
    wait_tiles(room, console, |seat| seat.colour).await;

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

/// The pupil's own desktop page shows their colour; the hand they raise there is on the
/// open wall within 2 s (pushed, not polled: the page is not reloaded) and sorts their tile
/// first; the console's queue lists it, and taking it tells them who comes.
async fn a_raised_hand_is_on_the_console_within_two_seconds(room: &Room) {
    let (console, page, pupil) = (&room.console, &room.page, room.pupil());
    page.goto(&room.s.url("/desktop"))
        .await
        .expect("open /desktop");
    wait_css(page, "body[data-desktop=connected]").await;
    wait_screen(page, pupil.colour, "the participant's own desktop").await;
    wait_css(page, "#classroom[data-hand=down]").await;

    console
        .goto(&room.s.url("/admin/wall"))
        .await
        .expect("open the wall");
    wait_css(console, "#wall .tile").await;
    let before = wall_order(console).await;
    assert_ne!(before.first(), Some(&pupil.host), "{before:?}");
    mark(console).await;

    let raised = Instant::now();
    click(page, "#hand-raise").await;
    wait_css(console, &format!("#tile-{} .hand-up", pupil.host)).await;
    let shown_after = raised.elapsed();
    eprintln!("raised hand shown on the wall after {shown_after:?}");
    assert!(
        shown_after < HAND_SHOWN_WITHIN,
        "the raised hand took {shown_after:?} to show in the console"
    );
    wait_for(10, "the raised hand first on the wall", || async {
        (wall_order(console).await.first() == Some(&pupil.host)).then_some(())
    })
    .await;
    same_page(console, "the wall").await;
    wait_css(page, "#classroom[data-hand=raised]").await;
    shoot(page, "classroom-hand-raised").await;
    shoot(console, "seat-wall-hand").await;

    console
        .goto(&room.s.url("/admin/hands"))
        .await
        .expect("open /admin/hands");
    let hand = format!("tr.hand[data-host='{}']", pupil.host);
    wait_css(console, &hand).await;
    shoot(console, "classroom-hands").await;
    click(console, &format!("{hand} form[action$='/take'] button")).await;
    wait_css(page, "#classroom[data-hand=taken]").await;
    wait_text(page, "#hand-state", "admin is coming").await;
}

/// Starts broadcasting `host` from the console's form (on the Hands page), and waits until
/// it is on air and `page` shows it.
async fn start_broadcast(console: &Client, page: &Client, host: &str) {
    wait_css(console, "#broadcast-host")
        .await
        .select_by_value(host)
        .await
        .expect("pick the seat to broadcast");
    click(console, "#broadcast-form button[type=submit]").await;
    wait_css(console, "#on-air").await;
    wait_css(page, "body[data-broadcast=connected]").await;
}

/// The admin broadcasts the instructor's desktop (blue): the pupil's page shows it in
/// place of their own, and their own colour again at the stop.
async fn a_broadcast_shows_the_instructors_desktop_on_the_participants_page(room: &Room) {
    let (console, page, pupil) = (&room.console, &room.page, room.pupil());
    let instructor = &room.seats[INSTRUCTOR];
    console
        .goto(&room.s.url("/admin/hands"))
        .await
        .expect("open /admin/hands");
    start_broadcast(console, page, &instructor.host).await;
    wait_css(page, "#broadcast-note:not([hidden])").await;
    wait_screen(
        page,
        instructor.colour,
        "the broadcast on the participant's page",
    )
    .await;
    shoot(page, "classroom-broadcast").await;
    shoot(console, "classroom-on-air").await;

    click(console, "#broadcast-stop").await;
    wait_css(console, "#off-air").await;
    wait_css(page, "body[data-broadcast=off]").await;
    wait_screen(
        page,
        pupil.colour,
        "the participant's own desktop after the broadcast",
    )
    .await;
}

/// The centre pixel of the broadcast's screen inside the page (noVNC's canvas), if it shows.
async fn inline_broadcast_colour(page: &Client) -> Option<(u8, u8, u8)> {
    let read = page
        .execute(
            r##"
            const c = document.querySelector("#broadcast-screen:not([hidden]) canvas");
            if (!c || c.width === 0 || c.height === 0) return null;
            const p = c.getContext("2d").getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
            return [p[0], p[1], p[2]];
            "##,
            vec![],
        )
        .await
        .expect("read the broadcast's pixels");
    let p = read.as_array()?;
    let n = |i: usize| p[i].as_u64().expect("a channel") as u8;
    Some((n(0), n(1), n(2)))
}

/// The pupil's seat page (`/my-vm`) shows the broadcast inside the page, and the page is
/// not reloaded under it (it reloads by itself only without script).
async fn a_broadcast_shows_inside_the_seat_page(room: &Room) {
    let (console, page) = (&room.console, &room.page);
    let instructor = &room.seats[INSTRUCTOR];
    page.goto(&room.s.url("/my-vm")).await.expect("open /my-vm");
    wait_css(page, "#classroom[data-hand]").await;
    let refresh = page
        .execute(
            "return document.querySelector('meta[http-equiv=refresh]') !== null;",
            vec![],
        )
        .await
        .expect("look for a refresh");
    assert_eq!(
        refresh,
        json!(false),
        "the seat page reloads under a script"
    );
    mark(page).await;

    start_broadcast(console, page, &instructor.host).await;
    wait_css(page, "#broadcast-link").await;
    let mut last = None;
    for _ in 0..150 {
        last = inline_broadcast_colour(page).await;
        if last.is_some_and(|c| close_to(c, instructor.colour)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        last.is_some_and(|c| close_to(c, instructor.colour)),
        "the seat page's broadcast shows {last:?}, not {:?}",
        instructor.colour
    );
    shoot(page, "classroom-broadcast-seat-page").await;

    click(console, "#broadcast-stop").await;
    wait_css(console, "#off-air").await;
    wait_css(page, "body[data-broadcast=off]").await;
    wait_css(page, "#broadcast-screen[hidden]").await;
    same_page(page, "the seat page").await;
}

/// An announcement from the console shows on the participant's page at once; the audit
/// log holds every step the console took.
async fn an_announcement_shows_on_the_participants_page(room: &Room) {
    let (console, page) = (&room.console, &room.page);
    let text = "Break until 11:00 — back in room 2";
    fill(console, "#announce-text", text).await;
    click(console, "#announce-form button[type=submit]").await;
    wait_text(page, "#announcement-text", text).await;
    shoot(page, "classroom-announcement").await;

    let audit = room.s.get("/admin/audit", Auth::admin()).await.text;
    for action in [
        "hand_raised",
        "hand_taken",
        "broadcast_start",
        "broadcast_stop",
        "announcement",
    ] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }
}

/// A POST from the console page open in `client`, with its session and CSRF token as
/// htmx sends them; the status and body.
async fn post_from_page(client: &Client, path: &str, body: Value) -> (u64, String) {
    let answer = client
        .execute_async(
            r#"
            const [path, body, done] = arguments;
            const csrf = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRF-Token"];
            fetch(path, {
              method: "POST",
              headers: {"content-type": "application/json", "accept": "application/json",
                        "x-csrf-token": csrf},
              body: JSON.stringify(body),
            }).then(r => r.text().then(t => done([r.status, t])));
            "#,
            vec![json!(path), body],
        )
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    (
        answer[0].as_u64().expect("a status"),
        answer[1].as_str().expect("a body").to_owned(),
    )
}

/// A helper account the admin made signs in through the login form, sees the wall with
/// every seat's colour, and is refused launching and destroying (403, saying what helpers
/// may not do); the seats stay as they were.
async fn a_helper_sees_the_wall_and_is_refused_launch_and_destroy(room: &Room) {
    room.s
        .admin_json(
            Method::POST,
            "/api/accounts",
            Some(json!({"name": HELPER, "role": "helper", "password": HELPER_PASSWORD})),
        )
        .await
        .expect(201);
    let helper = browser(&room.driver, 1280, 800).await;
    sign_in_as(&helper, &room.s.base, HELPER, HELPER_PASSWORD).await;
    helper
        .goto(&room.s.url("/admin/wall"))
        .await
        .expect("open the wall");
    wait_css(&helper, "#wall .tile").await;
    wait_tiles(room, &helper, |seat| seat.colour).await;
    wait_text(&helper, "header.top .who", "maria (helper)").await;
    shoot(&helper, "helper-wall").await;

    let target = &room.seats[1].host;
    for path in [
        "/api/launch".to_owned(),
        format!("/api/vms/{target}/destroy"),
    ] {
        let (status, body) = post_from_page(&helper, &path, json!({"num_vms": 1})).await;
        assert_eq!(status, 403, "{path}: {body}");
        let error: Value = serde_json::from_str(&body).expect("a JSON error");
        let error = error["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("\"maria\" is a helper account")
                && error.contains("may not launch, destroy"),
            "{path}: the refusal says what helpers may not do: {body}"
        );
    }
    helper
        .goto(&room.s.url("/admin/create"))
        .await
        .expect("open the launch page");
    wait_text(&helper, "body", "may not launch, destroy").await;
    shoot(&helper, "helper-refused-launch").await;
    let _ = helper.close().await;

    assert_eq!(room.s.free_count().await, 0);
    for seat in &room.seats {
        assert_eq!(
            room.s.my_vm(&seat.cookie).await["hostname"],
            seat.host.as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvnc, xsetroot, xdotool and Chromium (.ci/run installs them)"]
async fn the_instructor_console_with_three_real_seats() {
    let room = Room::open().await;
    the_wall_shows_each_seat_in_its_colour(&room).await;
    a_raised_hand_is_on_the_console_within_two_seconds(&room).await;
    a_broadcast_shows_the_instructors_desktop_on_the_participants_page(&room).await;
    a_broadcast_shows_inside_the_seat_page(&room).await;
    an_announcement_shows_on_the_participants_page(&room).await;
    a_helper_sees_the_wall_and_is_refused_launch_and_destroy(&room).await;
    room.close().await;
    for shot in [
        "seat-wall",
        "seat-wall-hand",
        "classroom-hand-raised",
        "classroom-hands",
        "classroom-broadcast",
        "classroom-on-air",
        "classroom-broadcast-seat-page",
        "classroom-announcement",
        "helper-wall",
        "helper-refused-launch",
    ] {
        assert!(
            screenshot_dir().join(format!("{shot}.png")).is_file(),
            "{shot}.png kept"
        );
    }
}
