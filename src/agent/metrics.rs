//! Session metrics: every few seconds (the allocator's `metrics.sample_seconds`, told in
//! the heartbeat's answer) a sample of the GPUs (the GPU monitor's latest figures), the
//! software in use (the in-use monitor's latest scan) and whether a desktop stream is open
//! (the desktop channel; unknown without one, as for Chrome Remote Desktop). Samples go to
//! `POST /api/session-metrics` in batches, and are kept across failed sends up to a bound
//! (the oldest dropped first).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Allocator, CallError};
use super::desktop_channel::OpenStreams;
use super::gpu::GpuUse;

/// The interval while the allocator has not said one (an allocator without session
/// metrics never does).
pub const DEFAULT_EVERY: Duration = Duration::from_secs(15);
/// A batch is sent once it has this many samples, or its oldest is `SEND_AFTER` old.
const SEND_AT: usize = 4;
const SEND_AFTER: Duration = Duration::from_secs(60);
/// Most samples one request carries (the allocator takes twice as many).
const MAX_BATCH: usize = 120;
/// Most samples kept while sends fail: four hours at the default interval.
const MAX_KEPT: usize = 960;
/// An allocator without the route (404) is asked again this rarely.
const NOT_SERVED_RETRY: Duration = Duration::from_secs(300);

/// Where a sample's figures come from.
pub struct Sources {
    pub gpu: watch::Receiver<Option<GpuUse>>,
    pub in_use: watch::Receiver<Option<bool>>,
    /// `None`: no desktop channel, so no way to tell.
    pub desktop: Option<Arc<OpenStreams>>,
}

struct Sample {
    taken: Instant,
    gpu: Option<GpuUse>,
    in_use: Option<bool>,
    desktop_connected: Option<bool>,
}

impl Sample {
    fn as_json(&self, now: Instant) -> Value {
        json!({
            "age_seconds": now.saturating_duration_since(self.taken).as_secs_f64(),
            "gpu_utilization_pct": self.gpu.map(|g| g.utilization_pct),
            "gpu_memory_used_mib": self.gpu.map(|g| g.memory_used_mib),
            "in_use": self.in_use,
            "desktop_connected": self.desktop_connected,
        })
    }
}

/// Samples and sends until cancelled; ends with an error only when the token is refused.
pub async fn run(
    alloc: Arc<Allocator>,
    sources: Sources,
    mut every: watch::Receiver<Option<Duration>>,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let mut told = true;
    let mut kept: VecDeque<Sample> = VecDeque::new();
    let mut dropped = 0u64;
    let mut send_from = Instant::now();
    let mut failing = false;
    loop {
        let interval = every.borrow().unwrap_or(DEFAULT_EVERY);
        if kept.len() == MAX_KEPT {
            kept.pop_front();
            dropped += 1;
        }
        kept.push_back(Sample {
            taken: Instant::now(),
            gpu: *sources.gpu.borrow(),
            in_use: *sources.in_use.borrow(),
            desktop_connected: sources.desktop.as_ref().map(|d| d.any()),
        });
        let due = kept.len() >= SEND_AT
            || kept
                .front()
                .is_some_and(|s| s.taken.elapsed() >= SEND_AFTER);
        if due && Instant::now() >= send_from {
            match send(&alloc, interval, &mut kept).await {
                Ok(()) => {
                    if failing || dropped > 0 {
                        tracing::info!(dropped, "session metrics sent again");
                    }
                    failing = false;
                    dropped = 0;
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(CallError::Status(s)) if s.is_client_error() => {
                    tracing::warn!(status = %s, "the allocator refused a batch of session metrics; dropped");
                }
                Err(CallError::NotFound) => {
                    if !failing {
                        tracing::info!(
                            "the allocator takes no session metrics (or does not know this VM yet); trying again later"
                        );
                    }
                    failing = true;
                    send_from = Instant::now() + NOT_SERVED_RETRY;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, kept = kept.len(), "cannot send session metrics; keeping them");
                    }
                    failing = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            // A new interval (the first heartbeat's answer) applies from now.
            changed = every.changed(), if told => told = changed.is_ok(),
            () = cancel.cancelled() => return Ok(()),
        }
    }
}

/// Sends what is kept, oldest first, in batches; what was sent (or refused as it is) is
/// forgotten.
async fn send(
    alloc: &Allocator,
    interval: Duration,
    kept: &mut VecDeque<Sample>,
) -> Result<(), CallError> {
    while !kept.is_empty() {
        let n = kept.len().min(MAX_BATCH);
        let now = Instant::now();
        let batch: Vec<Value> = kept.iter().take(n).map(|s| s.as_json(now)).collect();
        match alloc.send_session_metrics(interval, &batch).await {
            Ok(()) => {}
            // Refused as it is: sending it again would not help.
            Err(CallError::Status(s)) if s.is_client_error() => {
                kept.drain(..n);
                return Err(CallError::Status(s));
            }
            Err(e) => return Err(e),
        }
        kept.drain(..n);
    }
    Ok(())
}
