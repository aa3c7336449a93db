//! `lablink verify-deploy` and `GET /api/doctor`, on loopback only: a TLS front on
//! 127.0.0.1 presents a certificate for `localhost` from a test CA that the command trusts
//! through `SSL_CERT_FILE`, and passes the connections to an in-process TestServer.

use std::process::Output;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::doctor::{Authority, acceptor, check_names};
use crate::helpers::{ADMIN_PASSWORD, Auth, TestServer, free_port, run_binary};

/// A TLS front on 127.0.0.1 presenting a certificate for `localhost` signed by `ca`; each
/// connection is passed to `backend` (`127.0.0.1:port`). Its port.
async fn tls_front(ca: &Authority, backend: String) -> u16 {
    let (cert, key) = ca.issue(&["localhost"], 90);
    let acceptor = acceptor(&cert, &key);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    port
}

/// A TLS front (certificate for `localhost` from `ca`) that answers every request with 200
/// except `GET /api/health`, which it never answers: it reads on until the client leaves.
async fn front_without_health(ca: &Authority) -> u16 {
    let (cert, key) = ca.issue(&["localhost"], 90);
    let acceptor = acceptor(&cert, &key);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /api/health ") {
                    while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                    return;
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.out, self.err
        )
    }
}

/// `lablink verify-deploy ARGS` trusting only `ca_file`, signed in with `credential`.
async fn verify(args: &[&str], ca_file: &str, credential: (&str, &str)) -> Run {
    let mut all = vec!["verify-deploy"];
    all.extend_from_slice(args);
    let env = [("SSL_CERT_FILE", ca_file), credential];
    let out: Output = run_binary(&all, &env, 60).await;
    Run {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const PASSWORD: (&str, &str) = ("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD);

/// The test CA, and the file that makes it the only one trusted.
fn trusted_ca(dir: &tempfile::TempDir) -> (Authority, String) {
    let ca = Authority::new("deploy test CA");
    let file = ca.write(&dir.path().join("ca.pem"));
    (ca, file)
}

/// `s` behind a TLS front the test CA vouches for: the directory holding the CA file (keep
/// it while the test runs), that file, and the front's `https://localhost:PORT`.
async fn trusted_front(s: &TestServer) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, ca_file) = trusted_ca(&dir);
    let port = tls_front(&ca, s.addr().to_owned()).await;
    (dir, ca_file, format!("https://localhost:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_answers_passes_every_stage_and_the_doctor() {
    let s = TestServer::start().await;
    let (_dir, ca_file, url) = trusted_front(&s).await;

    let run = verify(&["--url", &url, "--timeout", "30s"], &ca_file, PASSWORD).await;
    assert_eq!(run.code, Some(0), "{run}");
    for line in [
        "PASS  dns               localhost resolves to ",
        "PASS  certificate       the certificate of localhost is trusted, valid for the name and for 14 days more",
        &format!("PASS  health            {url}/api/health answers: the allocator is up"),
        &format!("the allocator's own checks (GET {url}/api/doctor):"),
        "PASS  allocator_url     ",
        "PASS  exposure          ",
    ] {
        assert!(run.out.contains(line), "missing `{line}`\n{run}");
    }
    assert!(
        run.err.contains("reading the allocator's own checks"),
        "{run}"
    );

    // For scripts; and a read-only API token is enough.
    let token = s
        .admin_json(
            Method::POST,
            "/api/admin-tokens",
            Some(json!({"name": "deploy-check", "scope": "read_only"})),
        )
        .await
        .expect(201)["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let run = verify(
        &["--url", &url, "--timeout", "30s", "--json"],
        &ca_file,
        ("LABLINK_TOKEN", &token),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run}");
    let report: Value = serde_json::from_str(&run.out).expect("JSON");
    assert_eq!(report["url"], url.as_str());
    let stages: Vec<(&str, &str)> = report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|f| {
            (
                f["check"].as_str().expect("check"),
                f["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        stages,
        [("dns", "PASS"), ("certificate", "PASS"), ("health", "PASS")]
    );
    let checks = check_names(report["doctor"].as_array().expect("doctor"));
    // The doctor's checks but the store's, which the allocator itself holds open.
    assert_eq!(
        checks,
        [
            "config",
            "data_dir",
            "free_space",
            "terraform",
            "cloud_credentials",
            "public_url",
            "allocator_url",
            "clock",
            "exposure"
        ]
    );

    // Plain HTTP (a deployment without TLS): no certificate to check.
    let run = verify(&["--url", &s.base, "--timeout", "30s"], &ca_file, PASSWORD).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.out
            .contains("SKIP  certificate       plain HTTP: no certificate to check"),
        "{run}"
    );
}

#[tokio::test]
async fn the_doctor_route_is_for_admins_and_read_only_tokens() {
    let s = TestServer::start().await;
    let anonymous = s.get("/api/doctor", Auth::None).await;
    assert_eq!(anonymous.status.as_u16(), 401, "{anonymous:?}");

    let findings = s.get("/api/doctor", Auth::admin()).await.expect(200);
    let findings = findings.as_array().expect("an array");
    assert!(!findings.is_empty());
    for f in findings {
        assert_eq!(f.as_object().expect("object").len(), 4, "{f}");
        assert!(
            ["PASS", "WARN", "FAIL", "SKIP"].contains(&f["status"].as_str().expect("status")),
            "{f}"
        );
    }
    let text = serde_json::to_string(findings).expect("text");
    assert!(!text.contains(ADMIN_PASSWORD), "{text}");
    assert!(!text.contains(s.token()), "{text}");

    let monitor = s
        .admin_json(
            Method::POST,
            "/api/admin-tokens",
            Some(json!({"name": "monitor", "scope": "read_only"})),
        )
        .await
        .expect(201);
    let token = monitor["token"].as_str().expect("token");
    let seen = s.get("/api/doctor", Auth::Bearer(token)).await.expect(200);
    assert_eq!(
        seen.as_array().map(Vec::len),
        Some(findings.len()),
        "{seen}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_fails_naming_the_certificate() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_trusted, ca_file) = trusted_ca(&dir);
    let stranger = Authority::new("stranger");
    let port = tls_front(&stranger, s.addr().to_owned()).await;
    let url = format!("https://localhost:{port}");
    let run = verify(&["--url", &url, "--timeout", "2s"], &ca_file, PASSWORD).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.err
            .contains("stage `certificate` did not pass within 2 s")
            && run
                .err
                .contains("the certificate of localhost is not trusted"),
        "{run}"
    );
    assert!(run.out.contains("FAIL  certificate"), "{run}");
    assert!(
        !run.out.contains("health"),
        "stops at the stage that failed\n{run}"
    );
}

#[tokio::test]
async fn a_health_check_that_never_answers_times_out_naming_the_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, ca_file) = trusted_ca(&dir);
    let port = front_without_health(&ca).await;
    let url = format!("https://localhost:{port}");
    let run = verify(&["--url", &url, "--timeout", "3s"], &ca_file, PASSWORD).await;
    // Nothing answered: as the other remote commands, 4.
    assert_eq!(run.code, Some(4), "{run}");
    assert!(
        run.err.contains("stage `health` did not pass within 3 s")
            && run.err.contains("/api/health"),
        "{run}"
    );
    assert!(run.out.contains("PASS  certificate"), "{run}");
}

#[tokio::test]
async fn a_failed_check_on_the_allocator_exits_1_naming_it() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let s = TestServer::start_with(|c| c.provision.allocator_url = closed.clone()).await;
    let (_dir, ca_file, url) = trusted_front(&s).await;
    let run = verify(&["--url", &url, "--timeout", "30s"], &ca_file, PASSWORD).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.out.contains(&format!(
            "FAIL  allocator_url     {closed}/api/health does not answer"
        )),
        "{run}"
    );
    assert!(
        run.err
            .contains("1 of the allocator's checks failed: allocator_url ("),
        "{run}"
    );
}

