//! Who may call what: agents with the bearer token; the console's people (the admin, and
//! helper accounts) with HTTP Basic or a console session; scripts with an admin API token
//! (`Bearer lablink_at_…`).
//!
//! Two extractors guard the console and the admin API. [`Admin`] takes the admin only (a
//! helper is refused with 403): every route is admin-only unless its handler asks for
//! [`Staff`] instead, which also lets helpers in. Use `Staff` only for what a helper may
//! do: read the console, watch and take over desktops, answer raised hands, post
//! announcements.

use std::path::Path;
use std::sync::Arc;

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::body::DEFAULT_BODY_LIMIT;
use super::client_ip::ClientIp;
use super::state::App;
use crate::config::Config;
use crate::error::ApiError;
use crate::model::{Role, TOKEN_PREFIX};
use crate::pool::accounts::{hash_password, verify_password};
use crate::pool::admin_tokens::TokenUse;
use crate::pool::liveness::Liveness;
use crate::shared_token::AgentScope;
use crate::store::{Store, StoreError, meta};

/// Written when no admin password is configured: the generated one, for the operator.
pub const GENERATED_PASSWORD_FILE: &str = "initial-admin-password";

pub struct AdminCredentials {
    pub user: String,
    password_hash: String,
    /// Argon2 is deliberately expensive (≈19 MiB, tens of ms): at most this many checks
    /// run at once, so a flood of Basic headers cannot exhaust memory or the blocking pool.
    checks: tokio::sync::Semaphore,
    /// Digests of credentials that verified recently: scripts and pages that poll do not
    /// pay for Argon2 on every request.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
}

const CONCURRENT_CHECKS: usize = 2;
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(600);
const VERIFIED_KEPT: usize = 32;

/// Too many password checks are running; the client should try again.
pub struct Busy;

/// Why the admin credentials cannot be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot hash the admin password: {0}")]
    Hash(String),
    #[error(transparent)]
    PasswordFile(#[from] crate::secret_file::WriteError),
}

impl AdminCredentials {
    /// The configured password wins and its hash is stored; with none configured, the
    /// stored hash is used, and on the very first start a password is generated.
    pub async fn load_or_create(
        config: &Config,
        store: &Store,
        data_dir: &Path,
    ) -> Result<AdminCredentials, CredentialsError> {
        let (stored, last_applied) = store
            .read(|tx| {
                Ok((
                    meta::admin_password_hash(tx)?,
                    meta::configured_password_hash(tx)?,
                ))
            })
            .await?;
        let configured = config.app.admin_password.clone();
        let password_hash = match (configured, stored) {
            (Some(password), Some(hash))
                if match &last_applied {
                    Some(applied) => verify_blocking(&password, applied).await,
                    None => false,
                } =>
            {
                hash
            }
            (Some(password), stored) => {
                let changed = match &stored {
                    Some(hash) => !verify_blocking(&password, hash).await,
                    None => false,
                };
                apply_configured(store, password, changed).await?
            }
            (None, Some(hash)) => hash,
            (None, None) => {
                let password = meta::random_secret();
                let path = data_dir.join(GENERATED_PASSWORD_FILE);
                crate::secret_file::write(&path, &password)?;
                tracing::warn!(
                    file = %path.display(),
                    "no admin password configured; generated one and wrote it to this file \
                     (set app.admin_password or LABLINK_APP_ADMIN_PASSWORD to choose your own)"
                );
                apply_configured(store, password, false).await?
            }
        };
        Ok(AdminCredentials {
            user: config.app.admin_user.clone(),
            password_hash,
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Checks the admin's `user:password` pair (argon2, off the async threads, a bounded
    /// number at once).
    pub async fn verify(&self, user: &str, password: &str) -> Result<bool, Busy> {
        let user_ok: bool = user.as_bytes().ct_eq(self.user.as_bytes()).into();
        self.check(user_ok, user, password, &self.password_hash)
            .await
    }

    /// Checks `password` against `hash` under the same bound and memory of recent checks
    /// as the admin's; `user_ok` is the (constant-time) verdict on the name.
    async fn check(
        &self,
        user_ok: bool,
        user: &str,
        password: &str,
        hash: &str,
    ) -> Result<bool, Busy> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::new()
            .chain_update(hash.as_bytes())
            .chain_update(user.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified
                .get(&digest)
                .is_some_and(|at| at.elapsed() < VERIFIED_FOR)
            {
                return Ok(true);
            }
        }
        let permit = tokio::time::timeout(std::time::Duration::from_secs(5), self.checks.acquire())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        let password_ok = verify_blocking(password, hash).await;
        drop(permit);
        let ok = user_ok && password_ok;
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.len() >= VERIFIED_KEPT {
                verified.clear();
            }
            verified.insert(digest, std::time::Instant::now());
        }
        Ok(ok)
    }
}

/// Who a `user`/`password` pair signs in as: the admin, an account with its role, or
/// nobody. An unknown name costs the same Argon2 check as a known one.
pub async fn authenticate(app: &App, user: &str, password: &str) -> Result<Option<Role>, Busy> {
    let is_admin: bool = user.as_bytes().ct_eq(app.admin.user.as_bytes()).into();
    if is_admin {
        return Ok(app
            .admin
            .verify(user, password)
            .await?
            .then_some(Role::Admin));
    }
    let account = match crate::pool::accounts::find(&app.pool, user).await {
        Ok(account) => account,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the accounts to check a sign-in");
            None
        }
    };
    let (known, hash) = match &account {
        Some(account) => (true, account.password_hash.as_str()),
        None => (false, app.admin.password_hash.as_str()),
    };
    let ok = app.admin.check(known, user, password, hash).await?;
    Ok(account.filter(|_| ok).map(|a| a.role))
}

