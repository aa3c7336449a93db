//! Talking to a running allocator as its admin (HTTP Basic): only the allocator may open
//! its store, so commands that change a running one go through its API.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::exit::CliError;

/// How a command signs in to a running allocator.
#[derive(clap::Args, Debug)]
pub struct Login {
    /// Admin user name.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// Read the admin password from this file (else LABLINK_ADMIN_PASSWORD, else prompted).
    #[arg(long)]
    pub password_file: Option<std::path::PathBuf>,
}

/// Which allocator a command talks to, and how it signs in.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// The allocator's address.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub url: String,
    #[command(flatten)]
    pub login: Login,
}

impl Target {
    /// An admin client for the target; a bad `--url` or missing password is a usage error.
    pub fn admin(&self) -> Result<Admin, CliError> {
        Admin::new(&self.url, &self.login).map_err(CliError::Usage)
    }
}

/// Where the admin password comes from when no `--password-file` is given.
pub const PASSWORD_ENV: &str = "LABLINK_ADMIN_PASSWORD";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Names per `POST /api/vm-credentials`: well inside the allocator's 64 KiB body limit.
const MINT_BATCH: usize = 1_000;

/// The admin password: from `file`, else LABLINK_ADMIN_PASSWORD, else asked on the
/// terminal.
pub fn password(file: Option<&Path>, user: &str, url: &str) -> Result<String, String> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("--password-file {}: {e}", path.display()))?,
        None => match std::env::var(PASSWORD_ENV) {
            Ok(p) if !p.is_empty() => p,
            _ if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
                rpassword::prompt_password(format!("Password of {user} at {url}: "))
                    .map_err(|e| format!("cannot read the password: {e}"))?
            }
            _ => {
                return Err(format!(
                    "no admin password: give --password-file, set {PASSWORD_ENV}, or run in a terminal to be asked"
                ));
            }
        },
    };
    let password = text.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err("the admin password is empty".into());
    }
    Ok(password)
}

pub fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// "error: cause: cause" (reqwest's own message hides why a connection failed).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A base URL as `--url` gives it, checked.
pub fn base_url(url: &str) -> Result<reqwest::Url, String> {
    let base = url.trim_end_matches('/');
    match reqwest::Url::parse(base) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        _ => Err(format!(
            "--url {url}: not an http(s) address such as http://127.0.0.1:5000"
        )),
    }
}

/// An admin's HTTP session with one allocator.
pub struct Admin {
    base: String,
    client: reqwest::Client,
    user: String,
    password: String,
}

