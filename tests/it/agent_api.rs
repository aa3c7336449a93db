//! The JSON API the VM agents call, with good and bad input, auth and body limits.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, Auth, TestServer, within};

const STATUS_MISSING: &str = "Hostname and status are required.";
const LOGS_MISSING: &str = "Log group, stream, and messages are required.";
const NOT_FOUND: &str = "VM not found.";

const NO_UNDERSCORE: &str =
    "Hostname may contain only letters, digits, '-' and '.' (RFC 1123; no '_').";
const EMPTY_PART: &str = "Hostname must not start or end with '.' nor contain '..': every \
                          dot-separated part needs at least one character.";

#[tokio::test]
async fn hostnames_that_are_not_rfc_1123_names_are_refused() {
    let s = TestServer::start().await;
    within(30, "test", async {
        for (host, message) in [
            ("..", EMPTY_PART),
            (".", EMPTY_PART),
            (".x", EMPTY_PART),
            ("x.", EMPTY_PART),
            ("a..b", EMPTY_PART),
            ("a_b", NO_UNDERSCORE),
            ("../etc", NO_UNDERSCORE),
            ("-a", "Hostname part -a must not start or end with '-'."),
        ] {
            s.agent_post(
                "/api/vm-status",
                &json!({"hostname": host, "status": "running"}),
            )
            .await
            .expect_error(400, message);
            s.agent_post("/vm_startup", &json!({ "hostname": host }))
                .await
                .expect_error(400, message);
        }
        // In a path too (`..` and `.` would be resolved by the client before sending).
        for (host, message) in [
            (".x", EMPTY_PART),
            ("a..b", EMPTY_PART),
            ("a_b", NO_UNDERSCORE),
        ] {
            s.agent_get(&format!("/api/vm-status/{host}"))
                .await
                .expect_error(400, message);
            s.admin_form(&format!("/api/vms/{host}/destroy"), &[], &[])
                .await
                .expect_error(400, message);
        }
        assert_eq!(s.free_count().await, 0, "no VM was created");
    })
    .await;
}

#[tokio::test]
async fn vm_status_post_creates_and_validates() {
    let s = TestServer::start().await;
    within(30, "test", async {
        // Creates the VM on first contact, then updates it.
        s.report_status("vm-1", "initializing").await;
        assert_eq!(
            s.agent_get("/api/vm-status/vm-1").await.expect(200),
            json!({"hostname": "vm-1", "status": "initializing"})
        );
        s.report_status("vm-1", "running").await;
        assert_eq!(
            s.agent_get("/api/vm-status/vm-1").await.expect(200),
            json!({"hostname": "vm-1", "status": "running"})
        );

        for body in [
            json!({"status": "running"}),
            json!({"hostname": "vm-2"}),
            json!({"hostname": "", "status": "running"}),
            json!({"hostname": null, "status": "running"}),
            json!({"hostname": "vm-2", "status": null}),
            json!({}),
        ] {
            s.agent_post("/api/vm-status", &body)
                .await
                .expect_error(400, STATUS_MISSING);
        }
        // Wrong JSON type, unknown status value, a hostname that cannot be one.
        for body in [
            json!({"hostname": "vm-2", "status": 5}),
            json!({"hostname": 7, "status": "running"}),
            json!({"hostname": "vm-2", "status": "exploded"}),
            json!({"hostname": "vm 2/..", "status": "running"}),
            json!("vm-2"),
            json!(["vm-2", "running"]),
        ] {
            let a = s.agent_post("/api/vm-status", &body).await;
            let err = a.expect(400);
            assert!(err["error"].is_string(), "{body}: {err}");
        }
        // Not JSON at all, and an empty body.
        for raw in [
            &b"hostname=vm-2&status=running"[..],
            b"{\"hostname\": ",
            b"",
            b"  \n",
        ] {
            let a = s
                .post_raw("/api/vm-status", "application/json", raw.to_vec())
                .await;
            let err = a.expect(400);
            assert!(err["error"].is_string(), "{err}");
        }
        // None of the refused reports created vm-2.
        s.agent_get("/api/vm-status/vm-2")
            .await
            .expect_error(404, NOT_FOUND);

        // Valid JSON under a careless content type is accepted.
        let a = s
            .post_raw(
                "/api/vm-status",
                "text/plain",
                br#"{"hostname": "vm-3", "status": "error"}"#.to_vec(),
            )
            .await;
        assert_eq!(
            a.expect(200),
            json!({"message": "VM status updated successfully."})
        );
        assert_eq!(
            s.agent_get("/api/vm-status/vm-3").await.expect(200),
            json!({"hostname": "vm-3", "status": "error"})
        );
    })
    .await;
}

