//! VMs as local `lablink agent` processes of this same executable, with a simulated GPU and
//! desktop: the whole flow on one machine, for `lablink demo` and tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{LaunchContext, Launched, Provider, ProviderError, RunFailure, RunLog};
use crate::model::Vm;
use crate::vm_identity::Identities;

pub struct Local {
    exe: PathBuf,
    /// Each VM gets `<dir>/<name>/` for its agent's log and state.
    dir: PathBuf,
    prefix: String,
    software: String,
    max_vms: usize,
    children: Mutex<BTreeMap<String, Child>>,
    /// Allocator URL and the identities of the last launch, for restarting an agent.
    reach: Mutex<Option<(String, Arc<Identities>)>>,
    /// Browser seats get a real local desktop: an Xvnc display of each VM's own.
    browser_desktops: bool,
    /// The next X display number to give a local VM.
    displays: AtomicU32,
}

/// Whether no X server holds display `:n` (neither its socket nor its lock file exists).
pub fn x_display_free(n: u32) -> bool {
    !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
}

/// The Xvnc display and loopback port of a local VM's browser desktop: free now, and a
/// display no other local VM was given (each starts its Xvnc only when claimed).
fn free_display_and_port(given: &AtomicU32) -> Result<(String, u16), ProviderError> {
    let display = std::iter::from_fn(|| Some(given.fetch_add(1, Ordering::Relaxed)))
        .take_while(|n| *n < 1000)
        .find(|n| x_display_free(*n))
        .ok_or_else(|| ProviderError::Config {
            key: "desktop.mode".into(),
            problem: "no free X display number in :200..:999 for a local browser desktop".into(),
        })?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(ProviderError::io(
            "find a free port on",
            Path::new("127.0.0.1"),
        ))?
        .port();
    Ok((format!(":{display}"), port))
}

