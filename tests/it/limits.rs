//! The server's limits against slow or greedy clients: request-head and body timeouts, the
//! largest request head, and the most connections at once. Raw TCP on loopback, so the
//! client can stall wherever a test needs it to.

use std::time::{Duration, Instant};

use lablink::config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::helpers::{Auth, TestServer};

/// What came back on a raw connection.
#[derive(Debug)]
pub struct RawAnswer {
    /// The status of the response, if one came.
    pub status: Option<u16>,
    /// Everything read (head and body), lossily decoded.
    pub text: String,
    /// The server closed (or reset) the connection.
    pub closed: bool,
}

impl RawAnswer {
    /// The body of the response (after the blank line).
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    /// The body read as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.body())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// Reads one response (or until the server closes the connection, or `limit` passes).
pub async fn read_response(stream: &mut TcpStream, limit: Duration) -> RawAnswer {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut closed = false;
    loop {
        if response_complete(&buf) {
            break;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawAnswer {
        status,
        text,
        closed,
    }
}

/// A head and as much body as its `content-length` says.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|len| buf.len() >= end + 4 + len)
}

/// Connects, sends `bytes` (a failed write is fine: the server may close first) and
/// reads the answer.
pub async fn exchange(addr: &str, bytes: &[u8], limit: Duration) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    read_response(&mut stream, limit).await
}

/// A request head for `path` with extra header lines, the connection closed after it.
pub fn head(method: &str, path: &str, extra: &[String]) -> String {
    let mut h = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for line in extra {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}

async fn server(tune: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.access.shared_agent_token = true;
        tune(c);
    })
    .await
}

async fn assert_healthy(server: &TestServer) {
    let health = server.get("/health", Auth::None).await;
    assert_eq!(health.status.as_u16(), 200, "{}", health.text);
}

#[tokio::test]
async fn a_stalled_request_head_is_disconnected_after_the_header_timeout() {
    let server = server(|c| c.server.header_timeout_seconds = 1).await;
    for partial in ["", "GET /health HTTP/1.1\r\nhost: localhost\r\n"] {
        let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
        stream.write_all(partial.as_bytes()).await.expect("write");
        let started = Instant::now();
        let answer = read_response(&mut stream, Duration::from_secs(10)).await;
        let waited = started.elapsed();
        assert!(answer.closed, "still open after 10 s: {answer:?}");
        assert!(
            matches!(answer.status, None | Some(408)),
            "a stalled head was answered: {answer:?}"
        );
        assert!(
            waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
            "closed after {waited:?}, expected about 1 s"
        );
    }
    assert_healthy(&server).await;
}

#[tokio::test]
async fn a_stalled_or_trickling_body_gets_408_and_a_close() {
    let server = server(|c| c.server.body_timeout_seconds = 1).await;
    let auth = format!("authorization: Bearer {}", server.token());
    let json_head = head(
        "POST",
        "/api/vm-status",
        &[
            auth.clone(),
            "content-type: application/json".into(),
            "content-length: 100".into(),
        ],
    );

    // Stalled: part of the body, then nothing.
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream
        .write_all(format!("{json_head}{{\"hostname\": \"vm-slow\"").as_bytes())
        .await
        .expect("write");
    let started = Instant::now();
    let answer = read_response(&mut stream, Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert_eq!(answer.status, Some(408), "{answer:?}");
    let error = answer.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("did not arrive within 1 s"), "{error}");
    assert!(
        answer
            .text
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{answer:?}"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "answered after {waited:?}, expected about 1 s"
    );
    let after = read_response(&mut stream, Duration::from_secs(5)).await;
    assert!(after.closed, "connection kept open after the 408");

    // Trickling: a byte every 100 ms never finishes 100 bytes in time.
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream.write_all(json_head.as_bytes()).await.expect("write");
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut buf)).await;
    trickle.abort();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a trickling body held the request for {:?}",
        started.elapsed()
    );

    // The participant's form too.
    let form_head = head(
        "POST",
        "/api/request_vm",
        &[
            "content-type: application/x-www-form-urlencoded".into(),
            "content-length: 200".into(),
        ],
    );
    let answer = exchange(
        server.addr(),
        format!("{form_head}email=ada%40example.org").as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(answer.status, Some(408), "{answer:?}");

    // Nothing was recorded, and a body that arrives in time, if slowly, is served.
    assert!(server.stored_vm("vm-slow").await.is_none());
    let body = br#"{"hostname": "vm-slow", "status": "running"}"#;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    let on_time = head(
        "POST",
        "/api/vm-status",
        &[auth, format!("content-length: {}", body.len())],
    );
    stream.write_all(on_time.as_bytes()).await.expect("write");
    stream.write_all(&body[..10]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body[10..]).await.expect("write");
    let answer = read_response(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    assert!(server.stored_vm("vm-slow").await.is_some());
    assert_healthy(&server).await;
}