#[tokio::test]
async fn vm_status_reads_single_and_all() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.agent_get("/api/vm-status")
            .await
            .expect_error(404, "No VMs found.");
        s.agent_get("/api/vm-status/vm-9")
            .await
            .expect_error(404, NOT_FOUND);

        s.register_running("vm-1").await;
        s.report_status("vm-2", "initializing").await;
        let all = json!({"vm-1": "running", "vm-2": "initializing"});
        assert_eq!(s.agent_get("/api/vm-status").await.expect(200), all);
        // The admin's browser reads the same map with Basic.
        assert_eq!(
            s.get("/api/vm-status", Auth::admin()).await.expect(200),
            all
        );

        // A wrong bearer token is refused as JSON; there is no fallback to Basic.
        let a = s.get("/api/vm-status", Auth::Bearer("not-the-token")).await;
        a.expect_error(401, "Invalid API token.");
        // Wrong Basic: Flask-HTTPAuth's plain-text answer.
        let a = s
            .get("/api/vm-status", Auth::Basic("admin", "wrong-password"))
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.text, "Unauthorized Access");
        let a = s.get("/api/vm-status", Auth::None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);

        // The single-VM read is the agent's: Basic is not enough.
        let a = s.get("/api/vm-status/vm-1", Auth::admin()).await;
        a.expect_error(401, "Missing or invalid Authorization header.");
    })
    .await;
}

