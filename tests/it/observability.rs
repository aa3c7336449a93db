//! `/metrics` (what it counts, who may read it, that it parses) and request ids (the
//! `x-request-id` header, and the id in every JSON log line of the request).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::helpers::{ServeProc, TestServer, crd_command, free_port, wait_for, wait_until, within};

/// One sample of the exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses an OpenMetrics text exposition strictly: every line must be a `# HELP`,
/// `# TYPE` or `# UNIT` of a metric family, a sample of a family declared before it, or
/// the final `# EOF`.
fn parse(text: &str) -> Vec<Sample> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no final # EOF:\n{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("metadata without a name: {line}"));
            assert!(valid_name(name), "bad metric name in {line}");
            let rest = rest.unwrap_or_else(|| panic!("metadata without text: {line}"));
            match kind {
                Some("TYPE") => {
                    assert!(
                        ["counter", "gauge", "histogram", "info"].contains(&rest),
                        "unexpected type: {line}"
                    );
                    let previous = families.insert(name.to_owned(), rest.to_owned());
                    assert!(previous.is_none(), "family declared twice: {line}");
                }
                Some("HELP") => assert!(!rest.trim().is_empty(), "empty help: {line}"),
                Some("UNIT") => assert!(name.ends_with(&format!("_{rest}")), "{line}"),
                _ => panic!("unknown metadata line: {line}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample without a value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                (name, parse_labels(body, line))
            }
        };
        assert!(valid_name(name), "bad metric name in {line}");
        let family = families
            .iter()
            .find(|(family, kind)| {
                let suffixes: &[&str] = match kind.as_str() {
                    "counter" => &["_total"],
                    "info" => &["_info"],
                    "histogram" => &["_sum", "_count", "_bucket"],
                    _ => &[""],
                };
                suffixes.iter().any(|s| name == format!("{family}{s}"))
            })
            .unwrap_or_else(|| panic!("sample of no declared family: {line}"));
        if family.1 == "histogram" && name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "bucket without le: {line}");
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line}"));
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name in {line}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('"' | '\\'))) => value.push(c),
                    _ => panic!("bad escape in {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line}"),
            }
        };
        assert!(
            labels.insert(key.to_owned(), value).is_none(),
            "label twice in {line}"
        );
        rest = &after[end + 1..];
        if let Some(next) = rest.strip_prefix(',') {
            rest = next;
        } else {
            assert!(rest.is_empty(), "junk after a label in {line}");
        }
    }
    labels
}

/// The value of the sample `name` whose labels include `labels`; `None` when absent,
/// and a failure when several match.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} matches several samples"
    );
    found.first().copied()
}

/// `GET /metrics` from loopback: 200, OpenMetrics, parsed.
async fn scrape(server: &TestServer) -> Vec<Sample> {
    let r = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    parse(&r.text().await.expect("metrics body"))
}

fn vms(samples: &[Sample], status: &str, assigned: &str) -> f64 {
    value(
        samples,
        "lablink_vms",
        &[("status", status), ("assigned", assigned)],
    )
    .unwrap_or_else(|| panic!("no lablink_vms{{status={status},assigned={assigned}}}"))
}

fn gauge(samples: &[Sample], name: &str) -> f64 {
    value(samples, name, &[]).unwrap_or_else(|| panic!("no {name}"))
}

fn claims(samples: &[Sample], outcome: &str) -> f64 {
    value(samples, "lablink_claims_total", &[("outcome", outcome)])
        .unwrap_or_else(|| panic!("no claims counter for {outcome}"))
}

