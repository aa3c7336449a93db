//! Session metrics over HTTP, sent as the agent sends them: the bounded series keeps its
//! mean when halved, bad batches are refused naming the field, a VM's credential sends
//! only its own; the API, the export, the instances table and `/admin/sessions` (also in
//! headless Chromium) show them. The real agent's sampling is in `agent::session_metrics`.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use lablink::clock::ManualClock;
use serde_json::{Value, json};

use crate::helpers::{Answer, Auth, TestServer, crd_command, mint_credential, within};

const MAX_POINTS: u64 = 16;

async fn server(clock: Arc<ManualClock>) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_on_with_clock(dir.path(), "127.0.0.1:0", clock, |c| {
        c.metrics.max_samples_per_seat = MAX_POINTS;
        c.metrics.sample_seconds = 15;
    })
    .await;
    (s, dir)
}

fn start() -> Arc<ManualClock> {
    let t0: DateTime<Utc> = "2026-03-02T08:00:00Z".parse().expect("time");
    Arc::new(ManualClock::starting_at(t0))
}

/// A JSON refusal whose message names `needle`.
fn refused_with(answer: &Answer, status: u16, needle: &str) {
    let body = answer.expect(status);
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "{message:?} does not name {needle:?}"
    );
}

/// One sample as the agent sends it.
fn sample(age: f64, util: f64, mem: u64, in_use: bool) -> Value {
    json!({
        "age_seconds": age,
        "gpu_utilization_pct": util,
        "gpu_memory_used_mib": mem,
        "in_use": in_use,
        "desktop_connected": null,
    })
}

async fn send(s: &TestServer, credential: &str, host: &str, samples: &[Value]) -> Value {
    s.post_json(
        "/api/session-metrics",
        &json!({"hostname": host, "interval_seconds": 15, "samples": samples}),
        Some(credential),
    )
    .await
    .expect(200)
}

async fn seats(s: &TestServer, query: &str) -> Vec<Value> {
    s.get(&format!("/api/session-metrics{query}"), Auth::admin())
        .await
        .expect(200)["seats"]
        .as_array()
        .expect("seats")
        .clone()
}

