//! Talking to a running allocator as its admin: only the allocator may open its store, so
//! commands that change a running one go through its API. Which allocator: `--url`, else
//! `LABLINK_URL`, else the last `lablink login`, else this machine. Signed in with an API
//! token (`LABLINK_TOKEN`, else the one `lablink login` stored for that address), else
//! the admin password over HTTP Basic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::exit::{CliError, error_chain};

/// How a command signs in to a running allocator with the password.
#[derive(clap::Args, Clone, Debug)]
pub struct Login {
    /// Admin user name.
    #[arg(long, env = USER_ENV, default_value = "admin")]
    pub user: String,
    /// Read the admin password from this file (else LABLINK_APP_ADMIN_PASSWORD, else
    /// prompted). Given, it is used even when an API token is stored.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

/// Which running allocator a command talks to, and how it signs in.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// The allocator's address (else LABLINK_URL, else the address of the last `lablink
    /// login`, else http://127.0.0.1:5000).
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub login: Login,
}

// A command that lists what a running allocator holds (no doc comment: clap would show it).
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

impl Target {
    /// The allocator's address, by the rule above.
    pub fn url(&self) -> Result<String, String> {
        if let Some(url) = self.explicit_url() {
            return Ok(url);
        }
        Ok(super::login::Logins::load()?
            .default_url()
            .unwrap_or_else(|| DEFAULT_URL.to_owned()))
    }

    /// The address given by `--url` or `LABLINK_URL`, if any.
    pub fn explicit_url(&self) -> Option<String> {
        self.url.clone().or_else(|| non_empty_env(URL_ENV))
    }

    /// An admin client for the target; a bad `--url` or no credential is a usage error.
    pub fn admin(&self) -> Result<Admin, CliError> {
        Admin::new(self).map_err(CliError::Usage)
    }

    /// An admin client for downloads of any size: at most `pause` without a byte.
    pub fn downloader(&self, pause: Duration) -> Result<Admin, CliError> {
        let url = self.url().map_err(CliError::Usage)?;
        let client = download_client_for(&base_url(&url).map_err(CliError::Usage)?, pause)
            .map_err(CliError::Failed)?;
        Admin::with_client(client, &url, &self.login).map_err(CliError::Usage)
    }
}

/// Where the admin password comes from when no `--password-file` is given (the name
/// `lablink serve` reads it from too).
pub const PASSWORD_ENV: &str = "LABLINK_APP_ADMIN_PASSWORD";
/// What `PASSWORD_ENV` was called before: refused, so a script cannot go on unnoticed with
/// a prompt or a stored token it did not mean.
pub const OLD_PASSWORD_ENV: &str = "LABLINK_ADMIN_PASSWORD";
pub const USER_ENV: &str = "LABLINK_APP_ADMIN_USER";
pub const URL_ENV: &str = "LABLINK_URL";
pub const TOKEN_ENV: &str = "LABLINK_TOKEN";
pub const DEFAULT_URL: &str = "http://127.0.0.1:5000";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Names per `POST /api/vm-credentials`: well inside the allocator's 64 KiB body limit.
const MINT_BATCH: usize = 1_000;

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Fails when only the old name of the password variable is set.
pub fn refuse_old_env() -> Result<(), String> {
    if std::env::var_os(OLD_PASSWORD_ENV).is_some() && std::env::var_os(PASSWORD_ENV).is_none() {
        return Err(format!(
            "{OLD_PASSWORD_ENV} was renamed {PASSWORD_ENV} (the name `lablink serve` reads too): set that instead"
        ));
    }
    Ok(())
}

