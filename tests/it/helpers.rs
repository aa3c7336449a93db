//! A real allocator on 127.0.0.1 with its own data directory, and the requests tests send it.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use lablink::clock::{Clock, SystemClock};
use lablink::config::Config;
use lablink::server::App;
use lablink::store::Store;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "test-admin-pw";
/// Hold time of `/vm_startup` unless a test sets its own: short, so a poll that parks by
/// mistake ends quickly.
pub const DEFAULT_LONG_POLL_SECONDS: u64 = 5;
/// Upper bound on any single request of the suite.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The command Google shows for "Debian Linux", with `code` as its `--code`.
pub fn crd_command(code: &str) -> String {
    format!(
        "DISPLAY= /opt/google/chrome-remote-desktop/start-host --code=\"{code}\" \
         --redirect-url=\"https://remotedesktop.google.com/_/oauthredirect\" --name=$(hostname)"
    )
}

/// Runs `fut`, failing the test when it takes longer than `secs`.
pub async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {secs} s"))
}

/// Polls `check` every 10 ms until it is true; fails the test after `secs`.
pub async fn wait_until(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still not true after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls `check` every 25 ms until it yields a value; fails the test after `secs`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still not true after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Binds `addr`, retrying for a few seconds while the port is still taken (a server that
/// just stopped on it).
pub async fn bind_retrying(addr: &str) -> TcpListener {
    let mut attempts = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

/// A loopback port nobody listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A client that never goes through a proxy and never waits forever.
/// A client that reports redirects instead of following them (forms answer 303).
pub fn no_redirects() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("client")
}

pub fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("reqwest client")
}

pub fn test_config(dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.server.data_dir = dir.display().to_string();
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.server.long_poll_seconds = DEFAULT_LONG_POLL_SECONDS;
    cfg.app.admin_password = Some(ADMIN_PASSWORD.into());
    // Most tests speak as upstream 0.1.2 clients (one shared token) and claim in bulk;
    // tests/it/access.rs covers per-VM credentials and the claim limits.
    cfg.access.shared_agent_token = true;
    cfg.access.claims_per_network_per_minute = 0;
    cfg.access.claims_per_email_per_minute = 0;
    cfg
}

/// The status code and body of an answer, read as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
}

impl Answer {
    pub async fn read(response: Response) -> Answer {
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("response body");
        Answer {
            status,
            content_type,
            text,
        }
    }

    pub fn json(&self) -> Value {
        assert!(
            self.content_type.starts_with("application/json"),
            "expected JSON, got {:?} ({}): {}",
            self.content_type,
            self.status,
            self.text
        );
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self.json()
    }

    /// Asserts the status and the exact `{"error": message}` body.
    pub fn expect_error(&self, status: u16, message: &str) {
        let body = self.expect(status);
        assert_eq!(body, json!({ "error": message }), "body of the {status}");
    }
}

/// The outcome of a participant's claim.
#[derive(Debug)]
pub struct Claimed {
    pub status: StatusCode,
    pub html: String,
    /// `name=value` of the claim cookie the page set, if any.
    pub cookie: Option<String>,
}

impl Claimed {
    /// Text of the element with this id (`hostname`, `pin`, `free-count`).
    pub fn field(&self, id: &str) -> Option<String> {
        html_field(&self.html, id)
    }

    pub fn hostname(&self) -> String {
        self.field("hostname")
            .unwrap_or_else(|| panic!("no hostname in the page ({}): {}", self.status, self.html))
    }

    pub fn pin(&self) -> String {
        let pin = self
            .field("pin")
            .unwrap_or_else(|| panic!("no PIN in the page ({}): {}", self.status, self.html));
        assert!(
            pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()),
            "PIN is not 6 digits: {pin:?}"
        );
        pin
    }
}

/// The text inside `<tag id="ID">…</tag>` of a rendered page.
pub fn html_field(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\"");
    let at = html.find(&marker)?;
    let rest = &html[at + marker.len()..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].to_owned())
}