impl Admin {
    pub fn new(url: &str, login: &Login) -> Result<Admin, String> {
        let parsed = base_url(url)?;
        let mut client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(60));
        if is_loopback(&parsed) {
            client = client.no_proxy();
        }
        let client = client
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Admin::with_client(client, url, login)
    }

    /// Over an HTTP client the caller already has.
    pub fn with_client(client: reqwest::Client, url: &str, login: &Login) -> Result<Admin, String> {
        let base = url.trim_end_matches('/');
        let password = password(login.password_file.as_deref(), &login.user, base)?;
        Ok(Admin::with_password(client, base, &login.user, password))
    }

    /// With a password the caller already has (the benchmark's own allocator).
    pub fn with_password(
        client: reqwest::Client,
        url: &str,
        user: &str,
        password: String,
    ) -> Admin {
        Admin {
            base: url.trim_end_matches('/').to_owned(),
            client,
            user: user.to_owned(),
            password,
        }
    }

    /// The allocator's address, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Credentials for `hosts` (`POST /api/vm-credentials`, in batches well inside the
    /// body limit), in their order.
    pub async fn mint(&self, hosts: &[String]) -> Result<Vec<String>, String> {
        let mut credentials = Vec::with_capacity(hosts.len());
        for batch in hosts.chunks(MINT_BATCH) {
            let answer = self
                .post(
                    "/api/vm-credentials",
                    &serde_json::json!({ "hostnames": batch }),
                )
                .await
                .map_err(|e| format!("minting credentials: {e}"))?;
            for host in batch {
                let credential = answer["credentials"][host]
                    .as_str()
                    .ok_or_else(|| format!("the allocator minted no credential for {host}"))?;
                credentials.push(credential.to_owned());
            }
        }
        Ok(credentials)
    }

    /// The VMs `GET /api/vms` shows unresponsive, and the allocator's staleness limit.
    pub async fn unresponsive(&self) -> Result<(Vec<String>, Duration), String> {
        let pool = self.get("/api/vms").await.map_err(|e| e.to_string())?;
        let marked = pool["vms"]
            .as_array()
            .map(|vms| {
                vms.iter()
                    .filter(|vm| vm["unresponsive"].as_bool() == Some(true))
                    .filter_map(|vm| vm["hostname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let stale = pool["stale_after_seconds"]
            .as_u64()
            .ok_or("GET /api/vms gave no stale_after_seconds: an allocator without liveness")?;
        Ok((marked, Duration::from_secs(stale)))
    }

    /// POSTs `body` (JSON) to `path`; the answer's JSON, or what went wrong.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, RemoteError> {
        let url = format!("{}{path}", self.base);
        self.call(self.client.post(url).json(body)).await
    }

    /// POSTs a form (the endpoints upstream defined as forms, e.g. `/api/launch`).
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, RemoteError> {
        let url = format!("{}{path}", self.base);
        self.call(self.client.post(url).form(form)).await
    }

    pub async fn get(&self, path: &str) -> Result<Value, RemoteError> {
        let url = format!("{}{path}", self.base);
        self.call(self.client.get(url)).await
    }

    /// GETs `path` as raw bytes (CSV, ZIP downloads).
    pub async fn download(&self, path: &str) -> Result<bytes::Bytes, RemoteError> {
        let url = format!("{}{path}", self.base);
        // Whatever the download is; a refusal comes as JSON with its reason.
        let request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "*/*, application/json");
        let response = self.check(self.send(request).await?).await?;
        response.bytes().await.map_err(|e| self.failed(&e))
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, RemoteError> {
        let response = self
            .send(
                // Endpoints that also serve the console answer JSON only when asked for it.
                request.header(reqwest::header::ACCEPT, "application/json"),
            )
            .await?;
        let response = self.check(response).await?;
        let text = response.text().await.map_err(|e| self.failed(&e))?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RemoteError> {
        request
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() || e.is_timeout() {
                    RemoteError::Unreachable(format!(
                        "cannot connect to {}: the allocator is not running there or not reachable ({})",
                        self.base,
                        error_chain(&e)
                    ))
                } else {
                    self.failed(&e)
                }
            })
    }

    fn failed(&self, e: &reqwest::Error) -> RemoteError {
        RemoteError::Failed(format!(
            "request to {} failed: {}",
            self.base,
            error_chain(e)
        ))
    }

    /// A success passes; any other answer becomes the error it stands for, with the
    /// allocator's own message.
    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, RemoteError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let base = &self.base;
        let text = response.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let detail = json["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| text.trim().chars().take(200).collect());
        Err(match status.as_u16() {
            401 => RemoteError::Unauthorized(format!(
                "wrong admin user or password (HTTP 401 from {base})"
            )),
            403 => RemoteError::Unauthorized(format!("{base} refused: {detail} (HTTP 403)")),
            code => RemoteError::Refused {
                status: code,
                message: format!("{base} answered HTTP {status}: {detail}"),
            },
        })
    }
}

/// Why a call to the allocator did not succeed; each kind has its exit status.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Nothing answered (connection refused, DNS, timeout): trying later may help.
    #[error("{0}")]
    Unreachable(String),
    /// The credentials were refused (401) or do not allow this (403).
    #[error("{0}")]
    Unauthorized(String),
    /// The allocator answered and refused the request (the message is its reason).
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// The exchange broke off, or the answer could not be read.
    #[error("{0}")]
    Failed(String),
}

impl From<RemoteError> for CliError {
    fn from(e: RemoteError) -> CliError {
        match e {
            RemoteError::Unreachable(m) => CliError::Unreachable(m),
            RemoteError::Unauthorized(m) => CliError::Unauthorized(m),
            RemoteError::Refused { message, .. } | RemoteError::Failed(message) => {
                CliError::Failed(message)
            }
        }
    }
}
