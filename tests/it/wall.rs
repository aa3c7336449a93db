//! The seat wall on the allocator's side, with this test as the VMs' agents: the agents'
//! thumbnail route (auth, content type, size, seats without a browser desktop), the
//! console's page and picture route (auth, ETag), the live stream, and pictures dropped
//! when the seat changes hands or the VM goes. (`agent::instructor_console` runs the wall
//! with real agents, Xvnc and Chromium.)

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, Answer, Auth, TestServer, mint_credential};

async fn browser_server() -> TestServer {
    TestServer::start_with(|c| {
        c.desktop.mode = "browser".into();
        c.desktop.thumbnail_seconds = 7;
    })
    .await
}

/// `host` running, and `email` seated on it (the only free VM).
async fn seat(s: &TestServer, host: &str, email: &str) {
    s.register_running(host).await;
    let claimed = s.claim(email, "").await;
    assert_eq!(claimed.status, 200, "{}", claimed.html);
}

/// A real JPEG of one colour, as the agent makes them.
fn picture(rgb: [u8; 3]) -> Vec<u8> {
    let screen = lablink::rfb::Screen {
        width: 32,
        height: 18,
        rgb: rgb.repeat(32 * 18),
    };
    lablink::agent::thumbnail::jpeg(&screen).expect("jpeg")
}

async fn put(
    s: &TestServer,
    host: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut req = s
        .client
        .put(s.url("/api/desktop/thumbnail"))
        .query(&[("hostname", host)])
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    Answer::read(req.send().await.expect("PUT")).await
}

/// The picture as the console gets it: status, ETag, Cache-Control and bytes.
async fn fetch(
    s: &TestServer,
    host: &str,
    etag: Option<&str>,
) -> (StatusCode, Option<String>, String, Vec<u8>) {
    let mut req = s
        .client
        .get(s.url(&format!("/admin/wall/{host}/thumbnail")))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD));
    if let Some(etag) = etag {
        req = req.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    let response = req.send().await.expect("GET");
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (etag, cache) = (
        header(reqwest::header::ETAG),
        header(reqwest::header::CACHE_CONTROL).unwrap_or_default(),
    );
    let status = response.status();
    let bytes = response.bytes().await.expect("body").to_vec();
    (status, etag, cache, bytes)
}

/// `host`'s picture, sent with its own credential (browser desktops take no other).
async fn put_own(s: &TestServer, host: &str, body: Vec<u8>) -> Answer {
    let own = mint_credential(s, host).await;
    put(s, host, Some(&own), "image/jpeg", body).await
}

/// The wall's live stream, signed in.
async fn wall_events(s: &TestServer) -> Events {
    let stream = s
        .client
        .get(s.url("/admin/wall/events"))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    Events(stream, String::new())
}

async fn admin_post(s: &TestServer, path: &str) -> Answer {
    let r = s
        .client
        .post(s.url(path))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .json(&json!({}))
        .send()
        .await
        .expect("POST");
    Answer::read(r).await
}

#[tokio::test]
async fn the_agents_route_checks_who_sends_what() {
    let s = browser_server().await;
    seat(&s, "vm-1", "ada@example.org").await;
    let token = mint_credential(&s, "vm-1").await;
    let jpeg = picture([200, 10, 10]);

    put(&s, "vm-1", None, "image/jpeg", jpeg.clone())
        .await
        .expect(401);
    put(
        &s,
        "vm-1",
        Some("not-the-token"),
        "image/jpeg",
        jpeg.clone(),
    )
    .await
    .expect(401);
    // A VM's own credential cannot send for another VM.
    s.register_running("vm-2").await;
    let other = mint_credential(&s, "vm-2").await;
    put(&s, "vm-1", Some(&other), "image/jpeg", jpeg.clone())
        .await
        .expect(403);

    let wrong_type = put(&s, "vm-1", Some(&token), "image/png", jpeg.clone()).await;
    wrong_type.expect_error(415, "Send the thumbnail with Content-Type: image/jpeg.");
    let not_jpeg = put(&s, "vm-1", Some(&token), "image/jpeg", b"GIF89a".to_vec()).await;
    not_jpeg.expect_error(400, "The body is not a JPEG (it must start with FF D8 FF).");
    let mut huge = jpeg.clone();
    huge.resize(lablink::pool::thumbnails::MAX_BYTES_PER_SEAT + 1, 0);
    put(&s, "vm-1", Some(&token), "image/jpeg", huge)
        .await
        .expect(413);
    put(&s, "", Some(&token), "image/jpeg", jpeg.clone())
        .await
        .expect_error(400, "hostname is required.");
    // A VM nobody sits at has no seat to show; an unknown one is not found.
    put(&s, "vm-2", Some(&other), "image/jpeg", jpeg.clone())
        .await
        .expect_error(
            409,
            "vm-2 has no participant on a browser desktop: there is no seat to show.",
        );
    let unknown = put(&s, "vm-9", Some(&token), "image/jpeg", jpeg.clone()).await;
    assert_eq!(unknown.status, 403, "vm-1's credential is not vm-9's");

    // The agents' shared token could send any VM's picture: only the VM's own credential.
    put(&s, "vm-1", Some(s.token()), "image/jpeg", jpeg.clone())
        .await
        .expect(403);
    let kept = put(&s, "vm-1", Some(&token), "image/jpeg", jpeg).await;
    assert_eq!(kept.expect(200), json!({"thumbnail_seconds": 7}));
}

