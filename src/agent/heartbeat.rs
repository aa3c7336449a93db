//! The agent's heartbeat: proof of life every few seconds (a frozen agent stops sending
//! it, and its VM leaves the free pool), with the boot id (a new one is a reboot) and the
//! free disk space and the GPUs' latest figures. Its answer says when the last participant's desktop must be reset, and
//! carries the messages to show on the desktop (the workshop's countdown, the console's
//! announcements).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::api::{Allocator, CallError, RescueAsk};
use super::gpu::GpuUse;
use super::notify::Notifier;

/// An allocator without heartbeats (upstream 0.1.2) answers 404: ask again this rarely.
const NOT_SUPPORTED_RETRY: Duration = Duration::from_secs(300);

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Free space of the file system holding `path`, in percent.
pub fn disk_free_pct(path: &Path) -> Option<f64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let total = stat.blocks() as f64;
    (total > 0.0).then(|| (stat.blocks_available() as f64 / total * 100.0).clamp(0.0, 100.0))
}

/// What each heartbeat reports besides the boot id.
pub struct Reports {
    /// Its free space is reported.
    pub disk: std::path::PathBuf,
    /// The GPUs' latest figures, from the GPU monitor.
    pub gpu: watch::Receiver<Option<GpuUse>>,
    /// Where the session-metrics interval the allocator asks for is published (the sampler
    /// keeps its own while none is).
    pub sample_every: watch::Sender<Option<Duration>>,
}

/// Sends heartbeats until cancelled; publishes the reset the allocator asks for (its
/// number), `None` while there is none, and the rescue of files it asks for. Ends with an
/// error only when the token is refused.
pub async fn run(
    alloc: Arc<Allocator>,
    every: Duration,
    reports: Reports,
    reset: watch::Sender<Option<u32>>,
    rescue: watch::Sender<Option<RescueAsk>>,
    notifier: Arc<Notifier>,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let boot = boot_id();
    let mut shown: Option<String> = None;
    let mut announced: Option<String> = None;
    let mut interval = every;
    let mut warned = false;
    loop {
        let figures = *reports.gpu.borrow();
        let pause = match alloc
            .heartbeat(boot.as_deref(), disk_free_pct(&reports.disk), figures)
            .await
        {
            Ok(beat) => {
                warned = false;
                interval = beat.interval.unwrap_or(interval);
                reports.sample_every.send_if_modified(|every| {
                    let changed = *every != beat.sample_every;
                    *every = beat.sample_every;
                    changed
                });
                reset.send_if_modified(|r| {
                    let changed = *r != beat.reset;
                    *r = beat.reset;
                    changed
                });
                if let Some(notice) = beat.notice
                    && shown.as_ref() != Some(&notice.id)
                {
                    shown = Some(notice.id);
                    let (notifier, cancel) = (notifier.clone(), cancel.clone());
                    tokio::spawn(async move { notifier.show(&notice.text, &cancel).await });
                }
                if let Some(news) = beat.announcement
                    && announced.as_ref() != Some(&news.id)
                {
                    announced = Some(news.id);
                    let (notifier, cancel) = (notifier.clone(), cancel.clone());
                    tokio::spawn(async move { notifier.show(&news.text, &cancel).await });
                }
                let asked = beat.rescue;
                rescue.send_if_modified(|r| {
                    // The same rescue again (its time left counting down) is no news.
                    let changed = r.as_ref().map(|r| r.id) != asked.as_ref().map(|a| a.id);
                    *r = asked;
                    changed
                });
                interval
            }
            Err(e) if e.is_fatal() => return Err(e),
            Err(CallError::NotFound) => {
                if !warned {
                    tracing::info!(
                        "the allocator takes no heartbeats (or does not know this VM yet); trying again later"
                    );
                    warned = true;
                }
                NOT_SUPPORTED_RETRY.min(interval * 20)
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                interval
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return Ok(()),
        }
    }
}
