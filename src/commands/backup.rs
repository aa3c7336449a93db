//! `lablink backup FILE`: a consistent snapshot of a running allocator's store, through its
//! HTTP API (only the allocator may open the store file). `lablink restore FILE`: that
//! snapshot put in place as the store of a stopped allocator.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::remote::{Admin, RemoteError, error_chain, is_loopback};
use crate::exit::CliError;
use crate::store::{self, StoreError, backup as snapshot};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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

/// `name` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

pub fn backup(args: BackupArgs) -> Result<(), CliError> {
    let url = args.target.url().map_err(CliError::Usage)?;
    let base = url.trim_end_matches('/');
    let endpoint = match reqwest::Url::parse(&format!("{base}/api/backup")) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => {
            return Err(CliError::Usage(format!(
                "--url {url}: not an http(s) address such as http://127.0.0.1:5000"
            )));
        }
    };
    if args.file.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is a directory; name the backup file to write",
            args.file.display()
        )));
    }
    let mut client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT);
    if is_loopback(&endpoint) {
        client = client.no_proxy();
    }
    let client = client
        .build()
        .map_err(|e| CliError::Failed(format!("cannot set up the HTTP client: {e}")))?;
    let admin = Admin::with_client(client, base, &args.target.login).map_err(CliError::Usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let partial = with_suffix(&args.file, ".partial");
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
    let base = admin.base();
    let mut response = match admin.fetch("/api/backup").await {
        Ok(response) => response,
        Err(RemoteError::Refused { status: 404, .. }) => {
            return Err(CliError::Failed(format!(
                "{base} has no backup endpoint (HTTP 404): is it a LabLink allocator of this version?"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = private_file(partial)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", partial.display())))?;
    let mut bytes = 0u64;
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            CliError::Failed(format!(
                "the download from {base} broke off: {}",
                error_chain(&e)
            ))
        })?;
        let Some(chunk) = chunk else { break };
        out.write_all(&chunk)
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", partial.display())))?;
        bytes += chunk.len() as u64;
    }
    out.sync_all()
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", partial.display())))?;
    Ok(bytes)
}

/// Created or truncated, readable by the owner only (also when it existed before).
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
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
        let mut to = private_file(&temp_path)
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
