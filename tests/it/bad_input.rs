//! Bad input never breaks anything: property tests (proptest) of the configuration loader
//! and of every JSON body, form and path parameter of the API against a real server, and
//! fuzz-style cases (oversized, truncated, non-UTF-8 bodies, wrong content types, huge
//! headers) for every POST endpoint.
//!
//! Every refused request must leave the store as it was; no answer may be a 5xx but an
//! honest 503; the server keeps answering afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use lablink::config::{Config, Visitor};
use lablink::store::logs::LogKind;
use lablink::store::{logs, runs, schedules, vms};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;

use super::helpers::{ADMIN_PASSWORD, ADMIN_USER, Answer, Auth, TestServer, crd_command};
use super::limits::{exchange, head};

// ---------------------------------------------------------------------------------------
// The endpoints
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Public,
    Agent,
    Admin,
}

#[derive(Clone, Copy, Debug)]
struct Endpoint {
    path: &'static str,
    who: Who,
    /// The body's real field names.
    keys: &'static [&'static str],
}

const METRIC_KEYS: &[&str] = &[
    "cloud_init_start",
    "cloud_init_end",
    "cloud_init_duration_seconds",
    "container_start",
    "container_end",
    "container_startup_duration_seconds",
];

/// Every POST endpoint with a JSON body.
const JSON_ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        path: "/vm_startup",
        who: Who::Agent,
        keys: &["hostname"],
    },
    Endpoint {
        path: "/api/vm-status",
        who: Who::Agent,
        keys: &["hostname", "status"],
    },
    Endpoint {
        path: "/api/update_inuse_status",
        who: Who::Agent,
        keys: &["hostname", "status"],
    },
    Endpoint {
        path: "/api/gpu_health",
        who: Who::Agent,
        keys: &["hostname", "gpu_status"],
    },
    Endpoint {
        path: "/api/vm-metrics/vm-1",
        who: Who::Agent,
        keys: METRIC_KEYS,
    },
    Endpoint {
        path: "/api/vm-logs",
        who: Who::Agent,
        keys: &["log_group", "log_stream", "messages"],
    },
    Endpoint {
        path: "/api/schedule-destruction",
        who: Who::Admin,
        keys: &[
            "schedule_name",
            "destruction_time",
            "recurrence_rule",
            "notification_enabled",
            "notification_hours_before",
        ],
    },
    Endpoint {
        path: "/api/reboot-vm",
        who: Who::Admin,
        keys: &["hostname"],
    },
];

/// Every POST endpoint with a form body.
const FORM_ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        path: "/api/request_vm",
        who: Who::Public,
        keys: &["email", "crd_command", "join_code"],
    },
    Endpoint {
        path: "/api/launch",
        who: Who::Admin,
        keys: &["num_vms"],
    },
    Endpoint {
        path: "/destroy",
        who: Who::Admin,
        keys: &["confirm", "csrf_token"],
    },
];

/// Endpoints with a path parameter (`{}` is replaced).
const PATH_ENDPOINTS: &[(&str, &str, Who)] = &[
    ("GET", "/api/vm-status/{}", Who::Agent),
    ("POST", "/api/vm-metrics/{}", Who::Agent),
    ("GET", "/api/vm-logs/{}", Who::Agent),
    ("GET", "/api/reboot-vm/{}", Who::Admin),
    ("POST", "/api/vms/{}/destroy", Who::Admin),
    ("GET", "/api/runs/{}", Who::Admin),
    ("GET", "/api/schedule-destruction/{}", Who::Admin),
    ("DELETE", "/api/schedule-destruction/{}", Who::Admin),
];

/// The body limit of a path.
fn limit_of(path: &str) -> usize {
    if path == "/api/vm-logs" {
        4 * 1024 * 1024
    } else {
        64 * 1024
    }
}

// ---------------------------------------------------------------------------------------
// Talking to the server, and what it stored
// ---------------------------------------------------------------------------------------

/// A server with agents' shared token, no claim rate limits (properties send many claims
/// from one address), short long-polls, and nothing running in the background.
async fn start_server() -> TestServer {
    let server = TestServer::start_with(|c| {
        c.access.shared_agent_token = true;
        c.access.claims_per_network_per_minute = 0;
        c.access.claims_per_email_per_minute = 0;
        c.server.long_poll_seconds = 1;
        c.provision.auto_reboot = false;
    })
    .await;
    // vm-1 assigned (its long-poll answers at once), vm-2 free (a poll parks 1 s).
    server.register_running("vm-1").await;
    let claimed = server
        .claim("ada@example.org", &crd_command("4/0AbC-first"))
        .await;
    assert_eq!(claimed.hostname(), "vm-1");
    server.register_running("vm-2").await;
    server
}

