//! What every handler shares: the pool (the use-case layer) and what only the web side
//! needs (admin credentials, sign-in limits, the agent build).

use std::sync::Arc;
use std::time::Instant;

use super::auth::{AdminCredentials, CredentialsError};
use super::login_limit::LoginLimiter;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::download::AgentBuild;
use crate::pool::Pool;
use crate::store::{Store, StoreError};

/// Why the app cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Pool(#[from] crate::pool::OpenError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    TokenFile(#[from] crate::secret_file::WriteError),
}

#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

pub struct AppInner {
    pub pool: Arc<Pool>,
    pub admin: AdminCredentials,
    pub login_limiter: LoginLimiter,
    pub started_at: Instant,
    /// What VMs download as their agent (`GET /download/lablink`).
    pub agent_build: AgentBuild,
    /// The address `serve` listens on, once it does.
    pub listening: std::sync::OnceLock<std::net::SocketAddr>,
    /// The config file `serve` read, if any (`GET /api/doctor` names it).
    pub config_file: std::sync::OnceLock<std::path::PathBuf>,
    /// Held while `GET /api/doctor` runs its checks: one run at a time per allocator.
    pub doctor_run: tokio::sync::Mutex<()>,
}

/// Handlers reach the pool's parts (`app.store`, `app.config`, …) directly.
impl std::ops::Deref for AppInner {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.pool
    }
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

impl App {
    /// Loads (or creates) the agent token and the admin credentials.
    pub async fn start(config: Config, store: Store) -> Result<App, StartupError> {
        App::start_with_clock(config, store, Arc::new(SystemClock)).await
    }

    /// As `start`, with time-driven work (scheduled teardown) following `clock`.
    pub async fn start_with_clock(
        config: Config,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<App, StartupError> {
        crate::logging::ring().set_capacity(config.server.log_ring_lines as usize);
        let pool = Pool::open(config, store, clock).await?;
        let data_dir = pool.config.data_dir();
        crate::secret_file::write(
            &data_dir.join(crate::pool::agent_token::TOKEN_FILE),
            &pool.api_token.get(),
        )?;
        let admin = AdminCredentials::load_or_create(&pool.config, &pool.store, &data_dir).await?;
        let agent_build = AgentBuild::from_config(&pool.config);
        if !agent_build.path().is_file() {
            tracing::warn!(
                path = %agent_build.path().display(),
                "provision.agent_binary is not a file: VMs cannot download their agent"
            );
        }
        Ok(App {
            inner: Arc::new(AppInner {
                pool: Arc::new(pool),
                admin,
                login_limiter: LoginLimiter::default(),
                started_at: Instant::now(),
                agent_build,
                listening: std::sync::OnceLock::new(),
                config_file: std::sync::OnceLock::new(),
                doctor_run: tokio::sync::Mutex::new(()),
            }),
        })
    }
}
