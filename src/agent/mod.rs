//! `lablink agent`: runs on each VM. Registers it, reports GPU health, in-use status, logs
//! and startup timings, waits for a participant and starts their desktop.

pub mod api;
pub mod config;
pub mod desktop;
pub mod desktop_channel;
pub mod desktop_user;
pub mod gpu;
pub mod hand;
pub mod heartbeat;
pub mod inuse;
pub mod launcher;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod rescue;
pub mod reset;
pub mod retry;
pub mod setup;
pub mod subscribe;
pub mod thumbnail;
pub mod vnc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::exit::CliError;
use api::{Allocator, CallError};
pub use config::AgentArgs;
use desktop::Desktop;
use retry::{Gave, until_acknowledged};

use crate::exit::EXIT_UNAUTHORIZED;

pub fn run(args: AgentArgs) -> Result<(), CliError> {
    crate::logging::init(args.log_format);
    let checked = (|| {
        Ok::<_, String>((
            args.base_url()?,
            args.vm_name()?,
            args.bearer_token()?,
            AgentArgs::interval(args.gpu_interval, "gpu-interval")?,
            AgentArgs::interval(args.inuse_interval, "inuse-interval")?,
            AgentArgs::interval(args.heartbeat_interval, "heartbeat-interval")?,
            args.desktop_user()?,
        ))
    })();
    let (base, vm_name, token, gpu_every, inuse_every, beat_every, desktop_user) =
        checked.map_err(|message| CliError::Usage(message).of("agent"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let every = Intervals {
        gpu: gpu_every,
        inuse: inuse_every,
        heartbeat: beat_every,
    };
    runtime.block_on(agent(args, base, vm_name, token, every, desktop_user))
}

struct Intervals {
    gpu: Duration,
    inuse: Duration,
    heartbeat: Duration,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn state_dir(args: &AgentArgs) -> Option<PathBuf> {
    args.state_dir
        .clone()
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/lablink-agent"))
        })
}

async fn agent(
    args: AgentArgs,
    base: String,
    vm_name: String,
    token: String,
    every: Intervals,
    desktop_user: Option<desktop_user::DesktopUser>,
) -> Result<(), CliError> {
    let started = unix_now();
    let alloc =
        Arc::new(Allocator::new(base.clone(), token, vm_name.clone()).map_err(CliError::failed)?);
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            crate::shutdown::signal().await;
            tracing::info!("stopping");
            crate::systemd::stopping();
            cancel.cancel();
        });
    }
    tracing::info!(allocator = %base, vm = %vm_name, "LabLink agent starting");

    match until_acknowledged("status initializing", &cancel, || {
        alloc.report_status("initializing")
    })
    .await
    {
        Gave::Acknowledged => {}
        Gave::Fatal(e) => return Err(refused(&e)),
        Gave::Cancelled => return Ok(()),
    }
    crate::systemd::ready(&format!("registered with {base} as {vm_name}"));
    crate::systemd::spawn_watchdog();

    let mut tasks: JoinSet<Result<(), CallError>> = JoinSet::new();
    let probe = gpu::Probe::detect(args.gpu_probe, Duration::from_secs(args.gpu_timeout)).await;
    let (gpu_checked_tx, gpu_checked) = tokio::sync::watch::channel(false);
    let (gpu_use_tx, gpu_use) = tokio::sync::watch::channel(None);
    tasks.spawn(gpu::monitor(
        alloc.clone(),
        probe,
        every.gpu,
        gpu_checked_tx,
        gpu_use_tx,
        cancel.clone(),
    ));
    let (in_use_tx, in_use) = tokio::sync::watch::channel(None);
    tasks.spawn(inuse::monitor(
        alloc.clone(),
        args.software.clone(),
        every.inuse,
        in_use_tx,
        cancel.clone(),
    ));
    let positions = Arc::new(logs::Positions::load(state_dir(&args).as_deref()));
    let sources = args
        .log_files
        .iter()
        .map(|p| (p, args.log_group.clone()))
        .chain(
            args.container_log_files
                .iter()
                .map(|p| (p, format!("{}-docker", args.log_group))),
        );
    for (path, group) in sources {
        let source = logs::Source {
            path: path.clone(),
            group,
        };
        tasks.spawn(logs::ship(
            alloc.clone(),
            source,
            positions.clone(),
            Duration::from_millis(args.log_flush_ms.max(100)),
            cancel.clone(),
        ));
    }

    let home = desktop_user.as_ref().map_or_else(
        || std::env::var_os("HOME").map(PathBuf::from),
        |u| Some(u.home().to_path_buf()),
    );
    let vnc = Arc::new(vnc::VncServer::new(
        args.vnc,
        args.vnc_program.clone().unwrap_or_else(|| {
            PathBuf::from(match args.vnc {
                vnc::VncKind::Xvnc => "Xvnc",
                _ => "x11vnc",
            })
        }),
        args.vnc_display.clone(),
        args.vnc_port,
        args.vnc_session.clone(),
        // Not under the agent's state folder: the server runs as the desktop user, who must
        // reach the file and cannot enter root's folders.
        std::env::temp_dir(),
        desktop_user.clone(),
    ));
    let open_streams = vnc
        .enabled()
        .then(Arc::<desktop_channel::OpenStreams>::default);
    if let Some(open) = &open_streams {
        tasks.spawn(desktop_channel::run(
            alloc.clone(),
            vnc.clone(),
            open.clone(),
            cancel.clone(),
        ));
        tasks.spawn(thumbnail::run(alloc.clone(), vnc.clone(), cancel.clone()));
    }
    let desktop = Desktop {
        start_host: args.start_host.clone(),
        daemon: args.crd_daemon.clone(),
        config_dir: args
            .crd_config_dir
            .clone()
            .unwrap_or_else(|| Desktop::default_config_dir(home.as_deref())),
        timeout: Duration::from_secs(args.desktop_timeout),
        vm_name: vm_name.clone(),
        simulated: args.desktop == config::DesktopKind::Simulated,
        user: desktop_user.clone(),
        vnc: vnc.clone(),
    };
    let setup = setup::Setup {
        repository: args.tutorial_repo.clone(),
        desktop_dir: args.desktop_dir.clone().unwrap_or_else(|| {
            home.clone()
                .unwrap_or_else(|| PathBuf::from("/home/client"))
                .join("Desktop")
        }),
        script: args.startup_script.clone(),
        check: args.startup_check.clone(),
        attempts: args.startup_attempts,
        timeout: Duration::from_secs(args.startup_timeout),
        fail_on_error: args.startup_on_error == config::OnError::Fail,
        max_delay: Duration::from_secs_f64(args.startup_max_delay.clamp(0.05, 3600.0)),
        user: desktop_user,
    };
    if let Err(failed) = setup.run(&cancel).await {
        if cancel.is_cancelled() {
            return Ok(());
        }
        crate::systemd::status(&failed.0);
        let exit = match until_acknowledged("status error", &cancel, || {
            alloc.report_status("error")
        })
        .await
        {
            Gave::Fatal(e) => refused(&e),
            // The setup's failure is in the log and reported as the VM's status.
            Gave::Acknowledged | Gave::Cancelled => CliError::Reported(1),
        };
        cancel.cancel();
        drain(&mut tasks).await;
        return Err(exit);
    }

    let (reset_tx, reset_rx) = tokio::sync::watch::channel(None);
    let notifier = Arc::new(notify::Notifier {
        program: args.notify_program.clone(),
        user: setup.user.clone(),
        fallback_display: args.vnc_display.clone(),
    });
    let hand_socket = args
        .hand_socket
        .clone()
        .or_else(|| hand::agent_default(state_dir(&args).as_deref()));
    let launcher = match &hand_socket {
        Some(path) => {
            let me = nix::unistd::geteuid().as_raw();
            let allowed = setup.user.as_ref().map_or(vec![me], |u| vec![me, u.uid()]);
            tasks.spawn(hand::run(
                alloc.clone(),
                notifier.clone(),
                path.clone(),
                allowed,
                cancel.clone(),
            ));
            launcher(&desktop, &setup, home, path)
        }
        None => {
            tracing::warn!(
                "no \"I need help\" launcher: no place for its socket (set --hand-socket)"
            );
            None
        }
    };
    let (rescue_tx, rescue_rx) = tokio::sync::watch::channel(None);
    let (sample_every_tx, sample_every) = tokio::sync::watch::channel(None);
    tasks.spawn(metrics::run(
        alloc.clone(),
        metrics::Sources {
            gpu: gpu_use.clone(),
            in_use,
            desktop: open_streams,
        },
        sample_every,
        cancel.clone(),
    ));
    tasks.spawn(heartbeat::run(
        alloc.clone(),
        every.heartbeat,
        heartbeat::Reports {
            disk: setup.desktop_dir.clone(),
            gpu: gpu_use,
            sample_every: sample_every_tx,
        },
        reset_tx,
        rescue_tx,
        notifier.clone(),
        cancel.clone(),
    ));
    tasks.spawn(rescue::run(
        alloc.clone(),
        setup.desktop_dir.clone(),
        // Whose files may be packed (the agent itself when no desktop user is named).
        setup
            .user
            .as_ref()
            .map_or_else(|| nix::unistd::geteuid().as_raw(), |u| u.uid()),
        rescue_rx,
        cancel.clone(),
    ));
    let seats = Seats {
        alloc: alloc.clone(),
        desktop,
        setup,
        gpu_checked,
        reset: reset_rx,
        launcher,
        cancel: cancel.clone(),
    };
    tasks.spawn(seats.serve());
    tasks.spawn(report_timings(
        alloc.clone(),
        started,
        args.boot_started_at,
        cancel.clone(),
    ));

    let mut exit = Ok(());
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            if e.is_fatal() {
                exit = Err(refused(&e));
            }
            cancel.cancel();
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    drain(&mut tasks).await;
    // Its X server cleans up after itself (its socket and lock) when stopped in order.
    vnc.stop().await;
    exit
}

