//! Raised hands: a participant asks for help from their seat's page, the console shows the
//! queue (oldest first), a staff member takes a request (everyone sees who has it) and
//! marks it done. Every step is audited.
//!
//! Open requests live in memory only: a restart of the allocator loses the queue (the
//! audit log keeps who raised and who answered); participants whose hand was up see it
//! lowered and raise it again.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use super::error::PoolError;
use super::{Actor, Pool};
use crate::model::Vm;

/// More open requests than this is not a classroom; the next one is refused.
const MAX_OPEN: usize = 2_000;

/// A seat raises its hand at most once in this long: each raise is an audited, durable
/// write and wakes every open console.
const RAISE_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// One open request for help.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hand {
    pub id: u64,
    pub hostname: String,
    pub participant: String,
    pub raised_at: DateTime<Utc>,
    /// The staff member answering it, once taken.
    pub taken_by: Option<String>,
    pub taken_at: Option<DateTime<Utc>>,
}

pub struct Hands {
    inner: Mutex<Inner>,
    /// Bumped on every change: the live views wait on it.
    changed: watch::Sender<u64>,
}

struct Inner {
    /// Oldest first.
    open: Vec<Hand>,
    /// When each seat last raised its hand, within `RAISE_EVERY`.
    last_raised: std::collections::HashMap<String, DateTime<Utc>>,
    next_id: u64,
}

impl Default for Hands {
    fn default() -> Hands {
        // Ids carry on from the clock so that a console page from before a restart cannot
        // take a new request by an old number.
        let first = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(1);
        Hands {
            inner: Mutex::new(Inner {
                open: Vec::new(),
                last_raised: std::collections::HashMap::new(),
                next_id: first,
            }),
            changed: watch::channel(0).0,
        }
    }
}

impl Hands {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Open requests, oldest first.
    pub fn list(&self) -> Vec<Hand> {
        self.lock().open.clone()
    }

    /// The open request of seat `hostname`, if its hand is up: for the seat wall (raised
    /// hands first, a mark on the tile). A request ends with its seat (`seat_ended`).
    pub fn of_seat(&self, hostname: &str) -> Option<Hand> {
        self.lock()
            .open
            .iter()
            .find(|h| h.hostname == hostname)
            .cloned()
    }

    /// The open request of `participant` at seat `hostname`.
    pub fn of_participant(&self, hostname: &str, participant: &str) -> Option<Hand> {
        self.of_seat(hostname)
            .filter(|h| h.participant == participant)
    }

    /// Ends the open requests of seat `hostname`: the seat ended, and whoever sits there
    /// next has not asked for anything.
    pub fn seat_ended(&self, hostname: &str) {
        let ended = {
            let mut inner = self.lock();
            let before = inner.open.len();
            inner.open.retain(|h| h.hostname != hostname);
            before != inner.open.len()
        };
        if ended {
            self.bump();
        }
    }