pub struct TestServer {
    pub base: String,
    pub app: App,
    pub client: Client,
    pub dir: PathBuf,
    token: String,
    tempdir: Option<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// A server on a fresh data directory with the default test configuration.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server on a fresh data directory; `tune` adjusts the test configuration.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let mut server = TestServer::start_in(tempdir.path(), tune).await;
        server.tempdir = Some(tempdir);
        server
    }

    /// A server on `dir`, which the caller keeps (so a later server can reopen it).
    pub async fn start_in(dir: &Path, tune: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_on(dir, "127.0.0.1:0", tune).await
    }

    /// A server on `dir` listening on `listen` (`127.0.0.1:0` for any free port, or the
    /// address of a server stopped a moment ago).
    pub async fn start_on(dir: &Path, listen: &str, tune: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_on_with_clock(dir, listen, Arc::new(SystemClock), tune).await
    }

    /// As `start_on`, with time-driven work following `clock`.
    pub async fn start_on_with_clock(
        dir: &Path,
        listen: &str,
        clock: Arc<dyn Clock>,
        tune: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut cfg = test_config(dir);
        tune(&mut cfg);
        cfg.server.data_dir = dir.display().to_string();
        let store = Store::open(dir).expect("open the store");
        let app = App::start_with_clock(cfg, store, clock)
            .await
            .expect("start the app");
        let listener = bind_retrying(listen).await;
        let addr = listener.local_addr().expect("local address");
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(lablink::allocator::run(listener, app.clone(), shutdown));
        TestServer {
            base: format!("http://{addr}"),
            token: app.api_token.get(),
            app,
            client: client(),
            dir: dir.to_path_buf(),
            tempdir: None,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops this server and starts a new one on the same data directory.
    pub async fn restart(mut self, tune: impl FnOnce(&mut Config)) -> TestServer {
        self.stop().await;
        let tempdir = self.tempdir.take();
        let mut next = TestServer::start_in(&self.dir, tune).await;
        next.tempdir = tempdir;
        next
    }

    /// Stops this server and starts a new one on the same data directory and the same
    /// port, so clients configured with the old address find it again.
    pub async fn restart_on_same_port(mut self, tune: impl FnOnce(&mut Config)) -> TestServer {
        self.stop().await;
        let tempdir = self.tempdir.take();
        let addr = self.addr().to_owned();
        let mut next = TestServer::start_on(&self.dir, &addr, tune).await;
        next.tempdir = tempdir;
        next
    }

    /// `127.0.0.1:<port>` this server listens on.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Triggers shutdown and waits for `serve` to return (the store is closed then).
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            within(10, "serve() after shutdown", task)
                .await
                .expect("serve task panicked")
                .expect("serve returned an error");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The agents' token as it was when the server started.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// POST a JSON body with `Authorization: Bearer <token>` when a token is given.
    pub async fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> Answer {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Answer::read(req.send().await.expect("POST")).await
    }

    /// POST a JSON body as the agent (with the right token).
    /// The newest `n` entries of the audit log, newest first.
    pub async fn recent_audit(&self, n: usize) -> Vec<lablink::model::AuditEntry> {
        self.app
            .store
            .read(move |tx| lablink::store::audit::recent(tx, n))
            .await
            .expect("audit")
    }

    /// `GET /api/my-vm` from the browser holding `cookie` (the claim cookie).
    pub async fn my_vm(&self, cookie: &str) -> Value {
        let r = self
            .client
            .get(self.url("/api/my-vm"))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .expect("GET /api/my-vm");
        Answer::read(r).await.expect(200)
    }

    /// The text of `GET /metrics` (loopback may scrape without a token).
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics")
    }

    /// A JSON request as the admin (HTTP Basic); `body` sent as JSON when given.
    pub async fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self
            .client
            .request(method, self.url(path))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD));
        if let Some(body) = body {
            req = req.json(&body);
        }
        Answer::read(req.send().await.expect("request")).await
    }

    pub async fn agent_post(&self, path: &str, body: &Value) -> Answer {
        self.post_json(path, body, Some(self.token())).await
    }

    /// POST raw bytes with the given content type, as the agent.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let req = self
            .client
            .post(self.url(path))
            .bearer_auth(self.token())
            .header(CONTENT_TYPE, content_type)
            .body(body);
        Answer::read(req.send().await.expect("POST")).await
    }

    /// GET with the given authorization.
    pub async fn get(&self, path: &str, auth: Auth<'_>) -> Answer {
        let req = auth.apply(self.client.get(self.url(path)));
        Answer::read(req.send().await.expect("GET")).await
    }

    /// GET as the agent.
    pub async fn agent_get(&self, path: &str) -> Answer {
        self.get(path, Auth::Bearer(self.token())).await
    }

    /// A participant submits the form.
    pub async fn claim(&self, email: &str, command: &str) -> Claimed {
        claim_with(&self.client, &self.base, email, command).await
    }

    /// A claim from the browser that made `earlier` (it presents that claim's cookie).
    pub async fn claim_again(&self, email: &str, command: &str, earlier: &Claimed) -> Claimed {
        let cookie = earlier
            .cookie
            .as_deref()
            .expect("the earlier claim set a cookie");
        claim_presenting(&self.client, &self.base, email, command, Some(cookie)).await
    }

    /// The VM reports `running` (the first report creates it).
    pub async fn register_running(&self, host: &str) {
        self.report_status(host, "running").await;
    }

    pub async fn report_status(&self, host: &str, status: &str) {
        let a = self
            .agent_post(
                "/api/vm-status",
                &json!({"hostname": host, "status": status}),
            )
            .await;
        assert_eq!(
            a.expect(200),
            json!({"message": "VM status updated successfully."})
        );
    }

    /// `vm-1` … `vm-N`, all running, registered concurrently.
    pub async fn register_many(&self, n: usize) -> Vec<String> {
        let hosts: Vec<String> = (1..=n).map(|i| format!("vm-{i}")).collect();
        let mut set = tokio::task::JoinSet::new();
        for host in &hosts {
            let (c, url, token, host) = (
                self.client.clone(),
                self.url("/api/vm-status"),
                self.token().to_owned(),
                host.clone(),
            );
            set.spawn(async move {
                c.post(url)
                    .bearer_auth(token)
                    .json(&json!({"hostname": host, "status": "running"}))
                    .send()
                    .await
                    .expect("POST /api/vm-status")
                    .status()
            });
        }
        while let Some(status) = set.join_next().await {
            assert_eq!(status.expect("task"), StatusCode::OK);
        }
        hosts
    }

    /// `/api/unassigned_vms_count`.
    pub async fn free_count(&self) -> u64 {
        let body = self
            .get("/api/unassigned_vms_count", Auth::None)
            .await
            .expect(200);
        body["count"].as_u64().expect("count is a number")
    }

    /// `/vm_startup` as the agent of `host`.
    pub async fn vm_startup(&self, host: &str) -> Answer {
        self.agent_post("/vm_startup", &json!({ "hostname": host }))
            .await
    }

    /// Starts `/vm_startup` for `host` in its own task; the answer and when it came.
    pub fn spawn_poll(&self, host: &str) -> tokio::task::JoinHandle<(Answer, Instant)> {
        let (client, url, token) = (
            self.client.clone(),
            self.url("/vm_startup"),
            self.token().to_owned(),
        );
        let body = json!({ "hostname": host });
        tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("POST /vm_startup");
            let answer = Answer::read(r).await;
            (answer, Instant::now())
        })
    }

    /// An admin form POST asking for JSON, with extra headers.
    pub async fn admin_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .client
            .post(self.url(path))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Answer::read(req.send().await.expect("POST")).await
    }

    /// Waits for a provisioning run to end; the run and its output.
    pub async fn finished_run(&self, id: u64, secs: u64) -> (Value, Vec<String>) {
        wait_for(secs, "the run finishes", || async {
            let body = self
                .get(&format!("/api/runs/{id}"), Auth::admin())
                .await
                .expect(200);
            (body["run"]["state"] != "running").then(|| {
                let lines = body["lines"]
                    .as_array()
                    .expect("lines")
                    .iter()
                    .map(|l| l.as_str().expect("text").to_owned())
                    .collect();
                (body["run"].clone(), lines)
            })
        })
        .await
    }

    /// The VM as stored.
    pub async fn stored_vm(&self, host: &str) -> Option<lablink::model::Vm> {
        let host = host.to_owned();
        self.app
            .store
            .read(move |tx| lablink::store::vms::get(tx, &host))
            .await
            .expect("store read")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A claim through any client (the concurrency test shares one among many tasks).
pub async fn claim_with(client: &Client, base: &str, email: &str, command: &str) -> Claimed {
    claim_presenting(client, base, email, command, None).await
}

/// A claim from a browser that presents `cookie` (what an earlier claim set).
pub async fn claim_presenting(
    client: &Client,
    base: &str,
    email: &str,
    command: &str,
    cookie: Option<&str>,
) -> Claimed {
    let mut req = client
        .post(format!("{base}/api/request_vm"))
        .form(&[("email", email), ("crd_command", command)]);
    if let Some(cookie) = cookie {
        req = req.header(reqwest::header::COOKIE, cookie);
    }
    let response = req.send().await.expect("POST /api/request_vm");
    let status = response.status();
    let cookie = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let html = response.text().await.expect("page");
    Claimed {
        status,
        html,
        cookie,
    }
}

#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
    /// The whole Authorization header, verbatim.
    Raw(&'a str),
}

impl Auth<'_> {
    pub fn admin() -> Auth<'static> {
        Auth::Basic(ADMIN_USER, ADMIN_PASSWORD)
    }

    pub fn apply(self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Raw(h) => req.header(reqwest::header::AUTHORIZATION, h),
        }
    }
}

