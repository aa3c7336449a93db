//! Broadcast: the instructor shows one seat's desktop (their own claimed seat, or a
//! participant's) to every participant, view-only, in their page. The allocator opens one
//! view-only stream to that VM when the first participant watches and fans its updates out
//! to every participant's page (`fanout`); stopping cuts that stream and every page's with
//! it. What is on air lives in memory: a restart ends the broadcast.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::desktop::DesktopStream;
use super::error::PoolError;
use super::fanout::Hub;
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
    /// See `switching()`.
    switching: Mutex<u64>,
    /// Broadcast streams open per watching seat: one claim cannot take the slots of all.
    viewers: Arc<Mutex<HashMap<String, usize>>>,
    /// The fan-out of what is on air, once someone watches.
    hub: Mutex<Option<Arc<Hub>>>,
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
            switching: Mutex::new(0),
            viewers: Arc::default(),
            hub: Mutex::default(),
        }
    }
}

impl Broadcast {
    /// Puts `host` on air in place of what was, whose broadcast streams `cut` ends, unless
    /// `seat` (`host`'s seat as the caller read it) was cut meanwhile.
    fn put_on_air(
        &self,
        host: &str,
        by: &str,
        now: DateTime<Utc>,
        seat: &CancellationToken,
        cut: impl FnOnce(&str),
    ) -> Result<OnAir, PoolError> {
        let mut last_id = self.switching();
        // The seat's end cancels `seat` before it takes the seat off the air (under this
        // lock): either this start sees the cancel, or the seat's end sees this start.
        if seat.is_cancelled() {
            return Err(PoolError::Conflict(format!(
                "The seat of {host} changed while the broadcast was starting; check who sits \
                 there and start again."
            )));
        }
        let id = u64::try_from(now.timestamp_millis())
            .unwrap_or(0)
            .max(*last_id + 1);
        *last_id = id;
        let on_air = OnAir {
            id,
            hostname: host.to_owned(),
            by: by.to_owned(),
            since: now,
        };
        // On the air before the cut: a stream opening meanwhile to what was sees the change
        // and gives up.
        if let Some(before) = self.on_air.send_replace(Some(on_air.clone())) {
            cut(&before.hostname);
            self.drop_hub();
        }
        Ok(on_air)
    }

    /// Takes the broadcast off the air and `cut`s its streams; what was on air.
    fn take_off_air(&self, cut: impl FnOnce(&str)) -> Option<OnAir> {
        let _switching = self.switching();
        let stopped = self.on_air.send_replace(None)?;
        cut(&stopped.hostname);
        self.drop_hub();
        Some(stopped)
    }

    /// Takes `host` off the air if it is on, and `cut`s its streams: its seat ended.
    /// Whether it was.
    pub fn seat_ended(&self, host: &str, cut: impl FnOnce(&str)) -> bool {
        let _switching = self.switching();
        let ended = self.on_air.send_if_modified(|on_air| {
            let ended = on_air.as_ref().is_some_and(|b| b.hostname == host);
            if ended {
                *on_air = None;
            }
            ended
        });
        if ended {
            tracing::info!(vm = %host, "broadcast stopped: its seat ended");
            cut(host);
            self.drop_hub();
        }
        ended
    }

    /// Lets go of the ended broadcast's fan-out (and the updates it still holds).
    fn drop_hub(&self) {
        self.hub.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Held while what is on air changes and the streams of what it replaced are cut: one
    /// start, stop or seat end at a time. Holds the last broadcast's id.
    fn switching(&self) -> MutexGuard<'_, u64> {
        self.switching.lock().unwrap_or_else(|p| p.into_inner())
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
    // Taken before the VM is read: the end of the seat read below cancels it.
    let seat = pool.desktops.seat_cut(host);
    let vm = super::stored_vm(pool, host, "Failed to read the VM.").await?;
    if !pool.desktops.attached(&vm.hostname) {
        return Err(PoolError::Unavailable(format!(
            "The desktop of {host} is not reachable (its agent has no desktop channel: not \
             a browser desktop, or not started yet); broadcast a seat with a browser desktop."
        )));
    }
    let on_air = pool.broadcast.put_on_air(
        &vm.hostname,
        &actor.user,
        pool.clock.now(),
        &seat,
        |before| pool.desktops.cut_broadcast(before),
    )?;
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
    Ok(on_air)
}

/// `actor` stops the broadcast: every participant's broadcast stream is cut. Audited.
pub async fn stop(pool: &Pool, actor: &Actor) -> Result<OnAir, PoolError> {
    let stopped = pool
        .broadcast
        .take_off_air(|host| pool.desktops.cut_broadcast(host))
        .ok_or_else(|| PoolError::Conflict("Nothing is being broadcast.".into()))?;
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
    let hub = {
        let mut hub = pool.broadcast.hub.lock().unwrap_or_else(|p| p.into_inner());
        match &*hub {
            Some(h) if h.id == on_air.id && h.live() => h.clone(),
            _ => hub
                .insert(Hub::start(
                    &on_air,
                    pool.desktops.clone(),
                    pool.broadcast.subscribe(),
                    pool.config.desktop_open_timeout(),
                    pool.shutdown.clone(),
                ))
                .clone(),
        }
    };
    let stream = hub.join().await?;
    // Stopped (or switched) while joining: the hub may have ended before this stream took
    // its token.
    if pool.broadcast.current().map(|b| b.id) != Some(on_air.id) {
        return Err(PoolError::Conflict("The broadcast ended.".into()));
    }
    Ok((stream, watching))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("time")
    }