#[tokio::test]
async fn metrics_follow_the_pool_the_claims_and_parked_polls() {
    let server = TestServer::start().await;
    let m = scrape(&server).await;
    assert_eq!(vms(&m, "running", "false"), 0.0);
    assert_eq!(gauge(&m, "lablink_vms_free"), 0.0);
    assert_eq!(gauge(&m, "lablink_long_polls_parked"), 0.0);
    assert_eq!(claims(&m, "assigned"), 0.0);
    let build = m
        .iter()
        .find(|s| s.name == "lablink_build_info")
        .expect("build info");
    assert_eq!(build.value, 1.0);
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(!build.labels["commit"].is_empty());

    server.register_running("vm-1").await;
    server.register_running("vm-2").await;
    server.report_status("vm-9", "initializing").await;
    let m = scrape(&server).await;
    assert_eq!(vms(&m, "running", "false"), 2.0);
    assert_eq!(vms(&m, "initializing", "false"), 1.0);
    assert_eq!(gauge(&m, "lablink_vms_free"), 2.0);

    let first = server
        .claim("ada@example.org", &crd_command("code-1"))
        .await;
    assert_eq!(first.status, 200, "{}", first.html);
    let again = server
        .claim("ada@example.org", &crd_command("code-1"))
        .await;
    assert_eq!(again.status, 200, "{}", again.html);
    let bad = server.claim("not an address", &crd_command("code-2")).await;
    assert_eq!(bad.status, 400);
    let second = server
        .claim("bob@example.org", &crd_command("code-3"))
        .await;
    assert_eq!(second.status, 200, "{}", second.html);
    let none = server.claim("cy@example.org", &crd_command("code-4")).await;
    assert_eq!(none.status, 503);
    let m = scrape(&server).await;
    assert_eq!(vms(&m, "running", "true"), 2.0);
    assert_eq!(vms(&m, "running", "false"), 0.0);
    assert_eq!(gauge(&m, "lablink_vms_free"), 0.0);
    assert_eq!(claims(&m, "assigned"), 2.0);
    assert_eq!(claims(&m, "rejoined"), 1.0);
    assert_eq!(claims(&m, "invalid"), 1.0);
    assert_eq!(claims(&m, "no_vm"), 1.0);
    assert_eq!(claims(&m, "error"), 0.0);

    // A parked long-poll counts until the claim that answers it.
    server.register_running("vm-3").await;
    let poll = server.spawn_poll("vm-3");
    wait_for(10, "the parked poll shows in /metrics", || async {
        let m = scrape(&server).await;
        (gauge(&m, "lablink_long_polls_parked") == 1.0).then_some(())
    })
    .await;
    let third = server
        .claim("dee@example.org", &crd_command("code-5"))
        .await;
    assert_eq!(third.status, 200, "{}", third.html);
    let (answer, _) = within(10, "the poll is answered", poll)
        .await
        .expect("poll task");
    assert_eq!(answer.status, 200, "{}", answer.text);
    wait_until(5, "the parked gauge drops", || {
        server.app.waiters.parked() == 0
    })
    .await;

    let missing = server
        .client
        .get(server.url("/no/such/page"))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let m = scrape(&server).await;
    assert_eq!(gauge(&m, "lablink_long_polls_parked"), 0.0);
    let count = |route: &str, method: &str, status: &str| {
        value(
            &m,
            "lablink_http_request_duration_seconds_count",
            &[("route", route), ("method", method), ("status", status)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("/api/request_vm", "POST", "2xx"), 4.0);
    assert_eq!(count("/api/request_vm", "POST", "4xx"), 1.0);
    assert_eq!(count("/api/request_vm", "POST", "5xx"), 1.0);
    assert_eq!(count("/vm_startup", "POST", "2xx"), 1.0);
    assert_eq!(count("/api/vm-status", "POST", "2xx"), 4.0);
    assert_eq!(count("unmatched", "GET", "4xx"), 1.0);
    assert!(count("/metrics", "GET", "2xx") >= 4.0);
    // Long-polls fit the buckets: the largest finite one is a minute.
    let le_60 = value(
        &m,
        "lablink_http_request_duration_seconds_bucket",
        &[("route", "/vm_startup"), ("status", "2xx"), ("le", "60.0")],
    );
    assert_eq!(le_60, Some(1.0));
    // Raw paths never become labels.
    assert!(
        !m.iter()
            .any(|s| s.labels.values().any(|v| v.contains("no/such"))),
        "a raw path became a label"
    );
}

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

/// `GET /metrics` as a client elsewhere: the loopback peer is a trusted proxy (the
/// default `server.trusted_proxies`), so `X-Forwarded-For` names the client.
async fn remote_scrape(server: &TestServer, authorization: Option<&str>) -> (u16, String) {
    let mut req = server
        .client
        .get(server.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.9");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let r = req.send().await.expect("GET /metrics");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[tokio::test]
async fn remote_scrapes_need_the_metrics_token() {
    let server = TestServer::start().await;
    let (status, body) = remote_scrape(&server, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("server.metrics_token"), "{body}");
    let (status, _) = remote_scrape(&server, Some(&format!("Bearer {METRICS_TOKEN}"))).await;
    assert_eq!(status, 403, "no token configured: nothing is accepted");
    // The same request without the forwarded address comes from loopback.
    scrape(&server).await;
    drop(server);

    let server = TestServer::start_with(|c| c.server.metrics_token = METRICS_TOKEN.into()).await;
    let (status, body) = remote_scrape(&server, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("lablink_vms"));
    let (status, _) = remote_scrape(&server, Some("Bearer metrics-token-wrong")).await;
    assert_eq!(status, 401);
    let (status, _) = remote_scrape(&server, Some(&format!("Bearer {METRICS_TOKEN}x"))).await;
    assert_eq!(status, 401);
    let (status, body) = remote_scrape(&server, Some(&format!("Bearer {METRICS_TOKEN}"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(value(&parse(&body), "lablink_vms_free", &[]).is_some());
    scrape(&server).await;
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id on the answer")
        .to_owned()
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let server = TestServer::start().await;
    let get = |id: Option<&str>, path: &str| {
        let mut req = server.client.get(server.url(path));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let a = request_id(&get(None, "/api/health").await.expect("GET"));
    let b = request_id(&get(None, "/no/such/page").await.expect("GET"));
    for id in [&a, &b] {
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    }
    assert_ne!(a, b);
    let echoed = get(Some("trace-abc.123_XYZ"), "/api/health")
        .await
        .expect("GET");
    assert_eq!(request_id(&echoed), "trace-abc.123_XYZ");
    for unfit in ["x".repeat(65), "has space".to_owned(), String::new()] {
        let answer = get(Some(&unfit), "/api/health").await.expect("GET");
        let id = request_id(&answer);
        assert_ne!(id, unfit);
        assert_eq!(id.len(), 32, "{id}");
    }
}

/// Whether a JSON log line was written while handling the request `id`: its span or one
/// around it carries the id.
fn in_request(line: &Value, id: &str) -> bool {
    line["spans"]
        .as_array()
        .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == id))
}

#[tokio::test]
async fn json_log_lines_of_a_request_carry_its_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let log = dir.path().join("serve.log");
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, format!("{METRICS_TOKEN}\n")).expect("token file");
    let token_file = token_file.display().to_string();
    let mut server = ServeProc::start_with_env(
        &dir.path().join("data"),
        port,
        log.clone(),
        &[
            ("LABLINK_LOG_FORMAT", "json"),
            ("LABLINK_SERVER_METRICS_TOKEN_FILE", &token_file),
        ],
    )
    .await;
    let http = crate::helpers::client();
    let id = "obs-login-7f3a";
    let answer = http
        .post(format!("http://127.0.0.1:{port}/admin/login"))
        .header("x-request-id", id)
        .form(&[("username", "admin"), ("password", "not-the-password")])
        .send()
        .await
        .expect("POST /admin/login");
    assert_eq!(answer.status(), 401);
    assert_eq!(request_id(&answer), id);

    let lines: Vec<Value> = wait_for(10, "the request's log lines", || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .filter(|l| l.starts_with('{'))
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .filter(|l: &Value| in_request(l, id))
                .collect();
            let done = lines
                .iter()
                .any(|l| l["fields"]["message"] == "request answered");
            done.then_some(lines)
        }
    })
    .await;
    // The handler's own line (the audit of the failed sign-in, written inside a span of
    // the session layer: the request's span is in `spans`) and the closing line.
    let audit = lines
        .iter()
        .find(|l| l["fields"]["action"] == "login-failed")
        .unwrap_or_else(|| panic!("no audit line with the request id: {lines:?}"));
    let request = audit["spans"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "request"))
        .expect("the request span");
    assert_eq!(request["route"], "/admin/login");
    assert_eq!(request["method"], "POST");
    let done = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request answered")
        .expect("closing line");
    assert_eq!(done["level"], "INFO");
    assert_eq!(done["span"]["request_id"], id);
    assert_eq!(done["fields"]["status"], 401);
    assert!(done["fields"]["latency_ms"].as_f64().is_some(), "{done}");

    // The token comes from its file, and is never logged.
    let scraped = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .header("x-forwarded-for", "203.0.113.9")
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(scraped.status(), 200);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains(METRICS_TOKEN), "{text}");
    server.kill().await;
}