#[tokio::test]
async fn bearer_auth_errors() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        let body = json!({"hostname": "vm-1", "status": "running"});
        s.post_json("/api/vm-status", &body, None)
            .await
            .expect_error(401, "Missing or invalid Authorization header.");
        s.post_json("/api/vm-status", &body, Some("wrong-token"))
            .await
            .expect_error(401, "Invalid API token.");
        // The token plus anything is not the token (trailing blanks are not part of a
        // header value on the wire, so the extra character is a visible one).
        let longer = format!("{}x", s.token());
        s.post_json("/api/vm-status", &body, Some(&longer))
            .await
            .expect_error(401, "Invalid API token.");
        let shorter = &s.token()[..s.token().len() - 1];
        s.post_json("/api/vm-status", &body, Some(shorter))
            .await
            .expect_error(401, "Invalid API token.");
        // The token is taken verbatim after "Bearer ": a second blank is not skipped.
        let doubled = format!("Bearer  {}", s.token());
        s.get("/api/vm-status/vm-1", Auth::Raw(&doubled))
            .await
            .expect_error(401, "Invalid API token.");
        // The scheme is matched case-sensitively, as upstream does.
        let lower = format!("bearer {}", s.token());
        let a = s.get("/api/vm-status/vm-1", Auth::Raw(&lower)).await;
        a.expect_error(401, "Missing or invalid Authorization header.");
        let basic = s
            .get("/api/vm-status/vm-1", Auth::Raw("Basic YWRtaW46eA=="))
            .await;
        basic.expect_error(401, "Missing or invalid Authorization header.");
        // The right token works, and the 401s changed nothing.
        assert_eq!(
            s.agent_get("/api/vm-status/vm-1").await.expect(200),
            json!({"hostname": "vm-1", "status": "running"})
        );
        // Every bearer route checks the token.
        for path in [
            "/vm_startup",
            "/api/update_inuse_status",
            "/api/gpu_health",
            "/api/vm-metrics/vm-1",
            "/api/vm-logs",
        ] {
            s.post_json(path, &json!({"hostname": "vm-1"}), Some("nope"))
                .await
                .expect_error(401, "Invalid API token.");
        }
    })
    .await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let s = TestServer::start().await;
    within(30, "test", async {
        let a = s.agent_get("/api/no-such-thing").await;
        a.expect_error(404, "Not found.");
        let a = s.get("/admin/nothing/here", Auth::None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);

        for (method, path) in [
            (reqwest::Method::GET, "/vm_startup"),
            (reqwest::Method::DELETE, "/api/vm-status"),
            (reqwest::Method::PUT, "/api/vm-status/vm-1"),
            (reqwest::Method::GET, "/api/request_vm"),
            (reqwest::Method::POST, "/api/unassigned_vms_count"),
            (reqwest::Method::GET, "/api/vm-logs"),
        ] {
            let r = s
                .client
                .request(method.clone(), s.url(path))
                .bearer_auth(s.token())
                .send()
                .await
                .expect("request");
            assert_eq!(
                r.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn update_inuse_status() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        let ok = json!({"message": "In-use status updated successfully."});
        let a = s
            .agent_post(
                "/api/update_inuse_status",
                &json!({"hostname": "vm-1", "status": true}),
            )
            .await;
        assert_eq!(a.expect(200), ok);
        assert!(s.stored_vm("vm-1").await.expect("vm").in_use);
        let a = s
            .agent_post(
                "/api/update_inuse_status",
                &json!({"hostname": "vm-1", "status": false}),
            )
            .await;
        assert_eq!(a.expect(200), ok);
        assert!(!s.stored_vm("vm-1").await.expect("vm").in_use);

        for body in [
            json!({"status": true}),
            json!({"hostname": "", "status": true}),
        ] {
            s.agent_post("/api/update_inuse_status", &body)
                .await
                .expect_error(400, "Hostname is required.");
        }
        for body in [
            json!({"hostname": "vm-1", "status": "yes"}),
            json!({"hostname": "vm-1", "status": 1}),
            json!({"hostname": "vm-1"}),
        ] {
            let err = s
                .agent_post("/api/update_inuse_status", &body)
                .await
                .expect(400);
            assert!(err["error"].is_string(), "{body}: {err}");
        }
        assert!(!s.stored_vm("vm-1").await.expect("vm").in_use);
        s.agent_post(
            "/api/update_inuse_status",
            &json!({"hostname": "vm-404", "status": true}),
        )
        .await
        .expect_error(404, NOT_FOUND);
        assert!(s.stored_vm("vm-404").await.is_none(), "no VM is created");
    })
    .await;
}

#[tokio::test]
async fn gpu_health_sets_health_and_availability() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        s.register_running("vm-2").await;
        assert_eq!(s.free_count().await, 2);
        const MISSING: &str = "GPU status and hostname are required.";
        for body in [
            json!({"hostname": "vm-1"}),
            json!({"gpu_status": "Healthy"}),
            json!({"hostname": "vm-1", "gpu_status": null}),
            json!({"hostname": "", "gpu_status": "Healthy"}),
        ] {
            s.agent_post("/api/gpu_health", &body)
                .await
                .expect_error(400, MISSING);
        }
        s.agent_post(
            "/api/gpu_health",
            &json!({"hostname": "vm-404", "gpu_status": "Healthy"}),
        )
        .await
        .expect_error(404, NOT_FOUND);

        let ok = json!({"message": "GPU health status updated successfully."});
        let a = s
            .agent_post(
                "/api/gpu_health",
                &json!({"hostname": "vm-1", "gpu_status": "Unhealthy"}),
            )
            .await;
        assert_eq!(a.expect(200), ok);
        assert_eq!(
            s.stored_vm("vm-1").await.expect("vm").health,
            Some(lablink::model::Health::Unhealthy)
        );
        assert_eq!(s.free_count().await, 1, "an Unhealthy VM is not free");
        // The claim skips it too.
        let c = s
            .claim("a@example.org", &crate::helpers::crd_command("4/0Abc"))
            .await;
        assert_eq!(c.status, StatusCode::OK, "{}", c.html);
        assert_eq!(c.hostname(), "vm-2");
        assert_eq!(s.free_count().await, 0);

        // Recovered: free again. Any string is accepted, upstream-style.
        for gpu in ["Healthy", "N/A", "Degraded"] {
            let a = s
                .agent_post(
                    "/api/gpu_health",
                    &json!({"hostname": "vm-1", "gpu_status": gpu}),
                )
                .await;
            assert_eq!(a.expect(200), ok);
        }
        assert_eq!(s.free_count().await, 1);
    })
    .await;
}

