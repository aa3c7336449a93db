//! `GET /api/openapi.json`: the document is well-formed OpenAPI 3.1 and agrees with the
//! router in both directions (every documented operation is routed; every API route of
//! `src/server/router.rs` is documented), and with the server's checks (a value the
//! document allows is never refused for itself; one past its bounds is).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use super::helpers::{ADMIN_PASSWORD, ADMIN_USER, Answer, Auth, TestServer};

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
                .any(|code| code.starts_with('2') || code.starts_with('3') || code == "101"),
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

// ---------------------------------------------------------------------------------------
// The document states every constraint the server enforces
// ---------------------------------------------------------------------------------------

/// Follows `$ref`s to the schema or parameter they name.
fn deref<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(r) = value["$ref"].as_str() {
        value = doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or(&Value::Null);
    }
    value
}

/// Whether `text` is a string the document allows for `schema`.
fn allowed_string(schema: &Value, text: &str) -> bool {
    let chars = text.chars().count() as u64;
    let pattern = schema["pattern"]
        .as_str()
        .map(|p| regex::Regex::new(p).unwrap_or_else(|e| panic!("pattern {p}: {e}")));
    schema["minLength"].as_u64().is_none_or(|min| chars >= min)
        && schema["maxLength"].as_u64().is_none_or(|max| chars <= max)
        && pattern.is_none_or(|p| p.is_match(text))
        && schema["enum"]
            .as_array()
            .is_none_or(|values| values.iter().any(|v| v == text))
}

/// A string of `len` characters shaped like what `schema` takes (plain letters, or
/// dot-separated parts of at most 63 for names).
fn shaped(schema: &Value, len: usize) -> String {
    let plain = "a".repeat(len);
    if allowed_string(&json!({"pattern": schema["pattern"]}), &plain) || len == 0 {
        return plain;
    }
    let mut parts = Vec::new();
    let mut left = len;
    while left > 0 {
        let take = match left {
            0..=63 => left,
            64 => 62,
            _ => 63,
        };
        parts.push("a".repeat(take));
        left -= take;
        left = left.saturating_sub(1);
    }
    parts.join(".")
}

/// Values that break a pattern in the usual ways.
const ODD_STRINGS: [&str; 11] = [
    "", " ", "a_b", "-a", "a-", "a..b", ".a", "a.", "x y", "ä", "A-1.b2",
];

/// A probe: the value as text (path, query, form) and as JSON, and whether the document
/// allows it.
struct Probe {
    text: String,
    json: Value,
    allowed: bool,
}

fn number_probe(text: String, allowed: bool) -> Probe {
    let json = serde_json::from_str(&text).expect("a JSON number");
    Probe {
        text,
        json,
        allowed,
    }
}

/// The documented bounds of `schema`, and the values just past them.
fn probes(schema: &Value) -> Vec<Probe> {
    let mut out = Vec::new();
    match schema["type"].as_str() {
        Some("integer") => {
            let bound = |key: &str| schema[key].as_number().map(|n| n.to_string());
            if let Some(min) = bound("minimum") {
                let min: i128 = min.parse().expect("integer minimum");
                out.push(number_probe(min.to_string(), true));
                out.push(number_probe((min - 1).to_string(), false));
            }
            if let Some(max) = bound("maximum") {
                let max: i128 = max.parse().expect("integer maximum");
                out.push(number_probe(max.to_string(), true));
                out.push(number_probe((max + 1).to_string(), false));
            }
        }
        Some("number") => {
            for (key, step) in [("minimum", -1.0), ("maximum", 1.0)] {
                if let Some(bound) = schema[key].as_f64() {
                    out.push(number_probe(format!("{bound}"), true));
                    out.push(number_probe(format!("{}", bound + step), false));
                }
            }
        }
        Some("string") => {
            let mut texts: Vec<String> = Vec::new();
            if let Some(values) = schema["enum"].as_array() {
                texts.extend(values.iter().filter_map(|v| v.as_str().map(str::to_owned)));
                texts.push("not-one-of-them".into());
            }
            for key in ["minLength", "maxLength"] {
                if let Some(n) = schema[key].as_u64() {
                    let n = n as usize;
                    texts.push(shaped(schema, n));
                    texts.push(shaped(
                        schema,
                        if key == "minLength" {
                            n.saturating_sub(1)
                        } else {
                            n + 1
                        },
                    ));
                }
            }
            if schema.get("pattern").is_some() {
                texts.extend(ODD_STRINGS.iter().map(|s| (*s).to_owned()));
            }
            texts.dedup();
            for text in texts {
                out.push(Probe {
                    allowed: allowed_string(schema, &text),
                    json: Value::String(text.clone()),
                    text,
                });
            }
        }
        _ => {}
    }
    out
}

