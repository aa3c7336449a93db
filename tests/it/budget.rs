//! The budget on a controllable clock: the metered spend (exact figures, across a restart),
//! the projection, the cap refusing the admin's and the event's launches, the console's
//! warning, the `/metrics` gauges and the configuration's checks.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use lablink::clock::{Clock, ManualClock};
use lablink::model::JournalKind;
use lablink::model::budget::CostFigures;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Auth, TestServer, run_binary, wait_for, within};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

async fn figures(s: &TestServer) -> CostFigures {
    lablink::pool::budget::figures(&s.app.pool)
        .await
        .expect("figures")
}

/// Waits for the metering job to have stored the spend up to the clock's time.
async fn metered(s: &TestServer, clock: &ManualClock) -> lablink::model::budget::Spend {
    let now = clock.now();
    wait_for(10, "the spend metered up to now", || async {
        let spend = s
            .app
            .store
            .read(lablink::store::spend::get)
            .await
            .expect("read the spend");
        (spend.metered_at == Some(now)).then_some(spend)
    })
    .await
}

fn priced(c: &mut lablink::config::Config) {
    c.machine.machine_type = "g5.xlarge".into();
    c.budget.prices = "g5.xlarge=1.5".into();
}

async fn start(dir: &std::path::Path, clock: &Arc<ManualClock>) -> TestServer {
    TestServer::start_on_with_clock(dir, "127.0.0.1:0", clock.clone(), priced).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_follows_the_clock_and_the_pool_and_survives_a_restart() {
    let t0: DateTime<Utc> = "2026-03-02T08:00:00Z".parse().expect("time");
    let clock = Arc::new(ManualClock::starting_at(t0));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = start(dir.path(), &clock).await;
    within(60, "metering", async {
        metered(&s, &clock).await;
        s.register_many(2).await;

        // An hour of 2 VMs at $1.5: $3; outside events the projection looks an hour ahead.
        clock.advance(Duration::hours(1));
        let f = figures(&s).await;
        assert_eq!(f.event, None);
        assert_eq!(f.vms, 2);
        assert!(close(f.spent, 3.0), "{f:?}");
        assert!(close(f.projected.expect("priced"), 6.0), "{f:?}");
        assert_eq!(f.cap, None);
        let stored = metered(&s, &clock).await;
        assert!(close(stored.outside_events, 3.0), "{stored:?}");

        let metrics = s.get("/metrics", Auth::None).await;
        assert!(
            metrics.text.contains("lablink_cost_spent_usd 3.0\n"),
            "{}",
            metrics.text
        );
        assert!(
            metrics.text.contains("lablink_cost_projected_usd 6.0\n"),
            "{}",
            metrics.text
        );
        assert!(
            metrics.text.contains("lablink_budget_cap_usd NaN\n"),
            "{}",
            metrics.text
        );

        // A third VM for half an hour: + 3 × 1.5 × 0.5.
        s.report_status("vm-3", "running").await;
        clock.advance(Duration::minutes(30));
        let stored = metered(&s, &clock).await;
        assert!(close(stored.outside_events, 5.25), "{stored:?}");
    })
    .await;

    // Two hours down: the VMs kept running, so they are counted after the restart.
    s.stop().await;
    clock.advance(Duration::hours(2));
    let s = start(dir.path(), &clock).await;
    within(30, "after the restart", async {
        let stored = metered(&s, &clock).await;
        assert!(close(stored.outside_events, 5.25 + 9.0), "{stored:?}");
        assert!(close(figures(&s).await.spent, 14.25));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_warns_at_the_percentage_of_the_cap() {
    let t0: DateTime<Utc> = "2026-03-02T08:00:00Z".parse().expect("time");
    let clock = Arc::new(ManualClock::starting_at(t0));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_on_with_clock(dir.path(), "127.0.0.1:0", clock.clone(), |c| {
        priced(c);
        c.budget.cap_usd = "7.5".into();
    })
    .await;
    within(30, "the warning", async {
        let dashboard = || async { s.get("/admin", Auth::admin()).await.text };
        // 3 VMs × $1.5 over the next hour: $4.5, 60 % of the cap.
        s.register_many(3).await;
        let page = dashboard().await;
        assert!(page.contains("id=\"cost-projected\">$4.50<"), "{page}");
        assert!(page.contains("id=\"cost-cap\">$7.50<"), "{page}");
        assert!(!page.contains("budget-warning"), "{page}");
        assert!(page.contains("the figures simulate what the real pool would cost"));
        // A fourth: $6, 80 %.
        s.report_status("vm-4", "running").await;
        let page = dashboard().await;
        assert!(page.contains("id=\"budget-warning\""), "{page}");
        assert!(
            page.contains("The projected cost $6.00 is 80 % of the budget cap $7.50."),
            "{page}"
        );

        let metrics = s.get("/metrics", Auth::None).await;
        assert!(
            metrics.text.contains("lablink_budget_cap_usd 7.5\n"),
            "{}",
            metrics.text
        );

        // Over the cap, the admin's launch is refused before anything starts.
        let refused = s.admin_form("/api/launch", &[("num_vms", "2")], &[]).await;
        assert_eq!(refused.status.as_u16(), 400, "{}", refused.text);
        let error = refused.json()["error"].as_str().expect("error").to_owned();
        assert!(error.contains("budget cap of $7.50"), "{error}");
        assert!(
            error.contains("$0.00 spent, $6.00 projected over the next hour"),
            "{error}"
        );
        assert!(error.contains("$9.00 with the new ones"), "{error}");
        let runs = s.get("/api/runs", Auth::admin()).await.expect(200);
        assert_eq!(runs["runs"], json!([]));
    })
    .await;
    let _ = clock;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_price_is_shown_and_the_cap_not_enforced() {
    let s = TestServer::start_with(|c| {
        c.machine.machine_type = "x9.huge".into();
        c.budget.cap_usd = "1".into();
    })
    .await;
    within(30, "unknown price", async {
        s.register_many(50).await;
        let page = s.get("/admin", Auth::admin()).await.text;
        assert!(page.contains("id=\"cost-unknown\""), "{page}");
        assert!(page.contains("budget.cap_usd cannot be enforced"), "{page}");
        assert!(page.contains("id=\"cost-projected\">unknown<"), "{page}");
        let f = figures(&s).await;
        assert_eq!((f.price_per_hour, f.projected), (None, None));
        assert_eq!(f.refuses_launch(1000), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_prewarm_over_the_cap_is_refused_and_journaled() {
    let t0: DateTime<Utc> = "2026-03-02T08:00:00Z".parse().expect("time");
    let clock = Arc::new(ManualClock::starting_at(t0));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_on_with_clock(dir.path(), "127.0.0.1:0", clock.clone(), |c| {
        priced(c);
        c.budget.cap_usd = "20".into();
    })
    .await;
    within(60, "the event over budget", async {
        // Pre-warm now, 4 hours to the end: 4 VMs × $1.5 × 4 h = $24 > $20.
        let created = s
            .admin_json(
                Method::POST,
                "/api/event",
                Some(json!({
                    "name": "Over budget",
                    "start": (t0 + Duration::hours(1)).to_rfc3339(),
                    "end": (t0 + Duration::hours(4)).to_rfc3339(),
                    "seats": 4,
                    "spare_percent": 0,
                    "prewarm_minutes": 60,
                })),
            )
            .await
            .expect(201);
        assert_eq!(created["phase"], "warming");
        let cost = &created["cost"];
        assert_eq!(cost["currency"], "USD");
        assert_eq!(cost["price_per_hour"], 1.5);
        assert_eq!(cost["cap"], 20.0);
        assert_eq!(cost["spent"], 0.0);
        assert_eq!(cost["projected"], 0.0);
        assert_eq!(cost["warn"], false);

        let id = created["id"].as_u64().expect("id");
        let refusal = refused_launch(&s, id, 10).await;
        assert!(
            refusal
                .detail
                .contains("Launching 4 VM(s) would exceed the budget cap of $20.00"),
            "{}",
            refusal.detail
        );
        assert!(
            refusal.detail.contains("$24.00 with the new ones"),
            "{}",
            refusal.detail
        );
        let runs = s.get("/api/runs", Auth::admin()).await.expect(200);
        assert_eq!(runs["runs"], json!([]));
        let event = s
            .admin_json(Method::GET, "/api/event", None)
            .await
            .expect(200);
        assert_eq!(event["launches"], json!([]));

        // Two VMs joined by hand for an hour are charged to the event, and projected to its
        // end: 3 + 2 × 1.5 × 3 = 12.
        s.register_many(2).await;
        clock.advance(Duration::hours(1));
        let event = s
            .admin_json(Method::GET, "/api/event", None)
            .await
            .expect(200);
        assert_eq!(event["cost"]["spent"], 3.0);
        assert_eq!(event["cost"]["projected"], 12.0);
        let page = s.get("/admin/event", Auth::admin()).await.text;
        assert!(page.contains("id=\"cost-spent\">$3.00<"), "{page}");
        assert!(page.contains("Spent (this event)"), "{page}");
    })
    .await;
}

#[tokio::test]
async fn bad_budget_settings_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "budget:\n  prices: g5.xlarge=cheap\n  cap_usd: -3\n  warn_percent: 0\n",
    )
    .expect("write");
    let path = file.display().to_string();
    let out = run_binary(&["config", "check", &path], &[], 10).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for key in ["budget.prices", "budget.cap_usd", "budget.warn_percent"] {
        assert!(
            stderr.lines().any(|l| l.contains(&format!("{key}:"))),
            "{key} not reported: {stderr}"
        );
    }
    assert!(stderr.contains("`cheap` is not a price"), "{stderr}");

    let ok = dir.path().join("ok.yaml");
    std::fs::write(
        &ok,
        "budget:\n  prices: g5.xlarge=1.006, my.type=2\n  cap_usd: 250.5\n",
    )
    .expect("write");
    let out = run_binary(&["config", "check", &ok.display().to_string()], &[], 10).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_over_the_cap_is_refused() {
    let t0: DateTime<Utc> = Utc::now();
    let clock = Arc::new(ManualClock::starting_at(t0));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_on_with_clock(dir.path(), "127.0.0.1:0", clock.clone(), |c| {
        priced(c);
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.machine.software = "budgetday".into();
        c.server.heartbeat_seconds = 1;
        c.server.stale_after_heartbeats = 2;
        c.provision.auto_reboot = false;
        // One VM to the end costs $4.5; a replacement beside the dead one would take $9.
        c.budget.cap_usd = "6".into();
    })
    .await;
    within(120, "the replacement over budget", async {
        let created = s
            .admin_json(
                Method::POST,
                "/api/event",
                Some(json!({
                    "name": "One seat",
                    "start": (t0 + Duration::hours(1)).to_rfc3339(),
                    "end": (t0 + Duration::hours(3)).to_rfc3339(),
                    "seats": 1,
                    "spare_percent": 0,
                    "prewarm_minutes": 60,
                })),
            )
            .await
            .expect(201);
        let id = created["id"].as_u64().expect("id");
        let run_id = wait_for(20, "the pre-warm launch", || async {
            let event = s
                .admin_json(Method::GET, "/api/event", None)
                .await
                .expect(200);
            event["launches"][0]["run_id"].as_u64()
        })
        .await;
        let (run, lines) = s.finished_run(run_id, 30).await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        let pid = *crate::helpers::started_pids(&lines).first().expect("a pid");
        wait_for(60, "the VM up", || async {
            (s.free_count().await == 1).then_some(())
        })
        .await;

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the VM's agent");
        let refusal = refused_launch(&s, id, 30).await;
        assert!(
            refusal
                .detail
                .contains("Launching 1 VM(s) would exceed the budget cap of $6.00"),
            "{}",
            refusal.detail
        );
        assert!(
            refusal.detail.contains("$9.00 with the new ones"),
            "{}",
            refusal.detail
        );
        let event = s
            .admin_json(Method::GET, "/api/event", None)
            .await
            .expect(200);
        assert_eq!(event["replaced"], 0);
        assert_eq!(event["launches"].as_array().map(Vec::len), Some(1));
    })
    .await;
}

/// The first launch the event's journal records as refused (waiting up to `secs`).
async fn refused_launch(s: &TestServer, id: u64, secs: u64) -> lablink::model::JournalEntry {
    wait_for(secs, "a refused launch in the event's journal", || async {
        let journal = s
            .app
            .store
            .read(move |tx| lablink::store::events::journal_of(tx, id))
            .await
            .expect("journal");
        journal
            .into_iter()
            .find(|e| e.kind == JournalKind::LaunchRefused)
    })
    .await
}