#[tokio::test]
async fn vm_metrics() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        let ok = json!({"message": "VM metrics posted successfully."});
        s.agent_post(
            "/api/vm-metrics/vm-404",
            &json!({"cloud_init_duration_seconds": 12}),
        )
        .await
        .expect_error(404, NOT_FOUND);

        // A partial report, then another part; unknown keys are ignored.
        let a = s
            .agent_post(
                "/api/vm-metrics/vm-1",
                &json!({"cloud_init_start": 1_700_000_000, "cloud_init_end": 1_700_000_060.5,
                        "cloud_init_duration_seconds": 60.5, "something_else": [1, 2]}),
            )
            .await;
        assert_eq!(a.expect(200), ok);
        let a = s
            .agent_post(
                "/api/vm-metrics/vm-1",
                &json!({"container_startup_duration_seconds": 30}),
            )
            .await;
        assert_eq!(a.expect(200), ok);
        let a = s.agent_post("/api/vm-metrics/vm-1", &json!({})).await;
        assert_eq!(a.expect(200), ok, "an empty report is a no-op");
        let vm = s.stored_vm("vm-1").await.expect("vm");
        assert_eq!(vm.timings.cloud_init.duration_seconds, Some(60.5));
        assert_eq!(
            vm.timings.cloud_init.start.map(|t| t.timestamp()),
            Some(1_700_000_000)
        );
        assert_eq!(
            vm.timings.cloud_init.end.map(|t| t.timestamp_millis()),
            Some(1_700_000_060_500)
        );
        assert_eq!(vm.timings.container.duration_seconds, Some(30.0));
        assert_eq!(vm.timings.total_seconds(), 90.5);

        for body in [
            json!({"container_startup_duration_seconds": -1}),
            json!({"cloud_init_duration_seconds": -0.5}),
            json!({"cloud_init_start": -5}),
            json!({"cloud_init_start": "yesterday"}),
        ] {
            let err = s
                .agent_post("/api/vm-metrics/vm-1", &body)
                .await
                .expect(400);
            assert!(err["error"].is_string(), "{body}: {err}");
        }
        let after = s.stored_vm("vm-1").await.expect("vm");
        assert_eq!(after.timings, vm.timings, "refused reports change nothing");
    })
    .await;
}

