//! The workshop as an event, on a controllable clock with the local provider: pre-warm
//! timing, replacement of a VM that dies, countdown marks pushed to the participant, the
//! hard stop, and the API's checks.

use std::sync::Arc;

use chrono::{Duration, DurationRound, Utc};
use lablink::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Auth, TestServer, crd_command, wait_for, within};

async fn event(s: &TestServer) -> Value {
    s.admin_json(Method::GET, "/api/event", None)
        .await
        .expect(200)
}

/// Runs started by the event, oldest first.
async fn event_runs(s: &TestServer) -> Vec<Value> {
    let runs = s.get("/api/runs", Auth::admin()).await.expect(200);
    let mut mine: Vec<Value> = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["requested_by"] == "event:Rehearsal day")
        .cloned()
        .collect();
    mine.reverse();
    mine
}

fn local(c: &mut lablink::config::Config, software: &str) {
    c.provision.provider = "local".into();
    c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
    c.machine.software = software.into();
    c.server.heartbeat_seconds = 1;
    c.server.stale_after_heartbeats = 2;
    c.provision.auto_reboot = false;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_prewarms_replaces_counts_down_and_stops_hard() {
    // Whole minutes, so the marks fall on the times the test moves the clock to.
    let t0 = Utc::now()
        .duration_trunc(Duration::minutes(1))
        .expect("minute");
    let clock = Arc::new(ManualClock::starting_at(t0));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_on_with_clock(dir.path(), "127.0.0.1:0", clock.clone(), |c| {
        local(c, "eventday")
    })
    .await;
    let start = t0 + Duration::hours(2);
    let end = start + Duration::hours(2);
    within(240, "the event", async {
        let created = s
            .admin_json(
                Method::POST,
                "/api/event",
                Some(json!({
                    "name": "Rehearsal day",
                    "start": start.to_rfc3339(),
                    "end": end.to_rfc3339(),
                    "seats": 2,
                    "spare_percent": 50,
                    "prewarm_minutes": 60,
                    "warn_minutes": "30,10,2",
                })),
            )
            .await
            .expect(201);
        assert_eq!(created["phase"], "planned");
        assert_eq!(created["target_vms"], 3);

        // A minute before the pre-warm nothing is launched (the job looks twice a second).
        clock.advance(Duration::minutes(59));
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert!(event_runs(&s).await.is_empty());
        assert_eq!(event(&s).await["phase"], "planned");

        // At the pre-warm: seats plus spares, in one launch.
        clock.advance(Duration::minutes(1));
        let prewarm = wait_for(20, "the pre-warm launch", || async {
            event_runs(&s).await.into_iter().next()
        })
        .await;
        assert_eq!(prewarm["action"], "launch");
        assert_eq!(prewarm["count"], 3);
        wait_for(60, "three VMs free", || async {
            (s.free_count().await == 3).then_some(())
        })
        .await;
        assert_eq!(event(&s).await["phase"], "warming");

        // Participants may claim once VMs are up; their page carries the event.
        let claimed = s.claim("ada@example.org", &crd_command("4/ada-code")).await;
        assert_eq!(claimed.status, 200, "{}", claimed.html);
        let cookie = claimed.cookie.clone().expect("claim cookie");
        let seat = s.my_vm(&cookie).await;
        assert_eq!(seat["event"]["name"], "Rehearsal day");
        assert_eq!(seat["event"]["phase"], "warming");
        assert_eq!(seat["event"]["warning"], Value::Null);

        // A free VM dies (its agent stops): the event launches a replacement.
        let victim = {
            let pool = crate::helpers::pool_view(&s).await;
            pool.into_iter()
                .find(|(_, vm)| vm["participant"].is_null() && vm["status"] == "running")
                .map(|(host, _)| host)
                .expect("a free VM")
        };
        let pid = agent_pid(&s, &victim).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the VM's agent");
        let replacement = wait_for(60, "a replacement launch", || async {
            event_runs(&s).await.into_iter().nth(1)
        })
        .await;
        assert_eq!(replacement["count"], 1);
        wait_for(10, "the replacement recorded", || async {
            (event(&s).await["replaced"] == 1).then_some(())
        })
        .await;

        // The countdown: 30 minutes before the end the first mark reaches the page.
        clock.advance(Duration::hours(2) + Duration::minutes(30));
        let warned = wait_for(20, "the 30-minute warning", || async {
            let seat = s.my_vm(&cookie).await;
            (seat["event"]["warning"]["minutes"] == 30).then_some(seat)
        })
        .await;
        assert_eq!(warned["event"]["phase"], "open");
        assert!(
            warned["event"]["warning"]["text"]
                .as_str()
                .expect("text")
                .contains("30 minutes"),
            "{warned}"
        );
        // The allocator was "away" past the 10-minute mark: only the latest mark counts.
        clock.advance(Duration::minutes(29));
        wait_for(20, "the 2-minute warning", || async {
            let seat = s.my_vm(&cookie).await;
            (seat["event"]["warning"]["minutes"] == 2).then_some(())
        })
        .await;
        assert_eq!(event(&s).await["marks_sent"], json!([30, 10, 2]));

        // The pool is full: two more take the free seats, a fourth waits in the queue.
        for who in ["bob", "cy"] {
            let c = s
                .claim(
                    &format!("{who}@example.org"),
                    &crd_command(&format!("4/{who}")),
                )
                .await;
            assert_eq!(c.status, 200, "{}", c.html);
        }
        let queued = s
            .client
            .post(s.url("/api/waitlist/join"))
            .form(&[
                ("email", "dan@example.org"),
                ("crd_command", &crd_command("4/dan")),
            ])
            .send()
            .await
            .expect("join the waitlist");
        assert!(queued.status().is_success(), "{}", queued.status());
        assert_eq!(queue_length(&s).await, 1);

        // Ada saved her work on the desktop: the hard stop rescues it before destroying.
        let ada_vm = claimed.hostname();
        let desktop = dir.path().join("local-vms").join(&ada_vm).join("Desktop");
        std::fs::create_dir_all(desktop.join("session")).expect("desktop folder");
        std::fs::write(desktop.join("session/labels.slp"), b"ada's labels").expect("write work");

        // The end: one destroy run, then the event has ended and claims are refused.
        clock.advance(Duration::minutes(1));
        let ended = wait_for(60, "the hard stop", || async {
            let e = event(&s).await;
            (e["phase"] == "ended").then_some(e)
        })
        .await;
        let stop = event_runs(&s)
            .await
            .into_iter()
            .find(|r| r["action"] == "destroy_all")
            .expect("the hard stop's run");
        assert_eq!(stop["state"], "succeeded");
        let rescues = s.get("/api/rescues", Auth::admin()).await.expect(200);
        let ada = rescues["rescues"]
            .as_array()
            .expect("rescues")
            .iter()
            .find(|r| r["email"] == "ada@example.org")
            .cloned()
            .unwrap_or_else(|| panic!("no rescue of ada: {rescues}"));
        assert_eq!(ada["reason"], "event-end", "{ada}");
        assert_eq!(ada["outcome"], "saved", "{ada}");
        assert_eq!(ada["files"], 1, "{ada}");
        let (_, lines) = s.finished_run(stop["id"].as_u64().expect("id"), 30).await;
        let saved = lines
            .iter()
            .position(|l| l.contains("saved"))
            .expect("rescue in the run");
        let removed = lines
            .iter()
            .position(|l| l.contains("removed"))
            .expect("records removed");
        assert!(saved < removed, "rescued before destroying: {lines:?}");
        assert_eq!(ended["ended"]["run_id"], stop["id"]);
        assert_eq!(s.free_count().await, 0);
        let vms = s.get("/api/vms", Auth::admin()).await.expect(200);
        assert_eq!(vms["vms"].as_array().map(Vec::len), Some(0), "{vms}");
        let late = s.claim("bob@example.org", &crd_command("4/bob-code")).await;
        assert_eq!(late.status, 409);
        assert!(late.html.contains("has ended"), "{}", late.html);
        assert_eq!(s.my_vm(&cookie).await["event"]["phase"], "ended");
        // Nobody will be seated any more: the queue is emptied.
        assert_eq!(queue_length(&s).await, 0);
    })
    .await;
}

async fn queue_length(s: &TestServer) -> u64 {
    let queue = s.get("/api/waitlist", Auth::admin()).await.expect(200);
    queue["waiting"].as_u64().expect("waiting")
}

/// The pid of `host`'s local agent, from the launch runs' output.
async fn agent_pid(s: &TestServer, host: &str) -> i32 {
    let runs = s.get("/api/runs", Auth::admin()).await.expect(200);
    for run in runs["runs"].as_array().expect("runs") {
        let (_, lines) = s.finished_run(run["id"].as_u64().expect("id"), 30).await;
        let mine: Vec<String> = lines.into_iter().filter(|l| l.contains(host)).collect();
        if let Some(pid) = crate::helpers::started_pids(&mine).first() {
            return *pid;
        }
    }
    panic!("no pid of {host} in the runs' output");
}

#[tokio::test]
async fn the_event_api_checks_what_it_is_given() {
    let s = TestServer::start().await;
    within(30, "event API", async {
        let api = |method: Method, body: Option<Value>| s.admin_json(method, "/api/event", body);
        api(Method::GET, None)
            .await
            .expect_error(404, "No event has been planned.");
        let unauthenticated = s.get("/api/event", Auth::None).await;
        assert_eq!(unauthenticated.status.as_u16(), 401);

        let now = Utc::now();
        let plan = |start: chrono::DateTime<Utc>, end: chrono::DateTime<Utc>, seats: u32| {
            json!({"name": "Course", "start": start.to_rfc3339(), "end": end.to_rfc3339(), "seats": seats})
        };
        let refused = |a: crate::helpers::Answer, field: &str| {
            let body = a.expect(400);
            let message = body["error"].as_str().unwrap_or_default().to_owned();
            assert!(message.starts_with(field), "{field}: {body}");
        };
        let hour = Duration::hours(1);
        refused(api(Method::POST, Some(plan(now + hour, now, 10))).await, "end");
        refused(api(Method::POST, Some(plan(now, now + hour, 0))).await, "seats");
        refused(
            api(Method::POST, Some(json!({"name": "x", "start": "soon", "end": "later", "seats": 1}))).await,
            "start",
        );
        refused(
            api(Method::POST, Some(json!({"name": "x", "start": now.to_rfc3339(), "end": (now + hour).to_rfc3339(), "seats": 1, "warn_minutes": "ten"}))).await,
            "warn_minutes",
        );
        refused(
            api(Method::POST, Some(json!({"name": "x", "start": now.to_rfc3339(), "end": (now + hour).to_rfc3339(), "seats": 1, "join_code": "ab"}))).await,
            "join_code",
        );
        // Nothing was stored by the refusals.
        api(Method::GET, None).await.expect(404);

        let created = api(Method::POST, Some(plan(now + hour, now + hour * 3, 10)))
            .await
            .expect(201);
        assert_eq!(created["target_vms"], 11);
        api(Method::POST, Some(plan(now + hour, now + hour * 3, 5)))
            .await
            .expect(409);
        let later = (now + hour * 4).to_rfc3339();
        let changed = api(Method::PATCH, Some(json!({"end": later, "seats": 20})))
            .await
            .expect(200);
        assert_eq!(changed["seats"], 20);
        assert_eq!(changed["name"], "Course");
        refused(
            api(Method::PATCH, Some(json!({"end": (now - hour).to_rfc3339()}))).await,
            "end",
        );
        let cancelled = api(Method::DELETE, None).await.expect(200);
        assert_eq!(cancelled["phase"], "cancelled");
        // Once called off, a new event may be planned.
        api(Method::POST, Some(plan(now + hour, now + hour * 2, 3)))
            .await
            .expect(201);
        let audit = s.get("/admin/audit", Auth::admin()).await;
        for action in ["event-create", "event-update", "event-cancel"] {
            assert!(audit.text.contains(action), "{action} audited");
        }
    })
    .await;
}

#[tokio::test]
async fn an_event_from_the_config_file_is_read_only_online() {
    let now = Utc::now();
    let s = TestServer::start_with(|c| {
        c.event.name = "Configured course".into();
        c.event.start = (now + Duration::hours(1)).to_rfc3339();
        c.event.end = (now + Duration::hours(5)).to_rfc3339();
        c.event.seats = 30;
        c.event.join_code = "owl-nine".into();
    })
    .await;
    within(30, "configured event", async {
        let e = event(&s).await;
        assert_eq!(e["name"], "Configured course");
        assert_eq!(e["from_config"], true);
        assert_eq!(e["target_vms"], 33, "10 % spare by default");
        assert_eq!(e["warn_minutes"], json!([30, 10, 2]));
        let patch = s
            .admin_json(Method::PATCH, "/api/event", Some(json!({"seats": 3})))
            .await;
        assert_eq!(patch.status.as_u16(), 409);
        assert!(patch.text.contains("configuration file"), "{}", patch.text);
        // The event's join code is the one participants need.
        let claimed = s.claim("ada@example.org", &crd_command("4/ada")).await;
        assert_eq!(claimed.status, 400, "{}", claimed.html);
        assert!(claimed.html.contains("join code"), "{}", claimed.html);
    })
    .await;
}

/// The countdown in headless Chromium: the seat page shows the time left, and the warning
/// of each mark arrives without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
async fn the_countdown_banner_in_a_real_browser() {
    use crate::browser::{
        browser, click, fill, require_browser, shoot, start_driver, wait_css, wait_text,
    };
    require_browser();
    let now = Utc::now();
    let clock = Arc::new(ManualClock::starting_at(now));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_on_with_clock(dir.path(), "127.0.0.1:0", clock.clone(), |_| {}).await;
    s.register_running("vm-1").await;
    let end = now + Duration::hours(1);
    s.admin_json(
        Method::POST,
        "/api/event",
        Some(json!({
            "name": "Pose tracking course",
            "start": (now - Duration::hours(2)).to_rfc3339(),
            "end": end.to_rfc3339(),
            "seats": 1,
            "spare_percent": 0,
            "prewarm_minutes": 0,
        })),
    )
    .await
    .expect(201);
    let driver = start_driver().await;
    let page = browser(&driver, 1000, 800).await;
    within(120, "countdown in the browser", async {
        page.goto(&s.url("/")).await.expect("open /");
        wait_text(&page, "#event-name", "Pose tracking course").await;
        fill(&page, "#email", "ada@example.org").await;
        fill(&page, "#crd_command", &crd_command("4/0Ada")).await;
        click(
            &page,
            r#"form[action="/api/request_vm"] button[type=submit]"#,
        )
        .await;
        wait_css(&page, "#pin").await;
        page.goto(&s.url("/my-vm")).await.expect("open /my-vm");
        wait_text(&page, "#event-name", "Pose tracking course").await;
        let countdown = wait_css(&page, "#event-countdown").await;
        let text = countdown.text().await.expect("text");
        assert!(text.starts_with("Time left: "), "{text}");
        page.execute("window.__lablink_marker = 7; return true;", vec![])
            .await
            .expect("mark the page");

        // Ten minutes before the end: the warning arrives on the open page.
        clock.advance(Duration::minutes(50));
        wait_css(&page, "#event-bar[data-warning='10']").await;
        let warning = wait_css(&page, "#event-warning").await;
        let text = warning.text().await.expect("text");
        assert!(text.contains("ends in 10 minutes"), "{text}");
        // The page counts down from the allocator's clock, not the browser's.
        let left = wait_css(&page, "#event-countdown")
            .await
            .text()
            .await
            .expect("text");
        assert!(
            left.starts_with("Time left: 9:") || left.starts_with("Time left: 10:"),
            "{left}"
        );
        shoot(&page, "event-countdown-warning").await;
        let marker = page
            .execute("return window.__lablink_marker || null;", vec![])
            .await
            .expect("read the marker");
        assert_eq!(marker, json!(7), "the seat page was reloaded");
    })
    .await;
    page.close().await.expect("close");
}
