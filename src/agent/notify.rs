//! Desktop notifications on the participant's running desktop (the workshop's countdown):
//! `notify-send` run as the desktop user, in the session of whichever of their processes
//! carries a display and a session bus (a Chrome Remote Desktop session picks its own
//! display, so it is looked up rather than configured); the VNC display otherwise.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::desktop_user::DesktopUser;
use crate::process::{self, Limits, Outcome, Stream};

/// Most processes looked at for the desktop session.
const MAX_PROCESSES: usize = 4096;

pub struct Notifier {
    /// `notify-send` (or a replacement taking the same arguments).
    pub program: PathBuf,
    pub user: Option<DesktopUser>,
    /// The display when no session process names one (the browser desktop's).
    pub fallback_display: String,
}

impl Notifier {
    /// Shows `text`; failures are logged (a missing notification must not stop anything).
    pub async fn show(&self, text: &str, cancel: &CancellationToken) {
        let uid = self
            .user
            .as_ref()
            .map_or_else(|| nix::unistd::getuid().as_raw(), DesktopUser::uid);
        let session = session_env(uid);
        let mut cmd = Command::new(&self.program);
        if let Some(user) = &self.user {
            user.apply(&mut cmd);
        }
        let display = session.iter().find(|(k, _)| k == "DISPLAY").map_or_else(
            || OsString::from(&self.fallback_display),
            |(_, v)| v.clone(),
        );
        cmd.env("DISPLAY", display);
        for (key, value) in session.into_iter().filter(|(k, _)| k != "DISPLAY") {
            cmd.env(key, value);
        }
        cmd.args([
            "--urgency=critical",
            "--app-name=LabLink",
            "--expire-time=0",
            // The text may start with a dash: no option after this.
            "--",
            "LabLink workshop",
            text,
        ]);
        let limits = Limits {
            timeout: Duration::from_secs(10),
            grace: Duration::from_secs(2),
        };
        let outcome = process::run(cmd, None, limits, cancel, |stream, line| {
            if stream == Stream::Stderr {
                tracing::warn!("notify-send: {line}");
            }
        })
        .await;
        match outcome {
            Ok(Outcome::Exited(status)) if status.success() => {
                tracing::info!("desktop notification shown");
            }
            Ok(other) => tracing::warn!(outcome = ?other, "desktop notification not shown"),
            Err(e) => tracing::warn!(
                program = %self.program.display(),
                error = %e,
                "desktop notification not shown (is libnotify-bin installed?)"
            ),
        }
    }
}

/// `DISPLAY`, `DBUS_SESSION_BUS_ADDRESS` and `XAUTHORITY` of a process of `uid` that has a
/// display, if one runs.
fn session_env(uid: u32) -> Vec<(String, OsString)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten().take(MAX_PROCESSES) {
        let path = entry.path();
        let owned = std::fs::metadata(&path).is_ok_and(|m| m.uid() == uid);
        if !owned
            || !entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(environ) = std::fs::read(path.join("environ")) else {
            continue;
        };
        let wanted: Vec<(String, OsString)> = environ
            .split(|b| *b == 0)
            .filter_map(|pair| {
                let text = std::str::from_utf8(pair).ok()?;
                let (key, value) = text.split_once('=')?;
                ["DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XAUTHORITY"]
                    .contains(&key)
                    .then(|| (key.to_owned(), OsString::from(value)))
            })
            .collect();
        if wanted.iter().any(|(k, _)| k == "DISPLAY") {
            return wanted;
        }
    }
    Vec::new()
}