/// The desktop's "I need help" launcher, for a desktop the agent starts (none for the
/// simulated one of `lablink demo`, whose VMs share this machine's home).
fn launcher(
    desktop: &Desktop,
    setup: &setup::Setup,
    home: Option<PathBuf>,
    socket: &std::path::Path,
) -> Option<Arc<launcher::Launcher>> {
    if desktop.simulated {
        return None;
    }
    let exe = std::env::current_exe()
        .map_err(|e| tracing::warn!(error = %e, "no \"I need help\" launcher: cannot tell this executable's path"))
        .ok()?;
    Some(Arc::new(launcher::Launcher {
        exe,
        socket: socket.to_path_buf(),
        home,
        desktop_dir: setup.desktop_dir.clone(),
        user: setup.user.clone(),
    }))
}

/// Tells the allocator the desktop started, retrying while it cannot be reached; an
/// allocator without the call (404), or one that refuses it, is left alone.
async fn tell_desktop_started(alloc: Arc<Allocator>, cancel: CancellationToken) {
    let gave = until_acknowledged("desktop started", &cancel, || async {
        match alloc.desktop_started().await {
            Err(CallError::NotFound) => Ok(()),
            other => other,
        }
    })
    .await;
    if let Gave::Fatal(e) = gave {
        tracing::warn!(error = %e, "the allocator refused the desktop-started report");
    }
}

