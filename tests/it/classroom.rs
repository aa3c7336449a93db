//! The classroom on the allocator's side: raised hands (raise, lower, take, done, the
//! audit, bad input), announcements (the participant's live stream, the console, the
//! agents' heartbeat answers), take-over and give-back as the participant sees them, and
//! the broadcast (a view-only stream per participant, all cut at stop). The test plays
//! the agents (`desktop::FakeAgent`); `agent::instructor_console` runs it with real agents,
//! Xvnc and Chromium.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::desktop::{
    FakeAgent, basic, browser_server, claim, open_in_background, register_running, viewer,
};
use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, TestServer, within};

/// An event stream read as it comes, for waiting on what it carries.
struct Events {
    response: reqwest::Response,
    seen: String,
}

impl Events {
    async fn open(s: &TestServer, path: &str, cookie: Option<&str>) -> Events {
        let mut request = s.client.get(s.url(path));
        request = match cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request.basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)),
        };
        let response = request.send().await.expect("events");
        assert_eq!(response.status(), 200, "{path}");
        Events {
            response,
            seen: String::new(),
        }
    }

    /// Reads until `want` arrives (within `secs`); what was read up to it is consumed.
    async fn until(&mut self, want: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(at) = self.seen.find(want) {
                self.seen.drain(..at + want.len());
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "no {want:?} within {secs} s in {:?}",
                self.seen
            );
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(other) => panic!(
                    "the stream ended ({other:?}) before {want:?}: {}",
                    self.seen
                ),
                Err(_) => {}
            }
        }
    }

    /// Reads until the server ends the stream (within `secs`).
    async fn ended(&mut self, secs: u64) {
        within(secs, "the stream to end", async {
            while let Ok(Some(chunk)) = self.response.chunk().await {
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
    }
}

/// The participant's form post to `path`: its status and body.
async fn participant_post(s: &TestServer, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = crate::helpers::no_redirects()
        .post(s.url(path))
        .form(&[("back", "/desktop")]);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn seated(s: &TestServer, host: &str, email: &str) -> String {
    register_running(s, host).await;
    let (answer, cookie) = claim(s, &[("email", email)]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    cookie.expect("claim cookie")
}

async fn audited(s: &TestServer, action: &str) -> Vec<String> {
    s.recent_audit(50)
        .await
        .into_iter()
        .filter(|e| e.action == action)
        .map(|e| format!("{} {}", e.actor, e.detail))
        .collect()
}

#[tokio::test]
async fn a_raised_hand_is_queued_taken_and_done_live_and_audited() {
    let s = browser_server("browser").await;
    let ada = seated(&s, "vm-1", "ada@example.org").await;
    let bob = seated(&s, "vm-2", "bob@example.org").await;

    // Without a seat, or from another site: refused, saying why.
    let (status, body) = participant_post(&s, "/api/my-vm/hand", None).await;
    assert_eq!(status, 403);
    assert!(body.contains("holds no seat"), "{body}");
    let cross = crate::helpers::no_redirects()
        .post(s.url("/api/my-vm/hand"))
        .header("cookie", &ada)
        .header("sec-fetch-site", "cross-site")
        .form(&[("back", "/my-vm")])
        .send()
        .await
        .expect("POST");
    assert_eq!(cross.status(), 403);

    let mut console = Events::open(&s, "/admin/hands/events", None).await;
    console.until("No hand is raised.", 10).await;
    let mut page = Events::open(&s, "/api/my-vm/classroom", Some(&ada)).await;
    page.until(r#"data: {"raised":false"#, 10).await;

    let raised = Instant::now();
    let (status, _) = participant_post(&s, "/api/my-vm/hand", Some(&ada)).await;
    assert_eq!(status, 303);
    console.until(r#"data-host="vm-1""#, 2).await;
    let shown_after = raised.elapsed();
    assert!(shown_after < Duration::from_secs(2), "{shown_after:?}");
    page.until(r#""raised":true"#, 10).await;

    let (status, body) = participant_post(&s, "/api/my-vm/hand", Some(&ada)).await;
    assert_eq!(status, 409, "one open request per seat");
    assert!(body.contains("raised already"), "{body}");

    let hands = s
        .admin_json(Method::GET, "/api/hands", None)
        .await
        .expect(200);
    let hand = &hands["hands"][0];
    assert_eq!(hand["hostname"], "vm-1");
    assert_eq!(hand["participant"], "ada@example.org");
    assert_eq!(hand["taken_by"], Value::Null);
    let id = hand["id"].as_u64().expect("id");

    let taken = s
        .admin_json(Method::POST, &format!("/api/hands/{id}/take"), None)
        .await
        .expect(200);
    assert_eq!(taken["hand"]["taken_by"], ADMIN_USER);
    page.until(r#""taken_by":"admin""#, 10).await;
    console
        .until(r#"<td class="taken-by">admin</td>"#, 10)
        .await;

    // Bad input: an unknown request, an id that is no number.
    s.admin_json(Method::POST, "/api/hands/12/take", None)
        .await
        .expect_error(
            404,
            "There is no open request for help 12; it may be done or withdrawn already.",
        );
    let bad = s
        .admin_json(Method::POST, "/api/hands/first/done", None)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);

    s.admin_json(Method::POST, &format!("/api/hands/{id}/done"), None)
        .await
        .expect(200);
    page.until(r#""raised":false"#, 10).await;
    console.until("No hand is raised.", 10).await;
    s.admin_json(Method::POST, &format!("/api/hands/{id}/done"), None)
        .await
        .expect_error(
            404,
            &format!(
                "There is no open request for help {id}; it may be done or withdrawn already."
            ),
        );

    // Bob raises and lowers his own.
    assert_eq!(
        participant_post(&s, "/api/my-vm/hand", Some(&bob)).await.0,
        303
    );
    console.until(r#"data-host="vm-2""#, 10).await;
    assert_eq!(
        participant_post(&s, "/api/my-vm/hand/lower", Some(&bob))
            .await
            .0,
        303
    );
    console.until("No hand is raised.", 10).await;
    let (status, body) = participant_post(&s, "/api/my-vm/hand/lower", Some(&bob)).await;
    assert_eq!(status, 404);
    assert!(body.contains("not raised"), "{body}");
    // Up and down and up again at once: a seat raises its hand at most every 3 s.
    let (status, body) = participant_post(&s, "/api/my-vm/hand", Some(&bob)).await;
    assert_eq!(status, 429, "{body}");

    let raised = audited(&s, "hand_raised").await;
    assert!(
        raised.iter().any(|e| e.starts_with("ada@example.org vm-1")),
        "{raised:?}"
    );
    assert!(
        raised.iter().any(|e| e.starts_with("bob@example.org vm-2")),
        "{raised:?}"
    );
    let taken = audited(&s, "hand_taken").await;
    assert!(
        taken
            .iter()
            .any(|e| e.starts_with("admin vm-1") && e.contains("ada@example.org")),
        "{taken:?}"
    );
    assert_eq!(audited(&s, "hand_done").await.len(), 1);
    assert_eq!(audited(&s, "hand_lowered").await.len(), 1);

    // A hand ends with its seat: released, the seat's next participant has asked nothing.
    let carol = seated(&s, "vm-3", "carol@example.org").await;
    assert_eq!(
        participant_post(&s, "/api/my-vm/hand", Some(&carol))
            .await
            .0,
        303
    );
    console.until(r#"data-host="vm-3""#, 10).await;
    s.admin_json(Method::POST, "/api/vms/vm-3/release", Some(json!({})))
        .await
        .expect(200);
    console.until("No hand is raised.", 10).await;
    let hands = s
        .admin_json(Method::GET, "/api/hands", None)
        .await
        .expect(200);
    assert_eq!(hands["hands"], json!([]), "{hands}");

    // The console's page and its form actions.
    let page = s.get("/admin/hands", crate::helpers::Auth::admin()).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("No hand is raised."), "{}", page.text);
    assert!(
        page.text.contains(r#"href="/admin/hands""#),
        "linked in the nav"
    );
}

#[tokio::test]
async fn announcements_reach_every_page_and_the_agents_and_are_checked() {
    let s = browser_server("browser").await;
    let ada = seated(&s, "vm-1", "ada@example.org").await;
    let mut page = Events::open(&s, "/api/my-vm/classroom", Some(&ada)).await;
    page.until("event: announcement\ndata: null", 10).await;

    let made = s
        .admin_json(
            Method::POST,
            "/api/announcements",
            Some(json!({"text": "  Break until 11:00 <b>sharp</b>  "})),
        )
        .await
        .expect(201);
    assert_eq!(
        made["announcement"]["text"],
        "Break until 11:00 <b>sharp</b>"
    );
    page.until("Break until 11:00 <b>sharp</b>", 5).await;

    // A page opened later shows the latest.
    let mut later = Events::open(&s, "/api/my-vm/classroom", Some(&ada)).await;
    later.until("Break until 11:00", 10).await;
    // The console escapes it.
    let console = s.get("/admin/hands", crate::helpers::Auth::admin()).await;
    assert!(
        console
            .text
            .contains("Break until 11:00 &lt;b&gt;sharp&lt;/b&gt;"),
        "{}",
        console.text
    );
    // The seat's agent is told in its heartbeat's answer (a desktop notification).
    let beat = s
        .agent_post("/api/heartbeat", &json!({"hostname": "vm-1"}))
        .await
        .expect(200);
    assert_eq!(
        beat["announcement"]["text"],
        "Break until 11:00 <b>sharp</b>"
    );
    assert_eq!(
        beat["announcement"]["id"],
        made["announcement"]["id"].as_u64().expect("id").to_string()
    );

    // Bad input.
    s.admin_json(
        Method::POST,
        "/api/announcements",
        Some(json!({"text": "x".repeat(501)})),
    )
    .await
    .expect_error(
        400,
        "text: at most 500 characters (this one has 501); shorten it.",
    );
    s.admin_json(
        Method::POST,
        "/api/announcements",
        Some(json!({"text": " \n "})),
    )
    .await
    .expect_error(400, "text: write the announcement (it is empty).");
    s.admin_json(
        Method::POST,
        "/api/announcements",
        Some(json!({"text": "a\u{1b}[31m"})),
    )
    .await
    .expect_error(400, "text: plain text only (no control characters).");

    let second = s
        .admin_json(
            Method::POST,
            "/api/announcements",
            Some(json!({"text": "Back in the room"})),
        )
        .await
        .expect(201);
    assert!(second["announcement"]["id"].as_u64() > made["announcement"]["id"].as_u64());
    page.until("Back in the room", 5).await;
    let listed = s
        .admin_json(Method::GET, "/api/announcements", None)
        .await
        .expect(200);
    assert_eq!(
        listed["announcements"][0]["text"], "Back in the room",
        "newest first"
    );
    assert_eq!(listed["announcements"].as_array().map(Vec::len), Some(2));
    let audit = audited(&s, "announcement").await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(
        audit.iter().any(|e| e.contains("Back in the room")),
        "{audit:?}"
    );
}

#[tokio::test]
async fn take_over_is_shown_to_the_participant_and_giving_back_is_audited() {
    let s = browser_server("browser").await;
    let ada = seated(&s, "vm-1", "ada@example.org").await;
    let mut agent = FakeAgent::connect(&s, "vm-1").await;
    let mut page = Events::open(&s, "/api/my-vm/classroom", Some(&ada)).await;
    page.until("event: control\ndata: false", 10).await;

    let peek = s
        .get("/admin/desktop/vm-1", crate::helpers::Auth::admin())
        .await;
    assert!(peek.text.contains("Take over"), "{}", peek.text);
    let control = s
        .get(
            "/admin/desktop/vm-1?control=1",
            crate::helpers::Auth::admin(),
        )
        .await;
    assert!(control.text.contains("Give back"), "{}", control.text);

    let taking = open_in_background(
        &s,
        "/admin/desktop/vm-1/ws?control=1",
        ("authorization", basic()),
    );
    let open = agent.next_open().await;
    assert_eq!(open["view_only"], false);
    let _tunnel = agent.tunnel(&s, open["id"].as_str().expect("id")).await;
    let socket = taking
        .await
        .expect("join")
        .expect("the instructor's socket");
    page.until("event: control\ndata: true", 10).await;
    drop(socket);
    page.until("event: control\ndata: false", 10).await;
    within(10, "the give-back's audit entry", async {
        while audited(&s, "desktop_give_back").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let took = audited(&s, "desktop_control").await;
    assert!(
        took.iter().any(|e| e.contains("vm-1: took over")),
        "{took:?}"
    );

    // The page's events end with the seat: the next participant's take-over is not shown
    // to Ada, whose page finds no seat when it comes back.
    s.admin_json(Method::POST, "/api/vms/vm-1/release", Some(json!({})))
        .await
        .expect(200);
    page.ended(10).await;
    let again = s
        .client
        .get(s.url("/api/my-vm/classroom"))
        .header("cookie", &ada)
        .send()
        .await
        .expect("events");
    assert_eq!(again.status(), 403);
}

/// The teacher's VM as the broadcast's seat: its RFB server's handshake over the agent's
/// tunnel, up to the pixel format and encodings the allocator asks for (a 32×16 screen).
async fn seat_handshake(seat: &mut reqwest::Upgraded) {
    seat.write_all(b"RFB 003.008\n\x01\x01")
        .await
        .expect("greet");
    let mut answer = [0; 13];
    seat.read_exact(&mut answer)
        .await
        .expect("version and security");
    assert_eq!(&answer, b"RFB 003.008\n\x01");
    seat.write_all(&[0; 4]).await.expect("security result");
    let mut shared = [0];
    seat.read_exact(&mut shared).await.expect("client init");
    assert_eq!(shared, [1], "shared: the participant's own viewer stays");
    let mut init = vec![0, 32, 0, 16];
    init.extend_from_slice(&NOVNC_FORMAT);
    init.extend_from_slice(b"\0\0\0\x07teacher");
    seat.write_all(&init).await.expect("server init");
    let mut asked = [0; 36];
    seat.read_exact(&mut asked)
        .await
        .expect("format and encodings");
    assert_eq!(asked[4..20], NOVNC_FORMAT);
    assert_eq!(
        asked[20..],
        [2, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0],
        "CopyRect, Hextile, Raw"
    );
}

/// noVNC's pixel format: 32 bpp, depth 24, little-endian, true colour, shifts 0/8/16.
const NOVNC_FORMAT: [u8; 16] = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0];

/// Reads the seat's update requests up to a full (not incremental) one.
async fn keyframe_request(seat: &mut reqwest::Upgraded) {
    loop {
        let mut request = [0; 10];
        within(10, "an update request", seat.read_exact(&mut request))
            .await
            .expect("request");
        assert_eq!(request[0], 3, "FramebufferUpdateRequest");
        if request[1] == 0 {
            assert_eq!(request[6..], [0, 32, 0, 16], "the whole screen");
            return;
        }
    }
}

/// The whole 32×16 screen in one Raw rectangle, every byte `mark`.
fn full_update(mark: u8) -> Vec<u8> {
    let mut m = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 32, 0, 16, 0, 0, 0, 0];
    m.extend(std::iter::repeat_n(mark, 32 * 16 * 4));
    m
}

/// A participant's page watching the broadcast: noVNC's side of the RFB session.
struct RfbViewer {
    ws: crate::desktop::Socket,
    buf: Vec<u8>,
}

impl RfbViewer {
    async fn handshake(ws: crate::desktop::Socket) -> RfbViewer {
        let mut v = RfbViewer {
            ws,
            buf: Vec::new(),
        };
        assert_eq!(v.read(12).await, b"RFB 003.008\n");
        v.send(b"RFB 003.008\n").await;
        assert_eq!(v.read(2).await, [1, 1], "security None only");
        v.send(&[1]).await;
        assert_eq!(v.read(4).await, [0; 4]);
        v.send(&[1]).await;
        let init = v.read(24).await;
        assert_eq!(init[..4], [0, 32, 0, 16], "the seat's screen");
        assert_eq!(init[4..20], NOVNC_FORMAT);
        assert_eq!(v.read(7).await, b"teacher");
        let mut format = vec![0, 0, 0, 0];
        format.extend_from_slice(&NOVNC_FORMAT);
        v.send(&format).await;
        v.send(&[3, 0, 0, 0, 0, 0, 0, 32, 0, 16]).await;
        v
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .expect("sent");
    }

    async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            match within(10, "the broadcast's bytes", self.ws.next()).await {
                Some(Ok(Message::Binary(bytes))) => self.buf.extend_from_slice(&bytes),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("the broadcast stream ended: {other:?}"),
            }
        }
        self.buf.drain(..n).collect()
    }
}

#[tokio::test]
async fn a_broadcast_reaches_each_participant_view_only_and_stop_cuts_it() {
    let s = browser_server("browser").await;
    let ada = seated(&s, "vm-1", "ada@example.org").await;
    let teacher = seated(&s, "vm-2", "teacher@example.org").await;
    let mut page = Events::open(&s, "/api/my-vm/classroom", Some(&ada)).await;
    let mut teacher_page = Events::open(&s, "/api/my-vm/classroom", Some(&teacher)).await;
    page.until(
        "event: broadcast\ndata: {\"id\":null,\"on\":false,\"yours\":false}",
        10,
    )
    .await;

    // The seat page holds the broadcast's screen, and only a browser without script
    // reloads it (a reload would cut the broadcast's stream).
    let seat_page = s
        .client
        .get(s.url("/my-vm"))
        .header("cookie", &ada)
        .send()
        .await
        .expect("GET /my-vm")
        .text()
        .await
        .expect("html");
    assert!(
        seat_page.contains(r#"<div class="on-seat" id="broadcast-screen" hidden></div>"#),
        "{seat_page}"
    );
    assert!(seat_page.contains(r#"href="/broadcast""#), "{seat_page}");
    assert_eq!(
        seat_page.matches(r#"http-equiv="refresh""#).count(),
        1,
        "{seat_page}"
    );
    assert!(
        seat_page.contains(
            r#"<noscript><meta http-equiv="refresh" content="15; url=/my-vm"></noscript>"#
        ),
        "{seat_page}"
    );

    // Bad input: no such VM, a bad name, a VM without a desktop channel, nothing to stop.
    s.admin_json(
        Method::POST,
        "/api/broadcast",
        Some(json!({"hostname": "vm-9"})),
    )
    .await
    .expect_error(404, "VM not found.");
    let bad = s
        .admin_json(
            Method::POST,
            "/api/broadcast",
            Some(json!({"hostname": "no such"})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    s.admin_json(
        Method::POST,
        "/api/broadcast",
        Some(json!({"hostname": "vm-2"})),
    )
    .await
    .expect_error(
        503,
        "The desktop of vm-2 is not reachable (its agent has no desktop channel: not a \
             browser desktop, or not started yet); broadcast a seat with a browser desktop.",
    );
    s.admin_json(Method::POST, "/api/broadcast/stop", None)
        .await
        .expect_error(409, "Nothing is being broadcast.");
    let off = viewer(&s, "/broadcast/ws", &[("cookie", ada.clone())])
        .await
        .expect_err("nothing on air");
    assert_eq!(off.0, 404, "{off:?}");

    let mut teacher_vm = FakeAgent::connect(&s, "vm-2").await;
    let on = s
        .admin_json(
            Method::POST,
            "/api/broadcast",
            Some(json!({"hostname": "vm-2"})),
        )
        .await
        .expect(200);
    assert_eq!(on["on_air"]["hostname"], "vm-2");
    page.until(r#""on":true,"yours":false}"#, 5).await;
    // The seat on air is told, and keeps its own desktop.
    teacher_page.until(r#""on":true,"yours":true}"#, 5).await;
    let current = s
        .admin_json(Method::GET, "/api/broadcast", None)
        .await
        .expect(200);
    assert_eq!(current["on_air"]["hostname"], "vm-2");

    // Ada's page opens its view: the allocator opens a view-only stream of the teacher's
    // VM and serves her page the updates it reads there.
    let watching = open_in_background(&s, "/broadcast/ws", ("cookie", ada.clone()));
    let open = teacher_vm.next_open().await;
    assert_eq!(open["view_only"], true, "a broadcast is view-only");
    let mut seat = teacher_vm
        .tunnel(&s, open["id"].as_str().expect("id"))
        .await;
    seat_handshake(&mut seat).await;
    let ws = watching.await.expect("join").expect("the broadcast socket");
    let mut ada_view = RfbViewer::handshake(ws).await;
    keyframe_request(&mut seat).await;
    seat.write_all(&full_update(7)).await.expect("update");
    assert_eq!(
        ada_view.read(full_update(7).len()).await,
        full_update(7),
        "the teacher's desktop at Ada's page"
    );

    // More of the room watches: still the one stream to the teacher's VM, and each new
    // page starts at the next full update.
    let mut room = Vec::new();
    for (host, email) in [("vm-3", "bob@example.org"), ("vm-4", "cy@example.org")] {
        let cookie = seated(&s, host, email).await;
        let ws = viewer(&s, "/broadcast/ws", &[("cookie", cookie)])
            .await
            .expect("the broadcast socket");
        room.push(RfbViewer::handshake(ws).await);
    }
    keyframe_request(&mut seat).await;
    seat.write_all(&full_update(8)).await.expect("update");
    for view in room.iter_mut().chain([&mut ada_view]) {
        assert_eq!(view.read(full_update(8).len()).await, full_update(8));
    }
    assert_eq!(s.app.desktops.broadcast_streams("vm-2"), 1);

    // A seat watches in two places at most: a third is refused at once.
    let _second = viewer(&s, "/broadcast/ws", &[("cookie", ada.clone())])
        .await
        .expect("a second place");
    let third = viewer(&s, "/broadcast/ws", &[("cookie", ada.clone())])
        .await
        .expect_err("a third place");
    assert_eq!(third.0, 409, "{third:?}");
    let mut ws = ada_view.ws;

    s.admin_json(Method::POST, "/api/broadcast/stop", None)
        .await
        .expect(200);
    page.until(r#""on":false,"yours":false}"#, 5).await;
    within(10, "the broadcast stream to end at the stop", async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;

    let started = audited(&s, "broadcast_start").await;
    assert!(
        started
            .iter()
            .any(|e| e.starts_with("admin vm-2") && e.contains("teacher@example.org")),
        "{started:?}"
    );
    assert_eq!(audited(&s, "broadcast_stop").await.len(), 1);

    // A broadcast ends with its seat: whoever sits there next is not shown to the room.
    s.admin_json(
        Method::POST,
        "/api/broadcast",
        Some(json!({"hostname": "vm-2"})),
    )
    .await
    .expect(200);
    page.until(r#""on":true,"yours":false}"#, 5).await;
    s.admin_json(Method::POST, "/api/vms/vm-2/release", Some(json!({})))
        .await
        .expect(200);
    page.until(r#""on":false,"yours":false}"#, 5).await;
    let current = s
        .admin_json(Method::GET, "/api/broadcast", None)
        .await
        .expect(200);
    assert_eq!(current["on_air"], Value::Null, "{current}");
}
