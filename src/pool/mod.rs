//! The use-case layer: what the workshop does with its pool of VMs. Claiming a seat,
//! coming back to it, the instructor's seat actions, reboots, scheduled teardown,
//! launching and destroying, and the wake-ups of parked agents each of them causes.
//! HTTP handlers, the CLI's server side and the background jobs call in here; this layer
//! knows nothing of HTTP.

pub mod accounts;
pub mod admin_tokens;
pub mod agent_token;
pub mod announce;
pub mod broadcast;
pub mod budget;
pub mod claim;
pub mod claim_limit;
pub mod desktop;
pub mod error;
pub mod event;
pub mod fanout;
pub mod hands;
pub mod idle;
pub mod launch;
pub mod liveness;
pub mod participant_files;
pub mod provisioner;
pub mod reboot;
pub mod report;
pub mod rescue;
pub mod schedules;
pub mod seats;
pub mod thumbnails;
pub mod usage;
pub mod waiters;
pub mod waitlist;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use error::PoolError;

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::provision::Provider;
use crate::shared_token::SharedToken;
use crate::store::{Store, StoreError, audit, meta, runs, vms};
use crate::vm_identity::Identities;
use claim_limit::ClaimLimits;
use liveness::Liveness;
use provisioner::{Handles, Provisioner};
use waiters::Waiters;

/// Everything a use case works with: the store and the live state beside it.
pub struct Pool {
    pub config: Config,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// Agents parked on `/vm_startup`, woken by claims, moves and deletions.
    pub waiters: Arc<Waiters>,
    /// The agents' desktop channels and the browser desktop streams.
    pub desktops: Arc<desktop::Desktops>,
    /// Whether each VM's agent is alive.
    pub liveness: Arc<Liveness>,
    /// Which VMs may act now (launch-bound credentials).
    pub identities: Arc<Identities>,
    pub api_token: SharedToken,
    /// Held while the agents' token is replaced.
    pub token_rotation: tokio::sync::Mutex<()>,
    /// Launches and destroys, one run at a time.
    pub provisioner: Arc<Provisioner>,
    /// Counters and histograms for `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// How often participants may ask for a VM.
    pub claim_limits: ClaimLimits,
    /// `access.allowed_emails`, parsed once (empty: anyone may claim).
    pub allowed_emails: Vec<String>,
    /// The current workshop event, as last stored.
    pub event: event::EventCell,
    /// Wakes the waiting list's seating job when a VM may have become available.
    pub waitlist: Arc<waitlist::Waitlist>,
    /// Cancelled when the allocator starts shutting down: jobs stop, parked long-polls
    /// answer at once.
    pub shutdown: CancellationToken,
    /// Participants' files saved through the agents before their seats end.
    pub rescues: Arc<rescue::Rescuer>,
    /// How long each seat has been idle (`idle.reclaim_minutes`).
    pub idle: idle::IdleSeats,
    /// The admin API tokens in force and their last use.
    pub admin_tokens: admin_tokens::AdminTokens,
    /// Participants' open requests for help.
    pub hands: Arc<hands::Hands>,
    /// The console's recent announcements.
    pub announcements: announce::Announcements,
    /// The desktop shown to every participant, if any.
    pub broadcast: Arc<broadcast::Broadcast>,
}

impl Pool {
    /// The seat of `host` ended (released, moved, re-seated, revoked, destroyed): its
    /// desktop streams, its open request for help and a broadcast of it end with it (the
    /// next participant there is not shown to the room).
    pub fn seat_ended(&self, host: &str) {
        // The cut first: a broadcast starting meanwhile sees it (`broadcast::start`).
        self.desktops.cut(host);
        self.hands.seat_ended(host);
        self.broadcast
            .seat_ended(host, |host| self.desktops.cut_broadcast(host));
    }

