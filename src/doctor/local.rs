//! The checks that need no network: configuration, data directory, free space, the store,
//! and who can reach the participant page.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Finding, Setup};

/// Below this many free MiB the data directory is worth a warning: the Terraform plugin
/// cache alone takes some hundreds, rescued files and exports take more.
const WARN_FREE_MB: u64 = 2048;

pub fn config(setup: &Setup) -> Finding {
    let source = match &setup.config_file {
        Some(file) => file.display().to_string(),
        None => "no config file (defaults and LABLINK_* variables)".to_owned(),
    };
    if !setup.config_problems.is_empty() {
        let check = match &setup.config_file {
            Some(file) => format!("`lablink config check {}` lists them", file.display()),
            None => "the variables named".to_owned(),
        };
        return Finding::fail(
            "config",
            format!(
                "{}: {} problem(s): {}",
                source,
                setup.config_problems.len(),
                setup.config_problems.join("; ")
            ),
            format!("correct the keys named ({check})"),
        );
    }
    let warnings = setup.config.warnings();
    if !warnings.is_empty() {
        return Finding::warn(
            "config",
            format!("{source}: {}", warnings.join("; ")),
            "remove the settings named",
        );
    }
    Finding::pass("config", format!("{source}: no problems"))
}

/// What is wrong with a data directory that exists, from its owner and mode.
pub(super) fn judge_dir(dir: &Path, owner: u32, mode: u32, me: u32) -> Vec<Finding> {
    let mut findings = Vec::new();
    let shown = dir.display();
    if owner != me {
        findings.push(Finding::fail(
            "data_dir",
            format!("{shown} is owned by uid {owner}, not by this user (uid {me})"),
            format!(
                "run doctor as the user that runs the allocator (`sudo -u lablink lablink doctor`), \
                 or `chown -R $(id -un) {shown}`"
            ),
        ));
    }
    if mode & 0o022 != 0 {
        findings.push(Finding::fail(
            "data_dir",
            format!(
                "{shown} is writable by {} (mode {:04o}); the store in it holds password hashes and tokens",
                if mode & 0o002 != 0 { "anyone" } else { "its group" },
                mode & 0o7777
            ),
            format!("chmod 700 {shown}"),
        ));
    }
    findings
}

/// Whether this process can create a file in `dir` (a probe file, removed at once).
fn can_write(dir: &Path) -> Result<(), std::io::Error> {
    // Inside the allocator two requests may probe at once: each its own file.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".lablink-doctor-{}-{n}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The closest existing folder at or above `dir` (where it would be created).
fn existing_ancestor(dir: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(dir).ok()?;
    absolute
        .ancestors()
        .find(|a| a.symlink_metadata().is_ok())
        .map(Path::to_path_buf)
}

pub fn data_dir(setup: &Setup) -> Vec<Finding> {
    let dir = setup.config.data_dir();
    let shown = dir.display();
    let fix_create = format!(
        "create it for the allocator's user: `install -d -m 700 {shown}` (or set server.data_dir / --data-dir)"
    );
    match std::fs::metadata(&dir) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            let Some(ancestor) = existing_ancestor(&dir) else {
                return vec![Finding::fail(
                    "data_dir",
                    format!("{shown} does not exist and no folder above it does"),
                    fix_create,
                )];
            };
            if !ancestor.is_dir() {
                return vec![Finding::fail(
                    "data_dir",
                    format!(
                        "{shown} cannot be created: {} is not a directory",
                        ancestor.display()
                    ),
                    fix_create,
                )];
            }
            match can_write(&ancestor) {
                Ok(()) => vec![Finding::pass(
                    "data_dir",
                    format!("{shown} does not exist yet; `lablink serve` creates it (mode 700)"),
                )],
                Err(e) => vec![Finding::fail(
                    "data_dir",
                    format!(
                        "{shown} cannot be created: {} is not writable ({e})",
                        ancestor.display()
                    ),
                    fix_create,
                )],
            }
        }
        Err(e) => vec![Finding::fail(
            "data_dir",
            format!("{shown}: {e}"),
            fix_create,
        )],
        Ok(meta) if !meta.is_dir() => vec![Finding::fail(
            "data_dir",
            format!("{shown} is not a directory"),
            "set server.data_dir (or --data-dir) to a directory",
        )],
        Ok(meta) => {
            let me = nix::unistd::geteuid().as_raw();
            let mut findings = judge_dir(&dir, meta.uid(), meta.mode(), me);
            if let Err(e) = can_write(&dir) {
                findings.push(Finding::fail(
                    "data_dir",
                    format!("{shown} is not writable: {e}"),
                    format!("chown $(id -un) {shown} && chmod 700 {shown}"),
                ));
            }
            if findings.is_empty() {
                findings.push(Finding::pass(
                    "data_dir",
                    format!(
                        "{shown}: owned by this user, mode {:04o}, writable",
                        meta.mode() & 0o7777
                    ),
                ));
            }
            findings
        }
    }
}