#[tokio::test]
async fn vm_metrics_unknown_host_is_checked_before_the_body() {
    // Upstream checks for the VM first: an agent whose VM is unknown learns that, whatever
    // it sent.
    let s = TestServer::start().await;
    within(30, "test", async {
        s.agent_post(
            "/api/vm-metrics/vm-404",
            &json!({"container_startup_duration_seconds": -1}),
        )
        .await
        .expect_error(404, NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn vm_logs_post_and_get() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        s.register_running("vm-2").await;
        let posted = json!({"message": "VM logs posted successfully."});

        for body in [
            json!({"log_stream": "vm-1", "messages": ["a"]}),
            json!({"log_group": "g", "messages": ["a"]}),
            json!({"log_group": "g", "log_stream": "vm-1"}),
            json!({"log_group": "g", "log_stream": "vm-1", "messages": []}),
            json!({"log_group": "", "log_stream": "vm-1", "messages": ["a"]}),
            json!({"log_group": "g", "log_stream": "", "messages": ["a"]}),
        ] {
            s.agent_post("/api/vm-logs", &body)
                .await
                .expect_error(400, LOGS_MISSING);
        }
        s.agent_post(
            "/api/vm-logs",
            &json!({"log_group": "g", "log_stream": "vm-404", "messages": ["a"]}),
        )
        .await
        .expect_error(404, NOT_FOUND);

        // Nothing shipped yet: nulls, not a 404.
        let empty = json!({"hostname": "vm-1", "cloud_init_logs": null,
                           "docker_logs": null, "logs": null});
        assert_eq!(s.agent_get("/api/vm-logs/vm-1").await.expect(200), empty);
        s.agent_get("/api/vm-logs/vm-404")
            .await
            .expect_error(404, NOT_FOUND);

        let a = s
            .agent_post(
                "/api/vm-logs",
                &json!({"log_group": "lablink-cloud-init", "log_stream": "vm-1",
                        "messages": ["\u{1b}[32mboot ok\u{1b}[0m", "   ", "second line"]}),
            )
            .await;
        assert_eq!(a.expect(200), posted);
        let a = s
            .agent_post(
                "/api/vm-logs",
                &json!({"log_group": "lablink-cloud-init", "log_stream": "vm-1",
                        "messages": ["third line"]}),
            )
            .await;
        assert_eq!(a.expect(200), posted);
        let a = s
            .agent_post(
                "/api/vm-logs",
                &json!({"log_group": "lablink-cloud-init-docker", "log_stream": "vm-1",
                        "messages": ["\u{1b}[1;31mcontainer up\u{1b}[0m"]}),
            )
            .await;
        assert_eq!(a.expect(200), posted);
        // Whitespace (and colour codes around nothing) only.
        let a = s
            .agent_post(
                "/api/vm-logs",
                &json!({"log_group": "g-docker", "log_stream": "vm-2",
                        "messages": ["  ", "\t", "\u{1b}[0m"]}),
            )
            .await;
        assert_eq!(
            a.expect(200),
            json!({"message": "No log messages after filtering."})
        );

        let expected = json!({
            "hostname": "vm-1",
            "cloud_init_logs": "boot ok\nsecond line\nthird line",
            "docker_logs": "container up",
            "logs": "boot ok\nsecond line\nthird line\ncontainer up",
        });
        assert_eq!(s.agent_get("/api/vm-logs/vm-1").await.expect(200), expected);
        assert_eq!(
            s.get("/api/vm-logs/vm-1", Auth::admin()).await.expect(200),
            expected,
            "the admin reads logs with Basic"
        );
        s.get("/api/vm-logs/vm-1", Auth::Bearer("wrong"))
            .await
            .expect_error(401, "Invalid API token.");
        assert_eq!(
            s.agent_get("/api/vm-logs/vm-2").await.expect(200),
            json!({"hostname": "vm-2", "cloud_init_logs": null,
                   "docker_logs": null, "logs": null})
        );

        // Only a docker log: `logs` is that one.
        let a = s
            .agent_post(
                "/api/vm-logs",
                &json!({"log_group": "x-docker", "log_stream": "vm-2", "messages": ["only"]}),
            )
            .await;
        assert_eq!(a.expect(200), posted);
        assert_eq!(
            s.agent_get("/api/vm-logs/vm-2").await.expect(200),
            json!({"hostname": "vm-2", "cloud_init_logs": null,
                   "docker_logs": "only", "logs": "only"})
        );
    })
    .await;
}

fn line(i: usize) -> String {
    format!("line {i:05} {}", "x".repeat(40))
}

/// Every line of `stored` is a whole posted line, they are consecutive and the last is
/// the newest. Returns the number of the first kept line.
fn check_tail(stored: &str, newest: usize) -> usize {
    let kept: Vec<&str> = stored.split('\n').collect();
    let first: usize = kept[0]
        .strip_prefix("line ")
        .and_then(|r| r.get(..5))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the kept log starts mid-line: {:?}", kept[0]));
    for (offset, got) in kept.iter().enumerate() {
        assert_eq!(*got, line(first + offset), "line {offset} of the kept log");
    }
    assert_eq!(first + kept.len() - 1, newest, "ends with the newest line");
    first
}

#[tokio::test]
async fn log_cap_keeps_the_newest_whole_lines() {
    const CAP: usize = 4096;
    let s = TestServer::start_with(|c| c.server.log_cap_bytes = CAP as u64).await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        let line_len = line(0).len() + 1;
        // Several batches, together far over the cap.
        let mut next = 0;
        for _ in 0..6 {
            let messages: Vec<String> = (next..next + 30).map(line).collect();
            next += 30;
            let a = s
                .agent_post(
                    "/api/vm-logs",
                    &json!({"log_group": "g", "log_stream": "vm-1", "messages": messages}),
                )
                .await;
            a.expect(200);
        }
        let body = s.agent_get("/api/vm-logs/vm-1").await.expect(200);
        let stored = body["cloud_init_logs"].as_str().expect("a log");
        assert!(stored.len() <= CAP, "{} bytes kept", stored.len());
        assert!(
            stored.len() + 1 + line_len > CAP,
            "trimmed more than needed: {} bytes kept",
            stored.len()
        );
        check_tail(stored, next - 1);

        // One batch bigger than the cap on its own (container log, same cap).
        let messages: Vec<String> = (0..200).map(line).collect();
        s.agent_post(
            "/api/vm-logs",
            &json!({"log_group": "g-docker", "log_stream": "vm-1", "messages": messages}),
        )
        .await
        .expect(200);
        let body = s.agent_get("/api/vm-logs/vm-1").await.expect(200);
        let docker = body["docker_logs"].as_str().expect("a log");
        assert!(docker.len() <= CAP, "{} bytes kept", docker.len());
        assert!(docker.len() + 1 + line_len > CAP);
        check_tail(docker, 199);
        // The cloud-init log was not touched by the docker cap.
        assert_eq!(body["cloud_init_logs"].as_str(), Some(stored));
    })
    .await;
}