#[tokio::test]
async fn refused_credentials_exit_3() {
    let s = TestServer::start().await;
    let (_dir, ca_file, url) = trusted_front(&s).await;
    let run = verify(
        &["--url", &url, "--timeout", "30s"],
        &ca_file,
        ("LABLINK_APP_ADMIN_PASSWORD", "not-the-password"),
    )
    .await;
    assert_eq!(run.code, Some(3), "{run}");
    assert!(run.err.contains("wrong admin user or password"), "{run}");
    // The stages passed: only the credentials are wrong.
    assert!(run.out.contains("PASS  health"), "{run}");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_fails_naming_dns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_ca, ca_file) = trusted_ca(&dir);
    let run = verify(
        &["--url", "https://lablink.invalid", "--timeout", "1s"],
        &ca_file,
        PASSWORD,
    )
    .await;
    assert_eq!(run.code, Some(4), "{run}");
    assert!(
        run.err.contains("stage `dns` did not pass within 1 s")
            && run.err.contains("lablink.invalid does not resolve"),
        "{run}"
    );
    assert!(
        run.err.contains("waiting for dns: "),
        "progress on stderr\n{run}"
    );

    // No address at all is a usage error, before any wait.
    let run = verify(&["--timeout", "1s"], &ca_file, PASSWORD).await;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.err.contains("--url https://NAME"), "{run}");
}

/// One doctor run at a time per allocator: while a run waits on a probe (here an allocator
/// URL that accepts connections and never answers), a second request gets 429 with
/// `Retry-After` at once; the first still answers, naming the silent URL.
#[tokio::test]
async fn a_doctor_run_during_a_run_is_refused_with_429() {
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    let s = TestServer::start_with(|c| c.provision.allocator_url = silent_url.clone()).await;

    let first = {
        let request = Auth::admin().apply(s.client.get(s.url("/api/doctor")));
        tokio::spawn(async move { request.send().await })
    };
    // The first run is inside its allocator_url probe once the silent listener is reached.
    let (_held, _) = tokio::time::timeout(std::time::Duration::from_secs(60), silent.accept())
        .await
        .expect("the doctor run probes the allocator URL")
        .expect("accept");

    let second = Auth::admin()
        .apply(s.client.get(s.url("/api/doctor")))
        .send()
        .await
        .expect("second request");
    assert_eq!(second.status().as_u16(), 429);
    let retry: u64 = second
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(retry >= 1, "{retry}");

    let first = first.await.expect("task").expect("first request");
    assert_eq!(first.status().as_u16(), 200);
    let findings: Vec<Value> = first.json().await.expect("JSON");
    let allocator_url = findings
        .iter()
        .find(|f| f["check"] == "allocator_url")
        .expect("an allocator_url finding");
    assert_eq!(allocator_url["status"], "FAIL", "{allocator_url}");
    assert!(
        allocator_url.to_string().contains(&silent_url),
        "{allocator_url}"
    );
}
