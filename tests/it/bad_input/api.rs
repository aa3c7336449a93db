//! Properties of the API: arbitrary JSON bodies, form fields and path segments.

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::Value;

use super::{
    FORM_ENDPOINTS, JSON_ENDPOINTS, PATH_ENDPOINTS, Who, check_answer, prop_config, runtime, send,
    snapshot, start_server, text,
};
use crate::helpers::{Auth, TestServer};

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
    still_serving_then_stop(&rt, &mut server, result);
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
    still_serving_then_stop(&rt, &mut server, result);
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
    still_serving_then_stop(&rt, &mut server, result);
}

/// After a property run: the server still answers, then stops; a failed case fails the test.
fn still_serving_then_stop(
    rt: &tokio::runtime::Runtime,
    server: &mut TestServer,
    result: Result<(), impl std::fmt::Display>,
) {
    rt.block_on(async {
        let health = server.get("/health", Auth::None).await;
        assert_eq!(health.status.as_u16(), 200, "{}", health.text);
        server.stop().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
