//! Idle reclaim (`idle.reclaim_minutes`, off by default): a seat nobody uses goes back to the
//! pool, so someone waiting gets it. A seat is idle while no browser desktop of its
//! participant is open, the workshop's software is not running and the GPU is under
//! `idle.gpu_threshold_percent` (or says nothing). How long it has been idle is kept in
//! memory on the pool's clock (a restart starts it over). The job (`jobs::idle`) looks at
//! every seat: `warn_minutes` before the release the participant's page shows a warning
//! with an "I'm still here" button ([`still_here`]); at the release the seat is released as
//! the instructor's release does (rescue, reset, then the queue is seated).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};
use tokio::sync::watch;

use super::{Pool, PoolError, seats};
use crate::model::Vm;
use crate::store::{vms, waitlist as queue};

#[derive(Default)]
pub struct IdleSeats {
    seats: Mutex<HashMap<String, SeatIdle>>,
    /// Bumped when a warning appears, moves or goes (live pages look again).
    warnings: watch::Sender<u64>,
    /// Bumped after every look of the job.
    passes: watch::Sender<u64>,
}

/// One seat (a participant on a VM) as the tracker knows it.
struct SeatIdle {
    email: String,
    assigned_at: DateTime<Utc>,
    /// The last time the participant was seen doing something (or the tracker's first look).
    active_at: DateTime<Utc>,
    /// The GPU's latest utilisation, `None` when the agent did not say.
    gpu_pct: Option<f64>,
    /// The release announced to the participant.
    release_at: Option<DateTime<Utc>>,
}

impl IdleSeats {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, SeatIdle>> {
        self.seats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tracker's entry of `vm`'s seat, started over when the seat changed hands.
    fn entry<'a>(
        seats: &'a mut HashMap<String, SeatIdle>,
        vm: &Vm,
        now: DateTime<Utc>,
    ) -> Option<&'a mut SeatIdle> {
        let held = vm.assignment.as_ref()?;
        let seat = seats
            .entry(vm.hostname.clone())
            .or_insert_with(|| SeatIdle {
                email: held.email.clone(),
                assigned_at: held.assigned_at,
                active_at: now,
                gpu_pct: None,
                release_at: None,
            });
        if seat.email != held.email || seat.assigned_at != held.assigned_at {
            *seat = SeatIdle {
                email: held.email.clone(),
                assigned_at: held.assigned_at,
                active_at: now,
                gpu_pct: None,
                release_at: None,
            };
        }
        Some(seat)
    }

    /// Changes whenever a participant's warning appears, moves or goes.
    pub fn warnings(&self) -> watch::Receiver<u64> {
        self.warnings.subscribe()
    }

    /// Counts the job's looks (a test waits for one to be sure the job saw a change).
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.passes.subscribe()
    }

    /// Marks `vm`'s seat active now; a warning it had goes.
    fn active(&self, vm: &Vm, now: DateTime<Utc>) {
        let mut seats = self.lock();
        if let Some(seat) = Self::entry(&mut seats, vm, now) {
            seat.active_at = seat.active_at.max(now);
            if seat.release_at.take().is_some() {
                self.warnings.send_modify(|n| *n += 1);
            }
        }
    }
}

/// Whether the GPU figure says the participant is working.
fn gpu_busy(pool: &Pool, gpu_pct: Option<f64>) -> bool {
    gpu_pct.is_some_and(|p| p >= pool.config.idle.gpu_threshold_percent as f64)
}

/// A heartbeat of `vm`'s agent: its GPU figure, and whether it shows the participant
/// working (the software running, a desktop open, the GPU busy). The answer is what the
/// seat's usage records.
pub fn heartbeat(pool: &Pool, vm: &Vm, gpu_pct: Option<f64>, now: DateTime<Utc>) -> bool {
    let active =
        vm.in_use || pool.desktops.participant_streams(&vm.hostname) > 0 || gpu_busy(pool, gpu_pct);
    if active {
        pool.idle.active(vm, now);
    }
    let mut seats = pool.idle.lock();
    if let Some(seat) = IdleSeats::entry(&mut seats, vm, now) {
        seat.gpu_pct = gpu_pct;
    }
    active
}

/// "I'm still here": the participant of `vm` starts the idle time over.
pub fn still_here(pool: &Pool, vm: &Vm) {
    pool.idle.active(vm, pool.clock.now());
}

/// When `vm`'s seat is to be released for being idle, once its participant was warned.
pub fn warning(pool: &Pool, vm: &Vm) -> Option<DateTime<Utc>> {
    let held = vm.assignment.as_ref()?;
    let seats = pool.idle.lock();
    let seat = seats.get(&vm.hostname)?;
    (seat.email == held.email && seat.assigned_at == held.assigned_at)
        .then_some(seat.release_at)
        .flatten()
}

