//! Work rescue on the VM: when the allocator asks (in a heartbeat's answer), the files on
//! the participant's desktop that match its globs are packed into a zip and uploaded,
//! before the VM is destroyed or the seat reset. The agent may run as root and the desktop
//! belongs to the participant: no symlink is followed, and only regular files whose real
//! path is inside the desktop folder (and, as root, that its owner owns) are packed.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use reqwest::StatusCode;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Allocator, CallError, RescueAsk};
use super::retry::backoff;
use crate::model::LEFT_OUT_ENTRY;

/// Names listed in the archive's list of files left out, at most.
const LEFT_OUT_LISTED: usize = 1000;
/// What one file costs of `max_bytes` beside its content (its zip headers, twice its name).
const ENTRY_OVERHEAD: u64 = 128;

/// Does each rescue the allocator asks for, once, until cancelled. Ends with an error only
/// when the credential is refused.
pub async fn run(
    alloc: Arc<Allocator>,
    desktop_dir: PathBuf,
    desktop_uid: u32,
    mut asked: watch::Receiver<Option<RescueAsk>>,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let mut last = None;
    loop {
        let next = tokio::select! {
            r = asked.wait_for(|a| a.as_ref().is_some_and(|a| Some(a.id) != last)) => {
                r.ok().and_then(|a| a.clone())
            }
            () = cancel.cancelled() => return Ok(()),
        };
        let Some(ask) = next else {
            // No more heartbeats: nothing more will be asked.
            cancel.cancelled().await;
            return Ok(());
        };
        last = Some(ask.id);
        rescue(&alloc, &desktop_dir, desktop_uid, &ask, &cancel).await?;
    }
}

/// What packing found.
#[derive(Debug)]
pub struct Packed {
    /// The zip, or `None` when no file matched.
    pub zip: Option<PathBuf>,
    pub files: usize,
    pub left_out: usize,
    /// Entries passed over: symlinks, files outside the folder or of another owner.
    pub refused: usize,
}

async fn rescue(
    alloc: &Allocator,
    desktop_dir: &Path,
    desktop_uid: u32,
    ask: &RescueAsk,
    cancel: &CancellationToken,
) -> Result<(), CallError> {
    let deadline = Instant::now() + Duration::from_secs(ask.seconds_left);
    tracing::info!(
        rescue = ask.id,
        "saving the participant's files for the allocator"
    );
    let packed = {
        let (dir, patterns, max, id) = (
            desktop_dir.to_path_buf(),
            ask.patterns.clone(),
            ask.max_bytes,
            ask.id,
        );
        tokio::task::spawn_blocking(move || {
            pack(&dir, &patterns, max, &scratch_path(id), desktop_uid)
        })
        .await
        .unwrap_or_else(|e| Err(format!("packing stopped: {e}")))
    };
    let result = match packed {
        Err(why) => {
            tracing::error!(rescue = ask.id, reason = %why, "cannot pack the participant's files");
            until_deadline("rescue failure", deadline, cancel, || {
                alloc.rescue_failed(ask.id, &why)
            })
            .await
        }
        Ok(Packed {
            zip: None, refused, ..
        }) => {
            tracing::info!(rescue = ask.id, refused, "no file to save");
            until_deadline("rescue (nothing to save)", deadline, cancel, || {
                alloc.rescue_empty(ask.id)
            })
            .await
        }
        Ok(Packed {
            zip: Some(zip),
            files,
            left_out,
            refused,
        }) => {
            tracing::info!(
                rescue = ask.id,
                files,
                left_out,
                refused,
                "files packed; uploading"
            );
            let sent = until_deadline("rescue upload", deadline, cancel, || async {
                let file = tokio::fs::File::open(&zip)
                    .await
                    .map_err(|e| CallError::Transport(format!("cannot reopen the archive: {e}")))?;
                let left = deadline.saturating_duration_since(Instant::now());
                alloc
                    .upload_rescue(ask.id, file, left.max(Duration::from_secs(1)))
                    .await
            })
            .await;
            let _ = std::fs::remove_file(&zip);
            match sent {
                Err(CallError::Status(StatusCode::PAYLOAD_TOO_LARGE)) => {
                    until_deadline("rescue failure", deadline, cancel, || {
                        alloc
                            .rescue_failed(ask.id, "the archive is larger than the allocator takes")
                    })
                    .await
                }
                other => other,
            }
        }
    };
    match result {
        Ok(()) => {
            tracing::info!(rescue = ask.id, "rescue delivered");
            Ok(())
        }
        Err(e) if e.is_fatal() => Err(e),
        Err(e) => {
            tracing::warn!(rescue = ask.id, error = %e, "rescue not delivered");
            Ok(())
        }
    }
}