async fn verify_blocking(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false)
}

async fn hash_blocking(password: String) -> Result<String, CredentialsError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| CredentialsError::Hash(e.to_string()))?
        .map_err(CredentialsError::Hash)
}

/// Stores a configured (or generated) password. When it replaces a different admin
/// password, every browser is signed out, as `lablink admin set-password` does.
async fn apply_configured(
    store: &Store,
    password: String,
    changed: bool,
) -> Result<String, CredentialsError> {
    let hash = hash_blocking(password).await?;
    let saved = hash.clone();
    let at = chrono::Utc::now();
    store
        .write(move |tx| {
            meta::apply_configured_password(tx, &saved)?;
            if changed {
                crate::store::sessions::delete_all(tx)?;
                crate::store::audit::record(
                    tx,
                    "config",
                    None,
                    "set-password",
                    "admin password changed through the configuration; all sessions ended",
                    at,
                )?;
            }
            Ok(())
        })
        .await?;
    if changed {
        tracing::info!("admin password changed through the configuration; all sessions ended");
    }
    Ok(hash)
}

/// `lablink admin set-password`: a new admin password, and every browser signed out.
pub async fn set_password(store: &Store, password: String) -> Result<(), CredentialsError> {
    let hash = hash_blocking(password).await?;
    let at = chrono::Utc::now();
    store
        .write(move |tx| {
            meta::set_admin_password_hash(tx, &hash)?;
            crate::store::sessions::delete_all(tx)?;
            crate::store::audit::record(
                tx,
                "cli",
                None,
                "set-password",
                "admin password changed; all sessions ended",
                at,
            )?;
            Ok(())
        })
        .await?;
    Ok(())
}

fn authorization(parts: &Parts) -> Option<&str> {
    parts.headers.get(AUTHORIZATION)?.to_str().ok()
}

