//! Files only their owner may read: the agents' token, a generated admin password, the
//! VMs' SSH key, the Terraform variables. Each is written whole under a temporary name
//! with mode 0600 and renamed into place, so a reader sees the old or the new contents
//! (never a half-written file), concurrent writers do not interleave, and a file that
//! existed with a looser mode is replaced rather than kept.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes `contents` and a newline to `path`, readable and writable by the owner only.
pub fn write(path: &Path, contents: &str) -> Result<(), WriteError> {
    write_bytes(path, format!("{contents}\n").as_bytes())
}

/// Writes exactly `contents` (no newline added) to `path`, readable and writable by the
/// owner only: for binary formats such as a VNC password file.
pub fn write_bytes(path: &Path, contents: &[u8]) -> Result<(), WriteError> {
    replace(path, contents).map_err(|source| WriteError {
        path: path.to_owned(),
        source,
    })
}

fn replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    // Unique per writer: this process's id and a counter only it advances.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        ));
    };
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = path.with_file_name(temp_name);
    // Only a process that had this id before, and crashed mid-write, can have left it.
    let _ = std::fs::remove_file(&temp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    // The new name lasts a crash only once the folder holding it is on disk.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Created (or truncated) for writing, readable by its owner only, also when it existed
/// with a looser mode: for a download written as it arrives.
pub fn create(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// `path` with `suffix` appended to its file name (`b.redb` → `b.redb.partial`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn a_new_file_is_the_owners_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        write(&path, "s3cret").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "s3cret\n");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_readable_file_is_replaced_not_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "old and much longer than the new one").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write(&path, "new").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new\n");
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["token"], "no temporary file is left");
    }

    #[test]
    fn a_reader_sees_one_whole_version_while_others_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        let versions: Vec<String> = (0..4)
            .map(|i| format!("{}\n", i.to_string().repeat(64 * 1024)))
            .collect();
        write(&path, versions[0].trim_end()).expect("write");
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let writers: Vec<_> = versions
                .iter()
                .map(|text| {
                    let path = &path;
                    s.spawn(move || {
                        for _ in 0..20 {
                            write(path, text.trim_end()).expect("write");
                        }
                    })
                })
                .collect();
            s.spawn(|| {
                for writer in writers {
                    writer.join().expect("writer");
                }
                done.store(true, Ordering::SeqCst);
            });
            while !done.load(Ordering::SeqCst) {
                let read = std::fs::read_to_string(&path).expect("read");
                assert!(
                    versions.contains(&read),
                    "read {} bytes of a mix",
                    read.len()
                );
            }
        });
    }

    #[test]
    fn bytes_are_written_as_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("passwd");
        write_bytes(&path, &[0, 0xff, b'\n', 7]).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), [0, 0xff, b'\n', 7]);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_missing_folder_is_reported_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent").join("token");
        let e = write(&path, "x").expect_err("no folder");
        assert_eq!(e.path, path);
        assert!(e.to_string().starts_with("cannot write "), "{e}");
    }
}