/// Calls `attempt` until it succeeds, with backoff, until `deadline`. An answer that
/// retrying cannot change (401, 404 or 409: the rescue ended, 413) ends it at once.
async fn until_deadline<F, Fut>(
    what: &str,
    deadline: Instant,
    cancel: &CancellationToken,
    mut attempt: F,
) -> Result<(), CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), CallError>>,
{
    let mut delays = backoff(Duration::from_secs(10));
    loop {
        let result = tokio::select! {
            r = attempt() => r,
            () = cancel.cancelled() => return Err(CallError::Transport("stopping".into())),
        };
        let e = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let final_answer = e.is_fatal()
            || matches!(
                e,
                CallError::NotFound
                    | CallError::Status(
                        StatusCode::CONFLICT
                            | StatusCode::PAYLOAD_TOO_LARGE
                            | StatusCode::FORBIDDEN
                            | StatusCode::BAD_REQUEST
                    )
            );
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        if final_answer || Instant::now() + delay >= deadline {
            return Err(e);
        }
        tracing::warn!(error = %e, retry_in = ?delay, "{what}: not delivered");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return Err(CallError::Transport("stopping".into())),
        }
    }
}

/// The private scratch file of rescue `id`'s archive.
fn scratch_path(id: u64) -> PathBuf {
    std::env::temp_dir().join(format!("lablink-rescue-{}-{id}.zip", std::process::id()))
}

fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("pattern {p:?}: {e}"))?;
        set.add(glob);
    }
    set.build().map_err(|e| e.to_string())
}

/// Paths (relative to `root`) of the regular files under it matching `set`, sorted; no
/// symlink is followed, to a file or a folder. Also how many symlinks were passed over.
fn matching(root: &Path, set: &GlobSet) -> std::io::Result<(Vec<String>, usize)> {
    let mut found = Vec::new();
    let mut symlinks = 0;
    let mut folders = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = folders.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A folder the agent cannot read (or gone meanwhile) holds nothing it can save.
            Err(_) if !rel.is_empty() => continue,
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if kind.is_symlink() {
                symlinks += 1;
            } else if kind.is_dir() {
                folders.push((entry.path(), path));
            } else if kind.is_file() && set.is_match(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok((found, symlinks))
}

/// Opens `rel` under `root` for reading only if it is (still) a regular file whose real
/// path is inside `root`, and, with `owner`, owned by that user; its size.
fn open_inside(root: &Path, rel: &str, owner: Option<u32>) -> Option<(File, u64)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // No following a symlink put in its place since the walk; no hanging on a FIFO.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(root.join(rel))
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || owner.is_some_and(|uid| meta.uid() != uid) {
        return None;
    }
    // A folder on the way swapped for a symlink leads elsewhere: the open file's real path
    // says where it is.
    let real = std::fs::read_link(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        file.as_raw_fd()
    }))
    .ok()?;
    real.starts_with(root).then_some((file, meta.len()))
}

/// Packs the files of `desktop_dir` matching `patterns` into a zip at `into` (created
/// private), at most `max_bytes` of them; those that do not fit are listed in the zip.
pub fn pack(
    desktop_dir: &Path,
    patterns: &[String],
    max_bytes: u64,
    into: &Path,
    desktop_uid: u32,
) -> Result<Packed, String> {
    let set = globs(patterns)?;
    // The participant may replace their desktop folder with a link to anywhere (as root the
    // agent could read it all): only a real folder is packed.
    if std::fs::symlink_metadata(desktop_dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err("the desktop folder is a symbolic link; nothing was packed".into());
    }
    let root = match std::fs::canonicalize(desktop_dir) {
        Ok(root) => root,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Packed {
                zip: None,
                files: 0,
                left_out: 0,
                refused: 0,
            });
        }
        Err(e) => return Err(format!("cannot open the desktop folder: {e}")),
    };
    // As root, only the desktop user's own files: a hard link to a system file is not
    // theirs to take away.
    let owner = nix::unistd::geteuid().is_root().then_some(desktop_uid);
    let (candidates, symlinks) =
        matching(&root, &set).map_err(|e| format!("cannot read the desktop folder: {e}"))?;
    if candidates.is_empty() {
        return Ok(Packed {
            zip: None,
            files: 0,
            left_out: 0,
            refused: symlinks,
        });
    }
    let _ = std::fs::remove_file(into);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(into)
        .map_err(|e| format!("cannot create the archive: {e}"))?;
    let written = write_zip(&root, &candidates, owner, max_bytes, out);
    match written {
        Ok((files, left_out, refused)) if files == 0 && left_out.is_empty() => {
            let _ = std::fs::remove_file(into);
            Ok(Packed {
                zip: None,
                files: 0,
                left_out: 0,
                refused: refused + symlinks,
            })
        }
        Ok((files, left_out, refused)) => Ok(Packed {
            zip: Some(into.to_path_buf()),
            files,
            left_out: left_out.len(),
            refused: refused + symlinks,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(into);
            Err(format!("cannot write the archive: {e}"))
        }
    }
}

