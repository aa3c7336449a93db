//! The redb store: the single source of truth of the allocator.
//!
//! Writes go through one writer thread that takes every queued write, runs them in one
//! write transaction and commits durably before answering any of them (group commit).
//! redb serialises write transactions anyway; batching turns one fsync per change into
//! one fsync per batch without giving up "durable before the HTTP answer".
//! Reads run on the blocking pool in their own read transactions.

pub mod accounts;
pub mod admin_tokens;
pub mod audit;
pub mod backup;
pub mod codec;
pub mod events;
pub mod identities;
pub mod logs;
pub mod meta;
pub mod migrate;
pub mod rescues;
pub mod runs;
pub mod schedules;
pub mod sessions;
pub mod spend;
pub mod tables;
pub mod usage;
pub mod vms;
pub mod waitlist;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

pub const FILE_NAME: &str = "lablink.redb";

/// Most writes committed together; bounds the latency one batch adds to the first of them.
const MAX_BATCH: usize = 1024;
const QUEUE_DEPTH: usize = 16 * 1024;
const CACHE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Clone, Debug, Error)]
pub enum StoreError {
    #[error(
        "{0} is in use by another lablink process (the store is locked); stop that process or choose another --data-dir"
    )]
    AlreadyOpen(PathBuf),
    #[error(
        "the store was written by a newer LabLink (schema {found}, this binary knows up to {known}); upgrade lablink or restore a backup"
    )]
    SchemaTooNew { found: u64, known: u64 },
    #[error("stored value {table}[{key}] cannot be read: {reason}")]
    Corrupt {
        table: String,
        key: String,
        reason: String,
    },
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// An error that leaves the current write transaction unusable.
    fn aborts_batch(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Unavailable(e.to_string())
            }
        }
    )*};
}
storage_errors!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    std::io::Error
);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction) -> (bool, Finish) + Send>;

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
    jobs: RwLock<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Counts committed batches: live pages wait on it instead of polling the file.
    changes: watch::Sender<u64>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, migrating it to this binary's schema.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(dir)?;
        let path = dir.join(FILE_NAME);
        create_private_file(&path)?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen(dir.into()),
                other => StoreError::Unavailable(format!("{}: {other}", path.display())),
            })?;
        let tx = db.begin_write()?;
        let from = migrate::run(&tx)?;
        tx.commit()?;
        if from != migrate::SCHEMA_VERSION {
            tracing::info!(from, to = migrate::SCHEMA_VERSION, "store schema migrated");
        }
        let db = Arc::new(db);
        let (jobs_tx, jobs_rx) = mpsc::channel(QUEUE_DEPTH);
        let writer_db = db.clone();
        let changes = watch::Sender::new(0);
        let committed = changes.clone();
        let writer = std::thread::Builder::new()
            .name("lablink-store".into())
            .spawn(move || run_writer(&writer_db, jobs_rx, &committed))?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                db: RwLock::new(Some(db)),
                jobs: RwLock::new(Some(jobs_tx)),
                writer: Mutex::new(Some(writer)),
                changes,
            }),
        })
    }

    /// Whether writes can still be committed (the writer thread is running).
    pub fn writer_alive(&self) -> bool {
        self.inner
            .writer
            .lock()
            .ok()
            .is_some_and(|w| w.as_ref().is_some_and(|h| !h.is_finished()))
    }

    /// Changes whenever a write batch has been committed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.inner
            .db
            .read()
            .map_err(|_| closed())?
            .clone()
            .ok_or_else(closed)
    }

    /// Runs `op` in its own read transaction on the blocking pool.
    pub async fn read<R, F>(&self, op: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let db = self.database()?;
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read()?;
            op(&tx)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    /// Runs `op` inside the next batch's write transaction and returns its result once
    /// that transaction is durably committed.
    ///
    /// `op` must not write anything before returning an error other than
    /// `StoreError::Unavailable`: the batch commits around it.
    pub async fn write<R, F>(&self, op: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |tx| {
            let result = op(tx);
            let fatal = matches!(&result, Err(e) if e.aborts_batch());
            let finish: Finish = Box::new(move |commit_error| {
                let outcome = match commit_error {
                    Some(e) => Err(e.clone()),
                    None => result,
                };
                let _ = reply_tx.send(outcome);
            });
            (fatal, finish)
        });
        let sender = self
            .inner
            .jobs
            .read()
            .map_err(|_| closed())?
            .clone()
            .ok_or_else(closed)?;
        sender.send(job).await.map_err(|_| closed())?;
        reply_rx.await.map_err(|_| {
            StoreError::Unavailable("the write was abandoned after a store failure".into())
        })?
    }

    /// Commits every queued write, stops the writer and releases the file (once in-flight
    /// reads end). Later calls fail with `Unavailable`. Blocks until the writer is done.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.inner.jobs.write() {
            jobs.take();
        }
        let writer = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
        let db = self.inner.db.write().ok().and_then(|mut db| db.take());
        if let Some(db) = db {
            release_after_readers(db);
        }
    }
}

/// How long `close` waits for reads begun before it to finish.
const READERS_GRACE: Duration = Duration::from_secs(10);

/// Drops the last handle on the database, which releases the file, once the reads that
/// still hold it have finished: a store reopened right after `close` (a restart in the
/// same process) must not find the file still open.
fn release_after_readers(mut db: Arc<Database>) {
    let deadline = Instant::now() + READERS_GRACE;
    loop {
        match Arc::try_unwrap(db) {
            Ok(last) => return drop(last),
            Err(shared) if Instant::now() < deadline => {
                db = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => {
                tracing::warn!(
                    "reads still running {READERS_GRACE:?} after close; the file stays open until they end"
                );
                return;
            }
        }
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store is closed".into())
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))
}

/// The store holds password hashes and tokens: it is created owner-only before redb
/// opens it (whatever the umask), and an existing one readable by others is made so.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| StoreError::Unavailable(format!("{}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(fail)?;
    let mode = file.metadata().map_err(fail)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
        tracing::warn!(
            file = %path.display(),
            was = format!("{mode:04o}"),
            "the store was open to other users; its mode is now 0600"
        );
    }
    Ok(())
}

fn run_writer(db: &Database, mut jobs: mpsc::Receiver<Job>, committed: &watch::Sender<u64>) {
    let mut batch = Vec::with_capacity(64);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if commit_batch(db, &mut batch) {
            committed.send_modify(|n| *n += 1);
        }
    }
}

/// Whether the batch was committed.
fn commit_batch(db: &Database, batch: &mut Vec<Job>) -> bool {
    let tx = match db.begin_write() {
        Ok(tx) => tx,
        Err(e) => {
            let error = StoreError::from(e);
            tracing::error!(%error, "cannot begin a write transaction");
            // Dropping the jobs tells each waiting caller the write was abandoned.
            batch.clear();
            return false;
        }
    };
    let mut finishers = Vec::with_capacity(batch.len());
    let mut failed = false;
    for job in batch.drain(..) {
        if failed {
            continue; // dropped: its caller learns the write was abandoned
        }
        let (fatal, finish) = job(&tx);
        finishers.push(finish);
        failed = fatal;
    }
    let error = if failed {
        let _ = tx.abort();
        Some(StoreError::Unavailable(
            "a write in the same batch failed; nothing was saved".into(),
        ))
    } else {
        tx.commit().err().map(StoreError::from)
    };
    if let Some(e) = &error {
        tracing::error!(error = %e, "write batch not committed");
    }
    for finish in finishers {
        finish(error.as_ref());
    }
    error.is_none()
}