/// One participant after another: wait for an assignment, start their desktop, and when
/// the allocator asks for a reset (they were released or moved), stop it, move their files
/// aside, prepare the desktop again and report the VM ready for the next one.
struct Seats {
    alloc: Arc<Allocator>,
    desktop: Desktop,
    setup: setup::Setup,
    gpu_checked: tokio::sync::watch::Receiver<bool>,
    reset: tokio::sync::watch::Receiver<Option<u32>>,
    launcher: Option<Arc<launcher::Launcher>>,
    cancel: CancellationToken,
}

impl Seats {
    async fn serve(mut self) -> Result<(), CallError> {
        let mut done: u32 = 0;
        loop {
            // A reset asked for while waiting (the participant was moved before their
            // desktop started, or the agent restarted) is done first.
            let waited = tokio::select! {
                ended = subscribe::run(
                    self.alloc.clone(),
                    &self.desktop,
                    self.gpu_checked.clone(),
                    self.cancel.clone(),
                ) => Err(ended?),
                asked = reset_asked(&mut self.reset, done) => Ok(asked),
            };
            let asked = match waited {
                Ok(asked) => asked,
                Err(subscribe::Ended::Stopped) => return Ok(()),
                Err(subscribe::Ended::DesktopStarted) => {
                    crate::systemd::status("desktop started for the participant");
                    // Again for each participant: a reset moved the last Desktop aside.
                    if let Some(launcher) = self.launcher.clone() {
                        let _ = tokio::task::spawn_blocking(move || launcher.install()).await;
                    }
                    let told = tell_desktop_started(self.alloc.clone(), self.cancel.clone());
                    tokio::pin!(told);
                    let mut told_done = false;
                    loop {
                        tokio::select! {
                            () = &mut told, if !told_done => told_done = true,
                            asked = reset_asked(&mut self.reset, done) => break asked,
                            () = self.cancel.cancelled() => return Ok(()),
                        }
                    }
                }
            };
            let Some(asked) = asked else {
                // No more heartbeats (stopping, or an allocator without them): stay.
                self.cancel.cancelled().await;
                return Ok(());
            };
            self.reset_desktop().await;
            match until_acknowledged("reset done", &self.cancel, || self.alloc.reset_done(asked))
                .await
            {
                Gave::Acknowledged => done = asked,
                Gave::Fatal(e) => return Err(e),
                Gave::Cancelled => return Ok(()),
            }
        }
    }