fn check_bearer(app: &App, header: Option<&str>) -> Result<Agent, ApiError> {
    // Upstream matches the scheme case-sensitively and takes the rest verbatim.
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or(ApiError::MissingToken)?;
    let scope = app
        .api_token
        .check(token, app.config.access.shared_agent_token)
        .ok_or(ApiError::BadToken)?;
    if let AgentScope::Vm { host, nonce } = &scope {
        // Signed with the current token, but is it this launch of that VM?
        if !app.identities.is_current(host, nonce) {
            return Err(ApiError::BadToken);
        }
    }
    Ok(Agent {
        scope,
        presented: token.to_owned(),
        liveness: app.liveness.clone(),
    })
}

/// Checks Basic credentials (the admin's or an account's): who signed in, with which role.
/// Failures count against the client's sign-in limit.
async fn check_basic(
    app: &App,
    header: Option<&str>,
    ip: Option<IpAddr>,
) -> Result<(String, Role), ApiError> {
    let attempt = match ip.map(|ip| app.login_limiter.begin(ip)) {
        Some(Err(wait)) => return Err(ApiError::TooManyAttempts(wait.as_secs())),
        Some(Ok(attempt)) => Some(attempt),
        None => None,
    };
    let checked = verify_basic(app, header).await;
    if let Some(attempt) = attempt {
        match &checked {
            Ok(_) => attempt.finish(true),
            Err(ApiError::BadBasic) => attempt.finish(false),
            Err(_) => {} // busy: neither a success nor a failure
        }
    }
    checked
}

async fn verify_basic(app: &App, header: Option<&str>) -> Result<(String, Role), ApiError> {
    let encoded = header
        .and_then(|h| h.strip_prefix("Basic "))
        .ok_or(ApiError::BadBasic)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(ApiError::BadBasic)?;
    let (user, password) = decoded.split_once(':').ok_or(ApiError::BadBasic)?;
    match authenticate(app, user, password).await {
        Ok(Some(role)) => Ok((user.to_owned(), role)),
        Ok(None) => Err(ApiError::BadBasic),
        Err(Busy) => Err(ApiError::Busy),
    }
}

/// The token of `Authorization: Bearer lablink_at_…`: an admin API token, not an agent's
/// credential.
fn admin_token(header: Option<&str>) -> Option<&str> {
    header?
        .strip_prefix("Bearer ")
        .filter(|t| t.starts_with(TOKEN_PREFIX))
}

/// Checks an admin API token, and that its scope allows this request. An unknown token
/// counts against the client's sign-in limit, as a wrong password does; a known one
/// neither counts, nor clears earlier failures, nor is refused by them (it is not the
/// password).
fn check_admin_token(
    app: &App,
    token: &str,
    parts: &Parts,
    ip: Option<IpAddr>,
) -> Result<TokenUse, ApiError> {
    if !parts.method.is_safe() && cross_site(&parts.headers) {
        return Err(ApiError::CrossSite);
    }
    let Some(found) = app.admin_tokens.check(token, ip, app.clock.now()) else {
        // Only an unknown token meets the limit: a client locked out by a stale or
        // revoked token can still use a good one.
        match ip.map(|ip| app.login_limiter.begin(ip)) {
            Some(Err(wait)) => return Err(ApiError::TooManyAttempts(wait.as_secs())),
            Some(Ok(attempt)) => attempt.finish(false),
            None => {}
        }
        return Err(ApiError::UnknownApiToken);
    };
    if !found.scope.allows(parts.method.as_str()) && !revokes_itself(parts, &found) {
        return Err(ApiError::Forbidden(format!(
            "The API token \"{}\" has the read_only scope: it may only make GET and HEAD requests. \
             Use an admin-scope token (or the password) for changes.",
            found.name
        )));
    }
    Ok(found)
}

/// A token may always revoke itself (`lablink logout`), whatever its scope.
fn revokes_itself(parts: &Parts, token: &TokenUse) -> bool {
    parts.method == Method::DELETE && parts.uri.path() == format!("/api/admin-tokens/{}", token.id)
}