/// Since when `vm`'s seat has been idle (as of its last heartbeat; `None` while in use or
/// not heard from yet in this seat) and its GPU's latest utilisation.
pub fn activity(pool: &Pool, vm: &Vm, now: DateTime<Utc>) -> (Option<Duration>, Option<f64>) {
    let Some(held) = vm.assignment.as_ref() else {
        return (None, None);
    };
    let seats = pool.idle.lock();
    match seats.get(&vm.hostname) {
        Some(seat) if seat.email == held.email && seat.assigned_at == held.assigned_at => {
            let idle = now - seat.active_at;
            ((idle > Duration::zero()).then_some(idle), seat.gpu_pct)
        }
        _ => (None, None),
    }
}

/// A seat idle long enough to be released.
struct Due {
    host: String,
    email: String,
    assigned_at: DateTime<Utc>,
    active_at: DateTime<Utc>,
}

/// The job's look at every seat: idle times brought up to date, warnings shown (or taken
/// back), seats idle past `idle.reclaim_minutes` released (with `only_when_waiting`, no more
/// than the queue needs beyond the VMs already coming free). The seats released.
pub async fn sweep(pool: &Pool) -> Result<Vec<String>, PoolError> {
    let released = sweep_once(pool).await;
    pool.idle.passes.send_modify(|n| *n += 1);
    released
}

async fn sweep_once(pool: &Pool) -> Result<Vec<String>, PoolError> {
    const FAILED: &str = "Failed to look for idle seats.";
    let config = &pool.config.idle;
    if config.reclaim_minutes == 0 {
        let had = !pool.idle.lock().is_empty();
        pool.idle.lock().clear();
        if had {
            pool.idle.warnings.send_modify(|n| *n += 1);
        }
        return Ok(Vec::new());
    }
    let (all, waiting) = pool
        .store
        .read(|tx| Ok((vms::list(tx)?, queue::len(tx)?)))
        .await
        .map_err(PoolError::store(FAILED))?;
    let now = pool.clock.now();
    let reclaim_after = Duration::minutes(config.reclaim_minutes as i64);
    let warn_before = Duration::minutes(config.warn_minutes.min(config.reclaim_minutes) as i64);
    // Seats the queue still needs: those waiting, less the VMs free or being reset for them.
    let needed = if config.only_when_waiting {
        let coming = all
            .iter()
            .filter(|vm| vm.is_available() || (vm.assignment.is_none() && vm.reset_pending))
            .count() as u64;
        waiting.saturating_sub(coming)
    } else {
        u64::MAX
    };
    let may_release = !config.only_when_waiting || waiting > 0;
    let mut due = Vec::new();
    let mut warnings_changed = false;
    {
        let mut seats = pool.idle.lock();
        seats.retain(|host, _| {
            all.iter()
                .any(|vm| &vm.hostname == host && vm.assignment.is_some())
        });
        for vm in all.iter().filter(|vm| vm.assignment.is_some()) {
            let streams = pool.desktops.participant_streams(&vm.hostname);
            let Some(seat) = IdleSeats::entry(&mut seats, vm, now) else {
                continue;
            };
            if vm.in_use || streams > 0 || gpu_busy(pool, seat.gpu_pct) {
                seat.active_at = seat.active_at.max(now);
            }
            let release_at = seat.active_at + reclaim_after;
            let warn = (may_release && now >= release_at - warn_before).then_some(release_at);
            if seat.release_at != warn {
                seat.release_at = warn;
                warnings_changed = true;
            }
            if may_release && now >= release_at {
                due.push(Due {
                    host: vm.hostname.clone(),
                    email: seat.email.clone(),
                    assigned_at: seat.assigned_at,
                    active_at: seat.active_at,
                });
            }
        }
    }
    if warnings_changed {
        pool.idle.warnings.send_modify(|n| *n += 1);
    }
    // The longest idle go first.
    due.sort_by_key(|d| d.active_at);
    let mut released = Vec::new();
    for seat in due
        .into_iter()
        .take(usize::try_from(needed).unwrap_or(usize::MAX))
    {
        let idle_minutes = (now - seat.active_at).num_minutes();
        if seats::reclaim_idle(
            pool,
            &seat.host,
            &seat.email,
            seat.assigned_at,
            idle_minutes,
        )
        .await?
        {
            pool.idle.lock().remove(&seat.host);
            released.push(seat.host);
        }
    }
    Ok(released)
}