async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    who: Who,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer, String> {
    let mut req = server
        .client
        .request(method.clone(), server.url(path))
        .header(ACCEPT, "application/json")
        .body(body);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    req = match who {
        Who::Public => req,
        Who::Agent => req.bearer_auth(server.token()),
        Who::Admin => req.basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)),
    };
    match req.send().await {
        Ok(response) => Ok(Answer::read(response).await),
        Err(e) => Err(format!(
            "{method} {path}: no answer (did the handler panic?): {e}"
        )),
    }
}

/// Everything a request could change: VMs, their logs, schedules, runs.
async fn snapshot(server: &TestServer) -> String {
    server
        .app
        .store
        .read(|tx| {
            let pool = vms::list(tx)?;
            let mut out = format!("{pool:?}\n");
            for vm in &pool {
                for kind in [LogKind::CloudInit, LogKind::Container] {
                    out.push_str(&format!("{:?}\n", logs::read(tx, &vm.hostname, kind)?));
                }
            }
            out.push_str(&format!("{:?}\n", schedules::list(tx, None)?));
            out.push_str(&format!("{:?}\n", runs::recent(tx, 1000)?));
            Ok(out)
        })
        .await
        .expect("snapshot of the store")
}

/// Waits until no provisioning run is going (an accepted launch or destroy finishes in
/// the background and would change the store under the next case).
async fn settle(server: &TestServer) {
    for _ in 0..500 {
        if server.app.provisioner.current().await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("a provisioning run did not finish within 5 s");
}

/// The rules every answer follows; `before` is the store before the request.
async fn check_answer(
    server: &TestServer,
    what: &str,
    answer: &Answer,
    before: &str,
    json_errors: bool,
) -> Result<(), TestCaseError> {
    let status = answer.status.as_u16();
    prop_assert!(
        status < 500 || status == 503,
        "{what}: answered {status}: {}",
        answer.text
    );
    if status >= 400 {
        if json_errors {
            let body: Value = serde_json::from_str(&answer.text).map_err(|e| {
                TestCaseError::fail(format!(
                    "{what}: {status} is not JSON ({e}): {}",
                    answer.text
                ))
            })?;
            let message = body["error"].as_str().or(body["message"].as_str());
            prop_assert!(
                message.is_some_and(|m| !m.trim().is_empty()),
                "{what}: {status} without a message: {}",
                answer.text
            );
        } else {
            prop_assert!(!answer.text.trim().is_empty(), "{what}: empty {status}");
        }
        let after = snapshot(server).await;
        prop_assert!(
            before == after,
            "{what}: refused with {status} ({}) but the store changed:\nbefore: {before}\nafter:  {after}",
            answer.text
        );
    }
    settle(server).await;
    Ok(())
}

fn prop_config(cases: u32) -> PropConfig {
    PropConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..PropConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Values that reach past the first checks (real hostnames, statuses, times, rules…).
const MEANINGFUL: &[&str] = &[
    "vm-1",
    "vm-2",
    "vm-new",
    "",
    " ",
    "running",
    "error",
    "initializing",
    "rebooting",
    "unknown",
    "Healthy",
    "Unhealthy",
    "N/A",
    "2099-01-01T00:00:00Z",
    "2099-06-01T12:30:00.000Z",
    "2001-01-01T00:00:00Z",
    "FREQ=DAILY",
    "FREQ=WEEKLY;BYDAY=MO",
    "FREQ=HOURLY",
    "ada@example.org",
    "grace@example.org",
    "lablink-cloud-init",
    "lablink-docker",
    "1",
    "0",
    "-1",
    "501",
    "99999999999999999999",
    "destroy everything",
    "null",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(MEANINGFUL).prop_map(str::to_owned),
        1 => Just(crd_command("4/0AbC-second")),
        2 => "[a-z0-9.-]{0,70}",
        2 => "\\PC{0,40}",
        1 => ".{0,300}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => (-1e12f64..1e12).prop_map(Value::from),
        1 => any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        4 => text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object of the endpoint's own fields (and a stranger now and then).
fn keyed_object(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(keys).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
    ];
    prop::collection::btree_map(key, json_value(), 0..=keys.len() + 1)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

#[derive(Clone, Debug)]
enum Body {
    Json(Value),
    /// The JSON text cut after this many bytes.
    Truncated(Value, usize),
    Raw(Vec<u8>),
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Json(v) => serde_json::to_vec(v).expect("JSON"),
            Body::Truncated(v, at) => {
                let mut b = serde_json::to_vec(v).expect("JSON");
                b.truncate(*at % b.len().max(1));
                b
            }
            Body::Raw(b) => b.clone(),
        }
    }
}

fn body_for(keys: &'static [&'static str]) -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => keyed_object(keys).prop_map(Body::Json),
        2 => json_value().prop_map(Body::Json),
        1 => (keyed_object(keys), any::<usize>()).prop_map(|(v, at)| Body::Truncated(v, at)),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Body::Raw),
    ]
}

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
    None,
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=x"),
    Some("application/octet-stream"),
];

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(CONTENT_TYPES)
}