/// The process ids a local-provider run's output names ("started vm-1 (pid 123)").
pub fn started_pids(lines: &[String]) -> Vec<i32> {
    lines
        .iter()
        .filter_map(|l| l.split("(pid ").nth(1))
        .filter_map(|rest| rest.trim_end_matches(')').parse().ok())
        .collect()
}

/// Launches `n` local VMs and waits for the run to succeed; their agents' process ids.
pub async fn launch_local(s: &TestServer, n: u32) -> Vec<i32> {
    let launched = s
        .admin_form("/api/launch", &[("num_vms", &n.to_string())], &[])
        .await
        .expect(202);
    let (run, lines) = s
        .finished_run(launched["run_id"].as_u64().expect("id"), 30)
        .await;
    assert_eq!(run["state"], "succeeded", "{lines:?}");
    started_pids(&lines)
}

/// The pool as `GET /api/vms` shows it to the admin, by hostname.
pub async fn pool_view(s: &TestServer) -> std::collections::BTreeMap<String, Value> {
    let body = s.get("/api/vms", Auth::admin()).await.expect(200);
    body["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .map(|vm| {
            (
                vm["hostname"].as_str().expect("name").to_owned(),
                vm.clone(),
            )
        })
        .collect()
}

/// A VM credential of `host`'s own, minted by the admin (`POST /api/vm-credentials`).
pub async fn mint_credential(s: &TestServer, host: &str) -> String {
    let minted = s
        .client
        .post(s.url("/api/vm-credentials"))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .json(&serde_json::json!({"hostname": host}))
        .send()
        .await
        .expect("mint");
    Answer::read(minted).await.expect(201)["credentials"][host]
        .as_str()
        .expect("a credential")
        .to_owned()
}