/// A program to show on a local browser desktop, when one is installed.
fn desktop_session() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    ["startxfce4", "xterm"]
        .iter()
        .flat_map(|name| std::env::split_paths(&paths).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

impl Local {
    /// VMs are named `<prefix>-vm-<n>` and watch for `software` being in use.
    pub fn new(
        exe: PathBuf,
        dir: PathBuf,
        prefix: String,
        software: String,
        max_vms: usize,
        browser_desktops: bool,
    ) -> Local {
        Local {
            exe,
            dir,
            prefix,
            software,
            max_vms,
            children: Mutex::new(BTreeMap::new()),
            reach: Mutex::new(None),
            browser_desktops,
            displays: AtomicU32::new(200),
        }
    }

    fn spawn_agent(
        &self,
        name: &str,
        allocator_url: &str,
        credential: &str,
    ) -> Result<Child, ProviderError> {
        let vm_dir = self.dir.join(name);
        std::fs::create_dir_all(&vm_dir).map_err(ProviderError::io("create", &vm_dir))?;
        // As on a real VM: the credential in a file only the agent's user reads, not in
        // its environment.
        let credential_file = vm_dir.join("agent-credential");
        crate::secret_file::write(&credential_file, credential)?;
        let log_path = vm_dir.join("agent.log");
        let log =
            std::fs::File::create(&log_path).map_err(ProviderError::io("create", &log_path))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("agent")
            .arg("--allocator-url")
            .arg(allocator_url)
            .arg("--vm-name")
            .arg(name)
            .arg("--software")
            .arg(&self.software)
            .args(["--gpu-probe", "simulated", "--desktop", "simulated"])
            .args([
                "--gpu-interval",
                "5",
                "--inuse-interval",
                "5",
                "--log-flush-ms",
                "2000",
            ])
            .arg("--container-log-file")
            .arg(&log_path)
            .arg("--state-dir")
            .arg(vm_dir.join("state"))
            .arg("--crd-config-dir")
            .arg(vm_dir.join("crd"))
            // The participant's files live (and are rescued from) inside the VM's folder.
            .arg("--desktop-dir")
            .arg(vm_dir.join("Desktop"))
            // One socket per VM: they share this machine (and, run as root, its /run).
            .arg("--hand-socket")
            .arg(vm_dir.join("hand.sock"))
            .arg("--token-file")
            .arg(&credential_file);
        if self.browser_desktops {
            let (display, port) = free_display_and_port(&self.displays)?;
            cmd.args(["--vnc", "xvnc", "--vnc-display", &display])
                .args(["--vnc-port", &port.to_string()]);
            if let Some(session) = desktop_session() {
                cmd.arg("--vnc-session").arg(session);
            }
        } else {
            cmd.args(["--vnc", "off"]);
        }
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LABLINK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        crate::process::clean_signals(cmd.as_std_mut());
        cmd.spawn().map_err(|source| ProviderError::Spawn {
            program: self.exe.clone(),
            hint: "",
            source,
        })
    }

    /// SIGTERM to all of them at once, then waits for them together (bounded).
    async fn stop_all(children: Vec<(String, Child)>, log: Option<&RunLog>) {
        for (_, child) in &children {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        let mut waits = tokio::task::JoinSet::new();
        for (name, mut child) in children {
            waits.spawn(async move {
                let stopped = tokio::time::timeout(Duration::from_secs(8), child.wait())
                    .await
                    .is_ok();
                if !stopped {
                    let _ = child.kill().await;
                }
                (name, stopped)
            });
        }
        while let Some(Ok((name, stopped))) = waits.join_next().await {
            if let Some(log) = log {
                log.line(if stopped {
                    format!("stopped {name}")
                } else {
                    format!("killed {name} (it did not stop within 8 s)")
                });
            }
        }
    }
}

#[async_trait]
impl Provider for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn launch(
        &self,
        log: &RunLog,
        ctx: LaunchContext,
        count: u32,
        cancel: &CancellationToken,
    ) -> Result<Launched, RunFailure> {
        *self.reach.lock().await = Some((ctx.allocator_url.clone(), ctx.identities.clone()));
        let mut children = self.children.lock().await;
        // Reap agents that exited on their own.
        children.retain(|_, c| matches!(c.try_wait(), Ok(None)));
        if children.len() + count as usize > self.max_vms {
            return Err(ProviderError::TooManyVms {
                max: self.max_vms,
                running: children.len(),
            }
            .into());
        }
        let taken = ctx
            .existing
            .iter()
            .map(|v| v.hostname.as_str())
            .chain(children.keys().map(String::as_str))
            .filter(|h| h.starts_with(&self.prefix))
            .map(Vm::pick_order)
            .filter(|n| *n != u64::MAX)
            .max()
            .unwrap_or(0);
        let mut started = Vec::new();
        log.progress(|p| p.total = count);
        for n in taken + 1..=taken + u64::from(count) {
            if cancel.is_cancelled() {
                let made = if started.is_empty() {
                    "no VM was started".to_owned()
                } else {
                    format!(
                        "started {} (they keep running; a destroy stops them)",
                        started.join(", ")
                    )
                };
                return Err(RunFailure {
                    state: crate::model::RunState::Cancelled,
                    exit_code: None,
                    message: format!("stopped after {} of {count} VM(s): {made}", started.len()),
                    rows_to_remove: Vec::new(),
                });
            }
            let name = format!("{}-vm-{n}", self.prefix);
            let credential = match ctx
                .identities
                .ensure(std::slice::from_ref(&name), "launched locally")
                .await
            {
                Ok(mut c) => c.pop().unwrap_or_default(),
                Err(source) => {
                    return Err(ProviderError::Identities {
                        hosts: vec![name],
                        source,
                    }
                    .into());
                }
            };
            match self.spawn_agent(&name, &ctx.allocator_url, &credential) {
                Ok(child) => {
                    log.line(format!(
                        "started {name} (pid {})",
                        child.id().unwrap_or_default()
                    ));
                    children.insert(name.clone(), child);
                    started.push(name);
                    log.progress(|p| p.done += 1);
                }
                Err(e) => {
                    let spawned = started
                        .iter()
                        .filter_map(|name| children.remove(name).map(|c| (name.clone(), c)))
                        .collect();
                    Self::stop_all(spawned, Some(log)).await;
                    let mut failure = RunFailure::from(ProviderError::AgentStart {
                        host: name,
                        source: Box::new(e),
                    });
                    failure.rows_to_remove = started;
                    return Err(failure);
                }
            }
        }
        Ok(Launched {
            hosts: started,
            creation_timings: Vec::new(),
        })
    }

    async fn destroy(
        &self,
        log: &RunLog,
        hosts: &[String],
        all: bool,
        _: &CancellationToken,
    ) -> Result<(), RunFailure> {
        let mut children = self.children.lock().await;
        let mut stopping = Vec::new();
        if all {
            // Every agent this allocator started, reported or not.
            stopping.extend(std::mem::take(&mut *children));
        } else {
            for host in hosts {
                match children.remove(host) {
                    Some(child) => stopping.push((host.clone(), child)),
                    None => log.line(format!("{host} has no local agent process")),
                }
            }
        }
        // Stopped all at once: done goes from 0 to all when they have stopped.
        let total = stopping.len() as u32;
        log.progress(|p| p.total = total);
        Self::stop_all(stopping, Some(log)).await;
        log.progress(|p| p.done = total);
        Ok(())
    }

    fn can_reboot(&self) -> bool {
        true
    }

    /// Stops the VM's agent and starts a new one, as a reboot would.
    async fn reboot(&self, host: &str, _: &CancellationToken) -> Result<(), ProviderError> {
        let unknown = |why| ProviderError::UnknownVm {
            host: host.to_owned(),
            why,
        };
        let (url, identities) = self
            .reach
            .lock()
            .await
            .clone()
            .ok_or_else(|| unknown("was not started by this allocator"))?;
        let credential = identities
            .credential(host)
            .ok_or_else(|| unknown("has no identity any more (destroyed or revoked)"))?;
        let mut children = self.children.lock().await;
        let child = children
            .remove(host)
            .ok_or_else(|| unknown("has no local agent process"))?;
        Self::stop_all(vec![(host.to_owned(), child)], None).await;
        let child =
            self.spawn_agent(host, &url, &credential)
                .map_err(|e| ProviderError::AgentStart {
                    host: host.to_owned(),
                    source: Box::new(e),
                })?;
        children.insert(host.to_owned(), child);
        Ok(())
    }

    /// The desktop of a local VM is the folder `<its folder>/Desktop`.
    async fn collect_files(
        &self,
        host: &str,
        extension: &str,
        into: &Path,
        max_bytes: u64,
        _: &CancellationToken,
    ) -> Result<u64, ProviderError> {
        let desktop = self.dir.join(host).join("Desktop");
        let (ext, into) = (extension.to_owned(), into.to_path_buf());
        tokio::task::spawn_blocking(move || {
            if !desktop.is_dir() {
                return Ok(0);
            }
            crate::export::copy_wanted(&desktop, &into, &ext, max_bytes)
                .map_err(ProviderError::io("copy files from", &desktop))
        })
        .await?
    }

    async fn shutdown(&self) {
        let children = std::mem::take(&mut *self.children.lock().await);
        Self::stop_all(children.into_iter().collect(), None).await;
    }
}
