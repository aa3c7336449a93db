//! `lablink doctor`, run as the real binary: a healthy setup passes, and each FAIL is
//! provoked by a setup broken on purpose. Every probe stays on loopback: the instance
//! metadata service and the cloud endpoint are pointed at closed loopback ports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::{ServeProc, TestServer, free_port, run_binary};

/// A doctor run: its exit status and standard output.
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Run {
    /// The line of `check` (with its fix line, if any).
    fn finding(&self, check: &str) -> String {
        let mut lines = self.out.lines();
        let mut found = String::new();
        while let Some(line) = lines.next() {
            if line
                .get(6..)
                .is_some_and(|rest| rest.strip_prefix(check).is_some_and(|r| r.starts_with(' ')))
            {
                found.push_str(line);
                found.push('\n');
                if let Some(fix) = lines.clone().next().filter(|l| l.starts_with("      fix:")) {
                    found.push_str(fix);
                    found.push('\n');
                    lines.next();
                }
            }
        }
        assert!(!found.is_empty(), "no `{check}` line in:\n{}", self.out);
        found
    }

    /// Asserts `check` failed naming `problem`, and that the run exited 1.
    fn expect_fail(&self, check: &str, problem: &str) -> String {
        let finding = self.finding(check);
        assert!(
            finding.starts_with("FAIL") && finding.contains(problem),
            "`{check}` should fail with `{problem}`:\n{}\n{}",
            self.out,
            self.err
        );
        assert!(
            finding.contains("      fix: "),
            "a FAIL names its fix:\n{finding}"
        );
        assert_eq!(self.code, Some(1), "{}\n{}", self.out, self.err);
        finding
    }
}

