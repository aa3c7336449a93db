//! Work rescue: nothing a participant made is lost by the system. Before a destroy takes
//! an assigned VM away, or a released (moved, automatically released) seat is reset, the
//! VM's agent is asked (in its heartbeat's answer) to pack the participant's files and
//! upload them here; they are kept under `data_dir/rescued/` for `rescue.keep_days`.
//! Through the agent, so it works for every provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::PoolError;
use super::liveness::Liveness;
use crate::config::Config;
use crate::model::{Assignment, LEFT_OUT_ENTRY, Rescue, RescueOutcome, RescueReason, Vm};
use crate::provision::RunLog;
use crate::store::rescues::{self, Terms};
use crate::store::{Store, StoreError, vms};

/// The folder of kept archives, under the data directory.
pub const FOLDER: &str = "rescued";

/// Requests rescues, receives their archives, and wakes whoever waits for them.
pub struct Rescuer {
    store: Store,
    liveness: Arc<Liveness>,
    terms: Terms,
    dir: PathBuf,
    patterns: Vec<String>,
    max_bytes: u64,
    /// Bumped whenever a rescue ends: waiters re-read theirs.
    ended: watch::Sender<u64>,
    /// A rescue was requested: the job looks at the next deadline again.
    requested: Notify,
}

/// Why an upload was not kept.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("The archive is larger than {0} bytes.")]
    TooLarge(u64),
    #[error("{0}")]
    Invalid(String),
}

impl Rescuer {
    pub fn new(config: &Config, store: Store, liveness: Arc<Liveness>) -> Rescuer {
        Rescuer {
            store,
            liveness,
            terms: Terms {
                wait: chrono::Duration::seconds(
                    i64::try_from(config.rescue.timeout_seconds).unwrap_or(i64::MAX),
                ),
                keep: chrono::Duration::days(
                    i64::try_from(config.rescue.keep_days).unwrap_or(3650),
                ),
            },
            dir: config.data_dir().join(FOLDER),
            patterns: config.rescue_patterns(),
            max_bytes: config.rescue_max_bytes(),
            ended: watch::Sender::new(0),
            requested: Notify::new(),
        }
    }

    /// The globs an agent packs.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Most bytes of files one rescue packs.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where the archive of rescue `id` is kept.
    pub fn archive(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.zip"))
    }

    /// Whether `vm`'s agent can rescue files: it sends heartbeats (a 0.1.2 client never
    /// learns it is asked to).
    fn agent_can(&self, vm: &Vm) -> bool {
        vm.boot_id.is_some()
            || self
                .liveness
                .report(&vm.hostname)
                .is_some_and(|r| r.heartbeats)
    }

    /// Inside the write that takes `held` off `host` (a release, a move): records the
    /// rescue of their files, which the VM's reset then waits for. Call
    /// [`requested`](Self::requested) once the write is committed.
    pub fn on_vacate(
        &self,
        tx: &redb::WriteTransaction,
        host: &str,
        held: &Assignment,
    ) -> Result<Option<Rescue>, StoreError> {
        let Some(vm) = vms::get_in(tx, host)? else {
            return Ok(None);
        };
        let can = self.agent_can(&vm);
        // Rescues run on real time (an upload takes real seconds), whatever clock the
        // caller's change follows.
        let at = Utc::now();
        rescues::create_for(tx, host, held, RescueReason::Release, can, self.terms, at).map(Some)
    }

