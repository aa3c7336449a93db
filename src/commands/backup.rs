//! `lablink backup FILE`: a consistent snapshot of a running allocator's store, through its
//! HTTP API (only the allocator may open the store file). `lablink restore FILE`: that
//! snapshot put in place as the store of a stopped allocator.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::remote::{Admin, RemoteError};
use crate::exit::CliError;
use crate::secret_file;
use crate::store::{self, StoreError, backup as snapshot};

/// Longest pause in the download (the allocator writes the whole snapshot before it
/// sends the first byte).
const READ_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where to write the backup (a redb file; written with mode 0600).
    pub file: PathBuf,
    #[command(flatten)]
    pub target: super::remote::Target,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup to restore (what `lablink backup` wrote).
    pub file: PathBuf,
    /// Data directory of the stopped allocator.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Replace the store the directory already has (it is kept aside as
    /// lablink.redb.before-restore-<time>).
    #[arg(long)]
    pub force: bool,
}

fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

pub fn backup(args: BackupArgs) -> Result<(), CliError> {
    if args.file.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is a directory; name the backup file to write",
            args.file.display()
        )));
    }
    let admin = args.target.downloader(READ_TIMEOUT)?;
    let base = admin.base().to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let partial = secret_file::with_suffix(&args.file, ".partial");
    let downloaded = runtime.block_on(download(&admin, &partial));
    let outcome = downloaded.and_then(|bytes| {
        let summary = snapshot::verify(&partial)
            .map_err(|e| CliError::Failed(format!("the download is not a usable backup: {e}")))?;
        std::fs::rename(&partial, &args.file).map_err(|e| {
            CliError::Failed(format!(
                "cannot rename {} to {}: {e}",
                partial.display(),
                args.file.display()
            ))
        })?;
        sync_parent(&args.file);
        Ok((bytes, summary))
    });
    let (bytes, summary) = outcome.inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    println!(
        "backup of {base} written to {} ({bytes} bytes; {summary})",
        args.file.display()
    );
    Ok(())
}

/// Downloads the snapshot into `partial` (mode 0600, synced); the number of bytes.
async fn download(admin: &Admin, partial: &Path) -> Result<u64, CliError> {
    let response = match admin.fetch("/api/backup").await {
        Ok(response) => response,
        Err(RemoteError::Refused { status: 404, .. }) => {
            return Err(CliError::Failed(format!(
                "{} has no backup endpoint (HTTP 404): is it a LabLink allocator of this version?",
                admin.base()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let cannot_write =
        |e: std::io::Error| CliError::Failed(format!("cannot write {}: {e}", partial.display()));
    let mut out = secret_file::create(partial).map_err(cannot_write)?;
    let bytes = admin.save(response, &mut out).await?;
    out.sync_all().map_err(cannot_write)?;
    Ok(bytes)
}

/// Makes a rename in `path`'s directory durable (best effort).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// A file removed when dropped unless `keep` was called.
struct Temp(Option<PathBuf>);

impl Temp {
    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub fn restore(args: RestoreArgs) -> Result<(), CliError> {
    if !args.file.is_file() {
        return Err(CliError::Usage(format!(
            "{}: no such backup file",
            args.file.display()
        )));
    }
    if args.data_dir.exists() && !args.data_dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--data-dir {}: not a directory",
            args.data_dir.display()
        )));
    }
    let summary = snapshot::verify(&args.file)
        .map_err(|e| CliError::Failed(format!("{e}; nothing was changed")))?;
    let aside = place(&args).map_err(CliError::Failed)?;
    println!(
        "restored {} into {} ({summary}).",
        args.file.display(),
        args.data_dir.display()
    );
    if let Some(aside) = aside {
        println!("The previous store is kept as {}.", aside.display());
    }
    println!("Start the allocator (systemctl start lablink) to use it.");
    Ok(())
}

/// Puts the backup in place; the path the previous store was kept under, if there was one.
fn place(args: &RestoreArgs) -> Result<Option<PathBuf>, String> {
    let dir = &args.data_dir;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let current = dir.join(store::FILE_NAME);
    let exists = current.exists();
    // Held until the new store is in place: an allocator starting meanwhile waits out.
    let _held = match snapshot::hold_if_free(&current) {
        Ok(held) => held,
        Err(StoreError::AlreadyOpen(_)) => {
            return Err(format!(
                "the allocator is running on {}; stop it (systemctl stop lablink) and restore again. Nothing was changed",
                dir.display()
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    if exists && !args.force {
        return Err(format!(
            "{} already has a store; add --force to replace it (the current one is kept as {}.before-restore-<time>). Nothing was changed",
            dir.display(),
            store::FILE_NAME
        ));
    }
    let mut temp = Temp(Some(dir.join(format!(
        ".{}.restore-{}",
        store::FILE_NAME,
        store::meta::random_secret()
    ))));
    let temp_path = temp.0.clone().unwrap_or_default();
    {
        let mut from = std::fs::File::open(&args.file)
            .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
        let mut to = secret_file::create(&temp_path)
            .map_err(|e| format!("cannot write {}: {e}", temp_path.display()))?;
        std::io::copy(&mut from, &mut to)
            .and_then(|_| to.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", temp_path.display()))?;
    }
    snapshot::verify(&temp_path).map_err(|e| {
        format!(
            "the copy in {} does not verify: {e}. Nothing was changed",
            dir.display()
        )
    })?;
    give_to_owner_of(dir, &temp_path)?;
    let aside = if exists {
        let aside = dir.join(format!("{}.before-restore-{}", store::FILE_NAME, stamp()));
        // A second name for the current store; the rename below then replaces the first.
        std::fs::hard_link(&current, &aside)
            .or_else(|_| std::fs::copy(&current, &aside).map(drop))
            .map_err(|e| {
                format!(
                    "cannot keep the current store as {}: {e}. Nothing was changed",
                    aside.display()
                )
            })?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&temp_path, &current).map_err(|e| {
        format!(
            "cannot move the backup into place as {}: {e}",
            current.display()
        )
    })?;
    temp.keep();
    sync_parent(&current);
    Ok(aside)
}

/// Run as root (restoring for a service user), the restored store belongs to whoever owns
/// the data directory, so the allocator can open it.
fn give_to_owner_of(dir: &Path, file: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::os::unix::fs::chown(file, Some(meta.uid()), Some(meta.gid())).map_err(|e| {
        format!(
            "cannot give {} to the owner of {}: {e}",
            file.display(),
            dir.display()
        )
    })
}