#[tokio::test]
async fn body_size_limits() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        // Over 64 KiB on an ordinary route: 413, as JSON.
        let padding = "p".repeat(100 * 1024);
        let big = json!({"hostname": "vm-1", "status": "running", "padding": padding});
        let a = s.agent_post("/api/vm-status", &big).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text);
        let err = a.json();
        assert!(
            err["error"].as_str().is_some_and(|e| e.contains("65536")),
            "{err}"
        );

        // Just under 64 KiB is fine.
        let padding = "p".repeat(60 * 1024);
        let fits = json!({"hostname": "vm-1", "status": "running", "padding": padding});
        s.agent_post("/api/vm-status", &fits).await.expect(200);

        // A 1 MiB log batch fits the log route's 4 MiB limit.
        let messages: Vec<String> = (0..1024)
            .map(|i| format!("{i:04} {}", "m".repeat(1019)))
            .collect();
        let batch = json!({"log_group": "g", "log_stream": "vm-1", "messages": messages});
        assert!(serde_json::to_vec(&batch).expect("json").len() > 1024 * 1024);
        let a = s.agent_post("/api/vm-logs", &batch).await;
        assert_eq!(
            a.expect(200),
            json!({"message": "VM logs posted successfully."})
        );
        let logs = s.agent_get("/api/vm-logs/vm-1").await.expect(200);
        let stored = logs["cloud_init_logs"].as_str().expect("log");
        assert!(stored.ends_with(&messages[1023]));

        // Over 4 MiB is too much even there.
        let messages: Vec<String> = (0..5).map(|_| "z".repeat(1024 * 1024)).collect();
        let huge = json!({"log_group": "g", "log_stream": "vm-1", "messages": messages});
        let r = s
            .client
            .post(s.url("/api/vm-logs"))
            .bearer_auth(s.token())
            .json(&huge)
            .send()
            .await;
        // The server may close the connection while the client is still sending.
        if let Ok(r) = r {
            let a = Answer::read(r).await;
            assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text);
        }
    })
    .await;
}
