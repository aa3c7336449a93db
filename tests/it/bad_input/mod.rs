//! Bad input never breaks anything: property tests (proptest) of the configuration loader
//! and of every JSON body, form and path parameter of the API against a real server, and
//! fuzz-style cases (oversized, truncated, non-UTF-8 bodies, wrong content types, huge
//! headers) for every POST endpoint.
//!
//! Every refused request must leave the store as it was; no answer may be a 5xx but an
//! honest 503; the server keeps answering afterwards.
//!
//! This module holds the endpoints, the server and the checks every part shares.

mod api;
mod bodies;
mod config;

use std::time::Duration;

use lablink::store::logs::LogKind;
use lablink::store::{logs, runs, schedules, vms};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;

use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, Answer, TestServer, crd_command};

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
