//! Browser desktops on the allocator's side, with this test as the VM's agent: browser
//! seats from the claim form, the agent's channel, tunnels and refusals, the relay's bytes
//! both ways, the instructor's notice, a seat change cutting its streams, and bad input.
//! (`agent::browser_desktop` runs the same with the real agent, Xvnc and Chromium.)

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, Answer, TestServer, mint_credential, within};

pub(crate) async fn browser_server(mode: &str) -> TestServer {
    let mode = mode.to_owned();
    TestServer::start_with(move |c| c.desktop.mode = mode).await
}

/// Claims with `form`; the answer and the claim cookie, if one was set.
pub(crate) async fn claim(s: &TestServer, form: &[(&str, &str)]) -> (Answer, Option<String>) {
    let response = s
        .client
        .post(s.url("/api/request_vm"))
        .form(form)
        .send()
        .await
        .expect("claim");
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    (Answer::read(response).await, cookie)
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The viewer's WebSocket at `path`, or the status (and body) of its refusal.
async fn viewer(
    s: &TestServer,
    path: &str,
    headers: &[(&str, String)],
) -> Result<Socket, (u16, String)> {
    let mut request = format!("ws://{}{path}", s.addr())
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("WebSocket {path}: {e}"),
    }
}

/// Opens `path`'s WebSocket with `header` in a task of its own (the opening waits for the
/// agent's answer, which the test gives meanwhile).
pub(crate) fn open_in_background(
    s: &TestServer,
    path: &str,
    header: (&'static str, String),
) -> tokio::task::JoinHandle<Result<Socket, tungstenite::Error>> {
    let url = format!("ws://{}{path}", s.addr());
    tokio::spawn(async move {
        let mut request = url.into_client_request().expect("request");
        request
            .headers_mut()
            .insert(header.0, header.1.parse().expect("header value"));
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(ws, _)| ws)
    })
}

/// The test playing the VM's agent: its open desktop channel.
pub(crate) struct FakeAgent {
    channel: reqwest::Response,
    host: String,
    credential: String,
    line: Vec<u8>,
}

impl FakeAgent {
    pub(crate) async fn connect(s: &TestServer, host: &str) -> FakeAgent {
        let credential = mint_credential(s, host).await;
        let channel = s
            .client
            .get(s.url("/api/desktop/channel"))
            .query(&[("hostname", host)])
            .bearer_auth(&credential)
            .send()
            .await
            .expect("open the channel");
        assert_eq!(channel.status(), 200);
        // The channel is registered once its handler ran: the headers came back.
        FakeAgent {
            channel,
            host: host.to_owned(),
            credential,
            line: Vec::new(),
        }
    }

    async fn refuse(&self, s: &TestServer, id: &str, reason: &str) -> u16 {
        s.client
            .post(s.url(&format!("/api/desktop/tunnel/{id}/refuse")))
            .bearer_auth(&self.credential)
            .json(&json!({"hostname": self.host, "reason": reason}))
            .send()
            .await
            .expect("refuse")
            .status()
            .as_u16()
    }

    /// The next open request (keep-alive lines skipped).
    pub(crate) async fn next_open(&mut self) -> Value {
        loop {
            if let Some(end) = self.line.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.line.drain(..=end).collect();
                if line.len() > 1 {
                    return serde_json::from_slice(&line).expect("a JSON line");
                }
                continue;
            }
            let chunk = within(30, "an open request", self.channel.chunk())
                .await
                .expect("channel readable")
                .expect("the channel stays open");
            self.line.extend_from_slice(&chunk);
        }
    }

    pub(crate) async fn tunnel(&self, s: &TestServer, id: &str) -> reqwest::Upgraded {
        let response = s
            .client
            .get(s.url(&format!("/api/desktop/tunnel/{id}")))
            .query(&[("hostname", &self.host)])
            .bearer_auth(&self.credential)
            .header("connection", "upgrade")
            .header("upgrade", "lablink-rfb")
            .send()
            .await
            .expect("dial the tunnel");
        assert_eq!(response.status(), 101);
        response.upgrade().await.expect("upgraded")
    }
}

pub(crate) async fn register_running(s: &TestServer, host: &str) {
    s.agent_post(
        "/api/vm-status",
        &json!({"hostname": host, "status": "running"}),
    )
    .await
    .expect(200);
}

async fn admin_post(s: &TestServer, path: &str) -> u16 {
    s.client
        .post(s.url(path))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .json(&json!({}))
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

fn basic() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN_USER}:{ADMIN_PASSWORD}"))
    )
}