/// A claimed VM, its own credential, and the clock moved on by `later` after the claim.
async fn claimed_vm(s: &TestServer, clock: &ManualClock, later: Duration) -> (String, String) {
    s.register_running("vm-1").await;
    let credential = mint_credential(s, "vm-1").await;
    let claimed = s
        .claim("ada@example.org", &crd_command("4/0AbcMetrics-1"))
        .await;
    assert_eq!(claimed.status, 200, "{}", claimed.html);
    clock.advance(later);
    (claimed.hostname(), credential)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_series_stays_within_its_bound_and_keeps_the_mean() {
    let clock = start();
    let (s, _dir) = server(clock.clone()).await;
    within(60, "samples into a bounded series", async {
        let (host, credential) = claimed_vm(&s, &clock, Duration::hours(2)).await;
        // 200 samples taken every 15 s, the newest just now, in batches of 20 as the
        // agent sends them after a long outage.
        let all: Vec<Value> = (0..200)
            .map(|i| {
                let age = f64::from(199 - i) * 15.0;
                sample(
                    age,
                    f64::from(i % 10) * 10.0,
                    1000 + u64::from(i as u16) * 10,
                    i % 2 == 0,
                )
            })
            .collect();
        for batch in all.chunks(20) {
            assert_eq!(send(&s, &credential, &host, batch).await["accepted"], 20);
        }
        // The last batch again (its answer lost): nothing is counted twice.
        assert_eq!(
            send(&s, &credential, &host, &all[180..]).await["accepted"],
            0
        );

        let found = seats(&s, &format!("?hostname={host}")).await;
        assert_eq!(found.len(), 1, "{found:#?}");
        let seat = &found[0];
        assert_eq!(seat["email"], "ada@example.org");
        let points = seat["points"].as_array().expect("points");
        assert!(
            points.len() as u64 <= MAX_POINTS && points.len() >= 8,
            "{} points",
            points.len()
        );
        assert!(seat["samples_per_point"].as_u64().expect("per point") >= 16);
        let summary = &seat["summary"];
        assert_eq!(summary["samples"], 200);
        assert!((summary["gpu_util_mean"].as_f64().expect("mean") - 45.0).abs() < 1e-9);
        assert_eq!(summary["gpu_util_peak"], 90.0);
        assert_eq!(summary["gpu_memory_peak_mib"], 2990);
        assert_eq!(summary["in_use_seconds"], 100.0 * 15.0);
        // A Chrome Remote Desktop seat: nobody can tell whether it is connected.
        assert_eq!(summary["connected_seconds"], Value::Null);
        // The points follow the day in order.
        let times: Vec<&str> = points
            .iter()
            .map(|p| p["at"].as_str().expect("at"))
            .collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");

        assert!(seats(&s, "?email=bob@example.org").await.is_empty());
        assert_eq!(seats(&s, "?email=ADA@example.org").await.len(), 1);
        let bad_host = s
            .get("/api/session-metrics?hostname=not_a_host", Auth::admin())
            .await;
        refused_with(&bad_host, 400, "Hostname");
        assert_eq!(s.get("/api/session-metrics", Auth::None).await.status, 401);

        // The console: the instances table and the session summary draw it; the CSV has
        // one summary row per seat.
        let instances = s.get("/admin/instances", Auth::admin()).await.text;
        assert!(instances.contains("<svg class=\"spark\""), "{instances}");
        assert!(
            instances.contains("GPU mean 45 %, peak 90 %"),
            "{instances}"
        );
        let sessions = s.get("/admin/sessions", Auth::admin()).await.text;
        assert!(sessions.contains("ada@example.org"), "{sessions}");
        assert!(sessions.contains("<title>ada@example.org on vm-1: GPU mean 45 %"));
        assert!(sessions.contains("25 min"), "time in use: {sessions}");
        let csv = s
            .get("/admin/export-sessions.csv", Auth::admin())
            .await
            .text;
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2, "{csv}");
        assert!(lines[0].starts_with("participant_email,hostname,assigned_at"));
        assert!(lines[1].starts_with("ada@example.org,vm-1,"), "{csv}");
        assert!(
            lines[1].contains(",200,45.0,90.0,2990,1500.0,,3000.0"),
            "{csv}"
        );
        let exported = s
            .get("/admin/export-sessions.json", Auth::admin())
            .await
            .expect(200);
        assert_eq!(exported["seats"][0]["summary"]["samples"], 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_before_the_claim_or_of_a_free_vm_are_not_taken() {
    let clock = start();
    let (s, _dir) = server(clock.clone()).await;
    within(30, "samples outside the seat", async {
        s.register_running("vm-2").await;
        let free = mint_credential(&s, "vm-2").await;
        assert_eq!(
            send(&s, &free, "vm-2", &[sample(0.0, 5.0, 1, false)]).await["accepted"],
            0
        );
        let (host, credential) = claimed_vm(&s, &clock, Duration::minutes(1)).await;
        let answer = send(
            &s,
            &credential,
            &host,
            &[sample(120.0, 5.0, 1, false), sample(30.0, 7.0, 2, true)],
        )
        .await;
        assert_eq!(answer["accepted"], 1, "only the sample after the claim");
        assert_eq!(answer["sample_seconds"], 15);
        let found = seats(&s, "").await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["summary"]["gpu_util_peak"], 7.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_naming_the_field() {
    let s = TestServer::start().await;
    within(30, "bad batches", async {
        s.register_running("vm-1").await;
        let ok = sample(1.0, 5.0, 1, false);
        let too_many: Vec<Value> = (0..241).map(|_| ok.clone()).collect();
        let cases = [
            (json!({"hostname": "vm-1"}), "samples is required"),
            (json!({"samples": [ok]}), "hostname is required"),
            (
                json!({"hostname": "vm-1", "samples": [ok, {"gpu_utilization_pct": 5}]}),
                "samples[1]: missing field `age_seconds`",
            ),
            (
                json!({"hostname": "vm-1", "samples": [ok, {"age_seconds": 1, "gpu_utilization_pct": 101}]}),
                "samples[1].gpu_utilization_pct: expected 0 to 100",
            ),
            (
                json!({"hostname": "vm-1", "samples": [{"age_seconds": -1}]}),
                "samples[0].age_seconds",
            ),
            (
                json!({"hostname": "vm-1", "samples": [{"age_seconds": 1, "gpu_memory_used_mib": 16_777_217u64}]}),
                "samples[0].gpu_memory_used_mib",
            ),
            (
                json!({"hostname": "vm-1", "samples": [{"age_seconds": 1, "in_use": "yes"}]}),
                "samples[0].in_use",
            ),
            (
                json!({"hostname": "vm-1", "samples": too_many}),
                "samples: at most 240 per batch, got 241",
            ),
            (
                json!({"hostname": "vm-1", "interval_seconds": 0, "samples": [ok]}),
                "interval_seconds: expected 1 to 3600",
            ),
            (json!({"hostname": "vm-1", "samples": {}}), "samples"),
        ];
        for (body, message) in cases {
            let refused = s.agent_post("/api/session-metrics", &body).await;
            refused_with(&refused, 400, message);
        }
        s.agent_post(
            "/api/session-metrics",
            &json!({"hostname": "vm-9", "samples": []}),
        )
        .await
        .expect(404);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vms_credential_sends_only_its_own_metrics() {
    let s = TestServer::start().await;
    within(30, "another VM's credential", async {
        s.register_running("vm-1").await;
        s.register_running("vm-2").await;
        let of_vm2 = mint_credential(&s, "vm-2").await;
        let body = json!({"hostname": "vm-1", "samples": [sample(1.0, 5.0, 1, false)]});
        let refused = s
            .post_json("/api/session-metrics", &body, Some(&of_vm2))
            .await;
        assert_eq!(refused.status, 403, "{}", refused.text);
        assert!(refused.text.contains("vm-2"), "{}", refused.text);
        s.post_json("/api/session-metrics", &body, Some("not-the-token"))
            .await
            .expect(401);
        s.post_json("/api/session-metrics", &body, None)
            .await
            .expect(401);
    })
    .await;
}

/// The instances table and the session summary in a real browser: the sparkline is drawn,
/// says its figures in its title, and the summary follows new samples without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
async fn sparklines_in_a_real_browser() {
    use crate::browser::{browser, require_browser, shoot, sign_in, start_driver, wait_css};
    use crate::helpers::{ADMIN_PASSWORD, wait_for};
    require_browser();
    let clock = start();
    let (s, _dir) = server(clock.clone()).await;
    let driver = start_driver().await;
    within(240, "sparklines in Chromium", async {
        let (host, credential) = claimed_vm(&s, &clock, Duration::hours(1)).await;
        // An hour of a session: busy in the middle, the software in use then.
        let day: Vec<Value> = (0..240)
            .map(|i| {
                let age = f64::from(239 - i) * 15.0;
                let busy = (60..180).contains(&i);
                let util = if busy {
                    60.0 + f64::from(i % 7) * 5.0
                } else {
                    f64::from(i % 3)
                };
                sample(age, util, if busy { 6000 } else { 800 }, busy)
            })
            .collect();
        for batch in day.chunks(120) {
            send(&s, &credential, &host, batch).await;
        }
        let admin = browser(&driver, 1400, 700).await;
        sign_in(&admin, &s.base, ADMIN_PASSWORD).await;
        admin
            .goto(&format!("{}/admin/instances", s.base))
            .await
            .expect("open instances");
        wait_css(&admin, "#vm-vm-1 td.activity svg.spark").await;
        // Live updates replace the row: read it in one script, not through a handle.
        let title = admin
            .execute(
                "return document.querySelector('#vm-vm-1 td.activity svg.spark title').textContent;",
                vec![],
            )
            .await
            .expect("the sparkline's title");
        let title = title.as_str().unwrap_or_default().to_owned();
        assert!(title.contains("GPU mean"), "{title}");
        assert!(title.contains("peak 90 %"), "{title}");
        let drawn = admin
            .execute(
                "const s = document.querySelector('#vm-vm-1 svg.spark'); \
                 const r = s.getBoundingClientRect(); \
                 return [r.width, r.height, s.querySelector('polyline.util').points.length, \
                         s.querySelectorAll('rect.inuse').length];",
                vec![],
            )
            .await
            .expect("measure");
        let drawn: Vec<f64> = serde_json::from_value(drawn).expect("numbers");
        assert_eq!((drawn[0], drawn[1]), (120.0, 28.0), "the sparkline's size");
        assert!(drawn[2] >= 8.0, "points drawn: {drawn:?}");
        assert!(drawn[3] >= 1.0, "the in-use band: {drawn:?}");
        shoot(&admin, "sessions-instances-sparkline").await;

        admin
            .goto(&format!("{}/admin/sessions", s.base))
            .await
            .expect("open sessions");
        wait_css(&admin, "#sessions svg.spark").await;
        admin
            .execute("window.__lablink_marker = 42; return true;", vec![])
            .await
            .expect("mark the page");
        let peak = || async {
            admin
                .execute(
                    "const c = document.querySelector('#sessions tr td:nth-child(5)'); \
                     return c ? c.textContent.trim() : '';",
                    vec![],
                )
                .await
                .expect("read the peak cell")
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        assert!(peak().await.starts_with("90 %"), "{}", peak().await);
        // A new busiest sample arrives: the summary follows over the event stream.
        clock.advance(Duration::seconds(15));
        send(&s, &credential, &host, &[sample(0.0, 100.0, 7000, true)]).await;
        wait_for(30, "the live summary", || async {
            peak().await.starts_with("100 %").then_some(())
        })
        .await;
        let marker = admin
            .execute("return window.__lablink_marker || null;", vec![])
            .await
            .expect("read the marker");
        assert_eq!(marker, json!(42), "the page was reloaded");
        shoot(&admin, "sessions-summary").await;
        admin.close().await.expect("close");
    })
    .await;
}

/// A browser seat's time connected: what its agent says, or, when the agent cannot tell,
/// whether the relay has a participant's stream open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_seats_time_connected_is_measured() {
    use crate::desktop::{FakeAgent, claim, open_in_background};
    let clock = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_on_with_clock(dir.path(), "127.0.0.1:0", clock.clone(), |c| {
        c.desktop.mode = "browser".into();
        c.metrics.sample_seconds = 15;
    })
    .await;
    within(60, "a browser seat's connection", async {
        s.register_running("vm-1").await;
        let (answer, cookie) = claim(&s, &[("email", "ada@example.org")]).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let cookie = cookie.expect("claim cookie");
        clock.advance(Duration::minutes(10));
        let mut agent = FakeAgent::connect(&s, "vm-1").await;
        let credential = mint_credential(&s, "vm-1").await;
        let connected = |age: f64, connected: Option<bool>| {
            let mut one = sample(age, 10.0, 100, true);
            one["desktop_connected"] = json!(connected);
            one
        };
        // Connected for two samples, then not; a sample without a say while nobody
        // watches counts as not connected.
        let batch = [
            connected(60.0, Some(true)),
            connected(45.0, Some(true)),
            connected(30.0, Some(false)),
            connected(15.0, None),
        ];
        assert_eq!(send(&s, &credential, "vm-1", &batch).await["accepted"], 4);
        let seat = seats(&s, "?hostname=vm-1").await.remove(0);
        assert_eq!(seat["summary"]["connected_seconds"], 30.0, "{seat}");
        let flags: Vec<&Value> = seat["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| &p["desktop_connected"])
            .collect();
        assert_eq!(
            flags,
            [&json!(true), &json!(true), &json!(false), &json!(false)]
        );

        // The participant's page opens the desktop: while that stream is open, a sample
        // without a say counts as connected.
        let opening = open_in_background(&s, "/desktop/ws", ("cookie", cookie));
        agent.next_open().await;
        clock.advance(Duration::seconds(15));
        assert_eq!(
            send(&s, &credential, "vm-1", &[connected(0.0, None)]).await["accepted"],
            1
        );
        let seat = seats(&s, "?hostname=vm-1").await.remove(0);
        assert_eq!(seat["summary"]["connected_seconds"], 45.0, "{seat}");
        opening.abort();

        let csv = s
            .get("/admin/export-sessions.csv", Auth::admin())
            .await
            .text;
        let row = csv.lines().nth(1).expect("the seat's row");
        assert!(row.starts_with("ada@example.org,vm-1,"), "{csv}");
        // Time in use, then time connected.
        assert!(row.contains(",75.0,45.0,"), "{csv}");
    })
    .await;
}