/// (files packed, names left out, entries refused).
fn write_zip(
    root: &Path,
    candidates: &[String],
    owner: Option<u32>,
    max_bytes: u64,
    out: File,
) -> std::io::Result<(usize, Vec<String>, usize)> {
    let mut zip = zip::ZipWriter::new(out);
    let (mut used, mut files, mut refused) = (0u64, 0usize, 0usize);
    let mut left_out = Vec::new();
    for rel in candidates {
        let Some((file, size)) = open_inside(root, rel, owner) else {
            refused += 1;
            continue;
        };
        let cost = size + ENTRY_OVERHEAD + 2 * rel.len() as u64;
        if used + cost > max_bytes {
            left_out.push(rel.clone());
            continue;
        }
        used += cost;
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(size >= u64::from(u32::MAX))
            .unix_permissions(0o644);
        zip.start_file(rel.as_str(), options)
            .map_err(std::io::Error::other)?;
        // A file that grew since it was measured is cut at that size: the limit holds.
        std::io::copy(&mut file.take(size), &mut zip)?;
        files += 1;
    }
    if !left_out.is_empty() {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(LEFT_OUT_ENTRY, options)
            .map_err(std::io::Error::other)?;
        writeln!(
            zip,
            "{} file(s) did not fit in the rescue's limit of {max_bytes} bytes and were not saved:",
            left_out.len()
        )?;
        for name in left_out.iter().take(LEFT_OUT_LISTED) {
            writeln!(zip, "{name}")?;
        }
        if left_out.len() > LEFT_OUT_LISTED {
            writeln!(zip, "… and {} more", left_out.len() - LEFT_OUT_LISTED)?;
        }
    }
    zip.finish().map_err(std::io::Error::other)?.sync_all()?;
    Ok((files, left_out, refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn a_desktop_folder_replaced_by_a_link_is_not_packed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        std::fs::write(elsewhere.join("secret.slp"), b"not theirs").expect("write");
        let desktop = dir.path().join("Desktop");
        std::os::unix::fs::symlink(&elsewhere, &desktop).expect("symlink");
        let into = dir.path().join("out.zip");
        let refused = pack(&desktop, &["**/*.slp".into()], 1 << 20, &into, me());
        assert!(refused.is_err_and(|e| e.contains("symbolic link")));
        assert!(!into.exists());
    }

    fn names(zip: &Path) -> Vec<String> {
        let mut archive = zip::ZipArchive::new(File::open(zip).expect("zip")).expect("a zip");
        (0..archive.len())
            .map(|i| archive.by_index(i).expect("entry").name().to_owned())
            .collect()
    }

    #[test]
    fn only_matching_regular_files_inside_the_folder_are_packed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let desktop = dir.path().join("Desktop");
        std::fs::create_dir_all(desktop.join("project/deep")).expect("mkdir");
        std::fs::write(desktop.join("top.slp"), "a").expect("write");
        std::fs::write(desktop.join("project/deep/labels.slp"), "b").expect("write");
        std::fs::write(desktop.join("project/notes.txt"), "c").expect("write");
        let outside = dir.path().join("secret.slp");
        std::fs::write(&outside, "not theirs").expect("write");
        std::os::unix::fs::symlink(&outside, desktop.join("link.slp")).expect("symlink");
        std::os::unix::fs::symlink(dir.path(), desktop.join("up")).expect("symlink");
        let into = dir.path().join("out.zip");
        let packed = pack(&desktop, &["**/*.slp".into()], 1 << 20, &into, me()).expect("packed");
        assert_eq!(packed.files, 2);
        assert_eq!(packed.refused, 2, "two symlinks passed over");
        assert_eq!(
            names(&into),
            vec!["project/deep/labels.slp".to_owned(), "top.slp".to_owned()]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&into).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the archive is private");
    }

    #[test]
    fn the_limit_leaves_files_out_and_lists_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let desktop = dir.path().join("Desktop");
        std::fs::create_dir_all(&desktop).expect("mkdir");
        std::fs::write(desktop.join("a.slp"), vec![1u8; 1000]).expect("write");
        std::fs::write(desktop.join("b.slp"), vec![2u8; 5000]).expect("write");
        let into = dir.path().join("out.zip");
        let packed = pack(&desktop, &["*.slp".into()], 2000, &into, me()).expect("packed");
        assert_eq!((packed.files, packed.left_out), (1, 1));
        assert_eq!(
            names(&into),
            vec!["a.slp".to_owned(), LEFT_OUT_ENTRY.to_owned()]
        );
    }

    #[test]
    fn nothing_matching_is_no_archive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let into = dir.path().join("out.zip");
        let missing = pack(
            &dir.path().join("none"),
            &["*.slp".into()],
            100,
            &into,
            me(),
        );
        assert!(missing.expect("ok").zip.is_none());
        std::fs::write(dir.path().join("x.txt"), "x").expect("write");
        let packed = pack(dir.path(), &["*.slp".into()], 100, &into, me()).expect("ok");
        assert!(packed.zip.is_none());
        assert!(!into.exists());
    }

    #[test]
    fn a_star_does_not_cross_folders() {
        let set = globs(&["*.slp".into(), "**/*.h5".into()]).expect("globs");
        assert!(set.is_match("a.slp"));
        assert!(!set.is_match("d/a.slp"));
        assert!(set.is_match("a.h5"));
        assert!(set.is_match("d/e/a.h5"));
    }
}