#[tokio::test]
async fn a_browser_seat_needs_no_crd_code_and_its_agent_is_told() {
    let s = browser_server("browser").await;
    register_running(&s, "vm-1").await;
    let (answer, cookie) = claim(&s, &[("email", "ada@example.org")]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(cookie.is_some());
    assert!(answer.text.contains("/desktop"), "{}", answer.text);
    let vm = s.stored_vm("vm-1").await.expect("stored");
    assert_eq!(
        vm.assignment.expect("assigned").desktop,
        lablink::model::DesktopKind::Browser
    );
    let startup = s.vm_startup("vm-1").await.expect(200);
    assert_eq!(startup["desktop"], "browser");
    assert_eq!(startup["command"], "");
}

#[tokio::test]
async fn the_desktop_choice_is_checked_against_the_mode() {
    let crd = browser_server("crd").await;
    register_running(&crd, "vm-1").await;
    let (answer, _) = claim(
        &crd,
        &[("email", "ada@example.org"), ("desktop", "browser")],
    )
    .await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.text.contains("does not offer the browser desktop"),
        "{}",
        answer.text
    );
    let (answer, _) = claim(&crd, &[("email", "ada@example.org"), ("desktop", "vnc")]).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.text.contains("`desktop` must be `browser` or `crd`"),
        "{}",
        answer.text
    );

    let both = browser_server("both").await;
    register_running(&both, "vm-1").await;
    let page = both.get("/", crate::helpers::Auth::None).await;
    assert!(
        page.text.contains("name=\"desktop\" value=\"crd\""),
        "{}",
        page.text
    );
    let (answer, _) = claim(&both, &[("email", "ada@example.org"), ("desktop", "crd")]).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.text.contains("CRD command are required"),
        "{}",
        answer.text
    );
    let (answer, _) = claim(&both, &[("email", "ada@example.org")]).await;
    assert_eq!(answer.status, 200, "the browser is the default pick");
    assert_eq!(
        both.stored_vm("vm-1")
            .await
            .expect("stored")
            .assignment
            .expect("assigned")
            .desktop,
        lablink::model::DesktopKind::Browser
    );
}

#[tokio::test]
async fn the_relay_carries_bytes_both_ways_and_a_seat_change_cuts_it() {
    let s = browser_server("browser").await;
    register_running(&s, "vm-1").await;
    let (_, cookie) = claim(&s, &[("email", "ada@example.org")]).await;
    let cookie = cookie.expect("claim cookie");

    // No agent channel yet: the viewer is told, with 503.
    let refused = viewer(&s, "/desktop/ws", &[("cookie", cookie.clone())])
        .await
        .expect_err("refused");
    assert_eq!(refused.0, 503, "{refused:?}");
    assert!(refused.1.contains("not reachable yet"), "{refused:?}");

    let mut agent = FakeAgent::connect(&s, "vm-1").await;
    // The agent refuses: the viewer learns why.
    let waiting = open_in_background(&s, "/desktop/ws", ("cookie", cookie.clone()));
    let open = agent.next_open().await;
    assert_eq!(open["view_only"], false);
    let id = open["id"].as_str().expect("id").to_owned();
    assert_eq!(agent.refuse(&s, &id, "no VNC server here").await, 204);
    match waiting.await.expect("join").err() {
        Some(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("no VNC server here"), "{body}");
        }
        other => panic!("expected a 503 refusal, got {other:?}"),
    }

    // Accepted: bytes both ways.
    let opening = open_in_background(&s, "/desktop/ws", ("cookie", cookie.clone()));
    let open = agent.next_open().await;
    let mut tunnel = agent.tunnel(&s, open["id"].as_str().expect("id")).await;
    let mut ws = opening.await.expect("join").expect("the viewer's socket");
    tunnel.write_all(b"RFB 003.008\n").await.expect("write");
    let got = within(10, "the VM's bytes at the viewer", ws.next())
        .await
        .expect("message")
        .expect("ok");
    assert_eq!(got, Message::Binary(b"RFB 003.008\n".to_vec().into()));
    ws.send(Message::Binary(b"hello vm".to_vec().into()))
        .await
        .expect("send");
    let mut buf = [0u8; 8];
    within(
        10,
        "the viewer's bytes at the VM",
        tunnel.read_exact(&mut buf),
    )
    .await
    .expect("read");
    assert_eq!(&buf, b"hello vm");
    // The first delivered stream is when the seat's desktop answered (the event report).
    let seat = s.stored_vm("vm-1").await.and_then(|vm| vm.assignment);
    assert!(seat.is_some_and(|a| a.desktop_ready_at.is_some_and(|at| at >= a.assigned_at)));

    // The instructor's view is shown to the participant (the notice's events).
    let mut events = s
        .client
        .get(s.url("/desktop/events"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), 200);
    let mut seen = String::new();
    let mut wait_event = async |want: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !seen.contains(want) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {want} in {seen}"
            );
            if let Ok(Ok(Some(chunk))) =
                tokio::time::timeout(Duration::from_secs(1), events.chunk()).await
            {
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        }
        seen.clear();
    };
    wait_event("data: false").await;
    let peeking = open_in_background(&s, "/admin/desktop/vm-1/ws", ("authorization", basic()));
    let open = agent.next_open().await;
    assert_eq!(open["view_only"], true, "a peek is view-only");
    let _peek_tunnel = agent.tunnel(&s, open["id"].as_str().expect("id")).await;
    let peek = peeking
        .await
        .expect("join")
        .expect("the instructor's socket");
    wait_event("data: true").await;
    drop(peek);
    wait_event("data: false").await;

    // Releasing the seat ends the participant's stream at once.
    assert_eq!(admin_post(&s, "/api/vms/vm-1/release").await, 200);
    let ended = within(10, "the stream to end after the release", async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let () = ended;
    let refused = viewer(&s, "/desktop/ws", &[("cookie", cookie)])
        .await
        .expect_err("no seat any more");
    assert_eq!(refused.0, 403);
}