/// A value the document calls valid for `schema` (its example, default, first choice…).
fn baseline(doc: &Value, schema: &Value) -> Value {
    let schema = deref(doc, schema);
    if let Some(v) = schema["examples"].get(0).or(schema.get("default")) {
        return v.clone();
    }
    if let Some(v) = schema["enum"].get(0) {
        return v.clone();
    }
    match schema["type"].as_str() {
        Some("integer" | "number") => schema.get("minimum").cloned().unwrap_or(json!(0)),
        Some("boolean") => json!(true),
        Some("array") => {
            let n = schema["minItems"].as_u64().unwrap_or(1).max(1) as usize;
            Value::Array(vec![baseline(doc, &schema["items"]); n])
        }
        _ => {
            let n = schema["minLength"].as_u64().unwrap_or(1).max(1) as usize;
            Value::String("x".repeat(n))
        }
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[derive(Clone, Copy, PartialEq)]
enum Place {
    Path,
    Query,
    Body,
    /// The single item of an array field of the body.
    Item,
}

/// One request of an operation: every value at its baseline but `varied`.
struct Request<'a> {
    path: &'a str,
    method: &'a str,
    op: &'a Value,
    varied: Option<(Place, &'a str, &'a Probe)>,
}

impl Request<'_> {
    async fn send(&self, s: &TestServer, doc: &Value) -> (u16, String, Option<String>) {
        let of = |place: Place, name: &str| match self.varied {
            Some((p, n, probe)) if n == name && p == place => Some(probe),
            _ => None,
        };
        let mut path = self.path.to_owned();
        let mut query = Vec::new();
        for p in self.op["parameters"].as_array().into_iter().flatten() {
            let p = deref(doc, p);
            let name = p["name"].as_str().expect("name");
            let place = if p["in"] == "path" {
                Place::Path
            } else {
                Place::Query
            };
            let text = match of(place, name) {
                Some(probe) => probe.text.clone(),
                None if place == Place::Path || p["required"] == true => {
                    as_text(&baseline(doc, &p["schema"]))
                }
                None => continue,
            };
            if place == Place::Path {
                path = path.replace(&format!("{{{name}}}"), &encoded(&text));
            } else {
                query.push(format!("{name}={}", encoded(&text)));
            }
        }
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let method = Method::from_bytes(self.method.to_uppercase().as_bytes()).expect("method");
        let mut req = s
            .client
            .request(method, s.url(&path))
            .header(reqwest::header::ACCEPT, "application/json");
        let security = self.op["security"].to_string();
        if security.contains("bearerToken") {
            req = req.bearer_auth(s.token());
        } else if security.contains("adminBasic") {
            req = req.basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD));
        }
        let content = &self.op["requestBody"]["content"];
        for (media, form) in [
            ("application/json", false),
            ("application/x-www-form-urlencoded", true),
        ] {
            let schema = deref(doc, &content[media]["schema"]);
            let Some(props) = schema["properties"].as_object() else {
                continue;
            };
            // The fields a request must have: `required`, or the alternative naming the
            // varied field.
            let varied = self.varied.map(|(_, n, _)| n);
            let alternatives: Vec<&Value> = ["oneOf", "anyOf"]
                .iter()
                .filter_map(|k| schema[*k].as_array())
                .flatten()
                .collect();
            let mut required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if let Some(alt) = alternatives
                .iter()
                .find(|a| {
                    a["required"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|n| Some(n.as_str()) == Some(varied)))
                })
                .or(alternatives.first())
            {
                required.extend(
                    alt["required"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                );
            }
            let mut body = serde_json::Map::new();
            for (name, field) in props {
                let value = match self.varied {
                    Some((Place::Body, n, probe)) if n == name => probe.json.clone(),
                    Some((Place::Item, n, probe)) if n == name => json!([probe.json]),
                    _ if required.contains(&name.as_str()) => baseline(doc, field),
                    _ => continue,
                };
                body.insert(name.clone(), value);
            }
            req = if form {
                let fields: Vec<(String, String)> =
                    body.iter().map(|(k, v)| (k.clone(), as_text(v))).collect();
                req.form(&fields)
            } else {
                req.json(&body)
            };
        }
        let answer = Answer::read(req.send().await.expect("request")).await;
        let message = serde_json::from_str::<Value>(&answer.text)
            .ok()
            .and_then(|v| {
                v["error"]
                    .as_str()
                    .or(v["message"].as_str())
                    .map(str::to_owned)
            });
        if answer.status.as_u16() == 202
            && let Some(run) = serde_json::from_str::<Value>(&answer.text)
                .ok()
                .and_then(|v| v["run_id"].as_u64())
        {
            s.finished_run(run, 30).await;
        }
        (answer.status.as_u16(), answer.content_type, message)
    }
}

