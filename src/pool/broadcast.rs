//! Broadcast: the instructor shows one seat's desktop (their own claimed seat, or a
//! participant's) to every participant, view-only, in their page. Each participant's page
//! opens its own view-only stream to that VM through the desktop relay; stopping cuts
//! them all at once. What is on air lives in memory: a restart ends the broadcast.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use super::desktop::{DesktopStream, Viewer};
use super::error::PoolError;
use super::{Actor, Pool};
use crate::model::Vm;

/// The desktop being broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OnAir {
    /// A new id per start: a page seeing another id reconnects.
    pub id: u64,
    pub hostname: String,
    pub by: String,
    pub since: DateTime<Utc>,
}

pub struct Broadcast {
    on_air: watch::Sender<Option<OnAir>>,
    /// Broadcast streams open per watching seat: one claim cannot take the slots of all.
    viewers: Arc<Mutex<HashMap<String, usize>>>,
}

/// A seat may watch the broadcast in this many places at once (a page and a spare tab).
pub const STREAMS_PER_SEAT: usize = 2;

/// One of a seat's broadcast streams; dropping it frees the place.
pub struct Watching {
    viewers: Arc<Mutex<HashMap<String, usize>>>,
    seat: String,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut viewers = self.viewers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = viewers.get_mut(&self.seat) {
            *n -= 1;
            if *n == 0 {
                viewers.remove(&self.seat);
            }
        }
    }
}

impl Default for Broadcast {
    fn default() -> Broadcast {
        Broadcast {
            on_air: watch::channel(None).0,
            viewers: Arc::default(),
        }
    }
}

impl Broadcast {
    /// Takes `host` off the air if it is on: its seat ended. Whether it was.
    pub fn seat_ended(&self, host: &str) -> bool {
        self.on_air.send_if_modified(|on_air| {
            let ended = on_air.as_ref().is_some_and(|b| b.hostname == host);
            if ended {
                tracing::info!(vm = %host, "broadcast stopped: its seat ended");
                *on_air = None;
            }
            ended
        })
    }

    pub fn current(&self) -> Option<OnAir> {
        self.on_air.borrow().clone()
    }

    /// What is on air, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<OnAir>> {
        self.on_air.subscribe()
    }
}

/// `actor` broadcasts `host`'s desktop (replacing what was on air). Audited.
pub async fn start(pool: &Pool, actor: &Actor, host: &str) -> Result<OnAir, PoolError> {
    let vm = super::stored_vm(pool, host, "Failed to read the VM.").await?;
    if !pool.desktops.attached(&vm.hostname) {
        return Err(PoolError::Unavailable(format!(
            "The desktop of {host} is not reachable (its agent has no desktop channel: not \
             a browser desktop, or not started yet); broadcast a seat with a browser desktop."
        )));
    }
    let on_air = OnAir {
        id: u64::try_from(pool.clock.now().timestamp_millis()).unwrap_or(0),
        hostname: vm.hostname.clone(),
        by: actor.user.clone(),
        since: pool.clock.now(),
    };
    let mut next = on_air.clone();
    let before = pool.broadcast.on_air.send_replace(None);
    if let Some(before) = &before {
        pool.desktops.cut_broadcast(&before.hostname);
        next.id = next.id.max(before.id + 1);
    }
    pool.broadcast.on_air.send_replace(Some(next.clone()));
    let participant = vm
        .assignment
        .as_ref()
        .map_or_else(|| "no participant".to_owned(), |a| a.email.clone());
    pool.audit_by(
        actor,
        "broadcast_start",
        format!("{host}: broadcast the desktop to every participant (seat: {participant})"),
    )
    .await;
    Ok(next)
}

/// `actor` stops the broadcast: every participant's broadcast stream is cut. Audited.
pub async fn stop(pool: &Pool, actor: &Actor) -> Result<OnAir, PoolError> {
    // Off the air before the cut: a stream opening meanwhile sees it and gives up.
    let stopped = pool
        .broadcast
        .on_air
        .send_replace(None)
        .ok_or_else(|| PoolError::Conflict("Nothing is being broadcast.".into()))?;
    pool.desktops.cut_broadcast(&stopped.hostname);
    pool.audit_by(
        actor,
        "broadcast_stop",
        format!("{}: stopped the broadcast", stopped.hostname),
    )
    .await;
    Ok(stopped)
}

/// The participant at `vm` watches the broadcast (view-only): the stream, and its place
/// among the seat's `STREAMS_PER_SEAT` (hold it as long as the stream).
pub async fn open_for_participant(
    pool: &Pool,
    vm: &Vm,
) -> Result<(DesktopStream, Watching), PoolError> {
    if vm.assignment.is_none() {
        return Err(PoolError::Forbidden("This browser holds no seat.".into()));
    }
    let watching = {
        let viewers = &pool.broadcast.viewers;
        let mut open = viewers.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(vm.hostname.clone()).or_default();
        if *n >= STREAMS_PER_SEAT {
            return Err(PoolError::Conflict(format!(
                "This seat watches the broadcast in {STREAMS_PER_SEAT} places already; close one of them."
            )));
        }
        *n += 1;
        Watching {
            viewers: viewers.clone(),
            seat: vm.hostname.clone(),
        }
    };
    let on_air = pool
        .broadcast
        .current()
        .ok_or_else(|| PoolError::NotFound("Nothing is being broadcast now.".into()))?;
    let stream = super::desktop::open_stream(pool, &on_air.hostname, Viewer::Broadcast).await?;
    // Stopped (or switched) while opening: the cut may have come before this stream took
    // its token.
    if pool.broadcast.current().map(|b| b.id) != Some(on_air.id) {
        return Err(PoolError::Conflict("The broadcast ended.".into()));
    }
    Ok((stream, watching))
}