#[tokio::test]
async fn a_parked_long_poll_is_not_cut_by_the_body_timeout() {
    let server = server(|c| {
        c.server.body_timeout_seconds = 1;
        c.server.long_poll_seconds = 3;
    })
    .await;
    server.register_running("vm-1").await;
    let started = Instant::now();
    server.vm_startup("vm-1").await.expect_error(408, "timeout");
    assert!(started.elapsed() >= Duration::from_millis(2500));
}

#[tokio::test]
async fn a_request_head_over_the_limit_gets_431() {
    let server = server(|c| c.server.max_header_bytes = 4096).await;
    let big = head(
        "GET",
        "/health",
        &[format!("x-filler: {}", "a".repeat(8000))],
    );
    let answer = exchange(server.addr(), big.as_bytes(), Duration::from_secs(10)).await;
    assert!(
        answer.status == Some(431) || (answer.status.is_none() && answer.closed),
        "{answer:?}"
    );
    // Many small headers add up the same way.
    let many: Vec<String> = (0..200)
        .map(|i| format!("x-h{i}: {}", "b".repeat(30)))
        .collect();
    let answer = exchange(
        server.addr(),
        head("GET", "/health", &many).as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        answer.status == Some(431) || (answer.status.is_none() && answer.closed),
        "{answer:?}"
    );
    let small = head(
        "GET",
        "/health",
        &[format!("x-filler: {}", "a".repeat(2000))],
    );
    let answer = exchange(server.addr(), small.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
}

/// A kept-alive connection that has been served once (so it surely holds a slot).
async fn held_connection(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let answer = read_response(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    assert!(!answer.closed);
    stream
}

#[tokio::test]
async fn connections_beyond_the_limit_are_not_served_until_one_closes() {
    let server = server(|c| c.server.max_connections = 2).await;
    let addr = server.addr().to_owned();
    let first = held_connection(&addr).await;
    let second = held_connection(&addr).await;
    let request = head("GET", "/health", &[]);

    // A third waits briefly, then is refused.
    let started = Instant::now();
    let refused = exchange(&addr, request.as_bytes(), Duration::from_secs(10)).await;
    assert!(
        refused.status == Some(503) || (refused.status.is_none() && refused.closed),
        "served beyond the limit: {refused:?}"
    );
    if refused.status == Some(503) {
        assert!(refused.json()["error"].is_string(), "{refused:?}");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "refused at once instead of waiting briefly"
    );

    // One that is waiting is served as soon as a held connection closes.
    let mut waiting = TcpStream::connect(&addr).await.expect("connect");
    waiting.write_all(request.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(first);
    let answer = read_response(&mut waiting, Duration::from_secs(10)).await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    drop(waiting);

    // And once the waiting one is done, new connections are served again.
    let answer = super::helpers::wait_for(10, "a free connection slot", || {
        let (addr, request) = (addr.clone(), request.clone());
        async move {
            let a = exchange(&addr, request.as_bytes(), Duration::from_secs(5)).await;
            (a.status == Some(200)).then_some(a)
        }
    })
    .await;
    assert_eq!(answer.status, Some(200));
    drop(second);
}

#[test]
fn the_limits_are_configuration_keys_with_checked_ranges() {
    let defaults = Config::default();
    assert_eq!(defaults.server.header_timeout_seconds, 30);
    assert_eq!(defaults.server.body_timeout_seconds, 60);
    assert_eq!(defaults.server.max_connections, 20_000);
    assert_eq!(defaults.server.max_header_bytes, 65_536);
    let keys = Config::keys();
    for key in [
        "server.header_timeout_seconds",
        "server.body_timeout_seconds",
        "server.max_connections",
        "server.max_header_bytes",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key}");
    }
    let mut c = Config::default();
    c.server.header_timeout_seconds = 0;
    c.server.body_timeout_seconds = 3601;
    c.server.max_connections = 0;
    c.server.max_header_bytes = 1024;
    let mut named: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
    named.sort();
    assert_eq!(
        named,
        [
            "server.body_timeout_seconds",
            "server.header_timeout_seconds",
            "server.max_connections",
            "server.max_header_bytes",
        ]
    );
    let mut c = Config::default();
    let problems = c.apply_env(&[
        (
            "LABLINK_SERVER_MAX_CONNECTIONS".to_owned(),
            "500".to_owned(),
        ),
        (
            "LABLINK_SERVER_BODY_TIMEOUT_SECONDS".to_owned(),
            "soon".to_owned(),
        ),
    ]);
    assert_eq!(c.server.max_connections, 500);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "LABLINK_SERVER_BODY_TIMEOUT_SECONDS");
}
