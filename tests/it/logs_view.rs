//! Errors-only VM logs (API, page, live stream) and the allocator's own log (API, page,
//! live stream).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, Auth, TestServer, read_events_until, within};

async fn stream(s: &TestServer, path: &str) -> reqwest::Response {
    let response = s
        .client
        .get(s.url(path))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("GET events");
    assert_eq!(response.status(), StatusCode::OK);
    response
}

async fn ship(s: &TestServer, group: &str, lines: &[&str]) {
    s.agent_post(
        "/api/vm-logs",
        &json!({"log_group": group, "log_stream": "vm-1", "messages": lines}),
    )
    .await
    .expect(200);
}

const CONTAINER: [&str; 7] = [
    "[start] installing packages with --retry-all-errors",
    "[agent] INFO desktop started",
    "[agent] ERROR cannot reach the allocator",
    "[agent] Traceback (most recent call last):",
    "[agent]   File \"agent.py\", line 3, in <module>",
    "[agent] ConnectionError: refused",
    "[agent] INFO retrying",
];

#[tokio::test]
async fn errors_only_keeps_error_lines_and_their_tracebacks() {
    let s = TestServer::start().await;
    within(60, "test", async {
        s.register_running("vm-1").await;
        ship(
            &s,
            "lablink-cloud-init",
            &["cloud-init ran", "status=error is fine"],
        )
        .await;
        ship(&s, "lablink-docker", &CONTAINER).await;

        let all = s.get("/api/vm-logs/vm-1", Auth::admin()).await.expect(200);
        assert_eq!(all["docker_logs"], CONTAINER.join("\n"));
        for query in ["errors_only=true", "errors_only=TRUE"] {
            let only = s
                .get(&format!("/api/vm-logs/vm-1?{query}"), Auth::admin())
                .await
                .expect(200);
            let errors = CONTAINER[2..6].join("\n");
            assert_eq!(
                only,
                json!({"hostname": "vm-1", "cloud_init_logs": "", "docker_logs": errors,
                       "logs": errors})
            );
        }
        let plain = s
            .get("/api/vm-logs/vm-1?errors_only=false", Auth::admin())
            .await
            .expect(200);
        assert_eq!(plain, all);
        s.get("/api/vm-logs/vm-1?errors_only=yes", Auth::admin())
            .await
            .expect_error(400, "errors_only must be true or false.");
        // The agent reads its own logs the same way.
        let own = s
            .agent_get("/api/vm-logs/vm-1?errors_only=true")
            .await
            .expect(200);
        assert_eq!(own["cloud_init_logs"], "");

        // The page shows only the error lines and follows only new error lines.
        let page = s
            .get("/admin/logs/vm-1?errors_only=true", Auth::admin())
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text.contains("ERROR cannot reach the allocator"));
        assert!(!page.text.contains("desktop started"), "{}", page.text);
        assert!(page.text.contains("No error lines."), "{}", page.text);
        assert!(
            page.text.contains(
                "/admin/logs/vm-1/events?cloud-init=1&amp;container=1&amp;errors_only=true"
            ),
            "{}",
            page.text
        );
        let events = stream(
            &s,
            "/admin/logs/vm-1/events?cloud-init=1&container=1&errors_only=true",
        )
        .await;
        ship(
            &s,
            "lablink-docker",
            &["[agent] INFO seat taken", "[agent] FATAL: disk full"],
        )
        .await;
        let seen = read_events_until(events, "disk full").await;
        assert!(seen.contains("event: container"), "{seen}");
        assert!(!seen.contains("seat taken"), "{seen}");
        assert!(!seen.contains("desktop started"), "{seen}");
    })
    .await;
}

fn messages(answer: &Value) -> Vec<String> {
    answer["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["level"].as_str().expect("level"),
                l["message"].as_str().expect("message")
            )
        })
        .collect()
}

