//! Preparing the workshop before the VM is announced: the tutorial repository cloned onto
//! the desktop, then the lab's custom startup script. Both fail transiently (package
//! mirrors, GitHub), so both are retried with backoff; the last failure of the script ends
//! with one `ERROR: … after N attempts` line that an errors-only log view shows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::desktop_user::DesktopUser;
use super::retry::backoff;
use crate::process::{self, Limits, Outcome, Stream};

const STOPPED: &str = "stopped";

/// What to prepare, from the agent's flags.
pub struct Setup {
    /// `TUTORIAL_REPO_TO_CLONE`; upstream sends the literal `None` when there is none.
    pub repository: Option<String>,
    /// Where the participant's desktop files live (the clone goes in a folder here).
    pub desktop_dir: PathBuf,
    /// The custom startup script; missing or empty means none.
    pub script: PathBuf,
    /// Run after the script succeeded; the script only counts as done when this passes.
    pub check: Option<PathBuf>,
    pub attempts: u32,
    pub timeout: Duration,
    /// `STARTUP_ON_ERROR=fail`: a script that never succeeds stops the VM.
    pub fail_on_error: bool,
    /// Cap of the pause between attempts.
    pub max_delay: Duration,
    /// `--desktop-user`: whom the clone, the script and its check run as (default: the
    /// agent's user, with its environment).
    pub user: Option<DesktopUser>,
}

/// Why the VM cannot be offered to a participant.
#[derive(Debug)]
pub struct SetupFailed(pub String);

impl Setup {
    /// Clones the repository (failures are only logged, as upstream did), then runs the
    /// script. `Err` only when the script failed and the lab asked to stop on that.
    pub async fn run(&self, cancel: &CancellationToken) -> Result<(), SetupFailed> {
        if let Some(repository) = self.repository() {
            self.clone_tutorial(repository, cancel).await;
        }
        if self.has_script() {
            return self.run_script(cancel).await;
        }
        Ok(())
    }

