//! `GET /api/openapi.json`: the document is well-formed OpenAPI 3.1 and agrees with the
//! router in both directions (every documented operation is routed; every API route of
//! `src/server/router.rs` is documented).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use super::helpers::{Auth, TestServer};

const ROUTER_SOURCE: &str = include_str!("../../src/server/router.rs");
const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "head", "options"];

/// The paths the document must cover: the JSON API, upstream's non-`/api` endpoints and
/// the downloads (not the HTML pages, assets or the Prometheus endpoint).
fn is_api_path(path: &str) -> bool {
    path.starts_with("/api/")
        || path.starts_with("/download/")
        || matches!(path, "/vm_startup" | "/destroy" | "/health")
}

/// `(path, method)` of every `.route("…", get(…).post(…))` in the router's source, the
/// call possibly spread over several lines.
fn routes_in_source(source: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        let open = at + ".route(".len();
        let bytes = rest.as_bytes();
        let (mut depth, mut end) = (1usize, open);
        while depth > 0 && end < bytes.len() {
            match bytes[end] {
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ => {}
            }
            end += 1;
        }
        let args = &rest[open..end.saturating_sub(1)];
        rest = &rest[end..];
        let Some(path) = args.split('"').nth(1) else {
            continue;
        };
        let chain = args.split_once(',').map_or("", |(_, c)| c);
        let found: Vec<&str> = METHODS
            .iter()
            .copied()
            .filter(|m| {
                chain.match_indices(&format!("{m}(")).any(|(i, _)| {
                    // A method router call, not `schedules::get` or `x.forget(`.
                    let before = i.checked_sub(1).map(|j| chain.as_bytes()[j]);
                    !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
                })
            })
            .collect();
        assert!(
            !found.is_empty() || chain.contains("any("),
            "cannot tell the methods of route {path}: {chain}"
        );
        let found = if chain.contains("any(") {
            METHODS[..5].to_vec()
        } else {
            found
        };
        for m in found {
            routes.insert((path.to_owned(), m.to_owned()));
        }
    }
    routes
}

fn document() -> Value {
    serde_json::from_str(lablink::server::api::openapi::DOCUMENT).expect("the document is JSON")
}

/// `(path, method)` of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("path item");
            METHODS
                .iter()
                .filter(|m| item.contains_key(**m))
                .map(|m| (path.clone(), (*m).to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every `$ref` in `value` names something in `doc`.
fn check_refs(doc: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let pointer = r.strip_prefix('#').unwrap_or("!");
                if doc.pointer(pointer).is_none() {
                    problems.push(format!("{at}: $ref {r} names nothing"));
                }
            }
            for (k, v) in map {
                check_refs(doc, v, &format!("{at}/{k}"), problems);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_refs(doc, v, &format!("{at}/{i}"), problems);
            }
        }
        _ => {}
    }
}

/// A parameter object, following a `$ref` into the components.
fn resolved<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or(&Value::Null),
        None => value,
    }
}

