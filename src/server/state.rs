//! What every handler shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::auth::{AdminCredentials, CredentialsError};
use super::liveness::Liveness;
use super::login_limit::LoginLimiter;
use super::waiters::Waiters;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::download::AgentBuild;
use crate::metrics::Metrics;
use crate::provision::local::Local;
use crate::provision::manual::Manual;
use crate::provision::terraform::{Settings, Terraform};
use crate::provision::{Pool, Provider, Provisioner};
use crate::server::claim_limit::ClaimLimits;
use crate::shared_token::SharedToken;
use crate::store::{Store, StoreError, audit, meta, runs, vms};
use crate::vm_identity::Identities;

/// Written next to the store at every start so operators (and `lablink token`) can read
/// the agents' token while the allocator holds the store.
pub const TOKEN_FILE: &str = "api-token";

/// Why the app cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    TokenFile(#[from] crate::secret_file::WriteError),
    #[error("cannot find this executable: {0}")]
    Executable(std::io::Error),
}

#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

pub struct AppInner {
    pub config: Config,
    pub store: Store,
    pub waiters: Arc<Waiters>,
    pub api_token: SharedToken,
    /// Which VMs may act now (launch-bound credentials).
    pub identities: Arc<Identities>,
    /// Whether each VM's agent is alive.
    pub liveness: Arc<Liveness>,
    pub admin: AdminCredentials,
    pub login_limiter: LoginLimiter,
    /// Held while the agents' token is replaced.
    pub token_rotation: tokio::sync::Mutex<()>,
    pub provisioner: Arc<Provisioner>,
    pub clock: Arc<dyn Clock>,
    /// Cancelled when the server starts shutting down: parked long-polls answer at once.
    pub shutdown: CancellationToken,
    pub started_at: Instant,
    /// What VMs download as their agent (`GET /download/lablink`).
    pub agent_build: AgentBuild,
    /// Counters and histograms for `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// How often participants may ask for a VM.
    pub claim_limits: ClaimLimits,
    /// `access.allowed_emails`, parsed once (empty: anyone may claim).
    pub allowed_emails: Vec<String>,
    /// The address `serve` listens on, once it does.
    pub listening: std::sync::OnceLock<std::net::SocketAddr>,
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
        let api_token = SharedToken::new(store.write(meta::api_token_or_create).await?);
        let data_dir = config.data_dir();
        crate::secret_file::write(&data_dir.join(TOKEN_FILE), &api_token.get())?;
        let admin = AdminCredentials::load_or_create(&config, &store, &data_dir).await?;
        let now = chrono::Utc::now();
        let interrupted = store
            .write(move |tx| runs::interrupt_unfinished(tx, now))
            .await?;
        if !interrupted.is_empty() {
            tracing::warn!(
                ?interrupted,
                "runs were still going when the allocator last stopped; marked interrupted"
            );
        }
        let waiters = Arc::new(Waiters::default());
        let metrics = Arc::new(Metrics::new());
        let identities = Identities::load(store.clone(), api_token.clone()).await?;
        let liveness = Arc::new(Liveness::new(config.staleness_limit()));
        let pool = store.read(vms::list).await?;
        liveness.watch(pool.into_iter().map(|vm| {
            let heartbeats = vm.boot_id.is_some();
            (vm.hostname, vm.unresponsive_since.is_some(), heartbeats)
        }));
        let provisioner = Arc::new(Provisioner::new(
            provider(&config, &identities)?,
            Pool {
                store: store.clone(),
                waiters: waiters.clone(),
                api_token: api_token.clone(),
                identities: identities.clone(),
                liveness: liveness.clone(),
            },
            metrics.clone(),
            // A backstop: providers stop their own commands at the run timeout.
            Duration::from_secs(config.provision.run_timeout_seconds + 60),
        ));
        let agent_build = AgentBuild::from_config(&config);
        if !agent_build.path().is_file() {
            tracing::warn!(
                path = %agent_build.path().display(),
                "provision.agent_binary is not a file: VMs cannot download their agent"
            );
        }
        Ok(App {
            inner: Arc::new(AppInner {
                // Validated before the app starts; nothing to parse per claim.
                allowed_emails: config.allowed_emails().unwrap_or_default(),
                claim_limits: ClaimLimits::new(
                    config.access.claims_per_network_per_minute,
                    config.access.claims_per_email_per_minute,
                ),
                agent_build,
                config,
                store,
                waiters,
                api_token,
                identities,
                liveness,
                admin,
                login_limiter: LoginLimiter::default(),
                token_rotation: tokio::sync::Mutex::new(()),
                provisioner,
                clock,
                shutdown: CancellationToken::new(),
                started_at: Instant::now(),
                metrics,
                listening: std::sync::OnceLock::new(),
            }),
        })
    }

    pub fn long_poll(&self) -> Duration {
        self.config.long_poll()
    }
}

fn provider(
    config: &Config,
    identities: &Arc<Identities>,
) -> Result<Arc<dyn Provider>, StartupError> {
    Ok(match config.provision.provider.as_str() {
        "local" => {
            let exe = if config.provision.local_executable.is_empty() {
                std::env::current_exe().map_err(StartupError::Executable)?
            } else {
                config.provision.local_executable.clone().into()
            };
            Arc::new(Local::new(
                exe,
                config.data_dir().join("local-vms"),
                format!("{}-lablink-local", config.machine.software),
                config.machine.software.clone(),
                config.provision.local_max_vms as usize,
            ))
        }
        "terraform" => {
            let env = |name: &str| std::env::var(name).ok();
            Arc::new(Terraform::new(Settings::from_config(
                config,
                identities.clone(),
                &env,
            )))
        }
        _ => Arc::new(Manual),
    })
}

impl App {
    /// Seconds since `vm`'s agent was last heard from: live while it is watched, else as
    /// recorded when it went silent.
    pub fn last_seen_secs(&self, vm: &crate::model::Vm) -> Option<u64> {
        self.liveness
            .report(&vm.hostname)
            .map(|r| r.last_seen_ago.as_secs())
            .or_else(|| {
                vm.last_seen
                    .and_then(|t| u64::try_from((self.clock.now() - t).num_seconds()).ok())
            })
    }

    /// Records an admin action in the audit log. The action has happened already, so a
    /// store failure here is logged rather than reported to the admin.
    pub async fn audit(&self, actor: &str, from: Option<String>, action: &str, detail: String) {
        let actor = actor.to_owned();
        let verb = action.to_owned();
        let at = self.clock.now();
        tracing::info!(target: "lablink::audit", %actor, from = from.as_deref().unwrap_or("-"), action, %detail, "admin action");
        let recorded = self
            .store
            .write(move |tx| audit::record(tx, &actor, from, &verb, &detail, at))
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, action, "cannot record an admin action in the audit log");
        }
    }
}