    /// Changes as they happen (the value is a counter; read the list after a change).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

fn participant_of(vm: &Vm) -> Result<String, PoolError> {
    vm.assignment
        .as_ref()
        .map(|a| a.email.clone())
        .ok_or_else(|| PoolError::Forbidden("This browser holds no seat.".into()))
}

/// The participant at `vm` raises their hand.
pub async fn raise(pool: &Pool, vm: &Vm) -> Result<Hand, PoolError> {
    let participant = participant_of(vm)?;
    let hand = {
        let mut inner = pool.hands.lock();
        if inner
            .open
            .iter()
            .any(|h| h.hostname == vm.hostname && h.participant == participant)
        {
            return Err(PoolError::Conflict(
                "Your hand is raised already; someone is on the way.".into(),
            ));
        }
        let now = pool.clock.now();
        let window = chrono::Duration::from_std(RAISE_EVERY).unwrap_or_default();
        inner.last_raised.retain(|_, at| now - *at < window);
        if inner.last_raised.contains_key(&vm.hostname) {
            return Err(PoolError::Limited(RAISE_EVERY));
        }
        inner.last_raised.insert(vm.hostname.clone(), now);
        // A request left by the seat's previous participant is theirs no more.
        inner.open.retain(|h| h.hostname != vm.hostname);
        if inner.open.len() >= MAX_OPEN {
            return Err(PoolError::Unavailable(
                "Too many open requests for help; please wave to a helper.".into(),
            ));
        }
        inner.next_id += 1;
        let hand = Hand {
            id: inner.next_id,
            hostname: vm.hostname.clone(),
            participant: participant.clone(),
            raised_at: now,
            taken_by: None,
            taken_at: None,
        };
        inner.open.push(hand.clone());
        hand
    };
    pool.hands.bump();
    pool.audit(
        &participant,
        None,
        "hand_raised",
        format!("{}: asked for help (request {})", hand.hostname, hand.id),
    )
    .await;
    Ok(hand)
}

/// The participant at `vm` lowers their hand.
pub async fn lower(pool: &Pool, vm: &Vm) -> Result<(), PoolError> {
    let participant = participant_of(vm)?;
    let lowered = {
        let mut inner = pool.hands.lock();
        let at = inner
            .open
            .iter()
            .position(|h| h.hostname == vm.hostname && h.participant == participant)
            .ok_or_else(|| PoolError::NotFound("Your hand is not raised.".into()))?;
        inner.open.remove(at)
    };
    pool.hands.bump();
    pool.audit(
        &participant,
        None,
        "hand_lowered",
        format!(
            "{}: no longer needs help (request {})",
            lowered.hostname, lowered.id
        ),
    )
    .await;
    Ok(())
}

/// The "I need help" launcher on the desktop of seat `host`, through its agent: raises
/// (`raised`) or lowers the hand of whoever sits there, as the page's buttons do, and
/// answers the open request afterwards (`None`: the hand is down). Pressing it again is
/// no error: the hand is already where it was asked to be.
pub async fn from_desktop(
    pool: &Pool,
    host: &str,
    raised: bool,
) -> Result<Option<Hand>, PoolError> {
    let vm = super::stored_vm(pool, host, "Failed to read the VM.").await?;
    let Some(participant) = vm.assignment.as_ref().map(|a| a.email.clone()) else {
        return Err(PoolError::Conflict(format!(
            "Nobody holds {host} now: there is no hand to raise or lower."
        )));
    };
    let open = pool.hands.of_participant(host, &participant);
    match (raised, open) {
        (true, Some(hand)) => Ok(Some(hand)),
        (true, None) => raise(pool, &vm).await.map(Some),
        (false, None) => Ok(None),
        (false, Some(_)) => match lower(pool, &vm).await {
            // Answered by a helper meanwhile: down all the same.
            Ok(()) | Err(PoolError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        },
    }
}

fn unknown(id: u64) -> PoolError {
    PoolError::NotFound(format!(
        "There is no open request for help {id}; it may be done or withdrawn already."
    ))
}

/// `actor` answers request `id`; taking one taken by someone else is refused.
pub async fn take(pool: &Pool, actor: &Actor, id: u64) -> Result<Hand, PoolError> {
    let hand = {
        let mut inner = pool.hands.lock();
        let hand = inner
            .open
            .iter_mut()
            .find(|h| h.id == id)
            .ok_or_else(|| unknown(id))?;
        match &hand.taken_by {
            Some(who) if *who != actor.user => {
                return Err(PoolError::Conflict(format!(
                    "{who} has taken this request already."
                )));
            }
            Some(_) => return Ok(hand.clone()),
            None => {
                hand.taken_by = Some(actor.user.clone());
                hand.taken_at = Some(pool.clock.now());
            }
        }
        hand.clone()
    };
    pool.hands.bump();
    pool.audit_by(
        actor,
        "hand_taken",
        format!(
            "{}: took the request for help {} of {}",
            hand.hostname, hand.id, hand.participant
        ),
    )
    .await;
    Ok(hand)
}

/// Request `id` is answered: it leaves the queue.
pub async fn done(pool: &Pool, actor: &Actor, id: u64) -> Result<Hand, PoolError> {
    let hand = {
        let mut inner = pool.hands.lock();
        let at = inner
            .open
            .iter()
            .position(|h| h.id == id)
            .ok_or_else(|| unknown(id))?;
        inner.open.remove(at)
    };
    pool.hands.bump();
    pool.audit_by(
        actor,
        "hand_done",
        format!(
            "{}: answered the request for help {} of {}",
            hand.hostname, hand.id, hand.participant
        ),
    )
    .await;
    Ok(hand)
}