/// WARN below `WARN_FREE_MB` (or the floor, if higher), FAIL below `min_free_mb`.
pub(super) fn judge_free(dir: &Path, free_mb: u64, min_free_mb: u64) -> Finding {
    let found = format!("{free_mb} MiB free on the filesystem of {}", dir.display());
    let fix = "free some space (old rescued files: `rescue.keep_days`; exports), or move server.data_dir to a larger disk";
    if free_mb < min_free_mb {
        Finding::fail(
            "free_space",
            format!("{found}, under the {min_free_mb} MiB floor"),
            fix,
        )
    } else if free_mb < WARN_FREE_MB.max(min_free_mb) {
        Finding::warn(
            "free_space",
            format!("{found}, under {} MiB", WARN_FREE_MB.max(min_free_mb)),
            fix,
        )
    } else {
        Finding::pass("free_space", found)
    }
}

pub fn free_space(setup: &Setup) -> Finding {
    let dir = setup.config.data_dir();
    let Some(at) = existing_ancestor(&dir) else {
        return Finding::fail(
            "free_space",
            format!("no folder at or above {} exists", dir.display()),
            "set server.data_dir (or --data-dir) to a directory",
        );
    };
    match nix::sys::statvfs::statvfs(&at) {
        Ok(stat) => {
            let free = stat.blocks_available().saturating_mul(stat.fragment_size());
            judge_free(&dir, free / (1024 * 1024), setup.min_free_mb)
        }
        Err(e) => Finding::fail(
            "free_space",
            format!("cannot read the free space of {}: {e}", at.display()),
            "check the data directory's filesystem is mounted",
        ),
    }
}

/// Opens the store read-only: an allocator running on it holds its lock, which is fine.
pub fn store(setup: &Setup) -> Finding {
    let path = setup.config.data_dir().join(crate::store::FILE_NAME);
    let shown = path.display();
    if !path.exists() {
        return Finding::pass(
            "store",
            format!("{shown} does not exist yet; the first start creates it"),
        );
    }
    match redb::ReadOnlyDatabase::open(&path) {
        Ok(db) => {
            drop(db);
            Finding::pass(
                "store",
                format!("{shown} is readable; no allocator has it open"),
            )
        }
        Err(
            redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch,
        ) => Finding::pass(
            "store",
            format!("{shown} is in use: an allocator is running on it"),
        ),
        // Only a writer may repair; the allocator does at its next start.
        Err(redb::DatabaseError::RepairAborted) => Finding::warn(
            "store",
            format!("{shown} was not closed cleanly (the allocator stopped abruptly)"),
            "start the allocator: it repairs the store as it opens it (a large store takes a while)",
        ),
        Err(e) => Finding::fail(
            "store",
            format!("{shown} cannot be opened: {e}"),
            "restore the last backup (`lablink restore`), or move the file away to start afresh",
        ),
    }
}

pub fn exposure(setup: &Setup) -> Finding {
    let config = &setup.config;
    let listen = &config.server.listen;
    let addr = match config.listen_addr() {
        Ok(addr) => addr,
        Err(e) => {
            return Finding::fail(
                "exposure",
                format!("server.listen `{listen}`: {e}"),
                "set server.listen to address:port, e.g. 127.0.0.1:5000",
            );
        }
    };
    if config.anyone_can_claim(addr) && config.event.join_code.trim().is_empty() {
        return Finding::fail(
            "exposure",
            format!(
                "the allocator listens on {addr}, reachable from other machines, with no join code \
                 and no e-mail allow-list: anyone who finds the page can take a seat"
            ),
            "set access.join_code (or event.join_code) or access.allowed_emails, or listen on \
             127.0.0.1 behind a proxy",
        );
    }
    if addr.ip().to_canonical().is_loopback() {
        Finding::pass(
            "exposure",
            format!(
                "the allocator listens on {addr}: only this machine (or a proxy on it) reaches it"
            ),
        )
    } else {
        Finding::pass(
            "exposure",
            format!(
                "the allocator listens on {addr}; claims need a join code or an allowed e-mail"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn a_folder_of_someone_else_fails() {
        let findings = judge_dir(Path::new("/srv/lablink"), 0, 0o40700, 1000);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].status, Status::Fail);
        assert!(
            findings[0].found.contains("owned by uid 0"),
            "{:?}",
            findings[0]
        );
    }

    #[test]
    fn group_or_world_writable_fails_and_private_passes() {
        let group = judge_dir(Path::new("/d"), 7, 0o40770, 7);
        assert!(group[0].found.contains("its group"), "{group:?}");
        let anyone = judge_dir(Path::new("/d"), 7, 0o40777, 7);
        assert!(anyone[0].found.contains("anyone"), "{anyone:?}");
        assert!(judge_dir(Path::new("/d"), 7, 0o40755, 7).is_empty());
    }

    #[test]
    fn free_space_has_a_warning_and_a_floor() {
        let d = Path::new("/d");
        assert_eq!(judge_free(d, 100, 256).status, Status::Fail);
        assert_eq!(judge_free(d, 1000, 256).status, Status::Warn);
        assert_eq!(judge_free(d, 5000, 256).status, Status::Pass);
        // A floor above the warning threshold raises it.
        assert_eq!(judge_free(d, 5000, 4000).status, Status::Pass);
        assert_eq!(judge_free(d, 3000, 4000).status, Status::Fail);
    }
}