#[tokio::test]
async fn the_allocators_own_warnings_are_in_its_log() {
    lablink::logging::init_ring_only();
    let s = TestServer::start().await;
    within(60, "test", async {
        let before = s
            .get("/api/allocator-log?level=warn&limit=1", Auth::admin())
            .await
            .expect(200);
        let after = before["next"].as_u64().expect("next");
        let events = stream(
            &s,
            &format!("/admin/allocator-log/events?level=warn&after={after}"),
        )
        .await;
        // The manual provider refuses to launch: a warning names the refusal.
        s.admin_form("/api/launch", &[("num_vms", "417")], &[])
            .await
            .expect(400);
        let wanted = "launch 417 VM(s)";
        let seen = read_events_until(events, wanted).await;
        assert!(seen.contains("event: line"), "{seen}");
        assert!(seen.contains("WARN"), "{seen}");

        let warn = s
            .get(
                &format!("/api/allocator-log?level=warn&after={after}"),
                Auth::admin(),
            )
            .await
            .expect(200);
        let found = messages(&warn);
        assert!(
            found
                .iter()
                .any(|m| m.starts_with("warn run refused") && m.contains(wanted)),
            "{found:?}"
        );
        assert!(warn["next"].as_u64().expect("next") > after);
        let errors = s
            .get(
                &format!("/api/allocator-log?level=error&after={after}"),
                Auth::admin(),
            )
            .await
            .expect(200);
        assert!(!messages(&errors).iter().any(|m| m.contains(wanted)));

        let page = s
            .get("/admin/allocator-log?level=warn", Auth::admin())
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text.contains(wanted), "{}", page.text);
        s.get("/api/allocator-log?level=loud", Auth::admin())
            .await
            .expect_error(400, "level must be one of error, warn, info, debug.");
        s.get("/api/allocator-log?limit=0", Auth::admin())
            .await
            .expect_error(400, "limit must be 1 to 10000.");
        assert_eq!(
            s.get("/api/allocator-log", Auth::None).await.status,
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
async fn the_errors_filter_in_a_real_browser() {
    use crate::browser::{
        browser, click, require_browser, shoot, sign_in, start_driver, wait_text,
    };
    require_browser();
    lablink::logging::init_ring_only();
    let s = TestServer::start().await;
    let driver = start_driver().await;
    within(180, "browser", async {
        s.register_running("vm-1").await;
        ship(&s, "lablink-docker", &CONTAINER).await;
        let admin = browser(&driver, 1280, 900).await;
        sign_in(&admin, &s.base, ADMIN_PASSWORD).await;
        admin
            .goto(&format!("{}/admin/logs/vm-1", s.base))
            .await
            .expect("open the logs");
        wait_text(&admin, "#log-container", "desktop started").await;
        shoot(&admin, "logs-all-lines").await;

        click(&admin, "#errors-toggle").await;
        wait_text(&admin, "h1", "errors only").await;
        wait_text(&admin, "#log-container", "ConnectionError: refused").await;
        let text = container_text(&admin).await;
        assert!(!text.contains("desktop started"), "{text}");
        assert!(!text.contains("retry-all-errors"), "{text}");

        // New lines arrive live, filtered the same way.
        ship(
            &s,
            "lablink-docker",
            &["[agent] INFO seat taken", "[agent] FATAL: disk full"],
        )
        .await;
        wait_text(&admin, "#log-container", "FATAL: disk full").await;
        let text = container_text(&admin).await;
        assert!(!text.contains("seat taken"), "{text}");
        shoot(&admin, "logs-errors-only").await;

        // The allocator's own log, at warn and above, shows a refused launch live.
        admin
            .goto(&format!("{}/admin/allocator-log?level=warn", s.base))
            .await
            .expect("open the allocator log");
        wait_text(&admin, "h1", "Allocator log").await;
        s.admin_form("/api/launch", &[("num_vms", "418")], &[])
            .await
            .expect(400);
        wait_text(&admin, "#allocator-log", "launch 418 VM(s)").await;
        shoot(&admin, "allocator-log").await;
        admin.close().await.expect("close");
    })
    .await;
}

/// The text of the logs page's container log.
async fn container_text(admin: &fantoccini::Client) -> String {
    admin
        .find(fantoccini::Locator::Css("#log-container"))
        .await
        .expect("the container log")
        .text()
        .await
        .expect("text")
}