    async fn reset_desktop(&self) {
        tracing::info!("the participant left this VM; resetting the desktop");
        self.desktop.stop(&self.cancel).await;
        if let Some(launcher) = self.launcher.clone() {
            let _ = tokio::task::spawn_blocking(move || launcher.remove_from_desktop()).await;
        }
        match reset::move_files_aside(&self.setup.desktop_dir) {
            Ok(Some(kept)) => {
                tracing::info!(kept = %kept.display(), "the participant's files were moved aside")
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot move the participant's files aside"),
        }
        if let Some(user) = &self.setup.user
            && let Err(e) = user.own(&self.setup.desktop_dir)
        {
            tracing::error!(error = %e, "cannot give the fresh desktop folder to the desktop user");
        }
        if let Err(failed) = self.setup.run(&self.cancel).await {
            tracing::error!(reason = %failed.0, "preparing the desktop again failed");
        }
    }
}

/// The next reset the allocator asks for (its number), or `None` once no heartbeats come.
async fn reset_asked(
    reset: &mut tokio::sync::watch::Receiver<Option<u32>>,
    done: u32,
) -> Option<u32> {
    reset
        .wait_for(|r| r.is_some_and(|id| id > done))
        .await
        .map(|id| id.unwrap_or_default())
        .ok()
}

/// Gives stopping tasks a moment to finish what they are sending (final log lines).
async fn drain(tasks: &mut JoinSet<Result<(), CallError>>) {
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

fn refused(e: &CallError) -> CliError {
    tracing::error!("{e}; stopping");
    CliError::Reported(EXIT_UNAUTHORIZED)
}

/// Startup timings: the container phase is from agent start to ready; the cloud-init phase
/// from boot start (when known) to agent start.
async fn report_timings(
    alloc: Arc<Allocator>,
    started: f64,
    boot: Option<f64>,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let ready = unix_now();
    let mut metrics = json!({
        "container_start": started,
        "container_end": ready,
        "container_startup_duration_seconds": ready - started,
    });
    if let Some(boot) = boot.filter(|b| *b > 0.0 && *b <= started) {
        metrics["cloud_init_start"] = json!(boot);
        metrics["cloud_init_end"] = json!(started);
        metrics["cloud_init_duration_seconds"] = json!(started - boot);
    }
    match until_acknowledged("startup timings", &cancel, || {
        alloc.report_metrics(metrics.clone())
    })
    .await
    {
        Gave::Fatal(e) => Err(e),
        Gave::Acknowledged | Gave::Cancelled => {
            cancel.cancelled().await;
            Ok(())
        }
    }
}
