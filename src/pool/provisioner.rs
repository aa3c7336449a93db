//! The provisioner: runs one launch or destroy at a time in the background through the
//! configured provider, records it as a run with its output, and keeps the VM rows (and
//! the parked agents of destroyed VMs) in step with what exists.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use chrono::Utc;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::liveness::Liveness;
use super::waiters::{Waiters, Wake};
use crate::metrics::Metrics;
use crate::model::{Phase, RescueReason, Run, RunAction, RunState, Vm};
use crate::provision::{LaunchContext, Provider, ProviderError, RunFailure, RunLog};
use crate::shared_token::SharedToken;
use crate::store::{Store, StoreError, runs, vms};
use crate::vm_identity::Identities;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("run #{} ({}) requested by {} is still in progress; wait for it to finish", .0.id, .0.action.describe(), .0.requested_by)]
    Busy(Box<Run>),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("VM not found.")]
    NoSuchVm,
    #[error("nothing to destroy: there are no VMs")]
    NothingToDestroy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a run cannot be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("No run #{0}.")]
    NoSuchRun(u64),
    #[error("run #{} ({}) has already finished: {}", .0.id, .0.action.describe(), .0.state.describe())]
    Finished(Box<Run>),
    #[error("run #{0} is finishing; it can no longer be cancelled")]
    Finishing(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The run going on, how to stop it, and who asked to.
struct Current {
    run: Run,
    cancel: CancellationToken,
    cancelled_by: Option<String>,
    /// The run's outcome is being recorded: too late to cancel it.
    finishing: bool,
}

/// How long a destroyed VM's reports are refused (unless a launch comes first).
const GONE_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// Hostnames of destroyed VMs, each for `GONE_FOR` or until the next launch.
#[derive(Clone, Default)]
pub struct Gone(Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>);

impl Gone {
    fn insert(&self, hosts: &[String]) {
        let mut gone = self.0.lock().unwrap_or_else(|e| e.into_inner());
        gone.retain(|_, at| at.elapsed() < GONE_FOR);
        for host in hosts {
            gone.insert(host.clone(), std::time::Instant::now());
        }
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn contains(&self, host: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .is_some_and(|at| at.elapsed() < GONE_FOR)
    }
}

pub struct Provisioner {
    provider: Arc<dyn Provider>,
    store: Store,
    waiters: Arc<Waiters>,
    api_token: SharedToken,
    identities: Arc<Identities>,
    liveness: Arc<Liveness>,
    desktops: Arc<super::desktop::Desktops>,
    hands: Arc<super::hands::Hands>,
    broadcast: Arc<super::broadcast::Broadcast>,
    rescues: Arc<super::rescue::Rescuer>,
    allocator_url: OnceLock<String>,
    current: Mutex<Option<Current>>,
    /// VMs removed by a destroy, for a while: a report still in flight from a dying VM
    /// must not bring its record back (and offer a dead VM to a participant).
    gone: Gone,
    cancel: CancellationToken,
    tasks: TaskTracker,
    timeout: std::time::Duration,
    metrics: Arc<Metrics>,
}

/// What the provisioner keeps in step with the VMs it creates and destroys.
pub struct Handles {
    pub store: Store,
    pub waiters: Arc<Waiters>,
    /// The agents' token (redacted from run output).
    pub api_token: SharedToken,
    pub identities: Arc<Identities>,
    pub liveness: Arc<Liveness>,
    /// Destroyed VMs' desktop streams end with them.
    pub desktops: Arc<super::desktop::Desktops>,
    /// …and their open requests for help.
    pub hands: Arc<super::hands::Hands>,
    /// …and a broadcast of their desktop.
    pub broadcast: Arc<super::broadcast::Broadcast>,
    /// Participants' files are rescued before their VM is destroyed.
    pub rescues: Arc<super::rescue::Rescuer>,
}

impl Provisioner {
    pub fn new(
        provider: Arc<dyn Provider>,
        handles: Handles,
        metrics: Arc<Metrics>,
        timeout: std::time::Duration,
    ) -> Provisioner {
        let Handles {
            store,
            waiters,
            api_token,
            identities,
            liveness,
            desktops,
            hands,
            broadcast,
            rescues,
        } = handles;
        Provisioner {
            provider,
            store,
            waiters,
            api_token,
            identities,
            liveness,
            desktops,
            hands,
            broadcast,
            rescues,
            allocator_url: OnceLock::new(),
            current: Mutex::new(None),
            gone: Gone::default(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            timeout,
            metrics,
        }
    }

    /// The VMs destroyed recently (and not launched again since).
    pub fn gone(&self) -> Gone {
        self.gone.clone()
    }

    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    /// Where VMs reach this allocator; known once the server is listening.
    pub fn set_allocator_url(&self, url: String) {
        let _ = self.allocator_url.set(url);
    }

    /// The run going on now, if any.
    pub async fn current(&self) -> Option<Run> {
        self.current.lock().await.as_ref().map(|c| c.run.clone())
    }

    /// Stops run `id`: its processes get SIGINT (Terraform finishes the resources in
    /// flight and saves its state), SIGKILL only after a grace period; the run ends as
    /// `cancelled` when its work stopped short. Answers at once with the run as it is.
    pub async fn cancel(&self, id: u64, by: &str) -> Result<Run, CancelError> {
        let cancelled = {
            let mut current = self.current.lock().await;
            match current.as_mut().filter(|c| c.run.id == id) {
                Some(c) if c.finishing => return Err(CancelError::Finishing(id)),
                Some(c) => {
                    if c.cancelled_by.is_none() {
                        c.cancelled_by = Some(by.to_owned());
                    }
                    c.cancel.cancel();
                    Some(c.run.clone())
                }
                None => None,
            }
        };
        // The run as stored now (its output and progress so far), not as it started.
        let stored = self.store.read(move |tx| runs::get(tx, id)).await?;
        match (cancelled, stored) {
            (Some(_), Some(run)) | (Some(run), None) => Ok(run),
            (None, None) => Err(CancelError::NoSuchRun(id)),
            (None, Some(run)) => Err(CancelError::Finished(Box::new(run))),
        }
    }

    /// Records the run and starts it in the background; answers at once.
    pub async fn start(
        self: &Arc<Self>,
        action: RunAction,
        requested_by: &str,
        requested_from: Option<String>,
    ) -> Result<Run, ProvisionError> {
        if let RunAction::Launch { .. } = action
            && let Some(why) = self.provider.cannot_launch()
        {
            return Err(ProvisionError::Unsupported(why));
        }
        // Everything below happens under the one-run lock, on a fresh view of the pool.
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Err(ProvisionError::Busy(Box::new(c.run.clone())));
        }
        let existing = self.store.read(vms::list).await?;
        if let RunAction::Launch { .. } = action {
            // New VMs may reuse the names of destroyed ones.
            self.gone.clear();
        }
        let hosts: Vec<String> = match &action {
            RunAction::Launch { .. } => Vec::new(),
            RunAction::DestroyAll
                if existing.is_empty() && !self.provider.destroys_without_rows() =>
            {
                return Err(ProvisionError::NothingToDestroy);
            }
            RunAction::DestroyAll => existing.iter().map(|v| v.hostname.clone()).collect(),
            RunAction::DestroyVm { hostname } => {
                if !existing.iter().any(|v| &v.hostname == hostname) {
                    return Err(ProvisionError::NoSuchVm);
                }
                vec![hostname.clone()]
            }
        };
        let (provider, who, now) = (self.provider.name(), requested_by.to_owned(), Utc::now());
        let recorded = action.clone();
        let targets = hosts.clone();
        // The run and "no longer hand these VMs out" are one change.
        let run = self
            .store
            .write(move |tx| {
                let run = runs::start(tx, recorded, provider, &who, requested_from, now)?;
                for host in &targets {
                    // An unreadable record cannot be handed out anyway.
                    match vms::update(tx, host, |vm| vm.with_destroying(true, now)) {
                        Err(StoreError::Corrupt { .. }) | Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(run)
            })
            .await?;
        // On timeout or cancel the run is cancelled (its processes get SIGINT and a grace
        // period), not dropped: a killed Terraform could leave resources it never recorded.
        let run_cancel = self.cancel.child_token();
        *current = Some(Current {
            run: run.clone(),
            cancel: run_cancel.clone(),
            cancelled_by: None,
            finishing: false,
        });
        drop(current);
        tracing::info!(run = run.id, action = %run.action.describe(), by = %run.requested_by, "run started");
        let this = self.clone();
        let started = run.clone();
        self.tasks.spawn(async move {
            this.execute(started, existing, hosts, run_cancel).await;
        });
        Ok(run)
    }

    async fn execute(
        &self,
        run: Run,
        existing: Vec<Vm>,
        hosts: Vec<String>,
        run_cancel: CancellationToken,
    ) {
        let started = std::time::Instant::now();
        let log = RunLog::start(run.id, self.store.clone(), vec![self.api_token.get()]);
        let work = async {
            match &run.action {
                RunAction::Launch { count } => {
                    let ctx = LaunchContext {
                        allocator_url: self.allocator_url.get().cloned().unwrap_or_default(),
                        identities: self.identities.clone(),
                        existing,
                    };
                    let launched = self.provider.launch(&log, ctx, *count, &run_cancel).await?;
                    self.record_timings(&log, launched.creation_timings).await;
                    Ok(())
                }
                RunAction::DestroyAll | RunAction::DestroyVm { .. } => {
                    let all = run.action == RunAction::DestroyAll;
                    let reason = RescueReason::of_destroy(&run.requested_by);
                    if let Err(e) = self
                        .rescues
                        .before_destroy(&log, &hosts, reason, &run_cancel)
                        .await
                    {
                        log.line(format!("cannot rescue the participants' files: {e}"));
                    }
                    let done = self.provider.destroy(&log, &hosts, all, &run_cancel).await;
                    if done.is_ok() {
                        // After destroying everything, every record goes, also those of
                        // VMs that registered while the destroy ran.
                        self.forget(&log, if all { None } else { Some(&hosts) })
                            .await;
                    }
                    done
                }
            }
        };
        tokio::pin!(work);
        let result = tokio::select! {
            r = &mut work => r,
            () = tokio::time::sleep(self.timeout) => {
                run_cancel.cancel();
                let _ = (&mut work).await;
                Err(RunFailure {
                    state: RunState::TimedOut,
                    exit_code: None,
                    message: format!("stopped after {:?}", self.timeout),
                    rows_to_remove: Vec::new(),
                })
            }
        };
        // From here on a cancel is refused: the outcome below is what gets recorded.
        let cancelled_by = self.current.lock().await.as_mut().and_then(|c| {
            c.finishing = true;
            c.cancelled_by.clone()
        });
        let (state, exit_code) = match result {
            Ok(()) => {
                if let Some(by) = &cancelled_by {
                    log.line(format!(
                        "{by} asked to cancel the run after its work was done"
                    ));
                }
                (RunState::Succeeded, Some(0))
            }
            Err(mut failure) => {
                if !hosts.is_empty() {
                    self.release(&log, &hosts).await;
                }
                if !failure.rows_to_remove.is_empty() {
                    self.forget(&log, Some(&failure.rows_to_remove)).await;
                }
                // The last line says why, and (for a launch) what exists now.
                match &cancelled_by {
                    Some(by) => {
                        failure.state = RunState::Cancelled;
                        log.line(format!("run cancelled by {by}: {}", failure.message));
                    }
                    None if self.cancel.is_cancelled() => log.line(format!(
                        "run stopped, the allocator is shutting down: {}",
                        failure.message
                    )),
                    None => log.line(format!("run failed: {}", failure.message)),
                }
                (failure.state, failure.exit_code)
            }
        };
        log.close().await;
        self.metrics
            .provision_run(&run.action, state, started.elapsed());
        let (id, now) = (run.id, Utc::now());
        let by = cancelled_by.filter(|_| state == RunState::Cancelled);
        match self
            .store
            .write(move |tx| runs::finish(tx, id, state, exit_code, by, now))
            .await
        {
            Ok(_) => tracing::info!(run = id, ?state, "run finished"),
            Err(e) => tracing::error!(run = id, error = %e, "cannot record the end of the run"),
        }
        *self.current.lock().await = None;
    }

    /// Creates or updates the rows of launched VMs with how long creating them took.
    async fn record_timings(&self, log: &RunLog, timings: Vec<(String, Phase)>) {
        if timings.is_empty() {
            return;
        }
        let now = Utc::now();
        let saved = self
            .store
            .write(move |tx| {
                for (host, phase) in &timings {
                    vms::record_creation(tx, host, phase.clone(), now)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = saved {
            log.line(format!("cannot record the VMs' creation times: {e}"));
        }
    }

    /// A destroy failed: the VMs that still exist may be handed out again.
    async fn release(&self, log: &RunLog, hosts: &[String]) {
        let list = hosts.to_vec();
        let now = Utc::now();
        let released = self
            .store
            .write(move |tx| {
                for host in &list {
                    match vms::update(tx, host, |vm| vm.with_destroying(false, now)) {
                        Err(StoreError::Corrupt { .. }) | Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = released {
            log.line(format!("cannot return the VMs to the pool: {e}"));
        }
    }

    /// Removes the rows of `hosts` (`None`: of every VM) and tells their parked
    /// long-polls the VM is gone.
    async fn forget(&self, log: &RunLog, hosts: Option<&[String]>) {
        let list = hosts.map(<[String]>::to_vec);
        let gone = self.gone.clone();
        let removed = self
            .store
            .write(move |tx| {
                let removed = match list {
                    None => vms::delete_all(tx)?,
                    Some(list) => {
                        let mut removed = Vec::new();
                        for host in list {
                            if vms::delete(tx, &host)? {
                                removed.push(host);
                            } else {
                                // Launched but never registered: its credential goes too.
                                crate::store::identities::remove(tx, &host)?;
                            }
                        }
                        removed
                    }
                };
                // Marked inside the write: a report the store orders after this delete
                // sees the mark and does not bring the VM back.
                gone.insert(&removed);
                Ok(removed)
            })
            .await;
        // The identities went with the rows (and, for "all", every other one too).
        if let Err(e) = self.identities.reload().await {
            log.line(format!("cannot reload the VMs' identities: {e}"));
        }
        if hosts.is_none() {
            self.liveness.forget_all();
        }
        match removed {
            Ok(removed) => {
                for host in &removed {
                    self.waiters.notify(host, Wake::Deleted);
                    self.liveness.forget(host);
                    self.desktops.cut(host);
                    self.hands.seat_ended(host);
                    self.broadcast
                        .seat_ended(host, |host| self.desktops.cut_broadcast(host));
                }
                if !removed.is_empty() {
                    log.line(format!("removed {} VM record(s)", removed.len()));
                }
            }
            Err(e) => log.line(format!("cannot remove VM records: {e}")),
        }
    }

    pub fn can_reboot(&self) -> bool {
        self.provider.can_reboot()
    }

    /// Restarts one VM through the provider.
    pub async fn reboot(&self, host: &str) -> Result<(), ProviderError> {
        self.provider.reboot(host, &self.cancel).await
    }

    pub async fn collect_files(
        &self,
        host: &str,
        extension: &str,
        into: &Path,
        max_bytes: u64,
    ) -> Result<u64, ProviderError> {
        self.provider
            .collect_files(host, extension, into, max_bytes, &self.cancel)
            .await
    }

    /// Cancels a run in progress and releases the provider's processes.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.provider.shutdown().await;
    }
}