/// The open requests for help (`GET /api/hands` as the admin), oldest first.
pub async fn open_hands(s: &TestServer) -> Vec<Value> {
    s.admin_json(reqwest::Method::GET, "/api/hands", None)
        .await
        .expect(200)["hands"]
        .as_array()
        .expect("hands")
        .clone()
}

/// Reads an event stream (SSE) until `want` appears in the raw stream; everything read.
pub async fn read_events_until(mut response: reqwest::Response, want: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(want) {
        let chunk = response
            .chunk()
            .await
            .expect("event stream")
            .unwrap_or_else(|| panic!("stream ended before {want:?}: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

/// The environment a `lablink` command needs to sign in to a TestServer as its admin.
pub fn admin_cli_env() -> [(&'static str, &'static str); 1] {
    [("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD)]
}

/// The stdout of a command that must have succeeded (else the test fails, showing both
/// streams).
#[track_caller]
pub fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs the real `lablink` binary with a clean environment; fails the test after `secs`.
pub async fn run_binary(args: &[&str], env: &[(&str, &str)], secs: u64) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lablink"));
    cmd.args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    within(secs, &format!("lablink {}", args.join(" ")), cmd.output())
        .await
        .expect("run lablink")
}

/// A stand-in for systemd's notification socket (`NOTIFY_SOCKET`) of `Type=notify` units.
pub struct NotifySocket {
    pub path: PathBuf,
    socket: tokio::net::UnixDatagram,
    /// Every message received so far, in order.
    pub messages: Vec<String>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            path,
            socket,
            messages: Vec::new(),
        }
    }

    /// Waits (bounded) for a message with the line `line`; returns that message.
    pub async fn expect_line(&mut self, line: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = tokio::time::timeout(left, self.socket.recv(&mut buf)).await;
            let Ok(received) = received else {
                panic!("no `{line}` within {secs} s; received {:?}", self.messages);
            };
            let n = received.expect("receive on notify socket");
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.messages.push(message.clone());
            if message.lines().any(|l| l == line) {
                return message;
            }
        }
    }
}

/// The admin password `ServeProc` starts `lablink serve` with.
pub const SERVE_ADMIN_PASSWORD: &str = "x";

/// `lablink serve` (the real binary) as a child process, so it can be SIGKILLed.
pub struct ServeProc {
    pub child: tokio::process::Child,
    pub log: PathBuf,
}

impl ServeProc {
    /// Starts it on `dir` and `127.0.0.1:port`; returns once `/api/health` answers 200.
    pub async fn start(dir: &Path, port: u16, log: PathBuf) -> ServeProc {
        ServeProc::start_with_env(dir, port, log, &[]).await
    }

    /// As `start`, with more environment variables (configuration keys as `LABLINK_…`).
    pub async fn start_with_env(
        dir: &Path,
        port: u16,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> ServeProc {
        let program = tokio::process::Command::new(env!("CARGO_BIN_EXE_lablink"));
        ServeProc::start_program(program, dir, port, log, env).await
    }

    /// As `start_with_env`, with another program: another build of lablink, or a runner
    /// (qemu) and its arguments followed by that build.
    pub async fn start_program(
        mut program: tokio::process::Command,
        dir: &Path,
        port: u16,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> ServeProc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("serve log");
        let err = out.try_clone().expect("clone serve log");
        let child = program
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("LABLINK_APP_ADMIN_PASSWORD", SERVE_ADMIN_PASSWORD)
            .env("LABLINK_SERVER_LONG_POLL_SECONDS", "30")
            // As `test_config`: upstream-style agents (one shared token), no claim limits.
            .env("LABLINK_ACCESS_SHARED_AGENT_TOKEN", "true")
            .env("LABLINK_ACCESS_CLAIMS_PER_NETWORK_PER_MINUTE", "0")
            .env("LABLINK_ACCESS_CLAIMS_PER_EMAIL_PER_MINUTE", "0")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn lablink serve");
        let mut server = ServeProc { child, log };
        let http = client();
        let child = &mut server.child;
        wait_for(30, "the allocator answers /api/health", || {
            let exited = child.try_wait().ok().flatten();
            let http = http.clone();
            async move {
                if let Some(status) = exited {
                    panic!("lablink serve exited before answering: {status}");
                }
                let ok = http
                    .get(format!("http://127.0.0.1:{port}/api/health"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                ok.then_some(())
            }
        })
        .await;
        server
    }

    /// SIGKILL, then wait (bounded) for the process to be gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL the allocator");
        within(10, "the killed allocator", self.child.wait())
            .await
            .expect("wait");
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("----- allocator log -----\n{log}\n----- end -----");
        }
    }
}