/// A VM agent, authenticated by its own credential (or the shared token, if accepted).
pub struct Agent {
    pub scope: AgentScope,
    /// The credential as presented, to check it again before a long-poll answers.
    presented: String,
    liveness: Arc<Liveness>,
}

impl Agent {
    /// A VM may act only as itself; the shared token may act as any VM. A request the VM
    /// may make is a sign of life of its agent.
    pub fn acts_as(&self, hostname: &str) -> Result<(), ApiError> {
        match &self.scope {
            AgentScope::AnyVm => {}
            AgentScope::Vm { host, .. } if host == hostname => {}
            AgentScope::Vm { host, .. } => return Err(ApiError::OtherVm(host.clone())),
        }
        self.liveness.contact(hostname);
        Ok(())
    }

    /// As [`acts_as`](Self::acts_as), with the VM's own credential only: what the shared
    /// token may do, every VM holding it may do as any other, and a desktop carries what
    /// the participant types.
    pub fn acts_as_itself(&self, hostname: &str) -> Result<(), ApiError> {
        if matches!(self.scope, AgentScope::AnyVm) {
            return Err(ApiError::Forbidden(
                "Browser desktops need the VM's own credential (`lablink token --vm NAME`, \
                 or a Terraform/local launch); the shared agents' token is not accepted here."
                    .into(),
            ));
        }
        self.acts_as(hostname)
    }

    /// Whether the credential is still good now: a long-poll parked before a rotation,
    /// a revoke or a new mint of its name must not receive the next assignment.
    pub fn still_current(&self, app: &App) -> bool {
        match &self.scope {
            AgentScope::AnyVm => {
                app.config.access.shared_agent_token && app.api_token.matches(&self.presented)
            }
            AgentScope::Vm { host, nonce } => {
                app.api_token.check(&self.presented, false).is_some()
                    && app.identities.is_current(host, nonce)
            }
        }
    }

    /// The launch identity the credential names (none for the shared token).
    pub fn nonce(&self) -> Option<&str> {
        match &self.scope {
            AgentScope::AnyVm => None,
            AgentScope::Vm { nonce, .. } => Some(nonce),
        }
    }
}

impl FromRequestParts<App> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        check_bearer(app, authorization(parts))
    }
}

/// A VM agent or the admin: a `Bearer` header is checked first, with no fallback.
pub enum AgentOrAdmin {
    Agent(Agent),
    Admin,
}

impl AgentOrAdmin {
    /// Reading about `hostname`: the admin and the shared token may read any VM.
    pub fn may_read(&self, hostname: &str) -> Result<(), ApiError> {
        match self {
            AgentOrAdmin::Agent(agent) => agent.acts_as(hostname),
            AgentOrAdmin::Admin => Ok(()),
        }
    }