    /// `vms::release` of `host`, with the rescue of its participant's files in the same
    /// write (the reset waits for it). Call [`requested`](Self::requested) once committed.
    pub fn release(
        &self,
        tx: &redb::WriteTransaction,
        host: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Vm>, StoreError> {
        let held = vms::get_in(tx, host)?.and_then(|vm| vm.assignment);
        let released = vms::release(tx, host, now)?;
        match (held, released) {
            (Some(held), Some(_)) => {
                self.on_vacate(tx, host, &held)?;
                vms::get_in(tx, host)
            }
            (_, released) => Ok(released),
        }
    }

    /// A rescue was recorded: the job's next look is brought forward if need be.
    pub fn requested(&self) {
        self.requested.notify_one();
    }

    /// Waits until a rescue is requested (for the job).
    pub async fn next_request(&self) {
        self.requested.notified().await;
    }

    /// Before a destroy of `hosts`: rescues the files of every one with a participant and
    /// waits (until the deadline, or `cancel`) for their outcomes; those without one by
    /// then are recorded as timed out. The rescues, as they ended.
    pub async fn before_destroy(
        &self,
        log: &RunLog,
        hosts: &[String],
        reason: RescueReason,
        cancel: &CancellationToken,
    ) -> Result<Vec<Rescue>, StoreError> {
        let listed = {
            let hosts = hosts.to_vec();
            self.store
                .read(move |tx| {
                    let mut found = Vec::new();
                    for host in &hosts {
                        match vms::get(tx, host) {
                            Ok(Some(vm)) if vm.assignment.is_some() || vm.rescue.is_some() => {
                                found.push(vm)
                            }
                            Err(StoreError::Corrupt { .. }) | Ok(_) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(found)
                })
                .await?
        };
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        // A released seat's rescue still under way is waited for too, to its own deadline.
        let (under_way, listed): (Vec<Vm>, Vec<Vm>) =
            listed.into_iter().partition(|vm| vm.assignment.is_none());
        let earlier: Vec<u64> = under_way
            .iter()
            .filter_map(|vm| vm.rescue.as_ref().map(|p| p.id))
            .collect();
        let latest = under_way
            .iter()
            .filter_map(|vm| vm.rescue.as_ref().map(|p| p.deadline))
            .max();
        let asked: Vec<(String, bool)> = listed
            .iter()
            .map(|vm| (vm.hostname.clone(), self.agent_can(vm)))
            .collect();
        let (terms, now) = (self.terms, Utc::now());
        let started = tokio::time::Instant::now();
        let requested = self
            .store
            .write(move |tx| {
                let mut out = Vec::new();
                for (host, can) in &asked {
                    if let Some(r) = rescues::request(tx, host, reason, *can, terms, now)? {
                        out.push(r);
                    }
                }
                Ok(out)
            })
            .await?;
        self.requested();
        let waiting = requested.iter().filter(|r| r.outcome.is_pending()).count();
        log.line(format!(
            "rescuing files of {} seat(s) before the destroy ({waiting} agent(s) asked, waiting up to {} s)",
            requested.len(),
            self.terms.wait.num_seconds()
        ));
        if !earlier.is_empty() {
            log.line(format!(
                "waiting for {} rescue(s) of released seats under way",
                earlier.len()
            ));
        }
        let ids: Vec<u64> = requested.iter().map(|r| r.id).chain(earlier).collect();
        let mut until = started + self.terms.wait.to_std().unwrap_or_default();
        if let Some(latest) = latest {
            let left = (latest - Utc::now()).to_std().unwrap_or_default();
            until = until.max(tokio::time::Instant::now() + left);
        }
        let mut ended = self.wait(&ids, until, cancel).await?;
        let late: Vec<u64> = ended
            .iter()
            .filter(|r| r.outcome.is_pending())
            .map(|r| r.id)
            .collect();
        if !late.is_empty() && !cancel.is_cancelled() {
            let at = Utc::now();
            let timed_out = self
                .store
                .write(move |tx| {
                    let mut out = Vec::new();
                    for id in late {
                        out.extend(rescues::finish(tx, id, RescueOutcome::TimedOut, at)?);
                    }
                    Ok(out)
                })
                .await?;
            self.ended.send_modify(|n| *n += 1);
            for r in timed_out {
                if let Some(slot) = ended.iter_mut().find(|e| e.id == r.id) {
                    *slot = r;
                }
            }
        }
        for r in &ended {
            log.line(format!(
                "{}: files of {} {}",
                r.hostname,
                r.email,
                describe(r)
            ));
        }
        log.line(summary(&ended));
        Ok(ended)
    }

    /// The rescues `ids` once none is pending, or as they are at `until` (or `cancel`).
    pub async fn wait(
        &self,
        ids: &[u64],
        until: tokio::time::Instant,
        cancel: &CancellationToken,
    ) -> Result<Vec<Rescue>, StoreError> {
        let mut ended = self.ended.subscribe();
        loop {
            ended.borrow_and_update();
            let wanted = ids.to_vec();
            let now = self
                .store
                .read(move |tx| {
                    let mut out = Vec::new();
                    for id in wanted {
                        out.extend(rescues::get(tx, id)?);
                    }
                    Ok(out)
                })
                .await?;
            if now.iter().all(|r| !r.outcome.is_pending()) {
                return Ok(now);
            }
            tokio::select! {
                changed = ended.changed() => if changed.is_err() { return Ok(now) },
                () = tokio::time::sleep_until(until) => return Ok(now),
                () = cancel.cancelled() => return Ok(now),
            }
        }
    }

    /// Rescue `id`, which the agent of its VM is still to do; its VM's name lets the
    /// caller check the credential.
    pub async fn find(&self, id: u64) -> Result<Rescue, PoolError> {
        self.store
            .read(move |tx| rescues::get(tx, id))
            .await
            .map_err(PoolError::store("Failed to read the rescue."))?
            .ok_or_else(|| PoolError::NotFound(format!("No rescue {id}.")))
    }

    fn still_pending(rescue: &Rescue) -> Result<(), PoolError> {
        if rescue.outcome.is_pending() {
            Ok(())
        } else {
            Err(PoolError::Conflict(format!(
                "Rescue {} is no longer waiting for files (it ended: {}).",
                rescue.id,
                rescue.outcome.as_str()
            )))
        }
    }

    /// The agent's archive of pending rescue `rescue`: streamed to a private file, at most
    /// `upload_limit(max_bytes)` bytes, synced, renamed into place, then recorded.
    pub async fn receive<S, E>(&self, rescue: &Rescue, body: S) -> Result<Rescue, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        Self::still_pending(rescue)?;
        let limit = crate::model::upload_limit(self.max_bytes);
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(rescue = rescue.id, error = %e, "cannot keep a rescued archive: {what}");
            UploadError::Pool(PoolError::Failed(format!(
                "The archive cannot be kept: {what}."
            )))
        };
        create_private_dir(&self.dir).map_err(|e| failed("folder", &e))?;
        let partial = self.dir.join(format!(
            ".upload-{}-{}",
            rescue.id,
            crate::store::meta::random_secret()
        ));
        let written = write_limited(&partial, body, limit).await;
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(match e {
                    Written::TooLarge => UploadError::TooLarge(limit),
                    Written::Body(why) => UploadError::Invalid(format!(
                        "The archive did not arrive completely: {why}"
                    )),
                    Written::Io(e) => failed("write", &e),
                });
            }
        };
        let checked = {
            let path = partial.clone();
            tokio::task::spawn_blocking(move || read_contents(&path))
                .await
                .map_err(|e| failed("check", &e))?
        };
        let (files, left_out) = match checked {
            Ok(counts) => counts,
            Err(why) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(UploadError::Invalid(format!("Not a zip archive: {why}")));
            }
        };
        let target = self.archive(rescue.id);
        let placed = tokio::fs::rename(&partial, &target)
            .await
            .and_then(|()| std::fs::File::open(&self.dir).and_then(|d| d.sync_all()));
        if let Err(e) = placed {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(failed("rename", &e));
        }
        let outcome = RescueOutcome::Saved {
            files,
            bytes,
            left_out,
        };
        let recorded = self.end(rescue.id, outcome).await;
        match recorded {
            Ok(r) if matches!(r.outcome, RescueOutcome::Saved { .. }) => Ok(r),
            // Timed out while it arrived: the record says so, the file goes.
            Ok(r) => {
                let _ = tokio::fs::remove_file(&target).await;
                Err(Self::still_pending(&r).err().map_or_else(
                    || UploadError::Invalid("The rescue ended meanwhile.".into()),
                    UploadError::Pool,
                ))
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&target).await;
                Err(e.into())
            }
        }
    }

    /// The agent found nothing to save, or could not save it.
    pub async fn report(
        &self,
        rescue: &Rescue,
        outcome: RescueOutcome,
    ) -> Result<Rescue, PoolError> {
        Self::still_pending(rescue)?;
        self.end(rescue.id, outcome).await
    }

    /// The VM's agent cannot deliver rescue `id` (it holds the shared token, and uploads
    /// take the VM's own credential): recorded at once, nothing is waited for.
    pub async fn unsupported(&self, id: u64) -> Result<Rescue, PoolError> {
        self.end(id, RescueOutcome::Unsupported).await
    }

    async fn end(&self, id: u64, outcome: RescueOutcome) -> Result<Rescue, PoolError> {
        let at = Utc::now();
        let ended = self
            .store
            .write(move |tx| rescues::finish(tx, id, outcome, at))
            .await
            .map_err(PoolError::store("Failed to record the rescue."))?
            .ok_or_else(|| PoolError::NotFound(format!("No rescue {id}.")))?;
        self.ended.send_modify(|n| *n += 1);
        tracing::info!(rescue = id, vm = %ended.hostname, outcome = ended.outcome.as_str(), "rescue ended");
        Ok(ended)
    }

    /// Pending rescues past their deadline become timed out (also those an allocator
    /// restart left behind); then the VMs' resets go on.
    pub async fn time_out_overdue(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        let ended = self
            .store
            .write(move |tx| rescues::time_out_overdue(tx, now))
            .await?;
        if !ended.is_empty() {
            self.ended.send_modify(|n| *n += 1);
            for r in &ended {
                tracing::warn!(rescue = r.id, vm = %r.hostname, "rescue timed out: no upload from the agent");
            }
        }
        Ok(ended.len())
    }

    /// Deletes the archives past `rescue.keep_days`; their records stay, marked expired.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        let ids = self.store.write(move |tx| rescues::expire(tx, now)).await?;
        for id in &ids {
            match std::fs::remove_file(self.archive(*id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(rescue = id, error = %e, "cannot delete an expired archive")
                }
            }
        }
        Ok(ids.len())
    }

    /// The earliest deadline of a pending rescue and the earliest expiry of an archive.
    pub async fn next_times(&self) -> Result<rescues::NextTimes, StoreError> {
        self.store.read(rescues::next_times).await
    }

    /// Every rescue, newest first.
    pub async fn list(&self) -> Result<Vec<Rescue>, PoolError> {
        self.store
            .read(rescues::list)
            .await
            .map_err(PoolError::store("Failed to read the rescues."))
    }

    /// The rescues of the participant whose browser holds `token` for `email`.
    pub async fn of_participant(&self, email: &str, token: &str) -> Result<Vec<Rescue>, PoolError> {
        let (email, digest) = (email.to_owned(), super::claim::sha256_hex(token));
        self.store
            .read(move |tx| rescues::of_participant(tx, &email, &digest))
            .await
            .map_err(PoolError::store("Failed to read your saved files."))
    }

    /// The kept archive of `rescue`, open.
    pub async fn open(&self, rescue: &Rescue) -> Result<tokio::fs::File, PoolError> {
        if !rescue.has_archive() {
            return Err(PoolError::NotFound(format!(
                "Rescue {} has no archive ({}).",
                rescue.id,
                if rescue.expired {
                    "expired"
                } else {
                    rescue.outcome.as_str()
                }
            )));
        }
        tokio::fs::File::open(self.archive(rescue.id))
            .await
            .map_err(|e| {
                tracing::error!(rescue = rescue.id, error = %e, "a kept archive cannot be opened");
                PoolError::NotFound(format!("The archive of rescue {} is missing.", rescue.id))
            })
    }

    /// Writes every kept archive into `out` as one zip (the archives stored as they are,
    /// not compressed again), `<host>-<id>.zip`. Blocking: run it off the runtime.
    pub fn zip_all(&self, rescues: &[Rescue], out: impl std::io::Write) -> std::io::Result<usize> {
        let mut zip = zip::ZipWriter::new_stream(out);
        let mut count = 0;
        for r in rescues.iter().filter(|r| r.has_archive()) {
            let Ok(mut file) = std::fs::File::open(self.archive(r.id)) else {
                continue;
            };
            let size = file.metadata()?.len();
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .large_file(size >= u64::from(u32::MAX))
                .unix_permissions(0o644);
            zip.start_file(archive_name(r), options)
                .map_err(std::io::Error::other)?;
            std::io::copy(&mut file, &mut zip)?;
            count += 1;
        }
        zip.finish().map_err(std::io::Error::other)?;
        Ok(count)
    }
}