#[tokio::test]
async fn a_chrome_remote_desktop_seat_has_no_picture() {
    let s = TestServer::start_with(|c| c.desktop.mode = "crd".into()).await;
    s.register_running("vm-1").await;
    let claimed = s
        .claim("ada@example.org", &crate::helpers::crd_command("4/abc"))
        .await;
    assert_eq!(claimed.status, 200, "{}", claimed.html);
    put_own(&s, "vm-1", picture([1, 2, 3])).await.expect(409);
    let page = s.get("/admin/wall", Auth::admin()).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Chrome Remote Desktop"), "{}", page.text);
    assert!(!page.text.contains("/thumbnail?v="), "{}", page.text);
}

#[tokio::test]
async fn the_console_gets_the_picture_with_an_etag_and_only_signed_in() {
    let s = browser_server().await;
    seat(&s, "vm-1", "ada@example.org").await;
    let (status, ..) = fetch(&s, "vm-1", None).await;
    assert_eq!(status, 404, "no picture yet");
    let page = s.get("/admin/wall", Auth::admin()).await;
    assert!(page.text.contains("no picture yet"), "{}", page.text);

    let red = picture([220, 20, 20]);
    put_own(&s, "vm-1", red.clone()).await.expect(200);
    let (status, etag, cache, bytes) = fetch(&s, "vm-1", None).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, red);
    assert_eq!(cache, "private, no-cache");
    let etag = etag.expect("an ETag");
    let (status, again, _, bytes) = fetch(&s, "vm-1", Some(&etag)).await;
    assert_eq!(status, 304);
    assert!(bytes.is_empty());
    assert_eq!(again.as_deref(), Some(etag.as_str()));

    let blue = picture([20, 20, 220]);
    put_own(&s, "vm-1", blue.clone()).await.expect(200);
    let (status, newer, _, bytes) = fetch(&s, "vm-1", Some(&etag)).await;
    assert_eq!(status, 200, "a new picture is sent again");
    assert_eq!(bytes, blue);
    assert_ne!(newer.as_deref(), Some(etag.as_str()));

    let page = s.get("/admin/wall", Auth::admin()).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("/admin/wall/vm-1/thumbnail?v="),
        "{}",
        page.text
    );
    assert!(page.text.contains("ada@example.org"), "{}", page.text);
    assert!(
        page.text.contains("href=\"/admin/desktop/vm-1\""),
        "{}",
        page.text
    );
    assert!(
        page.text.contains("href=\"/admin/wall\""),
        "in the console's nav"
    );

    // Neither the page, the picture nor the stream without signing in; nor for an agent.
    for path in [
        "/admin/wall",
        "/admin/wall/vm-1/thumbnail",
        "/admin/wall/events",
    ] {
        for auth in [Auth::None, Auth::Bearer(s.token())] {
            let answer = s.get(path, auth).await;
            assert!(
                answer.status == 401 || answer.status.is_redirection(),
                "{path}: {}",
                answer.status
            );
            assert!(!answer.text.contains("thumbnail?v="), "{path}");
        }
    }
    s.get("/admin/wall/not%20a%20host/thumbnail", Auth::admin())
        .await
        .expect(400);

    // A read-only API token sees the wall, not participants' screens.
    let monitor = s
        .admin_json(
            reqwest::Method::POST,
            "/api/admin-tokens",
            Some(json!({"name": "monitor", "scope": "read_only"})),
        )
        .await
        .expect(201);
    let token = monitor["token"].as_str().expect("token");
    let refused = s
        .get("/admin/wall/vm-1/thumbnail", Auth::Bearer(token))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("read_only scope"), "{}", refused.text);
}

