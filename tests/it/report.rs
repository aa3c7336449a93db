//! The post-event report: an event driven over HTTP by the test playing the VMs, on a
//! manual clock so the figures are exact; the JSON, the CSV and the console page.

use std::sync::Arc;

use chrono::{Duration, DurationRound, Utc};
use lablink::clock::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Auth, TestServer, crd_command, wait_for, within};

async fn report(s: &TestServer) -> Value {
    s.admin_json(Method::GET, "/api/event/report", None)
        .await
        .expect(200)
}

/// The journal is written beside the claim's answer: waits until `n` claims are in it.
async fn claims_journaled(s: &TestServer, n: u64) {
    wait_for(10, "the claim in the journal", || async {
        (report(s).await["claims"] == n).then_some(())
    })
    .await;
}

async fn admin_post(s: &TestServer, path: &str) -> Value {
    s.admin_json(Method::POST, path, Some(json!({})))
        .await
        .expect(200)
}

async fn desktop_started(s: &TestServer, host: &str) -> Value {
    s.agent_post("/api/desktop-started", &json!({ "hostname": host }))
        .await
        .expect(200)
}

async fn heartbeat(s: &TestServer, host: &str, boot_id: &str) {
    s.agent_post(
        "/api/heartbeat",
        &json!({"hostname": host, "boot_id": boot_id}),
    )
    .await
    .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_what_happened_during_the_event() {
    let t0 = Utc::now()
        .duration_trunc(Duration::minutes(1))
        .expect("minute");
    let clock = Arc::new(ManualClock::starting_at(t0));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_on_with_clock(dir.path(), "127.0.0.1:0", clock.clone(), |_| {}).await;
    within(60, "the event and its report", async {
        // Four VMs for three seats: the event never has to launch one.
        for host in ["vm-1", "vm-2", "vm-3", "vm-4"] {
            s.register_running(host).await;
        }
        s.admin_json(
            Method::POST,
            "/api/event",
            Some(json!({
                "name": "Report day: Mice & Flies",
                "start": t0.to_rfc3339(),
                "end": (t0 + Duration::hours(2)).to_rfc3339(),
                "seats": 3,
                "spare_percent": 0,
                "prewarm_minutes": 0,
            })),
        )
        .await
        .expect(201);

        // Claim to desktop, from the manual clock: 12 s for ada, 20 s for cy.
        let ada = s.claim("ada@example.org", &crd_command("4/0Ada")).await;
        assert_eq!(ada.hostname(), "vm-1");
        claims_journaled(&s, 1).await;
        clock.advance(Duration::seconds(12));
        let first = desktop_started(&s, "vm-1").await;
        assert_eq!(first["recorded"], true);
        assert_eq!(first["seconds_since_claim"], 12.0);
        clock.advance(Duration::seconds(5));
        let again = desktop_started(&s, "vm-1").await;
        assert_eq!(again["recorded"], false, "once per assignment");

        // bob's VM fails (reported twice: one failure), and he is moved to vm-3.
        let bob = s.claim("bob@example.org", &crd_command("4/0Bob")).await;
        assert_eq!(bob.hostname(), "vm-2");
        claims_journaled(&s, 2).await;
        s.report_status("vm-2", "error").await;
        s.report_status("vm-2", "error").await;
        let moved = admin_post(&s, "/api/vms/vm-2/move").await;
        assert_eq!(moved["to"]["hostname"], "vm-3");

        // vm-3 reboots: a new boot id (the first one is no reboot).
        heartbeat(&s, "vm-3", "aaaa-1").await;
        heartbeat(&s, "vm-3", "aaaa-1").await;
        heartbeat(&s, "vm-3", "bbbb-2").await;

        let cy = s.claim("cy@example.org", &crd_command("4/0Cy")).await;
        assert_eq!(cy.hostname(), "vm-4");
        claims_journaled(&s, 3).await;
        clock.advance(Duration::seconds(20));
        desktop_started(&s, "vm-4").await;

        // ada is released; dan finds nothing free, waits 30 s and gets vm-1 once reset.
        admin_post(&s, "/api/vms/vm-1/release").await;
        let dan = s.claim("dan@example.org", &crd_command("4/0Dan")).await;
        assert_ne!(dan.status, 200, "nothing is free");
        let joined = s
            .client
            .post(s.url("/api/waitlist/join"))
            .form(&[
                ("email", "dan@example.org"),
                ("crd_command", &crd_command("4/0Dan")),
            ])
            .send()
            .await
            .expect("join");
        assert!(joined.status().is_success() || joined.status().is_redirection());
        clock.advance(Duration::seconds(30));
        let beat = s
            .agent_post("/api/heartbeat", &json!({"hostname": "vm-1"}))
            .await
            .expect(200);
        let reset = beat["reset_id"].as_u64().expect("reset id");
        s.agent_post(
            "/api/vm-reset-done",
            &json!({"hostname": "vm-1", "reset_id": reset}),
        )
        .await
        .expect(200);

        // The journal is written beside the answers: wait for the last of it.
        let r = wait_for(20, "the waitlist seating in the report", || async {
            let r = report(&s).await;
            (r["waitlist"]["seated"] == 1 && r["claims"] == 4).then_some(r)
        })
        .await;
        assert_eq!(r["event"]["name"], "Report day: Mice & Flies");
        assert_eq!(r["event"]["phase"], "open");
        assert_eq!(r["seats"], json!({"planned": 3, "used": 4}));
        assert_eq!(
            r["claim_to_desktop"],
            json!({"n": 2, "p50": 12.0, "p90": 20.0, "max": 20.0})
        );
        assert_eq!(
            r["failures"],
            json!({"count": 1, "by_kind": {"status error": 1}})
        );
        assert_eq!(r["reboots"], 1);
        assert_eq!((r["moves"].clone(), r["releases"].clone(), r["reseats"].clone()), (json!(1), json!(1), json!(0)));
        assert_eq!(
            r["waitlist"]["wait"],
            json!({"n": 1, "p50": 30.0, "p90": 30.0, "max": 30.0})
        );
        assert_eq!(r["idle_reclaims"], 0);
        assert_eq!(
            r["launches"],
            json!({"prewarm": 0, "replacements": 0, "refused": 0})
        );
        assert_eq!(r["ending"]["phase"], "open");
        assert_eq!(r["vms_left"], 4);
        // Its cost, at the default price of the pool's machine type.
        assert_eq!(r["cost"]["machine_type"], "g4dn.xlarge");
        assert_eq!(r["cost"]["price_per_hour"], 0.526);
        assert!(r["cost"]["spent"].as_f64().is_some_and(|s| s >= 0.0), "{r}");
        let seats = r["per_seat"].as_array().expect("rows");
        let row = |email: &str| {
            seats
                .iter()
                .find(|row| row["email"] == email)
                .unwrap_or_else(|| panic!("{email} in {r}"))
                .clone()
        };
        let ada_row = row("ada@example.org");
        assert_eq!(ada_row["vms"], json!(["vm-1"]));
        assert_eq!(ada_row["claimed_at"], json!(t0));
        assert_eq!(ada_row["desktop_after_seconds"], 12.0);
        assert_eq!(ada_row["released"], 1);
        assert_eq!(ada_row["holds_now"], Value::Null);
        // A release and a move each rescue the participant's files first (these VMs have no
        // credential of their own to upload with: unsupported).
        assert_eq!(ada_row["rescue"], "unsupported");
        assert_eq!(r["rescues"], json!({"unsupported": 2}));
        let bob_row = row("bob@example.org");
        assert_eq!(bob_row["vms"], json!(["vm-2", "vm-3"]));
        assert_eq!((bob_row["moved"].clone(), bob_row["failures"].clone()), (json!(1), json!(1)));
        assert_eq!(bob_row["holds_now"], "vm-3");
        assert_eq!(bob_row["rescue"], "unsupported");
        let dan_row = row("dan@example.org");
        assert_eq!(dan_row["waited_seconds"], 30.0);
        assert_eq!(dan_row["holds_now"], "vm-1");
        assert_eq!(row("cy@example.org")["desktop_after_seconds"], 20.0);

        // The same report as CSV: a header and one row per seat, named after the event.
        let csv = s
            .client
            .get(s.url("/admin/event/report.csv"))
            .basic_auth(crate::helpers::ADMIN_USER, Some(crate::helpers::ADMIN_PASSWORD))
            .send()
            .await
            .expect("csv");
        assert_eq!(csv.status(), StatusCode::OK);
        let disposition = csv.headers()[reqwest::header::CONTENT_DISPOSITION]
            .to_str()
            .expect("header")
            .to_owned();
        assert_eq!(
            disposition,
            "attachment; filename=\"lablink-report-1-Report-day-Mice-Flies.csv\""
        );
        let text = csv.text().await.expect("body");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(
            lines[0],
            "email,vms,claimed_at,desktop_after_seconds,waited_seconds,released,reclaimed,moved,reseated,failures,rescue,holds_now,gpu_util_avg,gpu_util_max"
        );
        let at = |secs: i64| (t0 + Duration::seconds(secs)).to_rfc3339();
        assert_eq!(
            lines[1..],
            [
                format!("ada@example.org,vm-1,{},12.000,,1,0,0,0,0,unsupported,,,", at(0)),
                format!("bob@example.org,vm-2 vm-3,{},,,0,0,1,0,1,unsupported,vm-3,,", at(17)),
                format!("cy@example.org,vm-4,{},20.000,,0,0,0,0,0,,vm-4,,", at(17)),
                format!("dan@example.org,vm-1,{},,30.000,0,0,0,0,0,,vm-1,,", at(67)),
            ]
        );

        // The console page renders the figures, with links to the CSV and the JSON.
        let page = s.get("/admin/event/report", Auth::admin()).await;
        assert_eq!(page.status, StatusCode::OK);
        for part in [
            r#"<dd id="report-seats">4 / 3</dd>"#,
            r#"<dd id="report-claims">4</dd>"#,
            "p50 12.0 s · p90 20.0 s · max 20.0 s (n = 2)",
            "1 (status error: 1)",
            r#"<dd id="report-reboots">1</dd>"#,
            r#"href="/admin/event/report.csv""#,
            r#"href="/api/event/report""#,
            "bob@example.org",
            "vm-2, vm-3",
        ] {
            assert!(page.text.contains(part), "{part} in {}", page.text);
        }
        // A past event by id, and an unknown one.
        let by_id = s
            .admin_json(Method::GET, "/api/event/report?event=1", None)
            .await
            .expect(200);
        assert_eq!(by_id["claims"], 4);
        s.admin_json(Method::GET, "/api/event/report?event=9", None)
            .await
            .expect_error(404, "No event #9.");
        let past = s.get("/admin/event/report?event=1", Auth::admin()).await;
        assert!(past.text.contains(r#"href="/admin/event/report.csv?event=1""#));
    })
    .await;
}

#[tokio::test]
async fn the_report_is_for_admins_and_needs_an_event() {
    let s = TestServer::start().await;
    within(30, "report without an event", async {
        s.admin_json(Method::GET, "/api/event/report", None)
            .await
            .expect_error(404, "No event has been planned.");
        let page = s.get("/admin/event/report", Auth::admin()).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
        let csv = s.get("/admin/event/report.csv", Auth::admin()).await;
        assert_eq!(csv.status, StatusCode::NOT_FOUND);
        for path in ["/api/event/report", "/admin/event/report.csv"] {
            let anonymous = s.get(path, Auth::None).await;
            assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
        }
        let agent = s.agent_get("/api/event/report").await;
        assert_eq!(agent.status, StatusCode::UNAUTHORIZED);
        // An unknown VM's desktop start is a 404 (the agent ignores it).
        s.agent_post("/api/desktop-started", &json!({"hostname": "vm-9"}))
            .await
            .expect(404);
    })
    .await;
}
