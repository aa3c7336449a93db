//! The waiting list: participants who find no VM free queue, first come first served, and
//! are seated as VMs free up; their browser's cookie then finds the seat.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_PASSWORD, ADMIN_USER, Answer, Auth, Claimed, TestServer, claim_presenting, crd_command,
    wait_for, within,
};

/// What the "Join the waitlist" button answers.
struct Joined {
    status: StatusCode,
    location: Option<String>,
    /// `name=value` of the claim cookie it set, if any.
    cookie: Option<String>,
    html: String,
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Posts the join form as the landing page's offer does; `cookie`: the browser's claim
/// cookie, if it has one.
async fn join_with(s: &TestServer, fields: &[(&str, &str)], cookie: Option<&str>) -> Joined {
    let mut req = crate::helpers::no_redirects()
        .post(s.url("/api/waitlist/join"))
        .form(fields);
    if let Some(cookie) = cookie {
        req = req.header(reqwest::header::COOKIE, cookie);
    }
    let response = req.send().await.expect("POST /api/waitlist/join");
    let location = header(&response, reqwest::header::LOCATION);
    let cookie = header(&response, reqwest::header::SET_COOKIE)
        .and_then(|v| v.split(';').next().map(str::to_owned));
    Joined {
        status: response.status(),
        location,
        cookie,
        html: response.text().await.expect("body"),
    }
}

async fn join(s: &TestServer, email: &str, code: &str) -> Joined {
    let command = crd_command(code);
    join_with(s, &[("email", email), ("crd_command", &command)], None).await
}

/// Joins and expects a place: the browser's cookie.
async fn queued(s: &TestServer, email: &str, code: &str) -> String {
    let joined = join(s, email, code).await;
    assert_eq!(joined.status, StatusCode::SEE_OTHER, "{}", joined.html);
    assert_eq!(joined.location.as_deref(), Some("/my-vm"));
    let cookie = joined.cookie.expect("joining sets the claim cookie");
    assert!(cookie.starts_with("lablink_claim="), "{cookie}");
    cookie
}

/// `GET /api/my-vm` as the browser holding `cookie`.
async fn seat_page(s: &TestServer, cookie: &str) -> String {
    s.client
        .get(s.url("/my-vm"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("GET /my-vm")
        .text()
        .await
        .expect("html")
}

fn waiting(position: u64, of: u64) -> Value {
    json!({
        "state": "waiting",
        "hostname": "",
        "last_seen_seconds_ago": null,
        "event": null,
        "saved_files": 0,
        "position": position,
        "waiting": of,
    })
}

/// Polls the browser's seat until it is ready (bounded); its hostname.
async fn seated(s: &TestServer, cookie: &str) -> String {
    wait_for(10, "the participant is seated", || async {
        let seat = s.my_vm(cookie).await;
        (seat["state"] == "ready").then(|| seat["hostname"].as_str().expect("host").to_owned())
    })
    .await
}

/// The instructor releases `host`'s seat and its agent reports the desktop reset: the VM
/// is free again.
async fn free_up(s: &TestServer, host: &str) {
    release(s, host).await;
    reset_done(s, host).await;
}

async fn release(s: &TestServer, host: &str) {
    let released = s
        .client
        .post(s.url(&format!("/api/vms/{host}/release")))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .json(&json!({}))
        .send()
        .await
        .expect("release");
    Answer::read(released).await.expect(200);
}

async fn reset_done(s: &TestServer, host: &str) {
    let done = s
        .agent_post("/api/vm-reset-done", &json!({ "hostname": host }))
        .await
        .expect(200);
    assert_eq!(done["available"], true, "{done}");
}

async fn queue_emails(s: &TestServer) -> Vec<String> {
    let list = s.get("/api/waitlist", Auth::admin()).await.expect(200);
    list["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["position"], i + 1, "{list}");
            e["email"].as_str().expect("email").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_full_pool_seats_the_queue_in_order() {
    let s = TestServer::start().await;
    within(60, "test", async {
        s.register_running("vm-1").await;
        let ada = s.claim("ada@example.org", &crd_command("4/0Ada")).await;
        assert_eq!(ada.hostname(), "vm-1");

        // No VM free: the answer offers the queue, with the fields the claim sent.
        let refused = s.claim("bob@example.org", &crd_command("4/0Bob")).await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            refused.html.contains(r#"action="/api/waitlist/join""#)
                && refused.html.contains("Join the waitlist")
                && refused.html.contains("4/0Bob"),
            "{}",
            refused.html
        );

        let bob = queued(&s, "bob@example.org", "4/0Bob").await;
        let cy = queued(&s, "Cy@Example.org", "4/0Cy").await;
        let dan = queued(&s, "dan@example.org", "4/0Dan").await;
        assert_eq!(s.my_vm(&bob).await, waiting(1, 3));
        assert_eq!(s.my_vm(&cy).await, waiting(2, 3));
        assert_eq!(s.my_vm(&dan).await, waiting(3, 3));
        let page = seat_page(&s, &cy).await;
        assert!(
            page.contains(r#"<strong id="position">2</strong>"#)
                && page.contains(r#"action="/api/waitlist/leave""#)
                && page.contains("Leave the queue"),
            "{page}"
        );
        assert_eq!(
            queue_emails(&s).await,
            ["bob@example.org", "cy@example.org", "dan@example.org"]
        );
        assert!(
            s.metrics_text()
                .await
                .contains("lablink_waitlist_length 3\n")
        );

        // vm-1 is released: nobody gets it before its desktop is reset, then the first
        // in line does.
        release(&s, "vm-1").await;
        let poll = s.spawn_poll("vm-1");
        wait_for(10, "vm-1's agent parks", || async {
            (s.app.waiters.parked() == 1).then_some(())
        })
        .await;
        assert_eq!(s.my_vm(&bob).await, waiting(1, 3));
        reset_done(&s, "vm-1").await;
        assert_eq!(seated(&s, &bob).await, "vm-1");
        let (woken, _) = poll.await.expect("poll");
        let woken = woken.expect(200);
        assert_eq!(woken["command"], crd_command("4/0Bob"), "{woken}");
        let stored = s
            .stored_vm("vm-1")
            .await
            .expect("vm")
            .assignment
            .expect("a");
        assert_eq!(stored.email, "bob@example.org");
        assert_eq!(woken["pin"], stored.pin.as_str());
        // Bob's page shows the VM and its PIN; the others moved up.
        let page = seat_page(&s, &bob).await;
        assert!(
            page.contains(&format!(r#"<dd id="pin">{}</dd>"#, stored.pin)),
            "{page}"
        );
        assert_eq!(s.my_vm(&cy).await, waiting(1, 2));
        assert_eq!(s.my_vm(&dan).await, waiting(2, 2));
        assert_eq!(
            s.my_vm(ada.cookie.as_deref().expect("c")).await["state"],
            "released"
        );
        let text = s.metrics_text().await;
        assert!(text.contains("lablink_waitlist_length 2\n"), "{text}");
        assert!(
            text.contains("lablink_waitlist_wait_seconds_count 1\n"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_new_claim_does_not_pass_those_waiting() {
    let s = TestServer::start().await;
    within(60, "test", async {
        s.register_running("vm-1").await;
        s.claim("ada@example.org", &crd_command("4/0Ada")).await;
        let bob = queued(&s, "bob@example.org", "4/0Bob").await;

        // vm-2 comes up with an unhealthy GPU, then recovers. The seating job hears of a
        // recovery only at its slow tick, so for now vm-2 is free while Bob waits.
        let gpu = |health: &'static str| json!({"hostname": "vm-2", "gpu_status": health});
        s.report_status("vm-2", "initializing").await;
        s.agent_post("/api/gpu_health", &gpu("Unhealthy"))
            .await
            .expect(200);
        s.register_running("vm-2").await;
        s.agent_post("/api/gpu_health", &gpu("Healthy"))
            .await
            .expect(200);
        assert_eq!(s.free_count().await, 1);
        assert_eq!(s.my_vm(&bob).await, waiting(1, 1));
        // A newcomer does not take it ahead of Bob: none free, and the queue offered.
        let eve = s.claim("eve@example.org", &crd_command("4/0Eve")).await;
        assert_eq!(eve.status, StatusCode::SERVICE_UNAVAILABLE, "{}", eve.html);
        assert!(eve.html.contains("Join the waitlist"), "{}", eve.html);
        assert_eq!(s.free_count().await, 1);
        // vm-2 reports running again: the job is woken and Bob gets it.
        s.register_running("vm-2").await;
        assert_eq!(seated(&s, &bob).await, "vm-2");

        // Nobody waits any more: claims take free VMs again.
        s.register_running("vm-3").await;
        let eve = s.claim("eve@example.org", &crd_command("4/0Eve")).await;
        assert_eq!(eve.status, StatusCode::OK, "{}", eve.html);
        assert_eq!(eve.hostname(), "vm-3");
    })
    .await;
}

#[tokio::test]
async fn one_place_per_email_a_bounded_queue_and_leaving_it() {
    let s = TestServer::start_with(|c| {
        c.waitlist.max_entries = 2;
        c.access.join_code = "sesame-42".into();
    })
    .await;
    within(60, "test", async {
        let command = crd_command("4/0Wait");
        let fields = |email: &'static str, code: &'static str| {
            [
                ("email", email),
                ("crd_command", command.as_str()),
                ("join_code", code),
            ]
        };
        // The claim's checks: a wrong join code joins nothing.
        let wrong = join_with(&s, &fields("bob@example.org", "guess"), None).await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.html);
        assert!(wrong.html.contains("join code"), "{}", wrong.html);
        assert!(wrong.cookie.is_none());
        let bad = join_with(&s, &fields("not-an-address", "sesame-42"), None).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.html);
        assert!(queue_emails(&s).await.is_empty());

        let bob = join_with(&s, &fields("bob@example.org", "sesame-42"), None).await;
        assert_eq!(bob.status, StatusCode::SEE_OTHER, "{}", bob.html);
        let bob = bob.cookie.expect("cookie");
        // Again from the same browser: the same place, no new proof.
        let again = join_with(&s, &fields("BOB@example.org", "sesame-42"), Some(&bob)).await;
        assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.html);
        assert!(again.cookie.is_none());
        assert_eq!(s.my_vm(&bob).await, waiting(1, 1));
        // From another browser: told so, nothing changes.
        let other = join_with(&s, &fields("bob@example.org", "sesame-42"), None).await;
        assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.html);
        assert!(other.html.contains("another browser"), "{}", other.html);
        assert!(other.cookie.is_none());

        let cy = join_with(&s, &fields("cy@example.org", "sesame-42"), None).await;
        let cy = cy.cookie.expect("cookie");
        let full = join_with(&s, &fields("dan@example.org", "sesame-42"), None).await;
        assert_eq!(
            full.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            full.html
        );
        assert!(full.html.contains("queue is full"), "{}", full.html);
        assert_eq!(
            queue_emails(&s).await,
            ["bob@example.org", "cy@example.org"]
        );

        // Leaving needs this browser's proof; then the place is free and the cookie gone.
        let email = bob.split_once('.').expect("token.email").1;
        let forged = crate::helpers::no_redirects()
            .post(s.url("/api/waitlist/leave"))
            .header(
                reqwest::header::COOKIE,
                format!("lablink_claim=guess.{email}"),
            )
            .send()
            .await
            .expect("POST");
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        let cross_site = crate::helpers::no_redirects()
            .post(s.url("/api/waitlist/leave"))
            .header(reqwest::header::COOKIE, bob.as_str())
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .expect("POST");
        assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
        // Another site's page cannot queue a browser either.
        let queued_from_elsewhere = crate::helpers::no_redirects()
            .post(s.url("/api/waitlist/join"))
            .header("sec-fetch-site", "cross-site")
            .form(&[
                ("email", "mallory@example.org"),
                ("crd_command", &crd_command("4/0M")),
            ])
            .send()
            .await
            .expect("POST");
        assert_eq!(queued_from_elsewhere.status(), StatusCode::FORBIDDEN);
        let left = crate::helpers::no_redirects()
            .post(s.url("/api/waitlist/leave"))
            .header(reqwest::header::COOKIE, bob.as_str())
            .send()
            .await
            .expect("POST");
        assert_eq!(left.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            header(&left, reqwest::header::LOCATION).as_deref(),
            Some("/")
        );
        let cleared = header(&left, reqwest::header::SET_COOKIE).expect("cookie cleared");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
        assert_eq!(s.my_vm(&cy).await, waiting(1, 1));
        let dan = join_with(&s, &fields("dan@example.org", "sesame-42"), None).await;
        assert_eq!(s.my_vm(&dan.cookie.expect("cookie")).await, waiting(2, 2));
        assert_eq!(
            queue_emails(&s).await,
            ["cy@example.org", "dan@example.org"]
        );
    })
    .await;
}

#[tokio::test]
async fn without_the_waitlist_nothing_is_offered_and_joining_is_refused() {
    let s = TestServer::start_with(|c| c.waitlist.enabled = false).await;
    within(30, "test", async {
        let refused = s.claim("bob@example.org", &crd_command("4/0Bob")).await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !refused.html.contains("/api/waitlist/join"),
            "{}",
            refused.html
        );
        let joined = join(&s, "bob@example.org", "4/0Bob").await;
        assert_eq!(joined.status, StatusCode::FORBIDDEN, "{}", joined.html);
        assert!(queue_emails(&s).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_queue_survives_a_restart_and_is_seated_after_it() {
    let s = TestServer::start().await;
    let (s, bob, cy) = within(30, "first run", async {
        s.register_running("vm-1").await;
        s.claim("ada@example.org", &crd_command("4/0Ada")).await;
        let bob = queued(&s, "bob@example.org", "4/0Bob").await;
        let cy = queued(&s, "cy@example.org", "4/0Cy").await;
        (s, bob, cy)
    })
    .await;
    let s = within(30, "restart", s.restart(|_| {})).await;
    within(30, "second run", async {
        assert_eq!(s.my_vm(&bob).await, waiting(1, 2));
        assert_eq!(s.my_vm(&cy).await, waiting(2, 2));
        free_up(&s, "vm-1").await;
        assert_eq!(seated(&s, &bob).await, "vm-1");
        assert_eq!(s.my_vm(&cy).await, waiting(1, 1));
    })
    .await;
}

#[tokio::test]
async fn a_seat_from_the_queue_takes_a_fresh_crd_code() {
    let s = TestServer::start().await;
    within(60, "test", async {
        s.register_running("vm-1").await;
        s.claim("ada@example.org", &crd_command("4/0Ada")).await;
        let bob = queued(&s, "bob@example.org", "4/0Stale").await;
        free_up(&s, "vm-1").await;
        assert_eq!(seated(&s, &bob).await, "vm-1");
        let first = s.vm_startup("vm-1").await.expect(200);
        assert_eq!(first["command"], crd_command("4/0Stale"));
        let page = seat_page(&s, &bob).await;
        assert!(page.contains("get a fresh command"), "{page}");

        // The code expired while Bob waited: from the same browser, the start page's form
        // with a fresh one passes it to the same VM, with the same PIN.
        let fresh = claim_presenting(
            &s.client,
            &s.base,
            "bob@example.org",
            &crd_command("4/0Fresh"),
            Some(&bob),
        )
        .await;
        assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.html);
        assert_eq!(fresh.hostname(), "vm-1");
        assert_eq!(fresh.pin(), first["pin"].as_str().expect("pin"));
        assert!(
            fresh.html.contains("new Chrome Remote Desktop code"),
            "{}",
            fresh.html
        );
        let again = s.vm_startup("vm-1").await.expect(200);
        assert_eq!(again["command"], crd_command("4/0Fresh"));
        assert_eq!(again["pin"], first["pin"]);
    })
    .await;
}

#[tokio::test]
async fn the_admin_sees_the_queue_and_removes_from_it() {
    let s = TestServer::start().await;
    within(30, "test", async {
        let bob = queued(&s, "bob@example.org", "4/0Bob").await;
        let cy = queued(&s, "cy@example.org", "4/0Cy").await;
        let list = s.get("/api/waitlist", Auth::admin()).await.expect(200);
        assert_eq!(list["waiting"], 2);
        assert_eq!(list["enabled"], true);
        assert_eq!(list["max_entries"], 1000);
        assert_eq!(list["entries"][0]["desktop"], "crd");
        assert!(list["entries"][0]["joined_at"].is_string(), "{list}");
        assert_eq!(
            s.get("/api/waitlist", Auth::None).await.status,
            StatusCode::UNAUTHORIZED
        );
        let page = s.get("/admin/waitlist", Auth::admin()).await;
        assert_eq!(page.status, StatusCode::OK);
        let (b, c) = (
            page.text.find("bob@example.org").expect("bob listed"),
            page.text.find("cy@example.org").expect("cy listed"),
        );
        assert!(b < c, "in order: {}", page.text);

        let removed = remove_from_queue(&s, "bob@example.org").await;
        assert_eq!(removed.status(), StatusCode::SEE_OTHER);
        assert_eq!(queue_emails(&s).await, ["cy@example.org"]);
        assert_eq!(s.my_vm(&cy).await, waiting(1, 1));
        assert_eq!(s.my_vm(&bob).await["state"], "released");
        let audit = s.recent_audit(10).await;
        assert!(
            audit
                .iter()
                .any(|e| e.action == "waitlist remove" && e.detail == "bob@example.org"),
            "{audit:?}"
        );
        let again = remove_from_queue(&s, "bob@example.org").await;
        assert_eq!(again.status(), StatusCode::NOT_FOUND);
    })
    .await;
}

/// A joiner who finds a VM free after all (and nobody waiting) is simply seated.
#[tokio::test]
async fn joining_with_a_vm_free_is_a_claim() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        let joined = join(&s, "bob@example.org", "4/0Bob").await;
        assert_eq!(joined.status, StatusCode::OK, "{}", joined.html);
        let claimed = Claimed {
            status: joined.status,
            html: joined.html,
            cookie: joined.cookie,
        };
        assert_eq!(claimed.hostname(), "vm-1");
        claimed.pin();
        assert_eq!(
            s.my_vm(claimed.cookie.as_deref().expect("cookie")).await["state"],
            "ready"
        );
    })
    .await;
}

/// The queue in headless Chromium: two participants join from the "no VM free" answer;
/// the first one's page turns into their seat when a VM frees up, the second's number
/// moves up in place (no reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
async fn the_queue_in_real_browsers() {
    use crate::browser::{
        browser, click, fill, require_browser, shoot, start_driver, wait_css, wait_text,
    };
    require_browser();
    let s = TestServer::start().await;
    s.register_running("vm-1").await;
    s.claim("ada@example.org", &crd_command("4/0Ada")).await;
    let driver = start_driver().await;
    let bob = browser(&driver, 1000, 800).await;
    let cy = browser(&driver, 1000, 800).await;
    for (client, email) in [(&bob, "bob@example.org"), (&cy, "cy@example.org")] {
        client.goto(&s.url("/")).await.expect("open /");
        fill(client, "#email", email).await;
        fill(client, "#crd_command", &crd_command("4/0Queued")).await;
        click(
            client,
            r#"form[action="/api/request_vm"] button[type=submit]"#,
        )
        .await;
        click(client, "#waitlist-offer button[type=submit]").await;
        wait_css(client, "#position").await;
    }
    wait_text(&bob, "#position", "1").await;
    wait_text(&cy, "#position", "2").await;
    shoot(&cy, "waitlist-queued").await;
    cy.execute("window.__lablink_marker = 42; return true;", vec![])
        .await
        .expect("mark the page");

    free_up(&s, "vm-1").await;
    wait_text(&bob, "#hostname", "vm-1").await;
    wait_css(&bob, "#pin").await;
    shoot(&bob, "waitlist-seated").await;
    wait_text(&cy, "#position", "1").await;
    wait_text(&cy, "#waiting", "1").await;
    let marker = cy
        .execute("return window.__lablink_marker || null;", vec![])
        .await
        .expect("read the marker");
    assert_eq!(marker, json!(42), "the queue page was reloaded");
    bob.close().await.expect("close");
    cy.close().await.expect("close");
}

/// The admin page's "remove" button for `email`.
async fn remove_from_queue(s: &TestServer, email: &str) -> reqwest::Response {
    crate::helpers::no_redirects()
        .post(s.url("/admin/waitlist/remove"))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .form(&[("email", email)])
        .send()
        .await
        .expect("POST")
}
