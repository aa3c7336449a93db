//! Idle reclaim and each seat's GPU use: the test plays the VMs over HTTP (status, in-use
//! and heartbeats carrying GPU figures) and moves the pool's clock by hand; the idle job
//! looks once a second, and the test waits for its looks rather than for time.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use lablink::clock::ManualClock;
use lablink::config::Config;
use serde_json::{Value, json};

use crate::helpers::{TestServer, crd_command, wait_for, within};

fn idle_config(c: &mut Config) {
    c.idle.reclaim_minutes = 10;
    c.idle.warn_minutes = 5;
    c.idle.gpu_threshold_percent = 5;
    c.idle.only_when_waiting = true;
}

async fn start(clock: &Arc<ManualClock>, dir: &std::path::Path) -> TestServer {
    let s = TestServer::start_on_with_clock(dir, "127.0.0.1:0", clock.clone(), idle_config).await;
    s.register_many(2).await;
    s
}

/// Returns after two whole looks of the idle job from now (the first may have begun before).
async fn looked(s: &TestServer) {
    let mut passes = s.app.pool.idle.passes();
    let from = *passes.borrow_and_update();
    within(10, "two looks of the idle job", async {
        while *passes.borrow_and_update() < from + 2 {
            passes.changed().await.expect("the idle job runs");
        }
    })
    .await;
}

async fn heartbeat(s: &TestServer, host: &str, gpu: Option<f64>) -> Value {
    s.agent_post(
        "/api/heartbeat",
        &json!({
            "hostname": host,
            "gpu_utilization_pct": gpu,
            "gpu_memory_used_mib": gpu.map(|g| g as u64 * 100),
        }),
    )
    .await
    .expect(200)
}

fn release_at(seat: &Value) -> Option<DateTime<Utc>> {
    seat["idle"]["release_at"]
        .as_str()
        .map(|t| t.parse().expect("release_at is a time"))
}

/// "I'm still here", as the seat page's form posts it (`origin`: the Origin header sent).
async fn still_here(s: &TestServer, cookie: &str, origin: &str) -> reqwest::StatusCode {
    crate::helpers::no_redirects()
        .post(s.url("/api/my-vm/active"))
        .header(reqwest::header::COOKIE, cookie)
        .header(reqwest::header::ORIGIN, origin)
        .form(&[("back", "/my-vm")])
        .send()
        .await
        .expect("POST /api/my-vm/active")
        .status()
}

/// A Chrome Remote Desktop code of the participant's own.
fn code(email: &str) -> String {
    format!("4/{}-code", email.split('@').next().unwrap_or("x"))
}

/// A participant claims; their browser's cookie and VM.
async fn claim(s: &TestServer, email: &str) -> (String, String) {
    let claimed = s.claim(email, &crd_command(&code(email))).await;
    assert_eq!(claimed.status, 200, "{}", claimed.html);
    (claimed.cookie.clone().expect("cookie"), claimed.hostname())
}

/// Joins the queue from a fresh browser; its cookie.
async fn queue(s: &TestServer, email: &str) -> String {
    let command = crd_command(&code(email));
    let r = crate::helpers::no_redirects()
        .post(s.url("/api/waitlist/join"))
        .form(&[("email", email), ("crd_command", command.as_str())])
        .send()
        .await
        .expect("join");
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    r.headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("claim cookie")
        .to_owned()
}