#[tokio::test]
async fn bad_desktop_requests_get_clear_errors() {
    let s = browser_server("browser").await;
    register_running(&s, "vm-1").await;
    // The channel and tunnels are the agents', each on its own credential.
    let no_token = s
        .client
        .get(s.url("/api/desktop/channel?hostname=vm-1"))
        .send()
        .await
        .expect("GET");
    assert_eq!(no_token.status(), 401);
    let shared = s.agent_get("/api/desktop/channel?hostname=vm-1").await;
    assert_eq!(shared.status, 403, "{}", shared.text);
    assert!(shared.text.contains("own credential"), "{}", shared.text);
    let credential = mint_credential(&s, "vm-1").await;
    let as_vm = |path: &str| s.client.get(s.url(path)).bearer_auth(&credential);
    let bad_host = as_vm("/api/desktop/channel?hostname=-bad-")
        .send()
        .await
        .expect("GET");
    assert_eq!(bad_host.status(), 400);
    let other_vm = as_vm("/api/desktop/channel?hostname=vm-2")
        .send()
        .await
        .expect("GET");
    assert_eq!(other_vm.status(), 403, "a VM opens only its own channel");
    let no_upgrade = Answer::read(
        as_vm("/api/desktop/tunnel/abc?hostname=vm-1")
            .send()
            .await
            .expect("GET"),
    )
    .await;
    no_upgrade.expect_error(
        400,
        "A tunnel needs `Connection: Upgrade` and `Upgrade: lablink-rfb`.",
    );
    let unknown = as_vm("/api/desktop/tunnel/abc?hostname=vm-1")
        .header("connection", "upgrade")
        .header("upgrade", "lablink-rfb")
        .send()
        .await
        .expect("GET");
    assert_eq!(unknown.status(), 404);
    let refuse = |reason: &'static str| {
        s.client
            .post(s.url("/api/desktop/tunnel/abc/refuse"))
            .bearer_auth(&credential)
            .json(&json!({"hostname": "vm-1", "reason": reason}))
            .send()
    };
    Answer::read(refuse(" ").await.expect("POST"))
        .await
        .expect_error(400, "reason is required.");
    assert_eq!(refuse("gone").await.expect("POST").status(), 404);

    // The viewer's side: a plain GET of the socket, no seat, another site.
    let plain = s.get("/desktop/ws", crate::helpers::Auth::None).await;
    assert_eq!(plain.status, 400);
    assert!(
        plain.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("open the desktop page instead"))
    );
    let page = s
        .client
        .get(s.url("/desktop"))
        .send()
        .await
        .expect("GET /desktop");
    assert_eq!(
        page.url().path(),
        "/my-vm",
        "no seat: the seat page explains"
    );
    let (_, cookie) = claim(&s, &[("email", "ada@example.org")]).await;
    let cookie = cookie.expect("cookie");
    let foreign = viewer(
        &s,
        "/desktop/ws",
        &[
            ("cookie", cookie),
            ("origin", "https://elsewhere.example".into()),
        ],
    )
    .await
    .expect_err("refused");
    assert_eq!(foreign.0, 403);

    // The instructor's side needs the admin, a real VM name and a known mode.
    let anonymous = s
        .get("/admin/desktop/vm-1", crate::helpers::Auth::None)
        .await;
    assert_ne!(anonymous.status, 200);
    let bad_mode = s
        .get(
            "/admin/desktop/vm-1?control=2",
            crate::helpers::Auth::admin(),
        )
        .await;
    assert_eq!(bad_mode.status, 400, "{}", bad_mode.text);
    assert!(bad_mode.text.contains("control"), "{}", bad_mode.text);
    let missing = s
        .get("/admin/desktop/vm-9", crate::helpers::Auth::admin())
        .await;
    assert_eq!(missing.status, 404);
    let page = s
        .get("/admin/desktop/vm-1", crate::helpers::Auth::admin())
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("data-view-only=\"true\""),
        "{}",
        page.text
    );
    assert!(page.text.contains("?control=1"), "{}", page.text);
}