/// The file name a rescue's archive is downloaded as.
pub fn archive_name(rescue: &Rescue) -> String {
    let email: String = rescue
        .email
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}-{email}-{}.zip", rescue.hostname, rescue.id)
}

/// One rescue's outcome in words.
pub fn describe(r: &Rescue) -> String {
    match &r.outcome {
        RescueOutcome::Pending => "pending".into(),
        RescueOutcome::Saved {
            files,
            bytes,
            left_out,
        } => {
            let mut text = format!("saved ({files} file(s), {bytes} bytes)");
            if *left_out > 0 {
                text.push_str(&format!("; {left_out} file(s) left out (rescue.max_mb)"));
            }
            text
        }
        RescueOutcome::Empty => "empty (no matching file)".into(),
        RescueOutcome::Failed { why } => format!("failed: {why}"),
        RescueOutcome::TimedOut => "timed out".into(),
        RescueOutcome::Unsupported => {
            "not rescued: the VM's agent cannot upload (no heartbeats, or the shared token)".into()
        }
    }
}

/// "rescued files: 2 saved, 1 empty, 1 timed out".
pub fn summary(rescues: &[Rescue]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in rescues {
        let name = r.outcome.as_str();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(n, c)| format!("{c} {}", n.replace('_', " ")))
        .collect();
    format!("rescued files: {}", parts.join(", "))
}

enum Written {
    TooLarge,
    Body(String),
    Io(std::io::Error),
}

async fn write_limited<S, E>(path: &Path, body: S, limit: u64) -> Result<u64, Written>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(Written::Io)?;
    let mut body = std::pin::pin!(body);
    let mut total: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Written::Body(e.to_string()))?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(Written::TooLarge);
        }
        file.write_all(&chunk).await.map_err(Written::Io)?;
    }
    file.sync_all().await.map_err(Written::Io)?;
    Ok(total)
}

/// (files, files left out) of a zip archive as the agent writes it.
fn read_contents(path: &Path) -> Result<(u32, u32), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| e.to_string())?;
    let mut files = 0u32;
    let mut left_out = 0u32;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        if entry.name() == LEFT_OUT_ENTRY {
            // Its first line begins with how many files were left out.
            let mut head = Vec::new();
            use std::io::Read;
            let _ = (&mut entry).take(256).read_to_end(&mut head);
            left_out = String::from_utf8_lossy(&head)
                .split(|c: char| !c.is_ascii_digit())
                .find(|n| !n.is_empty())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if entry.is_file() {
            files += 1;
        }
    }
    Ok((files, left_out))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