    /// Reading about every VM: not for a single VM's credential.
    pub fn may_read_all(&self) -> Result<(), ApiError> {
        match self {
            AgentOrAdmin::Agent(Agent {
                scope: AgentScope::Vm { host, .. },
                ..
            }) => Err(ApiError::OtherVm(host.clone())),
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<App> for AgentOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let header = authorization(parts);
        if let Some(token) = admin_token(header) {
            check_admin_token(app, token, parts, peer_ip(parts)).map(|_| AgentOrAdmin::Admin)
        } else if header.is_some_and(|h| h.starts_with("Bearer ")) {
            check_bearer(app, header).map(AgentOrAdmin::Agent)
        } else {
            let (user, role) = check_basic(app, header, peer_ip(parts)).await?;
            if role != Role::Admin {
                return Err(helper_refused(&user, parts));
            }
            Ok(AgentOrAdmin::Admin)
        }
    }
}

/// Someone of the console's staff, signed in: the admin or an account (a helper). By the
/// session cookie of the login form (state-changing requests must carry the session's
/// CSRF token), by HTTP Basic, or by an admin API token (which always acts as the admin).
///
/// A handler takes `Staff` only for what every role may do (see the module's header);
/// everything else takes [`Admin`]. Both check the same credentials and the same CSRF
/// token; `role` and `user` name who acted in the audit log (`actor`).
pub struct Staff {
    pub user: String,
    pub role: Role,
    /// The client's address, for the audit log and the sign-in limit.
    pub ip: Option<IpAddr>,
    /// The session's CSRF token for the forms of the page (empty under Basic).
    pub csrf: String,
    /// The session's id (none under Basic): live streams check it is still signed in.
    pub session_id: Option<String>,
    /// The API token the request came with, if it came with one.
    pub api_token: Option<TokenUse>,
}

/// How a long-lived request's admin or helper signed in (a live stream, a desktop view),
/// to check now and then that it still holds.
pub enum SignedIn {
    Session(String),
    Token(u64),
    /// The admin over HTTP Basic: each request carries the password, there is nothing to end.
    Password,
    /// A helper account over HTTP Basic: it holds while the account does.
    HelperPassword(String),
}

impl SignedIn {
    pub fn of(admin: &Staff) -> SignedIn {
        match (&admin.session_id, &admin.api_token) {
            (Some(id), _) => SignedIn::Session(id.clone()),
            (None, Some(token)) => SignedIn::Token(token.id),
            (None, None) if admin.is_admin() => SignedIn::Password,
            (None, None) => SignedIn::HelperPassword(admin.user.clone()),
        }
    }

    pub async fn still(&self, app: &App) -> bool {
        match self {
            SignedIn::Password => true,
            SignedIn::HelperPassword(name) => matches!(
                crate::pool::accounts::find(&app.pool, name).await,
                Ok(Some(account)) if account.role != crate::model::Role::Admin
            ),
            SignedIn::Token(id) => app.admin_tokens.in_force(*id),
            SignedIn::Session(id) => {
                let (id, now) = (id.clone(), chrono::Utc::now().timestamp());
                matches!(
                    app.store
                        .read(move |tx| crate::store::sessions::load(tx, &id, now))
                        .await,
                    Ok(Some(_))
                )
            }
        }
    }
}

/// The signed-in admin: [`Staff`] whose role is admin. A helper is refused with 403 and a
/// message naming what helpers may not do.
pub struct Admin(Staff);

impl std::ops::Deref for Admin {
    type Target = Staff;
    fn deref(&self) -> &Staff {
        &self.0
    }
}

impl Staff {
    pub fn from_ip(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }

    /// This person as the actor of an audited use case.
    pub fn actor(&self) -> crate::pool::Actor {
        crate::pool::Actor::new(self.user.clone(), self.from_ip())
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The console's shell for this person (their name, role and CSRF token).
    pub fn viewer(&self, now: chrono::DateTime<chrono::Utc>) -> crate::views::admin::Viewer<'_> {
        crate::views::admin::Viewer {
            user: &self.user,
            role: self.role,
            csrf: &self.csrf,
            now,
        }
    }

    /// Signed in through the console (a session) rather than HTTP Basic.
    pub fn from_console(&self) -> bool {
        !self.csrf.is_empty()
    }