/// Form fields: the endpoint's own and others, any text (and repeated fields).
fn form_fields(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        4 => prop::sample::select(keys).prop_map(str::to_owned),
        1 => "\\PC{0,10}",
    ];
    prop::collection::vec((key, text()), 0..=keys.len() + 2)
}

#[derive(Clone, Debug)]
enum FormBody {
    Fields(Vec<(String, String)>),
    Raw(Vec<u8>),
    /// Broken percent-encoding and separators.
    Mangled(String),
}

impl FormBody {
    fn bytes(&self) -> Vec<u8> {
        match self {
            FormBody::Fields(fields) => {
                let mut s = form_urlencoded::Serializer::new(String::new());
                for (k, v) in fields {
                    s.append_pair(k, v);
                }
                s.finish().into_bytes()
            }
            FormBody::Raw(b) => b.clone(),
            FormBody::Mangled(s) => s.clone().into_bytes(),
        }
    }
}

fn form_body(keys: &'static [&'static str]) -> impl Strategy<Value = FormBody> {
    prop_oneof![
        5 => form_fields(keys).prop_map(FormBody::Fields),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(FormBody::Raw),
        1 => "[a-z_=&%+0-9zZ]{0,60}".prop_map(FormBody::Mangled),
    ]
}

const FORM_CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/x-www-form-urlencoded"),
    Some("application/x-www-form-urlencoded"),
    Some("application/x-www-form-urlencoded"),
    Some("application/x-www-form-urlencoded; charset=utf-8"),
    Some("application/json"),
    Some("text/plain"),
    None,
];

/// A path segment: meaningful, or any text percent-encoded.
fn segment() -> impl Strategy<Value = String> {
    let encoded = "\\PC{0,40}".prop_map(|s: String| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    });
    prop_oneof![
        2 => prop::sample::select(&[
            "vm-1", "vm-2", "vm-nope", "1", "0", "2", "-1", "18446744073709551616", "%2E%2E",
            "%00", "a%2Fb", "%FF%FE", "VM-1", "vm_1",
        ][..])
        .prop_map(str::to_owned),
        3 => encoded,
    ]
}

// ---------------------------------------------------------------------------------------
// Properties: the API
// ---------------------------------------------------------------------------------------

