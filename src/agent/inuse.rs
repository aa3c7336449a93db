//! Whether the workshop software is running, from `/proc` (no `ps`), reported at start
//! and on every change.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::api::{Allocator, CallError};
use super::retry::{Gave, until_acknowledged};

/// `token` names the software: exactly, or followed by `-`, `.` or `_` (`sleap-label`,
/// `sleap.gui`). Paths are reduced to their last component first.
fn names(token: &str, software: &str) -> bool {
    let base = token.rsplit('/').next().unwrap_or(token);
    base.strip_prefix(software)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.', '_']))
}

/// A process runs the software when its program does, or, for a Python interpreter, the
/// module (`-m sleap.gui`) or script it runs does. Arguments such as files opened from a
/// folder named like the software do not count (upstream's substring match counted them).
pub fn runs_software(argv: &[&str], software: &str) -> bool {
    let Some(program) = argv.first() else {
        return false;
    };
    if names(program, software) {
        return true;
    }
    let interpreter = program.rsplit('/').next().unwrap_or(program);
    if !interpreter.starts_with("python") {
        return false;
    }
    let mut args = argv[1..].iter();
    while let Some(arg) = args.next() {
        if *arg == "-m" {
            return args.next().is_some_and(|m| names(m, software));
        }
        if !arg.starts_with('-') {
            return names(arg, software);
        }
    }
    false
}

/// Scans every process this user can see.
pub fn software_running(proc_root: &Path, software: &str) -> bool {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            return false;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            return false;
        };
        let text = String::from_utf8_lossy(&cmdline);
        let argv: Vec<&str> = text.split('\0').filter(|a| !a.is_empty()).collect();
        runs_software(&argv, software)
    })
}

/// Scans every `interval`, reports each change until acknowledged, and publishes every
/// scan's finding in `state` (for the session metrics).
pub async fn monitor(
    alloc: Arc<Allocator>,
    software: String,
    interval: Duration,
    state: tokio::sync::watch::Sender<Option<bool>>,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let mut reported: Option<bool> = None;
    loop {
        let name = software.clone();
        let running =
            tokio::task::spawn_blocking(move || software_running(Path::new("/proc"), &name))
                .await
                .unwrap_or(false);
        state.send_replace(Some(running));
        if reported != Some(running) {
            match until_acknowledged("in-use status", &cancel, || alloc.report_in_use(running))
                .await
            {
                Gave::Acknowledged => {
                    tracing::info!(in_use = running, software = %software, "in-use status reported");
                    reported = Some(running);
                }
                Gave::Fatal(e) => return Err(e),
                Gave::Cancelled => return Ok(()),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = cancel.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_and_python_modules_match() {
        assert!(runs_software(&["sleap-label"], "sleap"));
        assert!(runs_software(
            &["/opt/conda/bin/sleap-label", "x.slp"],
            "sleap"
        ));
        assert!(runs_software(&["python3", "-m", "sleap.gui"], "sleap"));
        assert!(runs_software(
            &["/usr/bin/python3.11", "-u", "/opt/sleap/sleap-track"],
            "sleap"
        ));
        assert!(runs_software(&["sleap"], "sleap"));
    }

    #[test]
    fn mentions_are_not_use() {
        assert!(!runs_software(
            &["vim", "/home/client/Desktop/sleap-tutorial-data/a.py"],
            "sleap"
        ));
        assert!(!runs_software(
            &["lablink", "agent", "--software", "sleap"],
            "sleap"
        ));
        assert!(!runs_software(&["sleapy"], "sleap"));
        assert!(!runs_software(&["python3", "-c", "import sleap"], "sleap"));
        assert!(!runs_software(&[], "sleap"));
    }

    #[test]
    fn scanning_proc_finds_a_running_program() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("lablinktestsw-gui");
        std::fs::copy("/bin/sleep", &exe).expect("copy sleep");
        assert!(!software_running(Path::new("/proc"), "lablinktestsw"));
        // ETXTBSY: another test thread may fork while the copy's write handle is open.
        let mut child = (0..50)
            .find_map(
                |_| match std::process::Command::new(&exe).arg("30").spawn() {
                    Err(e) if e.raw_os_error() == Some(26) => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        None
                    }
                    other => Some(other),
                },
            )
            .expect("exec attempts")
            .expect("spawn");
        // The child's cmdline is its own only once exec has happened.
        let seen = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            software_running(Path::new("/proc"), "lablinktestsw")
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen);
    }
}