/// The released VM's agent: its heartbeat learns of the reset, which it reports done.
async fn reset(s: &TestServer, host: &str) {
    wait_for(10, "the reset asked for", || async {
        (heartbeat(s, host, None).await["reset_requested"] == true).then_some(())
    })
    .await;
    let done = s
        .agent_post("/api/vm-reset-done", &json!({ "hostname": host }))
        .await
        .expect(200);
    assert_eq!(done["available"], true, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_seat_is_warned_kept_then_released_to_the_queue() {
    let t0 = Utc::now();
    let clock = Arc::new(ManualClock::starting_at(t0));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&clock, dir.path()).await;
    within(60, "idle reclaim", async {
        let (ada, busy) = claim(&s, "ada@example.org").await;
        let (bob, idle) = claim(&s, "bob@example.org").await;
        let carol = queue(&s, "carol@example.org").await;
        heartbeat(&s, &busy, Some(50.0)).await;
        heartbeat(&s, &idle, Some(2.0)).await;
        looked(&s).await;

        // Halfway: nothing shown yet.
        clock.advance(Duration::minutes(4));
        looked(&s).await;
        assert_eq!(s.my_vm(&bob).await.get("idle"), None);

        // At reclaim − warn, the idle seat's participant is told when it goes.
        clock.advance(Duration::minutes(1));
        looked(&s).await;
        let seat = s.my_vm(&bob).await;
        assert_eq!(
            release_at(&seat),
            Some(t0 + Duration::minutes(10)),
            "{seat}"
        );
        assert_eq!(
            s.my_vm(&ada).await.get("idle"),
            None,
            "a busy GPU is not idle"
        );
        let page = s
            .client
            .get(s.url("/my-vm"))
            .header(reqwest::header::COOKIE, &bob)
            .send()
            .await
            .expect("GET /my-vm")
            .text()
            .await
            .expect("html");
        assert!(page.contains(r#"action="/api/my-vm/active""#), "{page}");

        // "I'm still here" from another site is refused; from the page it starts over.
        let evil = still_here(&s, &bob, "http://evil.example").await;
        assert_eq!(evil, reqwest::StatusCode::FORBIDDEN);
        assert!(release_at(&s.my_vm(&bob).await).is_some());
        assert_eq!(
            still_here(&s, &bob, &s.base).await,
            reqwest::StatusCode::SEE_OTHER
        );
        assert_eq!(s.my_vm(&bob).await.get("idle"), None);
        let kept = t0 + Duration::minutes(5);

        clock.advance(Duration::minutes(4));
        looked(&s).await;
        assert_eq!(s.my_vm(&bob).await.get("idle"), None);
        clock.advance(Duration::minutes(1));
        looked(&s).await;
        assert_eq!(
            release_at(&s.my_vm(&bob).await),
            Some(kept + Duration::minutes(10))
        );
        heartbeat(&s, &busy, Some(30.0)).await;

        // Still idle at the release: the seat goes, and the queue gets the VM.
        clock.advance(Duration::minutes(5));
        looked(&s).await;
        assert_eq!(s.my_vm(&bob).await["state"], "released");
        assert_eq!(s.my_vm(&ada).await["state"], "ready");
        reset(&s, &idle).await;
        let seated = wait_for(10, "carol seated", || async {
            let seat = s.my_vm(&carol).await;
            (seat["state"] == "ready").then(|| seat["hostname"].as_str().map(str::to_owned))
        })
        .await;
        assert_eq!(seated.as_deref(), Some(idle.as_str()));

        let audit = s.recent_audit(50).await;
        assert!(
            audit
                .iter()
                .any(|e| e.actor == "idle-reclaim" && e.detail.contains("bob@example.org")),
            "{audit:?}"
        );

        // Each seat's GPU use, after the VM changed hands.
        let usage = lablink::pool::usage::for_event(
            &s.app.pool,
            t0 - Duration::hours(1),
            t0 + Duration::hours(1),
        )
        .await
        .expect("usage");
        let of = |email: &str| {
            usage
                .iter()
                .find(|u| u.email == email)
                .unwrap_or_else(|| panic!("{email} in {usage:?}"))
        };
        assert_eq!(of("ada@example.org").gpu_util_avg(), Some(40.0));
        assert_eq!(of("ada@example.org").gpu_util_max, 50.0);
        assert_eq!(of("ada@example.org").gpu_memory_max_mib, 5000);
        assert_eq!(of("ada@example.org").hostname, busy);
        let bobs = of("bob@example.org");
        assert_eq!((bobs.gpu_samples, bobs.gpu_util_max), (1, 2.0));
        assert_eq!(bobs.last_active_at, None);
        // An hour later nothing overlaps.
        let later = lablink::pool::usage::for_event(
            &s.app.pool,
            t0 + Duration::hours(2),
            t0 + Duration::hours(3),
        )
        .await
        .expect("usage");
        assert!(later.is_empty(), "{later:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_in_use_are_kept_and_nothing_goes_without_a_queue() {
    let t0 = Utc::now();
    let clock = Arc::new(ManualClock::starting_at(t0));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&clock, dir.path()).await;
    within(60, "no queue, in use", async {
        let (ada, working) = claim(&s, "ada@example.org").await;
        let (bob, _) = claim(&s, "bob@example.org").await;
        s.agent_post(
            "/api/update_inuse_status",
            &json!({ "hostname": working, "status": true }),
        )
        .await
        .expect(200);
        // Bob's agent says nothing of the GPU: unknown counts as idle.
        looked(&s).await;

        clock.advance(Duration::minutes(30));
        looked(&s).await;
        for cookie in [&ada, &bob] {
            let seat = s.my_vm(cookie).await;
            assert_eq!(seat["state"], "ready");
            assert_eq!(seat.get("idle"), None, "{seat}");
        }

        // Someone waits: the idle seat goes at once, the one in use stays.
        queue(&s, "carol@example.org").await;
        wait_for(10, "bob's idle seat released", || async {
            (s.my_vm(&bob).await["state"] == "released").then_some(())
        })
        .await;
        looked(&s).await;
        let seat = s.my_vm(&ada).await;
        assert_eq!(seat["state"], "ready");
        assert_eq!(seat.get("idle"), None, "{seat}");
    })
    .await;
}

#[tokio::test]
async fn heartbeat_gpu_figures_out_of_range_are_refused() {
    let s = TestServer::start().await;
    s.register_running("vm-1").await;
    for (field, value) in [
        ("gpu_utilization_pct", json!(100.5)),
        ("gpu_utilization_pct", json!(-1)),
        ("gpu_utilization_pct", json!("busy")),
        ("gpu_memory_used_mib", json!(-5)),
        ("gpu_memory_used_mib", json!(1.5)),
        ("gpu_memory_used_mib", json!(17 * 1024 * 1024)),
    ] {
        let a = s
            .agent_post(
                "/api/heartbeat",
                &json!({ "hostname": "vm-1", field: value }),
            )
            .await;
        assert_eq!(a.status, 400, "{field}={value}: {}", a.text);
    }
    s.agent_post(
        "/api/heartbeat",
        &json!({ "hostname": "vm-1", "gpu_utilization_pct": 100, "gpu_memory_used_mib": 0 }),
    )
    .await
    .expect(200);
}