    fn repository(&self) -> Option<&str> {
        self.repository
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty() && *r != "None")
    }

    /// `program`, run as the desktop user when there is one.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if let Some(user) = &self.user {
            user.apply(&mut cmd);
        }
        cmd
    }

    fn has_script(&self) -> bool {
        std::fs::metadata(&self.script).is_ok_and(|m| m.is_file() && m.len() > 0)
    }

    async fn clone_tutorial(&self, repository: &str, cancel: &CancellationToken) {
        let Some(name) = folder_name(repository) else {
            tracing::error!(%repository, "the tutorial repository has no usable folder name; not cloned");
            return;
        };
        let target = self.desktop_dir.join(name);
        if target.exists() {
            tracing::info!(folder = %target.display(), "tutorial repository already on the desktop");
            return;
        }
        // The desktop user's git creates a missing desktop folder itself, owned by them.
        if self.user.is_none()
            && let Err(e) = std::fs::create_dir_all(&self.desktop_dir)
        {
            tracing::error!(error = %e, folder = %self.desktop_dir.display(), "cannot create the desktop folder; tutorial not cloned");
            return;
        }
        let attempt = || {
            let mut cmd = self.command("git");
            // `--` ends the options: a repository value can never become a git flag.
            cmd.args(["clone", "--quiet", "--", repository])
                .arg(&target)
                .env("GIT_TERMINAL_PROMPT", "0");
            cmd
        };
        // A failed clone may leave a partial folder that would block the next try.
        let cleanup = || {
            let _ = std::fs::remove_dir_all(&target);
        };
        let outcome = self
            .retried("tutorial clone", cancel, attempt, None, cleanup)
            .await;
        match outcome {
            Ok(()) => tracing::info!(folder = %target.display(), "tutorial repository cloned"),
            Err(e) => tracing::error!("ERROR: tutorial repository not cloned: {e}"),
        }
    }

    async fn run_script(&self, cancel: &CancellationToken) -> Result<(), SetupFailed> {
        let script = self.script.clone();
        let attempt = || {
            let mut cmd = self.command("bash");
            cmd.arg(&script);
            cmd
        };
        let outcome = self
            .retried(
                "custom startup script",
                cancel,
                attempt,
                self.check.as_deref(),
                || {},
            )
            .await;
        match outcome {
            Ok(()) => {
                tracing::info!("custom startup script succeeded");
                Ok(())
            }
            Err(e) if self.fail_on_error => {
                tracing::error!("ERROR: custom startup script {e}; STARTUP_ON_ERROR=fail");
                Err(SetupFailed(format!("custom startup script {e}")))
            }
            Err(e) => {
                tracing::error!(
                    "ERROR: custom startup script {e}; continuing (STARTUP_ON_ERROR=continue)"
                );
                Ok(())
            }
        }
    }

    /// Runs `make()`'s command up to `attempts` times, pausing with backoff between them.
    /// A run counts as a success when it exits 0 and `check` (a bash script), if any, too;
    /// `cleanup` runs after every failed attempt.
    async fn retried(
        &self,
        what: &str,
        cancel: &CancellationToken,
        make: impl Fn() -> Command,
        check: Option<&Path>,
        cleanup: impl Fn(),
    ) -> Result<(), String> {
        let attempts = self.attempts.max(1);
        let mut delays = backoff(self.max_delay);
        let mut last = String::new();
        for n in 1..=attempts {
            last = match self.attempt(what, make(), cancel).await {
                Ok(()) => match check {
                    None => return Ok(()),
                    Some(check) => {
                        let mut cmd = self.command("bash");
                        cmd.arg(check);
                        match self.attempt(what, cmd, cancel).await {
                            Ok(()) => return Ok(()),
                            Err(e) => format!("its success check {} {e}", check.display()),
                        }
                    }
                },
                Err(e) => e,
            };
            if last == STOPPED {
                return Err(last);
            }
            cleanup();
            if n < attempts {
                let delay = delays.next().unwrap_or(self.max_delay);
                tracing::warn!(attempt = n, of = attempts, retry_in = ?delay, "{what} failed: {last}");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return Err(STOPPED.into()),
                }
            }
        }
        Err(format!("failed after {attempts} attempts: {last}"))
    }

    /// One run of `cmd`, its output logged line by line.
    async fn attempt(
        &self,
        what: &str,
        cmd: Command,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let limits = Limits {
            timeout: self.timeout,
            grace: Duration::from_secs(5),
        };
        let outcome = process::run(cmd, None, limits, cancel, |stream, line| match stream {
            Stream::Stdout => tracing::info!("{what}: {line}"),
            Stream::Stderr => tracing::warn!("{what}: {line}"),
        })
        .await;
        match outcome {
            Ok(Outcome::Exited(status)) if status.success() => Ok(()),
            Ok(Outcome::Exited(status)) => Err(format!("exited with {status}")),
            Ok(Outcome::TimedOut) => Err(format!("took longer than {:?}", self.timeout)),
            Ok(Outcome::Cancelled) => Err(STOPPED.into()),
            Err(e) => Err(format!("could not start: {e}")),
        }
    }
}

/// The folder `git clone` would make: the last path segment without `.git`.
fn folder_name(repository: &str) -> Option<String> {
    let last = repository.trim_end_matches('/').rsplit(['/', ':']).next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    let usable = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && Path::new(name).components().count() == 1;
    usable.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_folders_are_named_like_git_names_them() {
        let f = |r: &str| folder_name(r);
        assert_eq!(
            f("https://github.com/talmolab/sleap-tutorial-data.git").as_deref(),
            Some("sleap-tutorial-data")
        );
        assert_eq!(f("https://example.org/a/b/").as_deref(), Some("b"));
        assert_eq!(f("git@github.com:lab/data.git").as_deref(), Some("data"));
        assert_eq!(f("/srv/git/tutorial").as_deref(), Some("tutorial"));
        assert_eq!(f("https://example.org/.."), None);
        assert_eq!(f("https://example.org/-x"), None);
        assert_eq!(f(""), None);
    }
}
