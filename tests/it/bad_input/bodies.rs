//! Fuzz-style cases for every POST endpoint: oversized, truncated, non-UTF-8 bodies,
//! wrong content types, huge headers, bodies cut short.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{
    Endpoint, FORM_ENDPOINTS, JSON_ENDPOINTS, Who, limit_of, send, snapshot, start_server,
};
use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, Answer, Auth};
use crate::limits::{exchange, head};

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
        let answer = crate::limits::read_response(&mut stream, Duration::from_secs(10)).await;
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