    fn on_air(b: &Broadcast) -> Option<String> {
        b.current().map(|b| b.hostname)
    }

    #[test]
    fn a_start_or_stop_waits_for_the_one_before_to_cut_what_it_replaced() {
        let b = Arc::new(Broadcast::default());
        let seat = CancellationToken::new();
        let cuts = Arc::new(Mutex::new(Vec::<String>::new()));
        let record = |cuts: &Arc<Mutex<Vec<String>>>| {
            let cuts = cuts.clone();
            move |host: &str| cuts.lock().expect("cuts").push(host.to_owned())
        };
        b.put_on_air("vm-x", "admin", at(0), &seat, record(&cuts))
            .expect("on air");
        // vm-y replaces vm-x; while vm-x's streams are being cut, vm-x is started again
        // (from another request).
        let (done, finished) = mpsc::channel();
        let mut others = Vec::new();
        let y = b
            .put_on_air("vm-y", "admin", at(1), &seat, |host| {
                record(&cuts)(host);
                let (b2, seat2, cuts2, done2) =
                    (b.clone(), seat.clone(), cuts.clone(), done.clone());
                others.push(std::thread::spawn(move || {
                    let x = b2.put_on_air("vm-x", "admin", at(1), &seat2, record(&cuts2));
                    done2.send(()).expect("told");
                    x
                }));
                assert!(
                    finished.recv_timeout(Duration::from_millis(300)).is_err(),
                    "a start ran while another was cutting the streams it replaced"
                );
            })
            .expect("on air");
        let x = others
            .pop()
            .expect("started")
            .join()
            .expect("joined")
            .expect("on air");
        assert!(x.id > y.id, "every start a new id");
        assert_eq!(on_air(&b).as_deref(), Some("vm-x"));
        // vm-x's second broadcast was not cut by the first one's replacement.
        assert_eq!(*cuts.lock().expect("cuts"), ["vm-x", "vm-y"]);

        let stopped = b.take_off_air(record(&cuts)).expect("was on air");
        assert_eq!(stopped.id, x.id);
        assert_eq!(on_air(&b), None);
        assert!(b.take_off_air(record(&cuts)).is_none());
        assert_eq!(*cuts.lock().expect("cuts"), ["vm-x", "vm-y", "vm-x"]);
    }

    #[test]
    fn a_seat_that_ends_while_its_broadcast_starts_does_not_go_on_air() {
        let b = Broadcast::default();
        let nothing = |host: &str| panic!("{host} cut");
        // The start read vm-1's seat; the seat ends (its cut, then the broadcast's end)
        // before the start puts it on air.
        let seat = CancellationToken::new();
        seat.cancel();
        assert!(!b.seat_ended("vm-1", nothing));
        let refused = b.put_on_air("vm-1", "admin", at(0), &seat, nothing);
        assert!(
            matches!(refused, Err(PoolError::Conflict(_))),
            "{refused:?}"
        );
        assert_eq!(on_air(&b), None);

        // On air, a seat's end takes it off and cuts its streams; another seat's does not.
        b.put_on_air("vm-1", "admin", at(1), &CancellationToken::new(), nothing)
            .expect("on air");
        assert!(!b.seat_ended("vm-2", nothing));
        let cut = Mutex::new(None);
        assert!(b.seat_ended("vm-1", |host| *cut.lock().expect("cut") =
            Some(host.to_owned())));
        assert_eq!(cut.into_inner().expect("cut").as_deref(), Some("vm-1"));
        assert_eq!(on_air(&b), None);
    }
}
