//! Each seat's GPU use, for the event's report: the heartbeats of an assigned VM add their
//! figures to its seat's row (one small write each), which outlives the VM. The agent's
//! sample batches go into the same seat's session metrics (`SeatSeries`).

use chrono::{DateTime, Utc};

use super::{Pool, PoolError};
use crate::model::{DesktopKind, SeatSeries, SeatUsage, SessionSample, UsageSample, Vm};
use crate::store::{events, usage, vms};

/// What a heartbeat says of the GPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GpuFigures {
    pub utilization_pct: Option<f64>,
    pub memory_used_mib: Option<u64>,
}

/// A heartbeat of `vm`'s agent: the idle tracker learns the GPU figure, and `vm`'s seat
/// (if it has a participant) records the figures and whether they were active.
pub async fn heartbeat(pool: &Pool, vm: &Vm, gpu: GpuFigures) -> Result<(), PoolError> {
    let now = pool.clock.now();
    let active = super::idle::heartbeat(pool, vm, gpu.utilization_pct, now);
    let Some(held) = &vm.assignment else {
        return Ok(());
    };
    let sample = UsageSample {
        at: now,
        gpu_utilization_pct: gpu.utilization_pct,
        gpu_memory_used_mib: gpu.memory_used_mib,
        active,
    };
    let (host, email, since) = (vm.hostname.clone(), held.email.clone(), held.assigned_at);
    pool.store
        .write(move |tx| usage::record(tx, &host, &email, since, &sample))
        .await
        .map_err(PoolError::store("Failed to record the heartbeat."))?;
    Ok(())
}

/// The seats held at some moment between `from` and `to` (an event's opening hours), by
/// claim time, with their GPU use (`SeatUsage::gpu_util_avg`, `gpu_util_max`). Seats whose
/// agent sent no heartbeat are not among them.
pub async fn for_event(
    pool: &Pool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<SeatUsage>, PoolError> {
    pool.store
        .read(move |tx| usage::overlapping(tx, from, to))
        .await
        .map_err(PoolError::store("Failed to read the seats' usage."))
}

/// One sample as the agent sends it: its age when sent rather than its time, so neither
/// the VM's clock nor a batch held back by a failed send shifts it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AgentSample {
    pub age_seconds: f64,
    pub gpu_utilization_pct: Option<f64>,
    pub gpu_memory_used_mib: Option<u64>,
    pub in_use: Option<bool>,
    pub desktop_connected: Option<bool>,
}

/// A batch of `vm`'s agent, sampled every `interval_seconds` (`None`: the configured
/// `metrics.sample_seconds`), into its seat's session metrics; how many samples were taken.
/// A VM without a participant takes none; samples from before the claim are left out.
pub async fn record_samples(
    pool: &Pool,
    vm: &Vm,
    batch: &[AgentSample],
    interval_seconds: Option<f64>,
) -> Result<usize, PoolError> {
    let Some(held) = &vm.assignment else {
        return Ok(0);
    };
    let now = pool.clock.now();
    let metrics = &pool.config.metrics;
    let seconds = interval_seconds.unwrap_or(metrics.sample_seconds as f64);
    // Only the relay knows a browser seat's stream when the agent cannot tell; a Chrome
    // Remote Desktop session is known to nobody here.
    let relay = (held.desktop == DesktopKind::Browser)
        .then(|| pool.desktops.participant_streams(&vm.hostname) > 0);
    let mut samples: Vec<SessionSample> = batch
        .iter()
        .map(|s| SessionSample {
            at: now - chrono::Duration::milliseconds((s.age_seconds * 1000.0) as i64),
            gpu_utilization_pct: s.gpu_utilization_pct,
            gpu_memory_used_mib: s.gpu_memory_used_mib,
            in_use: s.in_use,
            desktop_connected: match held.desktop {
                DesktopKind::Crd => None,
                DesktopKind::Browser => s.desktop_connected.or(relay),
            },
            seconds,
        })
        .collect();
    samples.sort_by_key(|s| s.at);
    let max_points = usize::try_from(metrics.max_samples_per_seat).unwrap_or(usize::MAX);
    // A sample sent again after a lost answer lands within milliseconds of its first copy.
    let min_gap = chrono::Duration::milliseconds((seconds * 500.0) as i64);
    let (host, email, since) = (vm.hostname.clone(), held.email.clone(), held.assigned_at);
    pool.store
        .write(move |tx| {
            usage::record_samples(tx, &host, &email, since, &samples, max_points, min_gap)
        })
        .await
        .map_err(PoolError::store("Failed to record the session metrics."))
}

/// Which seats' session metrics: every one, or those of one VM or one participant.
#[derive(Clone, Debug, Default)]
pub struct SeatFilter {
    pub hostname: Option<String>,
    pub email: Option<String>,
}

/// Every seat's session metrics that `filter` lets through, by claim time.
pub async fn session_metrics(
    pool: &Pool,
    filter: SeatFilter,
) -> Result<Vec<SeatSeries>, PoolError> {
    let all = pool
        .store
        .read(usage::all_series)
        .await
        .map_err(PoolError::store("Failed to read the session metrics."))?;
    Ok(all
        .into_iter()
        .filter(|s| filter.hostname.as_ref().is_none_or(|h| *h == s.hostname))
        .filter(|s| {
            filter
                .email
                .as_ref()
                .is_none_or(|e| e.eq_ignore_ascii_case(&s.email))
        })
        .collect())
}

/// The seats of the day: those held now, and those of the current event (held at some
/// moment since its pre-warm), by claim time.
pub async fn current_sessions(pool: &Pool) -> Result<Vec<SeatSeries>, PoolError> {
    let (all, event, pool_now) = pool
        .store
        .read(|tx| Ok((usage::all_series(tx)?, events::current(tx)?, vms::list(tx)?)))
        .await
        .map_err(PoolError::store("Failed to read the session metrics."))?;
    let since = event.map(|e| e.plan.prewarm_at());
    Ok(all
        .into_iter()
        .filter(|s| {
            let held_now = pool_now.iter().any(|vm| is_current_seat(vm, s));
            let of_event = since.is_some_and(|from| s.last_at.is_some_and(|l| l >= from));
            held_now || of_event
        })
        .collect())
}

/// The session metrics of the seats the VMs of `pool_now` have now (those with samples).
pub async fn of_current_seats(pool: &Pool, pool_now: &[Vm]) -> Result<Vec<SeatSeries>, PoolError> {
    let seats: Vec<_> = pool_now
        .iter()
        .filter_map(|vm| {
            let a = vm.assignment.as_ref()?;
            Some((a.assigned_at, vm.hostname.clone(), a.email.clone()))
        })
        .collect();
    if seats.is_empty() {
        return Ok(Vec::new());
    }
    pool.store
        .read(move |tx| usage::series_of(tx, &seats))
        .await
        .map_err(PoolError::store("Failed to read the session metrics."))
}

/// Whether `series` is the seat `vm` has now.
pub fn is_current_seat(vm: &Vm, series: &SeatSeries) -> bool {
    vm.hostname == series.hostname
        && vm
            .assignment
            .as_ref()
            .is_some_and(|a| a.email == series.email && a.assigned_at == series.assigned_at)
}
