//! Handing the desktop to the participant: Chrome Remote Desktop's `start-host`, run with
//! an argument vector (never a shell), the validated code only, and the PIN on stdin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::desktop_user::DesktopUser;
use super::vnc::VncServer;
use crate::process::{self, Limits, Outcome, Stream};

const REDIRECT_URL: &str = "https://remotedesktop.google.com/_/oauthredirect";

pub struct Desktop {
    pub start_host: PathBuf,
    pub daemon: PathBuf,
    /// Where a registered host keeps `host#<hash>.json`.
    pub config_dir: PathBuf,
    pub timeout: Duration,
    pub vm_name: String,
    /// Start nothing, report success (`lablink demo`).
    pub simulated: bool,
    /// `--desktop-user`: whom start-host and the daemon run as (default: the agent's user).
    pub user: Option<DesktopUser>,
    /// The VNC server of browser seats.
    pub vnc: Arc<VncServer>,
}

/// The user start-host must run as, and the environment it needs to match it: it refuses
/// root and fails silently when USER/HOME/XDG_RUNTIME_DIR disagree with the real uid.
fn user_environment(cmd: &mut Command, user: Option<&DesktopUser>) {
    if let Some(user) = user {
        user.apply(cmd);
        cmd.env("DISPLAY", "");
        return;
    }
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        tracing::warn!("running as root: Chrome Remote Desktop refuses to start as root");
    }
    if let Ok(Some(user)) = nix::unistd::User::from_uid(uid) {
        cmd.env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("HOME", &user.dir);
    }
    let runtime_dir = PathBuf::from(format!("/run/user/{uid}"));
    if !runtime_dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&runtime_dir);
    }
    if runtime_dir.is_dir() {
        cmd.env("XDG_RUNTIME_DIR", &runtime_dir);
    }
    cmd.env("DISPLAY", "");
}

impl Desktop {
    /// Default registration folder: in the home of the desktop user (`home`).
    pub fn default_config_dir(home: Option<&Path>) -> PathBuf {
        home.unwrap_or(Path::new("/root"))
            .join(".config/chrome-remote-desktop")
    }

    /// A host registration written by an earlier start-host (this boot or a previous one).
    fn registered(&self) -> bool {
        std::fs::read_dir(&self.config_dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("host#") && name.ends_with(".json")
            })
        })
    }

    async fn run_logged(
        &self,
        cmd: Command,
        stdin: Option<Vec<u8>>,
        secret: &str,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let mut last_error = String::new();
        let limits = Limits {
            timeout: self.timeout,
            grace: Duration::from_secs(5),
        };
        let outcome = process::run(cmd, stdin, limits, cancel, |stream, line| {
            let line = if secret.is_empty() {
                line
            } else {
                line.replace(secret, "[code]")
            };
            match stream {
                Stream::Stdout => tracing::info!(program = %program, "{line}"),
                Stream::Stderr => {
                    tracing::warn!(program = %program, "{line}");
                    last_error = line;
                }
            }
        })
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
        match outcome {
            Outcome::Exited(s) if s.success() => Ok(()),
            Outcome::Exited(s) => Err(format!(
                "{program} failed ({s}){}",
                if last_error.is_empty() {
                    String::new()
                } else {
                    format!(": {last_error}")
                }
            )),
            Outcome::TimedOut => Err(format!(
                "{program} did not finish within {:?}",
                self.timeout
            )),
            Outcome::Cancelled => Err(format!("{program} was stopped by shutdown")),
        }
    }

    async fn start_daemon(&self, cancel: &CancellationToken) -> Result<(), String> {
        let mut cmd = Command::new(&self.daemon);
        cmd.args(["--start", "--new-session"]);
        user_environment(&mut cmd, self.user.as_ref());
        self.run_logged(cmd, None, "", cancel).await
    }

    /// Registers this VM with the participant's code and starts the desktop.
    pub async fn start(
        &self,
        code: &str,
        pin: &str,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        if self.simulated {
            tracing::info!(vm = %self.vm_name, "simulated desktop started for the participant");
            return Ok(());
        }
        if self.registered() {
            // A spent code cannot register again; the existing registration still works.
            tracing::info!("host already registered; starting the desktop daemon");
            return self.start_daemon(cancel).await;
        }
        let mut cmd = Command::new(&self.start_host);
        cmd.arg(format!("--code={code}"))
            .arg(format!("--redirect-url={REDIRECT_URL}"))
            .arg(format!("--name={}", self.vm_name));
        user_environment(&mut cmd, self.user.as_ref());
        let stdin = format!("{pin}\n{pin}\n").into_bytes();
        match self.run_logged(cmd, Some(stdin), code, cancel).await {
            Ok(()) => Ok(()),
            // Without systemd, start-host registers the host and then fails to start the
            // daemon: the registration is what counts; start the daemon ourselves.
            Err(e) if self.registered() => {
                tracing::info!(error = %e, "host registered but not started; starting the daemon");
                self.start_daemon(cancel).await
            }
            Err(e) => Err(e),
        }
    }

    /// A browser seat: the VNC server, with a fresh password for this participant.
    pub async fn start_browser(&self) -> Result<(), String> {
        self.vnc.start().await
    }

    /// Ends the participant's desktop: a browser seat's VNC server stopped; for Chrome
    /// Remote Desktop the daemon stopped and the host registration removed, so the next
    /// participant's code registers the VM to their own account.
    pub async fn stop(&self, cancel: &CancellationToken) {
        if self.vnc.is_running().await {
            self.vnc.stop().await;
            return;
        }
        if self.simulated {
            tracing::info!(vm = %self.vm_name, "simulated desktop stopped");
            return;
        }
        let mut cmd = Command::new(&self.daemon);
        cmd.arg("--stop");
        user_environment(&mut cmd, self.user.as_ref());
        if let Err(e) = self.run_logged(cmd, None, "", cancel).await {
            tracing::warn!(error = %e, "stopping the desktop daemon failed; removing its registration anyway");
        }
        if let Ok(entries) = std::fs::read_dir(&self.config_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("host#")
                    && name.ends_with(".json")
                    && let Err(e) = std::fs::remove_file(entry.path())
                {
                    tracing::warn!(error = %e, file = %entry.path().display(), "cannot remove the host registration");
                }
            }
        }
    }
}
