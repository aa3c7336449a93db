//! `POST /vm_startup`: the agent's long-poll for its assignment.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestServer, crd_command, wait_until, within};

#[tokio::test]
async fn bad_requests_and_unknown_hosts() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.vm_startup("vm-404")
            .await
            .expect_error(404, "VM not found.");
        for body in [
            json!({}),
            json!({"hostname": ""}),
            json!({"hostname": null}),
        ] {
            s.agent_post("/vm_startup", &body)
                .await
                .expect_error(400, "Hostname is required.");
        }
        let err = s
            .agent_post("/vm_startup", &json!({"hostname": 3}))
            .await
            .expect(400);
        assert!(err["error"].is_string());
        s.post_json("/vm_startup", &json!({"hostname": "vm-1"}), None)
            .await
            .expect_error(401, "Missing or invalid Authorization header.");
        assert_eq!(s.app.waiters.parked(), 0, "nothing left parked");
    })
    .await;
}

#[tokio::test]
async fn an_assigned_vm_answers_at_once() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        let c = s
            .claim("ada@example.org", &crd_command("4/0Immediate"))
            .await;
        assert_eq!(c.status, StatusCode::OK);
        let started = Instant::now();
        let answer = s.vm_startup("vm-1").await.expect(200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(answer["status"], "success");
        assert_eq!(answer["pin"], c.pin().as_str());
        let command = answer["command"].as_str().expect("command");
        assert!(command.contains("--code=\"4/0Immediate\""), "{command}");
        assert_eq!(
            answer.as_object().expect("object").len(),
            3,
            "exactly status, pin, command: {answer}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_poll_is_woken_by_the_claim() {
    let s = TestServer::start_with(|c| c.server.long_poll_seconds = 30).await;
    within(30, "test", async {
        s.register_many(2).await;
        let poll = s.spawn_poll("vm-1");
        let other = s.spawn_poll("vm-2");
        wait_until(5, "both polls park", || s.app.waiters.parked() == 2).await;

        let c = s.claim("ada@example.org", &crd_command("4/0Wake-Up")).await;
        let claimed_at = Instant::now();
        assert_eq!(c.status, StatusCode::OK, "{}", c.html);
        assert_eq!(c.hostname(), "vm-1");
        let (answer, answered_at) = within(2, "the woken poll", poll).await.expect("poll task");
        let delay = answered_at.saturating_duration_since(claimed_at);
        assert!(
            delay < Duration::from_secs(1),
            "answered {delay:?} after the claim"
        );
        assert_eq!(
            answer.expect(200),
            json!({"status": "success", "pin": c.pin(), "command": crd_command("4/0Wake-Up")})
        );

        // vm-2's poll was not woken by vm-1's claim.
        wait_until(5, "vm-1's waiter released", || s.app.waiters.parked() == 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!other.is_finished(), "vm-2's poll answered");
        // Its own claim wakes it.
        let c2 = s.claim("bob@example.org", &crd_command("4/0Second")).await;
        assert_eq!(c2.hostname(), "vm-2");
        let (answer, _) = within(2, "vm-2's poll", other).await.expect("poll task");
        assert_eq!(answer.expect(200)["pin"], c2.pin().as_str());
        wait_until(5, "waiters released", || s.app.waiters.parked() == 0).await;
    })
    .await;
}

#[tokio::test]
async fn the_hold_time_ends_in_408() {
    let s = TestServer::start_with(|c| c.server.long_poll_seconds = 1).await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        let started = Instant::now();
        s.vm_startup("vm-1").await.expect_error(408, "timeout");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        assert_eq!(s.app.waiters.parked(), 0);
        // The VM is still free: the agent asks again and is served once claimed.
        assert_eq!(s.free_count().await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_frees_its_waiter() {
    let s = TestServer::start_with(|c| c.server.long_poll_seconds = 30).await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        let mut polls = Vec::new();
        for _ in 0..3 {
            polls.push(s.spawn_poll("vm-1"));
        }
        wait_until(5, "three polls park", || s.app.waiters.parked() == 3).await;
        let last = polls.pop().expect("a poll");
        for p in &polls {
            p.abort();
        }
        wait_until(5, "aborted polls release their waiters", || {
            s.app.waiters.parked() == 1
        })
        .await;
        last.abort();
        wait_until(5, "all waiters released", || s.app.waiters.parked() == 0).await;

        // A poll dropped by its client-side timeout is released as well.
        let short = crate::helpers::client();
        let r = short
            .post(s.url("/vm_startup"))
            .bearer_auth(s.token())
            .timeout(Duration::from_millis(300))
            .json(&json!({"hostname": "vm-1"}))
            .send()
            .await;
        assert!(r.is_err_and(|e| e.is_timeout()));
        wait_until(5, "timed-out poll released", || s.app.waiters.parked() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_parked_polls_with_503() {
    let mut s = TestServer::start_with(|c| c.server.long_poll_seconds = 30).await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        let poll = s.spawn_poll("vm-1");
        wait_until(5, "the poll parks", || s.app.waiters.parked() == 1).await;
        let started = Instant::now();
        let (_, (answer, _)) = tokio::join!(s.stop(), async {
            within(3, "the parked poll after shutdown", poll)
                .await
                .expect("poll task")
        });
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        answer.expect_error(503, "The allocator is shutting down; ask again shortly.");
    })
    .await;
}

/// The long-poll is served beside the router rather than through it; it is answered as
/// every route is: the body limit, the security headers, the request id.
#[tokio::test]
async fn the_long_poll_keeps_the_limits_and_headers_of_every_route() {
    let s = TestServer::start().await;
    within(30, "test", async {
        let client = reqwest::Client::new();
        let padding = "x".repeat(70 * 1024);
        let answer = client
            .post(s.url("/vm_startup"))
            .bearer_auth(s.token())
            .header("x-request-id", "poll-too-large")
            .body(format!(r#"{{"hostname":"vm-1","padding":"{padding}"}}"#))
            .send()
            .await
            .expect("POST");
        assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let headers = answer.headers().clone();
        assert_eq!(headers["x-request-id"], "poll-too-large");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store");
        assert!(headers.contains_key("content-security-policy"));
        let body: serde_json::Value = answer.json().await.expect("JSON");
        assert_eq!(body["error"], "Request body is larger than 65536 bytes.");
        let other_method = client.get(s.url("/vm_startup")).send().await.expect("GET");
        assert_eq!(other_method.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(other_method.headers().contains_key("x-request-id"));
        assert_eq!(s.app.waiters.parked(), 0);
    })
    .await;
}