#[test]
fn json_endpoints_survive_arbitrary_bodies() {
    let rt = runtime();
    let mut server = rt.block_on(start_server());
    let strategy = (0..JSON_ENDPOINTS.len()).prop_flat_map(|i| {
        (
            Just(JSON_ENDPOINTS[i]),
            body_for(JSON_ENDPOINTS[i].keys),
            content_type(),
        )
    });
    let mut runner = TestRunner::new(prop_config(256));
    let result = runner.run(&strategy, |(endpoint, body, ct)| {
        rt.block_on(async {
            let what = format!("POST {} {body:?} ({ct:?})", endpoint.path);
            let before = snapshot(&server).await;
            let answer = send(
                &server,
                Method::POST,
                endpoint.path,
                endpoint.who,
                ct,
                body.bytes(),
            )
            .await
            .map_err(TestCaseError::fail)?;
            check_answer(&server, &what, &answer, &before, true).await
        })
    });
    rt.block_on(async {
        let health = server.get("/health", Auth::None).await;
        assert_eq!(health.status.as_u16(), 200, "{}", health.text);
        server.stop().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn form_endpoints_survive_arbitrary_fields() {
    let rt = runtime();
    let mut server = rt.block_on(start_server());
    let strategy = (0..FORM_ENDPOINTS.len()).prop_flat_map(|i| {
        (
            Just(FORM_ENDPOINTS[i]),
            form_body(FORM_ENDPOINTS[i].keys),
            prop::sample::select(FORM_CONTENT_TYPES),
        )
    });
    let mut runner = TestRunner::new(prop_config(128));
    let result = runner.run(&strategy, |(endpoint, body, ct)| {
        rt.block_on(async {
            let what = format!("POST {} {body:?} ({ct:?})", endpoint.path);
            let before = snapshot(&server).await;
            let answer = send(
                &server,
                Method::POST,
                endpoint.path,
                endpoint.who,
                ct,
                body.bytes(),
            )
            .await
            .map_err(TestCaseError::fail)?;
            // The participant's form answers pages; the admin's endpoints JSON.
            let json_errors = endpoint.who == Who::Admin;
            check_answer(&server, &what, &answer, &before, json_errors).await
        })
    });
    rt.block_on(async {
        let health = server.get("/health", Auth::None).await;
        assert_eq!(health.status.as_u16(), 200, "{}", health.text);
        server.stop().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn path_parameters_survive_arbitrary_segments() {
    let rt = runtime();
    let mut server = rt.block_on(start_server());
    let strategy = (prop::sample::select(PATH_ENDPOINTS), segment());
    let mut runner = TestRunner::new(prop_config(128));
    let result = runner.run(&strategy, |((method, template, who), seg)| {
        rt.block_on(async {
            let path = template.replace("{}", &seg);
            let what = format!("{method} {path}");
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            let (ct, body) = if method == Method::POST {
                (Some("application/json"), b"{}".to_vec())
            } else {
                (None, Vec::new())
            };
            let before = snapshot(&server).await;
            let answer = send(&server, method, &path, who, ct, body)
                .await
                .map_err(TestCaseError::fail)?;
            check_answer(&server, &what, &answer, &before, true).await
        })
    });
    rt.block_on(async {
        let health = server.get("/health", Auth::None).await;
        assert_eq!(health.status.as_u16(), 200, "{}", health.text);
        server.stop().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Fuzz-style cases for every POST endpoint
// ---------------------------------------------------------------------------------------

/// Every POST endpoint that reads a body, with its content type.
fn post_endpoints() -> Vec<(Endpoint, &'static str)> {
    JSON_ENDPOINTS
        .iter()
        .map(|e| (*e, "application/json"))
        .chain(
            FORM_ENDPOINTS
                .iter()
                .map(|e| (*e, "application/x-www-form-urlencoded")),
        )
        .collect()
}

/// The answer's message: `error` or `message` of a JSON body, else the page's text.
fn message_of(answer: &Answer) -> String {
    serde_json::from_str::<Value>(&answer.text)
        .ok()
        .and_then(|v| {
            v["error"]
                .as_str()
                .or(v["message"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| answer.text.clone())
}

#[tokio::test]
async fn oversized_bodies_get_413_with_a_message() {
    let server = start_server().await;
    let before = snapshot(&server).await;
    for (endpoint, ct) in post_endpoints() {
        let limit = limit_of(endpoint.path);
        let body = if ct == "application/json" {
            let mut b = br#"{"hostname": "vm-1", "pad": ""#.to_vec();
            b.resize(limit, b'a');
            b.extend_from_slice(br#""}"#);
            b
        } else {
            let mut b = b"email=ada%40example.org&num_vms=1&pad=".to_vec();
            b.resize(limit + 1, b'a');
            b
        };
        assert!(body.len() > limit);
        let answer = send(
            &server,
            Method::POST,
            endpoint.path,
            endpoint.who,
            Some(ct),
            body,
        )
        .await
        .expect("an answer");
        assert_eq!(
            answer.status.as_u16(),
            413,
            "POST {}: {}",
            endpoint.path,
            answer.text
        );
        let message = message_of(&answer);
        assert!(
            message.contains("larger than") || message.contains("length limit"),
            "POST {}: 413 without saying why: {message}",
            endpoint.path
        );
    }
    // Without a Content-Length (chunked), the limit holds all the same.
    let auth = format!("authorization: Bearer {}", server.token());
    let mut raw = head(
        "POST",
        "/api/vm-status",
        &[auth, "transfer-encoding: chunked".into()],
    )
    .into_bytes();
    for _ in 0..70 {
        raw.extend_from_slice(format!("400\r\n{}\r\n", " ".repeat(1024)).as_bytes());
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = exchange(server.addr(), &raw, Duration::from_secs(10)).await;
    assert_eq!(answer.status, Some(413), "{answer:?}");
    assert_eq!(
        snapshot(&server).await,
        before,
        "a refused body changed the store"
    );
}

#[tokio::test]
async fn truncated_non_utf8_and_non_object_json_gets_400_with_a_message() {
    let server = start_server().await;
    let before = snapshot(&server).await;
    let bodies: &[&[u8]] = &[
        b"",
        b"   ",
        b"{",
        b"{\"hostname\": \"vm-1\", \"sta",
        b"{\"hostname\": \"vm-1\"",
        b"[1, 2]",
        b"\"vm-1\"",
        b"null",
        b"42",
        b"\xff\xfe{\"hostname\": \"vm-1\"}",
        b"{\"hostname\": \"vm-\xff\xfe\"}",
        // Every endpoint's fields with the wrong types.
        b"{\"hostname\": 5, \"status\": [], \"gpu_status\": {}, \"messages\": \"x\", \
          \"log_group\": 1, \"cloud_init_start\": \"soon\", \"schedule_name\": 1}",
        b"{\"hostname\": \"vm-1\"}}}}",
        b"hostname=vm-1&status=running",
        b"\x00\x00\x00",
    ];
    for endpoint in JSON_ENDPOINTS {
        for body in bodies {
            let answer = send(
                &server,
                Method::POST,
                endpoint.path,
                endpoint.who,
                Some("application/json"),
                body.to_vec(),
            )
            .await
            .expect("an answer");
            let what = format!("POST {} {:?}", endpoint.path, String::from_utf8_lossy(body));
            assert_eq!(answer.status.as_u16(), 400, "{what}: {}", answer.text);
            assert!(
                answer.content_type.starts_with("application/json"),
                "{what}: {}",
                answer.content_type
            );
            assert!(!message_of(&answer).trim().is_empty(), "{what}: no message");
        }
    }
    assert_eq!(
        snapshot(&server).await,
        before,
        "a refused body changed the store"
    );
    let health = server.get("/health", Auth::None).await;
    assert_eq!(health.status.as_u16(), 200);
}

#[tokio::test]
async fn content_types_json_is_read_whatever_declared_forms_must_say_so() {
    let server = start_server().await;
    // §3.0: JSON bodies are read whatever the declared content type.
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let answer = send(
            &server,
            Method::POST,
            "/api/vm-status",
            Who::Agent,
            ct,
            br#"{"hostname": "vm-1", "status": "running"}"#.to_vec(),
        )
        .await
        .expect("an answer");
        assert_eq!(answer.status.as_u16(), 200, "{ct:?}: {}", answer.text);
    }
    // A form sent to a JSON endpoint is refused with a clear message.
    let answer = send(
        &server,
        Method::POST,
        "/api/gpu_health",
        Who::Agent,
        Some("application/x-www-form-urlencoded"),
        b"hostname=vm-1&gpu_status=Healthy".to_vec(),
    )
    .await
    .expect("an answer");
    assert_eq!(answer.status.as_u16(), 400, "{}", answer.text);
    assert!(message_of(&answer).contains("JSON"), "{}", answer.text);

    // Form endpoints need the form content type: 415 or 400 naming it, never 5xx.
    let before = snapshot(&server).await;
    for endpoint in [FORM_ENDPOINTS[0], FORM_ENDPOINTS[1]] {
        for ct in [None, Some("application/json"), Some("text/plain")] {
            let answer = send(
                &server,
                Method::POST,
                endpoint.path,
                endpoint.who,
                ct,
                b"email=grace%40example.org&crd_command=x&num_vms=1".to_vec(),
            )
            .await
            .expect("an answer");
            let status = answer.status.as_u16();
            assert!(
                status == 415 || status == 400,
                "POST {} ({ct:?}): {status} {}",
                endpoint.path,
                answer.text
            );
            let message = message_of(&answer);
            assert!(
                message.contains("Content-Type"),
                "POST {} ({ct:?}): unclear: {message}",
                endpoint.path
            );
        }
    }
    assert_eq!(
        snapshot(&server).await,
        before,
        "a refused form changed the store"
    );
}

#[tokio::test]
async fn huge_headers_are_refused_on_every_post_endpoint() {
    let server = start_server().await;
    let before = snapshot(&server).await;
    let filler = format!("x-filler: {}", "h".repeat(100 * 1024));
    for (endpoint, ct) in post_endpoints() {
        let raw = head(
            "POST",
            endpoint.path,
            &[
                filler.clone(),
                format!("content-type: {ct}"),
                "content-length: 2".into(),
            ],
        );
        let answer = exchange(
            server.addr(),
            format!("{raw}{{}}").as_bytes(),
            Duration::from_secs(10),
        )
        .await;
        assert!(
            answer.status == Some(431) || (answer.status.is_none() && answer.closed),
            "POST {}: {answer:?}",
            endpoint.path
        );
    }
    assert_eq!(snapshot(&server).await, before);
    let health = server.get("/health", Auth::None).await;
    assert_eq!(health.status.as_u16(), 200);
}

#[tokio::test]
async fn a_body_cut_short_by_the_client_is_a_client_error() {
    let server = start_server().await;
    let before = snapshot(&server).await;
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN_USER}:{ADMIN_PASSWORD}"))
    };
    for (endpoint, ct) in post_endpoints() {
        let auth = match endpoint.who {
            Who::Public => Vec::new(),
            Who::Agent => vec![format!("authorization: Bearer {}", server.token())],
            Who::Admin => vec![format!("authorization: Basic {basic}")],
        };
        let mut extra = auth;
        extra.push(format!("content-type: {ct}"));
        extra.push("content-length: 100".into());
        let raw = head("POST", endpoint.path, &extra);
        let mut stream = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        use tokio::io::AsyncWriteExt;
        stream
            .write_all(format!("{raw}{{\"hostname\"").as_bytes())
            .await
            .expect("write");
        stream.shutdown().await.expect("half-close");
        let answer = super::limits::read_response(&mut stream, Duration::from_secs(10)).await;
        let status = answer.status.unwrap_or(0);
        assert!(
            status == 0 && answer.closed || (400..500).contains(&status),
            "POST {}: {answer:?}",
            endpoint.path
        );
    }
    assert_eq!(snapshot(&server).await, before);
    let health = server.get("/health", Auth::None).await;
    assert_eq!(health.status.as_u16(), 200);
}

// ---------------------------------------------------------------------------------------
// Properties: the configuration loader
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Text,
    OptText,
    Bool,
    Int,
}

/// Records each key's type (and with `values`, its value as YAML).
#[derive(Default)]
struct Walker {
    prefix: String,
    kinds: Vec<(String, Kind)>,
    values: Vec<(String, String)>,
}

impl Walker {
    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

impl Visitor for Walker {
    fn string(&mut self, key: &str, slot: &mut String) {
        let k = self.key(key);
        self.kinds.push((k.clone(), Kind::Text));
        self.values.push((k, quoted(slot)));
    }
    fn opt_string(&mut self, key: &str, slot: &mut Option<String>) {
        let k = self.key(key);
        self.kinds.push((k.clone(), Kind::OptText));
        self.values
            .push((k, slot.as_deref().map_or("null".to_owned(), quoted)));
    }
    fn boolean(&mut self, key: &str, slot: &mut bool) {
        let k = self.key(key);
        self.kinds.push((k.clone(), Kind::Bool));
        self.values.push((k, slot.to_string()));
    }
    fn integer(&mut self, key: &str, slot: &mut u64) {
        let k = self.key(key);
        self.kinds.push((k.clone(), Kind::Int));
        self.values.push((k, slot.to_string()));
    }
    fn section(&mut self, key: &str, visit: &mut dyn FnMut(&mut dyn Visitor)) {
        let inner = self.key(key);
        let outer = std::mem::replace(&mut self.prefix, inner);
        visit(self);
        self.prefix = outer;
    }
}

fn walk(config: &Config) -> Walker {
    let mut w = Walker::default();
    config.clone().visit(&mut w);
    w
}

/// Every section a key lives in (`monitoring`, `monitoring.thresholds`, …).
fn sections(keys: &[String]) -> Vec<String> {
    let mut out: Vec<String> = keys
        .iter()
        .flat_map(|k| {
            let parts: Vec<&str> = k.split('.').collect();
            (1..parts.len())
                .map(|n| parts[..n].join("."))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

enum Node {
    Leaf(String),
    Map(BTreeMap<String, Node>),
}

/// Block-style YAML of dotted keys with their (already YAML) values; a key that clashes
/// with another's section is left out.
fn yaml(entries: &[(String, String)]) -> String {
    let mut root = BTreeMap::new();
    'entry: for (key, value) in entries {
        let parts: Vec<&str> = key.split('.').collect();
        let mut map = &mut root;
        for part in &parts[..parts.len() - 1] {
            let node = map
                .entry((*part).to_owned())
                .or_insert_with(|| Node::Map(BTreeMap::new()));
            match node {
                Node::Map(m) => map = m,
                Node::Leaf(_) => continue 'entry,
            }
        }
        let last = parts[parts.len() - 1].to_owned();
        if !matches!(map.get(&last), Some(Node::Map(_))) {
            map.insert(last, Node::Leaf(value.clone()));
        }
    }
    fn render(map: &BTreeMap<String, Node>, indent: usize, out: &mut String) {
        for (k, node) in map {
            match node {
                Node::Leaf(v) => out.push_str(&format!("{}{k}: {v}\n", " ".repeat(indent))),
                Node::Map(m) => {
                    out.push_str(&format!("{}{k}:\n", " ".repeat(indent)));
                    render(m, indent + 2, out);
                }
            }
        }
    }
    let mut out = String::new();
    render(&root, 0, &mut out);
    out
}

fn load(
    dir: &std::path::Path,
    bytes: &[u8],
) -> Result<(Config, Vec<lablink::config::Problem>), String> {
    let path = dir.join("config.yaml");
    std::fs::write(&path, bytes).expect("write the config");
    Config::from_file(&path)
}

/// Any YAML scalar, list or mapping, as text.
fn any_yaml_value() -> impl Strategy<Value = (String, bool)> {
    // (text, is a list or mapping)
    prop_oneof![
        any::<i64>().prop_map(|i| (i.to_string(), false)),
        any::<f64>().prop_map(|f| (format!("{f:?}"), false)),
        any::<bool>().prop_map(|b| (b.to_string(), false)),
        prop::sample::select(
            &[
                "null", "~", "yes", "no", "on", "'1'", "\"\"", ".inf", "0x1F", "1e400"
            ][..]
        )
        .prop_map(|s| (s.to_owned(), false)),
        "\\PC{0,30}".prop_map(|s| (quoted(&s), false)),
        "[a-zA-Z0-9 _./:@-]{0,15}".prop_map(|s| (s, false)),
        "[a-z0-9]{0,5}".prop_map(|s| (format!("[1, {s}]"), true)),
        "[a-z0-9]{0,5}".prop_map(|s| (format!("{{a: {s}}}"), true)),
    ]
}

#[test]
fn config_files_of_arbitrary_bytes_never_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Config::keys();
    let entries: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), "1".into())).collect();
    let template = yaml(&entries).into_bytes();
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        // A real document with some bytes changed.
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(move |edits| {
            let mut doc = template.clone();
            for (at, byte) in edits {
                let i = at % doc.len();
                doc[i] = byte;
            }
            doc
        }),
    ];
    let mut runner = TestRunner::new(prop_config(256));
    let result = runner.run(&strategy, |bytes| {
        match load(dir.path(), &bytes) {
            Ok((config, problems)) => {
                for p in &problems {
                    prop_assert!(!p.key.is_empty() && !p.message.is_empty(), "{p:?}");
                }
                let _ = config.validate();
            }
            Err(message) => prop_assert!(message.contains("config.yaml"), "{message}"),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn config_documents_of_real_keys_report_problems_by_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Config::keys();
    let known_sections = sections(&keys);
    let key = prop_oneof![
        6 => prop::sample::select(keys.clone()),
        1 => prop::sample::select(known_sections.clone()),
        1 => (prop::sample::select(known_sections.clone()), "[a-z_]{1,10}")
            .prop_map(|(s, k)| format!("{s}.{k}")),
        1 => "[a-z_]{1,10}",
    ];
    let strategy = prop::collection::btree_map(key, any_yaml_value(), 0..20);
    let mut runner = TestRunner::new(prop_config(256));
    let result = runner.run(&strategy, |entries| {
        let doc: Vec<(String, String)> = entries
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        let text = yaml(&doc);
        match load(dir.path(), text.as_bytes()) {
            Err(message) => {
                prop_assert!(message.contains("not valid YAML"), "{message}\n{text}");
            }
            Ok((config, problems)) => {
                // Each problem names a key of the file or one of its sections.
                let mut named: Vec<String> = entries.keys().cloned().collect();
                named.extend(sections(&named));
                named.extend(known_sections.iter().cloned());
                for p in &problems {
                    // (or a key inside a mapping the file gave as a value)
                    let inside = entries
                        .iter()
                        .any(|(k, (_, nested))| *nested && p.key.starts_with(&format!("{k}.")));
                    prop_assert!(
                        named.contains(&p.key) || inside || p.key.ends_with(".?"),
                        "problem names no key of the file: {p:?}\n{text}"
                    );
                    prop_assert!(!p.message.is_empty());
                }
                // A list or mapping where a value belongs is always reported.
                for (k, (_, nested)) in &entries {
                    // (unless a section of it was given a plain value, leaving it out)
                    let shadowed = entries.keys().any(|o| k.starts_with(&format!("{o}.")));
                    if *nested && keys.contains(k) && !shadowed {
                        prop_assert!(
                            problems.iter().any(|p| &p.key == k),
                            "{k}: a list or mapping was accepted\n{text}\n{problems:?}"
                        );
                    }
                }
                for p in config.validate() {
                    prop_assert!(keys.contains(&p.key), "validate names no key: {p:?}");
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn well_typed_configs_load_round_trip_and_validate_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let defaults = walk(&Config::default());
    let kinds = defaults.kinds.clone();
    let text = || {
        prop_oneof![
            3 => "[ -~]{0,20}",
            1 => prop::sample::select(&["é", "ß", "中文", "🙂", "MISSING", "PLACEHOLDER_X", "0.0.0.0:5000", "127.0.0.1,::1"][..])
                .prop_map(str::to_owned),
        ]
    };
    let value = move |kind: Kind| -> BoxedStrategy<String> {
        match kind {
            Kind::Text => text().prop_map(|s| quoted(&s)).boxed(),
            Kind::OptText => prop::option::of(text())
                .prop_map(|s| s.as_deref().map_or("null".to_owned(), quoted))
                .boxed(),
            Kind::Bool => any::<bool>().prop_map(|b| b.to_string()).boxed(),
            Kind::Int => prop_oneof![0u64..200, 0u64..=i64::MAX as u64]
                .prop_map(|n| n.to_string())
                .boxed(),
        }
    };
    let entry =
        prop::sample::select(kinds.clone()).prop_flat_map(move |(k, kind)| (Just(k), value(kind)));
    let strategy = prop::collection::btree_map(entry.prop_map(|(k, v)| (k, v)), Just(()), 0..24)
        .prop_map(|m| m.into_keys().collect::<Vec<(String, String)>>());
    let mut runner = TestRunner::new(prop_config(128));
    let result = runner.run(&strategy, |entries| {
        let text = yaml(&entries);
        let (first, problems) = load(dir.path(), text.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert!(problems.is_empty(), "{problems:?}\n{text}");
        // Every value was read as written; every other key kept its default.
        let read: BTreeMap<String, String> = walk(&first).values.into_iter().collect();
        let written: BTreeMap<&String, &String> = entries.iter().map(|(k, v)| (k, v)).collect();
        for (key, default) in &defaults.values {
            let want = written.get(key).copied().unwrap_or(default);
            prop_assert_eq!(read.get(key), Some(want), "{}\n{}", key, text);
        }
        // Written out again, it loads to the same configuration.
        let again = yaml(&walk(&first).values);
        let (second, problems) = load(dir.path(), again.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{again}")))?;
        prop_assert!(problems.is_empty(), "{problems:?}\n{again}");
        prop_assert_eq!(&second, &first);
        // Validation depends on the values only, and names real keys.
        let verdict = first.validate();
        prop_assert_eq!(&verdict, &first.validate());
        prop_assert_eq!(&verdict, &second.validate());
        let keys = Config::keys();
        for p in &verdict {
            prop_assert!(keys.contains(&p.key), "validate names no key: {p:?}");
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn deeply_nested_config_documents_do_not_crash_the_loader() {
    let dir = tempfile::tempdir().expect("tempdir");
    for doc in [
        format!("server: {}{}", "[".repeat(10_000), "]".repeat(10_000)),
        format!("server: {}{}", "{a: ".repeat(10_000), "}".repeat(10_000)),
        (0..2_000)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect::<String>(),
    ] {
        match load(dir.path(), doc.as_bytes()) {
            Ok((_, problems)) => assert!(!problems.is_empty()),
            Err(message) => assert!(message.contains("config.yaml"), "{message}"),
        }
    }
}