    /// Opens the pool of `store`: the agents' token, the VM identities, the liveness of
    /// every known VM, and the provider of `config`. Runs cut short by the last stop are
    /// marked interrupted.
    pub async fn open(
        config: Config,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Pool, OpenError> {
        let api_token = SharedToken::new(store.write(meta::api_token_or_create).await?);
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
        let desktops = Arc::new(desktop::Desktops::default());
        let hands = Arc::new(hands::Hands::default());
        let broadcast = Arc::new(broadcast::Broadcast::default());
        let metrics = Arc::new(Metrics::new());
        let identities = Identities::load(store.clone(), api_token.clone()).await?;
        let liveness = Arc::new(Liveness::new(config.staleness_limit()));
        let admin_tokens = admin_tokens::AdminTokens::load(&store).await?;
        let known = store.read(vms::list).await?;
        liveness.watch(known.into_iter().map(|vm| {
            let heartbeats = vm.boot_id.is_some();
            (vm.hostname, vm.unresponsive_since.is_some(), heartbeats)
        }));
        let rescues = Arc::new(rescue::Rescuer::new(
            &config,
            store.clone(),
            liveness.clone(),
        ));
        let provisioner = Arc::new(Provisioner::new(
            provider(&config, &identities)?,
            Handles {
                store: store.clone(),
                waiters: waiters.clone(),
                api_token: api_token.clone(),
                identities: identities.clone(),
                liveness: liveness.clone(),
                desktops: desktops.clone(),
                hands: hands.clone(),
                broadcast: broadcast.clone(),
                rescues: rescues.clone(),
            },
            metrics.clone(),
            // A backstop: providers stop their own commands at the run timeout.
            Duration::from_secs(config.provision.run_timeout_seconds + 60),
        ));
        let pool = Pool {
            // Validated before the pool opens; nothing to parse per claim.
            allowed_emails: config.allowed_emails().unwrap_or_default(),
            claim_limits: ClaimLimits::new(
                config.access.claims_per_network_per_minute,
                config.access.claims_per_email_per_minute,
            ),
            config,
            store,
            clock,
            waiters,
            desktops,
            liveness,
            identities,
            api_token,
            token_rotation: tokio::sync::Mutex::new(()),
            provisioner,
            metrics,
            event: event::EventCell::new(None),
            waitlist: Arc::new(waitlist::Waitlist::default()),
            shutdown: CancellationToken::new(),
            rescues,
            idle: idle::IdleSeats::default(),
            admin_tokens,
            hands,
            announcements: announce::Announcements::default(),
            broadcast,
        };
        event::load(&pool).await.map_err(|e| match e {
            event::EventLoadError::Store(e) => OpenError::Store(e),
            event::EventLoadError::Config(why) => OpenError::Event(why),
        })?;
        Ok(pool)
    }

    pub fn long_poll(&self) -> Duration {
        self.config.long_poll()
    }

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

    /// `audit` for an action of `actor`.
    pub async fn audit_by(&self, actor: &Actor, action: &str, detail: String) {
        self.audit(&actor.user, actor.from.clone(), action, detail)
            .await;
    }
}

/// The stored VM `host`, or `VmNotFound`; a store failure is shown with `failure`.
pub async fn stored_vm(
    pool: &Pool,
    host: &str,
    failure: &'static str,
) -> Result<crate::model::Vm, PoolError> {
    let lookup = host.to_owned();
    pool.store
        .read(move |tx| vms::get(tx, &lookup))
        .await
        .map_err(PoolError::store(failure))?
        .ok_or(PoolError::VmNotFound)
}

/// Who did an audited action: a signed-in admin (and from where), or the allocator itself.
#[derive(Clone, Debug)]
pub struct Actor {
    pub user: String,
    pub from: Option<String>,
}

impl Actor {
    pub fn new(user: impl Into<String>, from: Option<String>) -> Actor {
        Actor {
            user: user.into(),
            from,
        }
    }
}

/// Why the pool cannot open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Event(String),
    #[error("cannot find this executable: {0}")]
    Executable(std::io::Error),
}

fn provider(config: &Config, identities: &Arc<Identities>) -> Result<Arc<dyn Provider>, OpenError> {
    use crate::provision::local::Local;
    use crate::provision::manual::Manual;
    use crate::provision::terraform::{Settings, Terraform};
    Ok(match config.provision.provider.as_str() {
        "local" => {
            let exe = if config.provision.local_executable.is_empty() {
                std::env::current_exe().map_err(OpenError::Executable)?
            } else {
                config.provision.local_executable.clone().into()
            };
            Arc::new(Local::new(
                exe,
                config.data_dir().join("local-vms"),
                format!("{}-lablink-local", config.machine.software),
                config.machine.software.clone(),
                config.provision.local_max_vms as usize,
                config.desktop.mode != "crd",
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
