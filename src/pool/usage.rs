//! Each seat's GPU use, for the event's report: the heartbeats of an assigned VM add their
//! figures to its seat's row (one small write each), which outlives the VM.

use chrono::{DateTime, Utc};

use super::{Pool, PoolError};
use crate::model::{SeatUsage, UsageSample, Vm};
use crate::store::usage;

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