    /// Refuses a read-only API token where a GET hands out secrets, participants' files or
    /// screens, or acts: `what` names it.
    pub fn not_read_only(&self, what: &str) -> Result<(), ApiError> {
        match &self.api_token {
            Some(token) if token.scope == crate::model::TokenScope::ReadOnly => {
                Err(ApiError::Forbidden(format!(
                    "The API token \"{}\" has the read_only scope, which cannot {what}; use an \
                     admin-scope token or the admin password.",
                    token.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// Refuses what only the password or a console session may do: `what` names it.
    pub fn not_by_token(&self, what: &str) -> Result<(), ApiError> {
        match &self.api_token {
            Some(token) => Err(ApiError::Forbidden(format!(
                "An API token (here \"{}\") cannot {what}; use the admin password or the console.",
                token.name
            ))),
            None => Ok(()),
        }
    }
}

/// Session keys.
pub const SESSION_USER: &str = crate::store::sessions::USER_KEY;
/// The role signed in with (`Role::as_str`); a session from before roles has none and is
/// the admin's (only the admin could sign in then).
pub const SESSION_ROLE: &str = crate::store::sessions::ROLE_KEY;
pub const SESSION_CSRF: &str = "csrf";
/// An account's session: `pool::accounts::session_key` of the account at sign-in.
pub const SESSION_ACCOUNT: &str = "account";
/// Unix seconds of the last time the session was saved for being used: saving moves its
/// expiry, so an admin at work stays signed in and an idle session ends.
const SESSION_RENEWED: &str = "renewed";
/// Saved at most this often (a save is a durable write).
const RENEW_EVERY: i64 = 600;

/// The `csrf_token` field of a submitted form, lifted out by `form_csrf` before the
/// handler reads the body.
#[derive(Clone)]
pub struct FormCsrf(pub String);

/// The client's address (see `client_ip`).
pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ClientIp>().map(|c| c.0).or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    })
}

/// The 403 for a helper on a route that is the admin's.
fn helper_refused(user: &str, parts: &Parts) -> ApiError {
    ApiError::Forbidden(format!(
        "\"{user}\" is a helper account: helpers may view the console, watch and take over \
         desktops, answer raised hands and post announcements, but may not launch, destroy, \
         reboot or delete VMs, release or move seats, manage tokens, accounts, schedules or the \
         event, or download participants' data or backups. {} {} needs the admin.",
        parts.method,
        parts.uri.path()
    ))
}

impl FromRequestParts<App> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let staff = Staff::from_request_parts(parts, app).await?;
        if staff.role != Role::Admin {
            let refused = helper_refused(&staff.user, parts);
            // The console's pages answer a page (or htmx's flash); the API answers JSON.
            if parts.uri.path().starts_with("/admin") {
                return Err(crate::error::PageError::from(refused).into_response());
            }
            return Err(refused.into_response());
        }
        Ok(Admin(staff))
    }
}

impl FromRequestParts<App> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let ip = peer_ip(parts);
        let header = authorization(parts);
        if let Some(token) = admin_token(header) {
            let used =
                check_admin_token(app, token, parts, ip).map_err(IntoResponse::into_response)?;
            return Ok(Staff {
                user: format!("{} (token \"{}\")", app.admin.user, used.name),
                role: Role::Admin,
                ip,
                csrf: String::new(),
                session_id: None,
                api_token: Some(used),
            });
        }
        if header.is_some_and(|h| h.starts_with("Basic ")) {
            if !parts.method.is_safe() && cross_site(&parts.headers) {
                return Err(ApiError::CrossSite.into_response());
            }
            let (user, role) = check_basic(app, header, ip)
                .await
                .map_err(IntoResponse::into_response)?;
            return Ok(Staff {
                user,
                role,
                ip,
                csrf: String::new(),
                session_id: None,
                api_token: None,
            });
        }
        let Some(session) = parts.extensions.get::<Session>().cloned() else {
            return Err(sign_in_first(parts));
        };
        let user = session.get::<String>(SESSION_USER).await.ok().flatten();
        let csrf = session.get::<String>(SESSION_CSRF).await.ok().flatten();
        let Some((user, csrf)) = user.zip(csrf) else {
            return Err(sign_in_first(parts));
        };
        let role = match session.get::<String>(SESSION_ROLE).await.ok().flatten() {
            None => Role::Admin,
            Some(role) if role == Role::Admin.as_str() => Role::Admin,
            Some(role) => match Role::parse_grantable(&role) {
                Some(role) => role,
                None => return Err(sign_in_first(parts)),
            },
        };
        let key = session.get::<String>(SESSION_ACCOUNT).await.ok().flatten();
        if role != Role::Admin && !account_holds(app, &user, role, key.as_deref()).await {
            // Removed, or a new password, since this session began: it is over.
            let _ = session.flush().await;
            return Err(sign_in_first(parts));
        }
        let now = chrono::Utc::now().timestamp();
        let renewed = session.get::<i64>(SESSION_RENEWED).await.ok().flatten();
        if renewed.is_none_or(|t| now - t >= RENEW_EVERY) {
            // Failing to extend the session is not a reason to refuse this request.
            let _ = session.insert(SESSION_RENEWED, now).await;
        }
        if !parts.method.is_safe() {
            let presented = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| parts.extensions.get::<FormCsrf>().map(|f| f.0.clone()));
            let valid = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(csrf.as_bytes())));
            if !valid {
                return Err(ApiError::BadCsrf.into_response());
            }
        }
        Ok(Staff {
            user,
            role,
            ip,
            csrf,
            session_id: session.id().map(|id| id.to_string()),
            api_token: None,
        })
    }
}