/// The admin password: from `file`, else LABLINK_APP_ADMIN_PASSWORD, else asked on the
/// terminal.
pub fn password(file: Option<&Path>, user: &str, url: &str) -> Result<String, String> {
    refuse_old_env()?;
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("--password-file {}: {e}", path.display()))?,
        None => match non_empty_env(PASSWORD_ENV) {
            Some(p) => p,
            None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
                rpassword::prompt_password(format!("Password of {user} at {url}: "))
                    .map_err(|e| format!("cannot read the password: {e}"))?
            }
            None => {
                return Err(format!(
                    "no admin password: give --password-file, set {PASSWORD_ENV}, run in a terminal to be asked, or sign in once with `lablink login`"
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

/// How requests sign in.
#[derive(Clone)]
enum Credential {
    /// An admin API token, and where it came from (for the message when it is refused).
    Token {
        token: String,
        from: String,
    },
    Password {
        user: String,
        password: String,
    },
}

/// The credential for the allocator at `url` (already without a trailing slash).
fn credential(url: &str, login: &Login) -> Result<Credential, String> {
    refuse_old_env()?;
    let with_password = |login: &Login| {
        password(login.password_file.as_deref(), &login.user, url).map(|password| {
            Credential::Password {
                user: login.user.clone(),
                password,
            }
        })
    };
    if login.password_file.is_some() {
        return with_password(login);
    }
    if let Some(token) = non_empty_env(TOKEN_ENV) {
        return Ok(Credential::Token {
            token,
            from: TOKEN_ENV.to_owned(),
        });
    }
    if let Some(stored) = super::login::Logins::load()?.get(url) {
        return Ok(Credential::Token {
            token: stored.token.clone(),
            from: format!("the login stored for {url}"),
        });
    }
    with_password(login)
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
#[derive(Clone)]
pub struct Admin {
    base: String,
    client: reqwest::Client,
    credential: Credential,
}

/// An HTTP client for `url` (no proxy for this machine).
pub fn client_for(url: &reqwest::Url, timeout: Duration) -> Result<reqwest::Client, String> {
    build_client(url, reqwest::Client::builder().timeout(timeout))
}

/// An HTTP client for downloads from `url`: no limit on the whole, at most `pause` without
/// a byte.
pub fn download_client_for(url: &reqwest::Url, pause: Duration) -> Result<reqwest::Client, String> {
    build_client(url, reqwest::Client::builder().read_timeout(pause))
}

fn build_client(
    url: &reqwest::Url,
    client: reqwest::ClientBuilder,
) -> Result<reqwest::Client, String> {
    let mut client = client.connect_timeout(CONNECT_TIMEOUT);
    if is_loopback(url) {
        client = client.no_proxy();
    }
    client
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

impl Admin {
    /// The allocator `target` names, with the credential for it.
    pub fn new(target: &Target) -> Result<Admin, String> {
        let url = target.url()?;
        let client = client_for(&base_url(&url)?, Duration::from_secs(60))?;
        Admin::with_client(client, &url, &target.login)
    }

    /// Over an HTTP client the caller already has.
    pub fn with_client(client: reqwest::Client, url: &str, login: &Login) -> Result<Admin, String> {
        let base = url.trim_end_matches('/');
        Ok(Admin {
            base: base.to_owned(),
            client,
            credential: credential(base, login)?,
        })
    }

    /// With a password the caller already has (the benchmark's own allocator, `lablink
    /// login`).
    pub fn with_password(
        client: reqwest::Client,
        url: &str,
        user: &str,
        password: String,
    ) -> Admin {
        Admin {
            base: url.trim_end_matches('/').to_owned(),
            client,
            credential: Credential::Password {
                user: user.to_owned(),
                password,
            },
        }
    }

    /// With an API token the caller already has (`lablink logout`).
    pub fn with_token(client: reqwest::Client, url: &str, token: String, from: String) -> Admin {
        Admin {
            base: url.trim_end_matches('/').to_owned(),
            client,
            credential: Credential::Token { token, from },
        }
    }

    /// The allocator's address, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `request` with this admin's credential.
    pub fn sign(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Credential::Token { token, .. } => request.bearer_auth(token),
            Credential::Password { user, password } => request.basic_auth(user, Some(password)),
        }
    }

    /// A request to `path` with this admin's credential, for a caller that reads the
    /// answer itself.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.sign(self.client.request(method, format!("{}{path}", self.base)))
    }

    /// What a 401 answer means for this credential.
    pub fn refused(&self) -> String {
        let base = &self.base;
        match &self.credential {
            Credential::Token { from, .. } => format!(
                "the API token from {from} is unknown or revoked (HTTP 401 from {base}): run `lablink login` to get a new one"
            ),
            Credential::Password { .. } => {
                format!("wrong admin user or password (HTTP 401 from {base})")
            }
        }
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

    pub async fn delete(&self, path: &str) -> Result<Value, RemoteError> {
        let url = format!("{}{path}", self.base);
        self.call(self.client.delete(url)).await
    }

    /// GETs `path` for a download (a backup, CSV, ZIP): the successful answer, to read
    /// whole or stream.
    pub async fn fetch(&self, path: &str) -> Result<reqwest::Response, RemoteError> {
        let url = format!("{}{path}", self.base);
        // Whatever the download is; a refusal comes as JSON with its reason.
        let request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "*/*, application/json");
        self.check(self.send(request).await?).await
    }

    /// Writes the body of `response` (from [`fetch`](Self::fetch)) into `out` as it
    /// arrives; the number of bytes. A reader that stops early (stdout piped into `head`)
    /// ends the copy without an error.
    pub async fn save(
        &self,
        mut response: reqwest::Response,
        out: &mut impl std::io::Write,
    ) -> Result<u64, CliError> {
        let mut bytes = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            CliError::Failed(format!(
                "the download from {} broke off: {}",
                self.base,
                error_chain(&e)
            ))
        })? {
            match out.write_all(&chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(bytes),
                written => written?,
            }
            bytes += chunk.len() as u64;
        }
        match out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(bytes),
            flushed => flushed.map(|()| bytes).map_err(CliError::from),
        }
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
        self.sign(request)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RemoteError::Unreachable(format!(
                        "cannot connect to {}: the allocator is not running there or not reachable ({})",
                        self.base,
                        error_chain(&e)
                    ))
                } else if e.is_timeout() {
                    RemoteError::Unreachable(format!(
                        "{} did not answer in time ({})",
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
            401 => RemoteError::Unauthorized(self.refused()),
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
    /// The credentials were refused (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The allocator answered and refused the request (the message is its reason; 403:
    /// the credentials do not allow it).
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
            RemoteError::Unauthorized(m)
            | RemoteError::Refused {
                status: 403,
                message: m,
            } => CliError::Unauthorized(m),
            RemoteError::Refused { message, .. } | RemoteError::Failed(message) => {
                CliError::Failed(message)
            }
        }
    }
}