/// The constrained fields of an operation: where, name, schema.
fn constrained<'a>(doc: &'a Value, op: &'a Value) -> Vec<(Place, &'a str, &'a Value)> {
    let mut out = Vec::new();
    for p in op["parameters"].as_array().into_iter().flatten() {
        let p = deref(doc, p);
        let place = if p["in"] == "path" {
            Place::Path
        } else {
            Place::Query
        };
        out.push((
            place,
            p["name"].as_str().expect("name"),
            deref(doc, &p["schema"]),
        ));
    }
    for media in ["application/json", "application/x-www-form-urlencoded"] {
        let schema = deref(doc, &op["requestBody"]["content"][media]["schema"]);
        for (name, field) in schema["properties"].as_object().into_iter().flatten() {
            let field = deref(doc, field);
            if field["type"] == "array" {
                if field["minItems"].as_u64().is_some_and(|n| n > 0) {
                    out.push((Place::Body, name.as_str(), field));
                }
                out.push((Place::Item, name.as_str(), deref(doc, &field["items"])));
            } else {
                out.push((Place::Body, name.as_str(), field));
            }
        }
    }
    out
}

/// Probes of an array field: none, one item, and (not sent: too many) nothing else.
fn array_probes(doc: &Value, schema: &Value) -> Vec<Probe> {
    let item = baseline(doc, &schema["items"]);
    vec![
        Probe {
            text: String::new(),
            json: json!([]),
            allowed: false,
        },
        Probe {
            text: String::new(),
            json: json!([item]),
            allowed: true,
        },
    ]
}

#[tokio::test]
async fn values_the_document_allows_are_accepted_and_values_past_its_bounds_refused() {
    let s = TestServer::start_with(|c| c.server.long_poll_seconds = 1).await;
    let doc = document();
    let example_vm = as_text(&baseline(
        &doc,
        &json!({"$ref": "#/components/schemas/Hostname"}),
    ));
    // Schedule 1 exists, so a refused id is told apart from a missing one.
    let schedule = json!({"schedule_name": "first", "destruction_time": "2099-01-01T00:00:00Z"});
    let made = s
        .client
        .post(s.url("/api/schedule-destruction"))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .json(&schedule)
        .send()
        .await
        .expect("POST");
    assert_eq!(Answer::read(made).await.expect(200)["schedule_id"], 1);
    let mut checked = 0;
    let mut problems = Vec::new();
    // Operations that start a provisioning run go last: a destroyed VM stays gone.
    let mut operations: Vec<(&String, &str, &Value)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter_map(move |m| item.get(*m).map(|op| (path, *m, op)))
        })
        .collect();
    operations.sort_by_key(|(_, _, op)| op["responses"].get("202").is_some());
    for (path, method, op) in operations {
        {
            // Only where refusals are JSON (the participant's form answers pages).
            let json_errors = deref(&doc, &op["responses"]["400"])["content"]
                .get("application/json")
                .is_some();
            let fields = constrained(&doc, op);
            // A stream that never ends (the agents' desktop channel) has tests of its own.
            let streams = op["responses"]["200"]["content"]
                .get("application/x-ndjson")
                .is_some();
            if !json_errors || fields.is_empty() || streams {
                continue;
            }
            // The example VM exists (some endpoints look it up before reading the body).
            s.agent_post(
                "/api/vm-status",
                &json!({"hostname": example_vm, "status": "running"}),
            )
            .await
            .expect(200);
            let base = Request {
                path,
                method,
                op,
                varied: None,
            }
            .send(&s, &doc)
            .await;
            for (place, name, schema) in fields {
                let list = if place == Place::Body && schema["type"] == "array" {
                    array_probes(&doc, schema)
                } else {
                    probes(schema)
                };
                for probe in &list {
                    let request = Request {
                        path,
                        method,
                        op,
                        varied: Some((place, name, probe)),
                    };
                    let (status, content_type, message) = request.send(&s, &doc).await;
                    checked += 1;
                    let what = format!("{} {path} {name}={:?}", method.to_uppercase(), probe.json);
                    let same_as_base = (status, &message) == (base.0, &base.2);
                    if status >= 500 && status != 503 {
                        problems.push(format!("{what}: {status} {message:?}"));
                    } else if probe.allowed && status == 400 && !same_as_base {
                        problems.push(format!(
                            "{what}: allowed by the document, refused: {message:?}"
                        ));
                    } else if !probe.allowed
                        && (!(400..500).contains(&status)
                            || !content_type.starts_with("application/json")
                            || message.as_deref().is_none_or(|m| m.trim().is_empty())
                            || same_as_base)
                    {
                        problems.push(format!(
                            "{what}: past the document's bounds, answered {status} {content_type} {message:?} (without it: {} {:?})",
                            base.0, base.2
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(checked >= 150, "only {checked} probes");
}