#[tokio::test]
async fn a_picture_goes_when_the_seat_changes_hands_or_the_vm_goes() {
    let s = browser_server().await;
    seat(&s, "vm-1", "ada@example.org").await;
    put_own(&s, "vm-1", picture([9, 9, 9])).await.expect(200);
    assert_eq!(fetch(&s, "vm-1", None).await.0, 200);

    admin_post(&s, "/api/vms/vm-1/release").await.expect(200);
    assert_eq!(fetch(&s, "vm-1", None).await.0, 404, "released: gone");
    let page = s.get("/admin/wall", Auth::admin()).await;
    assert!(!page.text.contains("thumbnail?v="), "{}", page.text);

    // The next participant; a picture of the last seat arriving late is not theirs.
    s.agent_post(
        "/api/vm-reset-done",
        &json!({"hostname": "vm-1", "reset_id": 1}),
    )
    .await;
    seat(&s, "vm-1", "bob@example.org").await;
    assert_eq!(fetch(&s, "vm-1", None).await.0, 404);
    put_own(&s, "vm-1", picture([7, 7, 7])).await.expect(200);
    assert_eq!(fetch(&s, "vm-1", None).await.0, 200);

    admin_post(&s, "/api/vms/vm-1/revoke").await.expect(200);
    assert_eq!(fetch(&s, "vm-1", None).await.0, 404, "revoked: gone");
    let page = s.get("/admin/wall", Auth::admin()).await;
    assert!(!page.text.contains("tile-vm-1"), "{}", page.text);
}

#[tokio::test]
async fn the_live_stream_sends_a_tile_when_its_picture_changes() {
    let s = browser_server().await;
    seat(&s, "vm-1", "ada@example.org").await;
    s.register_running("vm-2").await;
    let mut stream = wall_events(&s).await;
    let first = stream.until("id=\"tile-vm-2\"").await;
    assert!(first.contains("event: grid"), "{first}");

    put_own(&s, "vm-1", picture([5, 5, 5])).await.expect(200);
    let update = stream.until("/admin/wall/vm-1/thumbnail?v=").await;
    assert!(update.contains("event: tile-vm-1"), "{update}");
    assert!(
        !update.contains("event: tile-vm-2"),
        "only the changed tile: {update}"
    );
}

/// A raised hand marks its tile live (the wall sorts raised hands first) and ends with
/// the seat.
#[tokio::test]
async fn a_raised_hand_marks_its_tile_live() {
    let s = browser_server().await;
    s.register_running("vm-1").await;
    let claimed = s.claim("ada@example.org", "").await;
    let cookie = claimed.cookie.expect("the claim cookie");
    let mut stream = wall_events(&s).await;
    let first = stream.until("id=\"tile-vm-1\"").await;
    assert!(!first.contains("Needs help"), "{first}");

    let raised = crate::helpers::no_redirects()
        .post(s.url("/api/my-vm/hand"))
        .header("cookie", &cookie)
        .form(&[("back", "/desktop")])
        .send()
        .await
        .expect("raise");
    assert_eq!(raised.status(), 303);
    let update = stream.until("Needs help").await;
    assert!(update.contains("event: tile-vm-1"), "{update}");
    assert!(
        update.contains(r#"data-hand="0""#) || update.contains(r#"data-hand="1""#),
        "{update}"
    );

    admin_post(&s, "/api/vms/vm-1/release").await;
    let update = stream.until("data-hand=\"-1\"").await;
    assert!(update.contains("event: tile-vm-1"), "{update}");
}

/// An event stream read as it comes.
struct Events(reqwest::Response, String);

impl Events {
    /// What arrived until `want` (from where the last call stopped).
    async fn until(&mut self, want: &str) -> String {
        let read = crate::helpers::within(10, want, async {
            while !self.1.contains(want) {
                let chunk = self.0.chunk().await.expect("stream").expect("open");
                self.1.push_str(&String::from_utf8_lossy(&chunk));
            }
        });
        read.await;
        let at = self.1.find(want).expect("found") + want.len();
        let upto = self.1[..at].to_owned();
        self.1 = self.1[at..].to_owned();
        upto
    }
}