/// Whether account `user` still exists with `role` and the password its session began
/// with (a removal or a new password also deletes its sessions; this catches a request
/// that raced that and saved its session again).
async fn account_holds(app: &App, user: &str, role: Role, key: Option<&str>) -> bool {
    use crate::pool::accounts::{find, session_key};
    match find(&app.pool, user).await {
        Ok(account) => account.is_some_and(|a| {
            a.role == role
                && key.is_some_and(|k| bool::from(k.as_bytes().ct_eq(session_key(&a).as_bytes())))
        }),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the accounts to check a session");
            false
        }
    }
}

/// Browsers are sent to the login form; scripts get upstream's Basic challenge.
fn sign_in_first(parts: &Parts) -> Response {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let login = format!(
        "/admin/login?next={}",
        form_urlencoded::byte_serialize(
            parts
                .uri
                .path_and_query()
                .map_or("/admin", |p| p.as_str())
                .as_bytes()
        )
        .collect::<String>()
    );
    if header("hx-request").is_some() {
        return (StatusCode::UNAUTHORIZED, [("hx-redirect", login)]).into_response();
    }
    let accept = header("accept").unwrap_or_default();
    if parts.method == Method::GET && accept.contains("text/html") {
        return Redirect::to(&login).into_response();
    }
    // A live stream or a browser whose session ended: no Basic challenge, which would make
    // the browser ask for the password in its own dialog and then send Basic everywhere.
    let browser = accept.contains("text/event-stream")
        || header("cookie").is_some_and(|c| c.contains(crate::server::sessions::COOKIE));
    if browser {
        return (StatusCode::UNAUTHORIZED, "Sign in again at /admin/login.").into_response();
    }
    ApiError::BadBasic.into_response()
}

/// Lifts `csrf_token` out of a form body so the `Admin` extractor can check it; the body
/// is handed on unchanged.
pub async fn form_csrf(request: Request, next: Next) -> Response {
    let is_form = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    // Only a browser with a session has a token to lift out.
    let has_session = request
        .headers()
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(crate::server::sessions::COOKIE));
    if request.method().is_safe() || !is_form || !has_session {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, DEFAULT_BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(e) if over_limit(&e) => return ApiError::TooLarge(DEFAULT_BODY_LIMIT).into_response(),
        Err(e) => {
            return ApiError::bad_request(format!("Could not read the request body: {e}"))
                .into_response();
        }
    };
    let token = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf_token")
        .map(|(_, v)| v.into_owned());
    let mut request = Request::from_parts(parts, Body::from(bytes));
    if let Some(token) = token {
        request.extensions_mut().insert(FormCsrf(token));
    }
    next.run(request).await
}

/// Whether reading a body failed because it was larger than allowed.
fn over_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether a browser says the request comes from another site; scripts send neither
/// header.
pub fn cross_site(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin.split("://").nth(1).unwrap_or(origin) != host,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_hashes_verify_only_the_right_password() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horse ", &hash));
    }
}