#[test]
fn the_document_is_well_formed_openapi_3_1() {
    let doc = document();
    // The oas3 crate reads it (3.1 only) and its references resolve.
    let spec = oas3::from_json(lablink::server::api::openapi::DOCUMENT).expect("oas3 parses it");
    let version = spec
        .validate_version()
        .expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1));
    assert!(!spec.info.title.is_empty() && !spec.info.version.is_empty());
    let mut count = 0;
    for (path, method, op) in spec.operations() {
        count += 1;
        let what = format!("{method} {path}");
        assert!(op.operation_id.is_some(), "{what}: no operationId");
        assert!(op.summary.is_some(), "{what}: no summary");
        let responses = op.responses.as_ref().expect("responses");
        assert!(!responses.is_empty(), "{what}: no responses");
        assert!(
            responses
                .keys()
                .any(|code| code.starts_with('2') || code.starts_with('3')),
            "{what}: no success response"
        );
        for (code, response) in responses {
            let response = response
                .resolve(&spec)
                .unwrap_or_else(|e| panic!("{what} {code}: {e}"));
            assert!(
                !response
                    .description
                    .as_deref()
                    .unwrap_or_default()
                    .is_empty(),
                "{what} {code}: no description"
            );
        }
        for parameter in &op.parameters {
            parameter
                .resolve(&spec)
                .unwrap_or_else(|e| panic!("{what}: parameter: {e}"));
        }
        if let Some(body) = &op.request_body {
            body.resolve(&spec)
                .unwrap_or_else(|e| panic!("{what}: request body: {e}"));
        }
    }
    assert!(count >= 25, "only {count} operations");

    // What the crate does not check: every $ref anywhere resolves, operation ids are
    // unique, path templates have their parameters, security names a scheme.
    let mut problems = Vec::new();
    check_refs(&doc, &doc, "#", &mut problems);
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("securitySchemes");
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let what = format!("{method} {path}");
            if let Some(id) = op["operationId"].as_str()
                && !ids.insert(id.to_owned())
            {
                problems.push(format!("{what}: operationId {id} used twice"));
            }
            let params: Vec<&Value> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().map(|p| resolved(&doc, p)).collect())
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            if in_path != templated {
                problems.push(format!(
                    "{what}: path parameters {in_path:?}, template has {templated:?}"
                ));
            }
            for requirement in op["security"].as_array().into_iter().flatten() {
                for name in requirement.as_object().into_iter().flat_map(|r| r.keys()) {
                    if !schemes.contains_key(name) {
                        problems.push(format!("{what}: unknown security scheme {name}"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_route_extraction_reads_multi_line_routes() {
    let routes = routes_in_source(
        r#"Router::new()
        .route("/a", get(x::get))
        .route(
            "/b/{id}",
            get(schedules::get).delete(schedules::cancel),
        )
        .route("/c", post(f).get(g))"#,
    );
    let want: BTreeSet<(String, String)> = [
        ("/a", "get"),
        ("/b/{id}", "delete"),
        ("/b/{id}", "get"),
        ("/c", "get"),
        ("/c", "post"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m.to_owned()))
    .collect();
    assert_eq!(routes, want);
}

#[test]
fn every_api_route_of_the_router_is_documented() {
    let doc = document();
    let documented = documented(&doc);
    let routes = routes_in_source(ROUTER_SOURCE);
    assert!(
        routes
            .iter()
            .any(|(p, m)| p == "/vm_startup" && m == "post"),
        "route extraction found nothing sensible: {routes:?}"
    );
    let missing: Vec<String> = routes
        .iter()
        .filter(|(path, _)| is_api_path(path))
        .filter(|route| !documented.contains(*route))
        .map(|(path, method)| format!("{} {path}", method.to_uppercase()))
        .collect();
    assert!(
        missing.is_empty(),
        "routes of src/server/router.rs missing from src/server/api/openapi.json: {missing:#?}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_the_document_is_served() {
    let server = TestServer::start().await;
    let served = server.get("/api/openapi.json", Auth::None).await;
    assert_eq!(served.status.as_u16(), 200);
    assert!(
        served.content_type.starts_with("application/json"),
        "{}",
        served.content_type
    );
    assert_eq!(served.json(), document());

    // The router's answers for an unknown path and for a known path with another method.
    let fallback = server.get("/api/no-such-endpoint", Auth::None).await.json();
    for (path, method) in documented(&document()) {
        let url = server.url(&path.replace("{hostname}", "vm-1").replace("{id}", "1"));
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        // No credentials and no body: nothing is changed, and a download is not read.
        let response = server
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        assert_ne!(status, 405, "{method} {path}: method not routed");
        if status == 404 {
            let body: Value = response.json().await.unwrap_or_default();
            assert_ne!(body, fallback, "{method} {path}: not routed");
        }
    }
}
