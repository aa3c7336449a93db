//! The health check, and what shutdown promises: prompt, and nothing acknowledged lost.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Auth, TestServer, crd_command, wait_until, within};

#[tokio::test]
async fn health_reports_the_store() {
    let s = TestServer::start().await;
    within(30, "test", async {
        for path in ["/api/health", "/health"] {
            let body = s.get(path, Auth::None).await.expect(200);
            assert_eq!(body["status"], "ok", "{path}: {body}");
            assert_eq!(body["checks"], json!({"store": "ok"}), "{path}: {body}");
            assert!(body["uptime_seconds"].is_u64(), "{path}: {body}");
        }
        let store = s.app.store.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("close");
        let a = s.get("/api/health", Auth::None).await;
        let body = a.expect(503);
        assert_eq!(body["status"], "unavailable");
        assert_eq!(
            body["checks"],
            json!({"store": "failed", "store_writer": "stopped"})
        );
        // Endpoints that need the store fail cleanly (500 JSON), they do not hang.
        let a = s
            .agent_post(
                "/api/vm-status",
                &json!({"hostname": "vm-1", "status": "running"}),
            )
            .await;
        a.expect_error(500, "Failed to update VM status.");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_prompt_with_a_parked_poll() {
    let mut s = TestServer::start_with(|c| c.server.long_poll_seconds = 60).await;
    s.register_running("vm-1").await;
    let poll = s.spawn_poll("vm-1");
    wait_until(5, "the poll parks", || s.app.waiters.parked() == 1).await;
    let started = Instant::now();
    within(5, "stop() with a parked poll", s.stop()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let (answer, _) = within(5, "the poll's answer", poll).await.expect("task");
    answer.expect(503);

    // The port no longer answers.
    let refused = crate::helpers::client()
        .get(s.url("/api/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "still serving after stop: {refused:?}");
}

#[tokio::test]
async fn stop_is_prompt_with_idle_keep_alive_connections() {
    let mut s = TestServer::start().await;
    // Leave pooled keep-alive connections open.
    for _ in 0..3 {
        s.get("/api/health", Auth::None).await.expect(200);
    }
    let started = Instant::now();
    within(5, "stop()", s.stop()).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn acknowledged_writes_survive_a_stop() {
    let s = TestServer::start().await;
    let (s, pin) = within(30, "first run", async {
        s.register_many(2).await;
        let c = s.claim("last@example.org", &crd_command("4/0Last")).await;
        assert_eq!(c.status.as_u16(), 200);
        // The very last acknowledged writes, right before stop.
        s.report_status("vm-2", "error").await;
        s.agent_post(
            "/api/update_inuse_status",
            &json!({"hostname": "vm-1", "status": true}),
        )
        .await
        .expect(200);
        let pin = c.pin();
        (s, pin)
    })
    .await;
    let s = within(30, "restart", s.restart(|_| {})).await;
    within(30, "second run", async {
        let vm1 = s.stored_vm("vm-1").await.expect("vm-1");
        assert!(vm1.in_use);
        let a = vm1.assignment.expect("assigned");
        assert_eq!(
            (a.email.as_str(), a.pin.as_str()),
            ("last@example.org", pin.as_str())
        );
        assert_eq!(
            s.agent_get("/api/vm-status/vm-2").await.expect(200),
            json!({"hostname": "vm-2", "status": "error"})
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_the_stop_are_either_refused_or_kept() {
    let mut s = TestServer::start().await;
    s.register_running("vm-0").await;
    // Many reports in flight while the server stops: every one acknowledged with 200
    // must be in the store afterwards.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=40 {
        let (client, url, token) = (
            s.client.clone(),
            s.url("/api/vm-status"),
            s.token().to_owned(),
        );
        tasks.spawn(async move {
            let host = format!("vm-{i}");
            let ok = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"hostname": host, "status": "running"}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            (host, ok)
        });
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    within(10, "stop()", s.stop()).await;
    let mut acknowledged = Vec::new();
    while let Some(done) = within(10, "reports", tasks.join_next()).await {
        let (host, ok) = done.expect("task");
        if ok {
            acknowledged.push(host);
        }
    }
    let s = within(30, "restart", s.restart(|_| {})).await;
    for host in acknowledged {
        assert!(
            s.stored_vm(&host).await.is_some(),
            "{host} was acknowledged but is not in the store"
        );
    }
}