/// A sandbox for one run: a home without AWS files, a PATH with only what the test puts
/// there, and the AWS probes pointed at a closed loopback port.
struct Sandbox {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let closed = format!("http://127.0.0.1:{}", free_port());
        for sub in ["home", "bin", "data"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        let root = dir.path().to_path_buf();
        let path = |sub: &str| root.join(sub).display().to_string();
        let env = vec![
            ("HOME".to_owned(), path("home")),
            ("PATH".to_owned(), path("bin")),
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_owned(),
                closed.clone(),
            ),
            ("AWS_ENDPOINT_URL".to_owned(), closed),
            // Nothing listens there unless a test says otherwise.
            (
                "LABLINK_SERVER_LISTEN".to_owned(),
                format!("127.0.0.1:{}", free_port()),
            ),
        ];
        let mut b = Sandbox { dir, env };
        b.set("LABLINK_SERVER_DATA_DIR", &path("data"));
        b
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn set(&mut self, name: &str, value: &str) -> &mut Sandbox {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    fn unset(&mut self, name: &str) -> &mut Sandbox {
        self.env.retain(|(n, _)| n != name);
        self
    }

    /// An executable in the PATH.
    fn program(&self, name: &str, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path("bin").join(name);
        std::fs::write(&path, script).expect("write program");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// A `terraform` (or `tofu`) that prints `version -json` output for `version`.
    fn fake_terraform(&self, name: &str, version: &str) -> PathBuf {
        self.program(
            name,
            &format!(
                "#!/bin/sh\n[ \"$1 $2\" = \"version -json\" ] || exit 3\n\
                 echo '{{\"terraform_version\":\"{version}\",\"platform\":\"linux_amd64\",\
                 \"provider_selections\":{{}},\"terraform_outdated\":false}}'\n"
            ),
        )
    }

    /// The Terraform provider with a good Terraform and credentials in the environment.
    fn terraform_ready(&mut self) -> &mut Sandbox {
        self.fake_terraform("terraform", "1.9.5");
        self.set("LABLINK_PROVISION_PROVIDER", "terraform")
            .set("LABLINK_PROVISION_ALLOCATOR_URL", "http://127.0.0.1:9")
            .set("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
            .set("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    }

    async fn doctor(&self, args: &[&str]) -> Run {
        let mut all = vec!["doctor"];
        all.extend_from_slice(args);
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let out = run_binary(&all, &env, 60).await;
        Run {
            code: out.status.code(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Reads a request head (bounded), then writes `answer`.
async fn answer_once(
    mut socket: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    answer: String,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = socket.write_all(answer.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// An HTTP answer whose `Date` is `skew` seconds off this clock (negative: behind).
fn response(skew: i64, body: &str) -> String {
    let now = SystemTime::now();
    let date = if skew >= 0 {
        now + Duration::from_secs(skew.unsigned_abs())
    } else {
        now - Duration::from_secs(skew.unsigned_abs())
    };
    format!(
        "HTTP/1.1 200 OK\r\nDate: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        httpdate::fmt_http_date(date),
        body.len()
    )
}

/// A loopback HTTP server answering every request with `body`, its clock `skew` s off.
async fn http_stub(skew: i64, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(answer_once(socket, response(skew, body)));
        }
    });
    format!("http://{addr}")
}

/// A TLS server side presenting `cert` (signed by whoever the test chose).
pub fn acceptor(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .expect("server certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A loopback HTTPS server presenting `cert` (signed by whoever the test chose).
async fn https_stub(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> u16 {
    let acceptor = acceptor(cert, key);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(socket).await {
                    answer_once(tls, response(0, "{}")).await;
                }
            });
        }
    });
    port
}

/// A certificate authority, written as the only one the doctor trusts (`SSL_CERT_FILE`).
pub struct Authority {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Authority {
    pub fn new(name: &str) -> Authority {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        Authority { cert, key }
    }

    fn trust(&self, b: &mut Sandbox) {
        let file = self.write(&b.path("ca.pem"));
        b.set("SSL_CERT_FILE", &file);
    }

    /// Writes this CA's certificate (PEM) to `file`; its path, for `SSL_CERT_FILE`.
    pub fn write(&self, file: &std::path::Path) -> String {
        std::fs::write(file, self.cert.pem()).expect("write CA");
        file.display().to_string()
    }

    /// A server certificate for `names`, valid from a month ago until `days` from now.
    pub fn issue(&self, names: &[&str], days: i64) -> (rcgen::Certificate, rcgen::KeyPair) {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now + time::Duration::days(days);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server certificate");
        (cert, key)
    }
}

/// The `check` of each finding, in order.
pub fn check_names(findings: &[Value]) -> Vec<&str> {
    findings
        .iter()
        .map(|f| f["check"].as_str().expect("check"))
        .collect()
}

fn data_dir(b: &Sandbox) -> PathBuf {
    b.path("data")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_and_exits_0() {
    let s = TestServer::start().await;
    let mut b = Sandbox::new();
    b.terraform_ready()
        .set("LABLINK_SERVER_LISTEN", s.addr())
        .set("LABLINK_SERVER_DATA_DIR", &s.dir.display().to_string())
        .set("LABLINK_PROVISION_ALLOCATOR_URL", &s.base)
        // The cloud's endpoint, for the clock: here a loopback server with a good Date.
        .set("AWS_ENDPOINT_URL_STS", &s.base);
    let run = b.doctor(&[]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.out, run.err);
    assert!(!run.out.contains("FAIL  "), "{}", run.out);
    for (check, says) in [
        ("config", "PASS  config            no config file"),
        ("data_dir", "owned by this user, mode 07"),
        ("store", "is in use: an allocator is running on it"),
        ("terraform", "PASS  terraform         Terraform 1.9.5 at "),
        (
            "cloud_credentials",
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set",
        ),
        ("public_url", "SKIP  public_url"),
        ("allocator_url", "answers: the allocator is up"),
        ("clock", "PASS  clock             this clock is "),
        ("exposure", "PASS  exposure"),
    ] {
        assert!(
            run.finding(check).contains(says),
            "`{check}`: {says}\n{}",
            run.out
        );
    }
    assert!(run.finding("clock").contains(&s.base), "{}", run.out);
    // Free space may warn on a small disk; nothing else does here.
    let summary = run.out.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("0 FAIL, ") && summary.ends_with(", 1 SKIP"),
        "{}",
        run.out
    );

    // The same findings for scripts.
    let json = b.doctor(&["--json"]).await;
    assert_eq!(json.code, Some(0), "{}", json.err);
    let findings: Vec<Value> = serde_json::from_str(&json.out).expect("a JSON array");
    let checks = check_names(&findings);
    assert_eq!(
        checks,
        [
            "config",
            "data_dir",
            "free_space",
            "store",
            "terraform",
            "cloud_credentials",
            "public_url",
            "allocator_url",
            "clock",
            "exposure"
        ]
    );
    for f in &findings {
        let object = f.as_object().expect("an object");
        assert_eq!(object.len(), 4, "{f}");
        let status = f["status"].as_str().expect("status");
        assert!(["PASS", "WARN", "SKIP"].contains(&status), "{f}");
        assert!(f["found"].as_str().is_some_and(|t| !t.is_empty()), "{f}");
        // A fix comes only with a WARN or FAIL.
        assert_eq!(f["fix"].is_string(), status == "WARN", "{f}");
    }
}

#[tokio::test]
async fn a_broken_config_fails_naming_its_keys() {
    let b = Sandbox::new();
    let file = b.path("config.yaml");
    std::fs::write(
        &file,
        "app:\n  admin_password: PLACEHOLDER_ADMIN_PASSWORD\nserver:\n  lisen: 127.0.0.1:1\n",
    )
    .expect("write");
    let run = b.doctor(&["--config", &file.display().to_string()]).await;
    let finding = run.expect_fail("config", "2 problem(s)");
    assert!(finding.contains("app.admin_password"), "{finding}");
    assert!(
        finding.contains("server.lisen: unknown key; did you mean `listen`?"),
        "{finding}"
    );
    // The other checks still run on what could be read.
    run.finding("exposure");

    let missing = b
        .doctor(&["--config", "/nonexistent/config.yaml", "--json"])
        .await;
    assert_eq!(missing.code, Some(1));
    let findings: Vec<Value> = serde_json::from_str(&missing.out).expect("JSON");
    assert_eq!(findings.len(), 1, "{}", missing.out);
    assert_eq!(findings[0]["status"], "FAIL");
    assert!(
        findings[0]["found"]
            .as_str()
            .is_some_and(|t| t.contains("cannot read")),
        "{}",
        missing.out
    );
}

#[tokio::test]
async fn a_data_directory_others_can_write_fails() {
    use std::os::unix::fs::PermissionsExt;
    let b = Sandbox::new();
    std::fs::set_permissions(data_dir(&b), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let run = b.doctor(&[]).await;
    let finding = run.expect_fail("data_dir", "is writable by anyone (mode 0777)");
    assert!(
        finding.contains(&format!("fix: chmod 700 {}", data_dir(&b).display())),
        "{finding}"
    );
}

#[tokio::test]
async fn a_data_directory_of_another_user_fails() {
    let mut b = Sandbox::new();
    let me = nix::unistd::geteuid();
    let theirs = if me.is_root() {
        // Root can hand the folder to someone else; others use one root owns.
        let dir = data_dir(&b);
        nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        dir
    } else {
        PathBuf::from("/")
    };
    b.set("LABLINK_SERVER_DATA_DIR", &theirs.display().to_string());
    let run = b.doctor(&[]).await;
    run.expect_fail("data_dir", "not by this user");
}

#[tokio::test]
async fn a_data_directory_nobody_can_write_in_fails() {
    // Root writes anywhere a mode allows nothing; procfs refuses new files to everyone, and
    // /proc/self belongs to the process looking at it.
    let mut b = Sandbox::new();
    b.set("LABLINK_SERVER_DATA_DIR", "/proc/self");
    let run = b.doctor(&[]).await;
    run.expect_fail("data_dir", "/proc/self is not writable");
}

#[tokio::test]
async fn a_data_directory_that_cannot_be_created_fails() {
    let mut b = Sandbox::new();
    let file = b.path("a-file");
    std::fs::write(&file, "").expect("write");
    b.set(
        "LABLINK_SERVER_DATA_DIR",
        &file.join("data").display().to_string(),
    );
    let run = b.doctor(&[]).await;
    run.expect_fail("data_dir", "cannot be created");
}

#[tokio::test]
async fn a_store_that_cannot_be_opened_fails() {
    let b = Sandbox::new();
    let store = data_dir(&b).join("lablink.redb");
    std::fs::write(&store, b"not a redb file, whatever its name says").expect("write");
    let run = b.doctor(&[]).await;
    run.expect_fail("store", "lablink.redb cannot be opened");
}

#[tokio::test]
async fn a_store_left_by_a_killed_allocator_warns() {
    let b = Sandbox::new();
    let port = free_port();
    let log = b.path("serve.log");
    let mut serve = ServeProc::start(&data_dir(&b), port, log).await;
    let running = b.doctor(&[]).await;
    assert!(
        running
            .finding("store")
            .contains("is in use: an allocator is running on it"),
        "{}",
        running.out
    );
    serve.kill().await;
    let run = b.doctor(&[]).await;
    let finding = run.finding("store");
    assert!(
        finding.starts_with("WARN") && finding.contains("was not closed cleanly"),
        "{}",
        run.out
    );
}

#[tokio::test]
async fn too_little_free_space_fails() {
    let b = Sandbox::new();
    let run = b.doctor(&["--min-free-mb", "1000000000"]).await;
    run.expect_fail("free_space", "under the 1000000000 MiB floor");
}

#[tokio::test]
async fn a_missing_terraform_fails() {
    let mut b = Sandbox::new();
    b.terraform_ready();
    std::fs::remove_file(b.path("bin").join("terraform")).expect("remove");
    let run = b.doctor(&[]).await;
    run.expect_fail("terraform", "`terraform` is not found");

    // OpenTofu alone is not enough: serve would still run `terraform`.
    let tofu = b.fake_terraform("tofu", "1.8.0");
    let run = b.doctor(&[]).await;
    let finding = run.expect_fail("terraform", "OpenTofu is, at");
    assert!(
        finding.contains(&format!("set provision.terraform_bin: {}", tofu.display())),
        "{finding}"
    );
    b.set(
        "LABLINK_PROVISION_TERRAFORM_BIN",
        &tofu.display().to_string(),
    );
    let run = b.doctor(&[]).await;
    assert!(
        run.finding("terraform")
            .starts_with("PASS  terraform         OpenTofu 1.8.0"),
        "{}",
        run.out
    );
}

#[tokio::test]
async fn a_terraform_older_than_the_templates_need_fails() {
    let mut b = Sandbox::new();
    b.terraform_ready();
    b.fake_terraform("terraform", "1.5.7");
    let run = b.doctor(&[]).await;
    run.expect_fail("terraform", "Terraform 1.5.7 at");
    assert!(
        run.finding("terraform")
            .contains("outside the templates' required_version `>= 1.6, < 2.0`"),
        "{}",
        run.out
    );
    b.fake_terraform("terraform", "2.1.0");
    b.doctor(&[])
        .await
        .expect_fail("terraform", "Terraform 2.1.0");
    // A `terraform` that cannot say its version (a broken install, a wrapper script).
    b.program(
        "terraform",
        "#!/bin/sh\necho 'plugin cache is corrupt' >&2\nexit 3\n",
    );
    let run = b.doctor(&[]).await;
    let finding = run.expect_fail(
        "terraform",
        "`version -json` exited with exit status: 3: plugin cache is corrupt",
    );
    assert!(
        finding.contains("fix: install Terraform or OpenTofu"),
        "{finding}"
    );
}

#[tokio::test]
async fn no_cloud_credentials_fails() {
    let mut b = Sandbox::new();
    b.terraform_ready();
    b.unset("AWS_ACCESS_KEY_ID").unset("AWS_SECRET_ACCESS_KEY");
    let imds = b
        .env
        .iter()
        .find(|(n, _)| n == "AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .map(|(_, v)| v.clone())
        .expect("IMDS");
    let run = b.doctor(&[]).await;
    let finding = run.expect_fail("cloud_credentials", "no AWS credentials");
    assert!(
        finding.contains(&format!("no instance role ({imds}")),
        "{finding}"
    );

    b.set("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE");
    b.doctor(&[])
        .await
        .expect_fail("cloud_credentials", "only one of");
    b.unset("AWS_ACCESS_KEY_ID");

    b.set("AWS_PROFILE", "lab");
    b.doctor(&[])
        .await
        .expect_fail("cloud_credentials", "AWS_PROFILE is lab");
    let aws = b.path("home").join(".aws");
    std::fs::create_dir(&aws).expect("mkdir");
    std::fs::write(
        aws.join("credentials"),
        "[lab]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = x\n",
    )
    .expect("write");
    let run = b.doctor(&[]).await;
    assert!(
        run.finding("cloud_credentials")
            .starts_with("PASS  cloud_credentials profile lab: [lab] in "),
        "{}",
        run.out
    );
}

#[tokio::test]
async fn an_instance_role_is_found_through_the_metadata_service() {
    use axum::routing::{get, put};
    let router = axum::Router::new()
        .route("/latest/api/token", put(|| async { "imds-token" }))
        .route(
            "/latest/meta-data/iam/security-credentials/",
            get(|headers: axum::http::HeaderMap| async move {
                if headers
                    .get("x-aws-ec2-metadata-token")
                    .is_some_and(|t| t == "imds-token")
                {
                    (axum::http::StatusCode::OK, "lablink-allocator-role\n")
                } else {
                    (axum::http::StatusCode::UNAUTHORIZED, "")
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut b = Sandbox::new();
    b.terraform_ready();
    b.unset("AWS_ACCESS_KEY_ID").unset("AWS_SECRET_ACCESS_KEY");
    b.set(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        &format!("http://{addr}"),
    );
    let run = b.doctor(&[]).await;
    assert!(
        run.finding("cloud_credentials")
            .starts_with("PASS  cloud_credentials instance role lablink-allocator-role"),
        "{}",
        run.out
    );
}

#[tokio::test]
async fn a_public_name_that_does_not_resolve_fails() {
    let mut b = Sandbox::new();
    b.set("LABLINK_DNS_ENABLED", "true")
        .set("LABLINK_DNS_DOMAIN", "lablink.invalid");
    let run = b.doctor(&[]).await;
    run.expect_fail("public_url", "lablink.invalid does not resolve");
}

#[tokio::test]
async fn a_public_url_without_a_tls_answer_fails() {
    let b = Sandbox::new();
    let url = format!("https://localhost:{}", free_port());
    let run = b.doctor(&["--public-url", &url]).await;
    let finding = run.expect_fail("public_url", &format!("but no TLS answer from {url}"));
    assert!(finding.contains("check the TLS front"), "{finding}");
}

#[tokio::test]
async fn an_untrusted_certificate_fails() {
    // Signed by a CA the doctor does not trust (it trusts only another one).
    let stranger = Authority::new("stranger");
    let (cert, key) = stranger.issue(&["localhost"], 90);
    let port = https_stub(&cert, &key).await;
    let mut b = Sandbox::new();
    Authority::new("trusted").trust(&mut b);
    let run = b
        .doctor(&["--public-url", &format!("https://localhost:{port}")])
        .await;
    run.expect_fail("public_url", "the certificate of localhost is not trusted");
}

#[tokio::test]
async fn certificates_are_checked_for_name_and_expiry() {
    let ca = Authority::new("workshop CA");
    let mut b = Sandbox::new();
    ca.trust(&mut b);
    let url = |port: u16| format!("https://localhost:{port}");

    let (good, key) = ca.issue(&["localhost"], 90);
    let port = https_stub(&good, &key).await;
    let run = b.doctor(&["--public-url", &url(port)]).await;
    assert!(
        run.finding("public_url")
            .starts_with("PASS  public_url        localhost resolves to "),
        "{}",
        run.out
    );

    let (soon, key) = ca.issue(&["localhost"], 5);
    let port = https_stub(&soon, &key).await;
    let run = b.doctor(&["--public-url", &url(port)]).await;
    let finding = run.finding("public_url");
    assert!(
        finding.starts_with("WARN") && finding.contains("expires within 14 days"),
        "{}",
        run.out
    );

    let (expired, key) = ca.issue(&["localhost"], -1);
    let port = https_stub(&expired, &key).await;
    b.doctor(&["--public-url", &url(port)])
        .await
        .expect_fail("public_url", "the certificate of localhost expired on");

    let (other, key) = ca.issue(&["lablink.example.org"], 90);
    let port = https_stub(&other, &key).await;
    b.doctor(&["--public-url", &url(port)])
        .await
        .expect_fail("public_url", "the certificate is not valid for localhost");
}

#[tokio::test]
async fn an_allocator_url_that_does_not_answer_fails() {
    let mut b = Sandbox::new();
    let closed = format!("http://127.0.0.1:{}", free_port());
    b.set("LABLINK_PROVISION_ALLOCATOR_URL", &closed);
    let run = b.doctor(&[]).await;
    run.expect_fail(
        "allocator_url",
        &format!("{closed}/api/health does not answer"),
    );

    // An allocator answering that it is unhealthy.
    let unhealthy = http_stub(
        0,
        r#"{"status":"degraded","checks":{"store":"unwritable"},"uptime_seconds":1}"#,
    )
    .await;
    b.set("LABLINK_PROVISION_ALLOCATOR_URL", &unhealthy);
    let finding = b
        .doctor(&[])
        .await
        .expect_fail("allocator_url", "the allocator is unhealthy");
    assert!(finding.contains("unwritable"), "{finding}");

    // Terraform VMs given no address to reach the allocator at.
    b.terraform_ready().unset("LABLINK_PROVISION_ALLOCATOR_URL");
    b.doctor(&[]).await.expect_fail(
        "allocator_url",
        "VMs would not know where to reach the allocator",
    );
    b.unset("LABLINK_PROVISION_PROVIDER");

    // Something else answering there is only a warning.
    let other = http_stub(0, "<html>welcome to nginx</html>").await;
    b.set("LABLINK_PROVISION_ALLOCATOR_URL", &other);
    let run = b.doctor(&[]).await;
    assert!(
        run.finding("allocator_url").starts_with("WARN")
            && run
                .finding("allocator_url")
                .contains("not as a LabLink allocator"),
        "{}",
        run.out
    );
}

#[tokio::test]
async fn a_skewed_clock_warns_then_fails() {
    const HEALTHY: &str = r#"{"status":"ok","checks":{"store":"ok"},"uptime_seconds":1}"#;
    let mut b = Sandbox::new();
    let behind = http_stub(-120, HEALTHY).await;
    b.set("LABLINK_PROVISION_ALLOCATOR_URL", &behind);
    let run = b.doctor(&[]).await;
    assert!(
        run.finding("allocator_url").starts_with("PASS"),
        "{}",
        run.out
    );
    let finding = run.expect_fail("clock", &format!("s ahead of {behind}"));
    let seconds: u64 = finding
        .split("this clock is ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("seconds");
    assert!((119..=121).contains(&seconds), "{finding}");

    let ahead = http_stub(10, HEALTHY).await;
    b.set("LABLINK_PROVISION_ALLOCATOR_URL", &ahead);
    let run = b.doctor(&[]).await;
    let finding = run.finding("clock");
    assert!(
        finding.starts_with("WARN") && finding.contains("s behind"),
        "{}",
        run.out
    );
}

#[tokio::test]
async fn an_open_listener_without_join_code_or_allow_list_fails() {
    let mut b = Sandbox::new();
    b.set("LABLINK_SERVER_LISTEN", &format!("0.0.0.0:{}", free_port()));
    let run = b.doctor(&[]).await;
    let finding = run.expect_fail("exposure", "anyone who finds the page can take a seat");
    assert!(finding.contains("access.join_code"), "{finding}");
    for (key, value) in [
        ("LABLINK_ACCESS_JOIN_CODE", "tulip-42"),
        ("LABLINK_EVENT_JOIN_CODE", "tulip-42"),
        ("LABLINK_ACCESS_ALLOWED_EMAILS", "@example.org"),
    ] {
        b.set(key, value);
        let run = b.doctor(&[]).await;
        b.unset(key);
        assert!(
            run.finding("exposure").starts_with("PASS"),
            "{key}: {}",
            run.out
        );
    }
}
