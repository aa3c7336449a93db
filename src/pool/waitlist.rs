//! The waiting list: a participant who finds no VM free joins the queue and is seated in
//! turn, first come, first served. Joining runs the claim's checks, then in one write
//! either the claim (nothing to wait for) or a place at the end of the queue; the
//! browser gets the same claim cookie a claim gives, and the seat it is given later
//! carries that token. The seating job (`jobs::waitlist`) calls [`seat_waiting`] when
//! [`Waitlist::vacancy`] is poked (a VM became available) and on a slow tick.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, broadcast};

use super::claim::{self, Checked, Claim, ClaimRequest, Proofs, random_pin, sha256_hex};
use super::{Actor, Pool, PoolError};
use crate::model::{Vm, WaitEntry};
use crate::store::vms;
use crate::store::waitlist::{self as queue, Place, Removed};

/// Seatings kept for a subscriber that lags behind.
const SEATINGS_BUFFER: usize = 1024;

/// The live side of the waiting list (the queue itself is in the store).
pub struct Waitlist {
    vacancy: Notify,
    seatings: broadcast::Sender<Seating>,
}

impl Default for Waitlist {
    fn default() -> Self {
        Waitlist {
            vacancy: Notify::new(),
            seatings: broadcast::Sender::new(SEATINGS_BUFFER),
        }
    }
}

impl Waitlist {
    /// A VM may have become available: the seating job looks at the queue. A poke while
    /// it is busy is kept for its next wait.
    pub fn vacancy(&self) {
        self.vacancy.notify_one();
    }

    /// [`Waitlist::vacancy`] when `vm` can be handed out now.
    pub fn offer(&self, vm: &Vm) {
        if vm.is_available() {
            self.vacancy();
        }
    }

    /// Returns at the next poke (or at once for one that came while nobody waited).
    pub async fn vacancy_signalled(&self) {
        self.vacancy.notified().await;
    }

    /// Every seating from now on (for the event's journal).
    pub fn seatings(&self) -> broadcast::Receiver<Seating> {
        self.seatings.subscribe()
    }
}

/// A participant who waited, and the VM they were given.
#[derive(Clone, Debug, PartialEq)]
pub struct Seating {
    pub email: String,
    pub hostname: String,
    pub joined_at: DateTime<Utc>,
    pub seated_at: DateTime<Utc>,
}

impl Seating {
    pub fn waited(&self) -> std::time::Duration {
        (self.seated_at - self.joined_at)
            .to_std()
            .unwrap_or_default()
    }
}

pub enum Joined {
    /// Nothing to wait for: the claim went ahead.
    Claimed(Box<Claim>),
    /// In the queue at `place`. `token` is the proof their browser keeps; `None` when this
    /// browser had joined already (it holds the proof, and the place is kept).
    Queued {
        email: String,
        place: Place,
        token: Option<String>,
    },
}

const UNEXPECTED: &str = "An unexpected error occurred while processing your request. Please ask your instructor for help.";

/// Joins the queue (or claims, when a VM is free and nobody waits), after the claim's
/// checks. The write and the wake-up run in a task of their own, as a claim's do.
pub async fn join(pool: &Arc<Pool>, request: ClaimRequest) -> Result<Joined, PoolError> {
    if !pool.config.waitlist.enabled {
        return Err(PoolError::Forbidden(
            "This workshop has no waiting list; try again later or ask your instructor.".into(),
        ));
    }
    let Checked {
        email,
        desktop,
        code,
    } = claim::check(pool, &request)?;
    let Proofs {
        pin,
        token,
        new_token_sha256,
        presented,
    } = Proofs::new(request.presented_token.as_deref());
    let now = pool.clock.now();
    let max = pool.config.waitlist.max_entries;
    let joining = email.clone();
    let committer = pool.clone();
    let joined = tokio::spawn(async move {
        let liveness = committer.liveness.clone();
        let joined = committer
            .store
            .write(move |tx| {
                let request = vms::ClaimRequest {
                    email: &joining,
                    crd_code: &code,
                    desktop,
                    pin: &pin,
                    new_token_sha256: &new_token_sha256,
                    presented_sha256: presented.as_deref(),
                    reseat: false,
                };
                queue::join(tx, &request, now, &|host| liveness.is_alive(host), max)
            })
            .await;
        if let Ok(queue::Joined::Claimed(outcome)) = &joined {
            claim::wake_claimed(&committer, outcome);
        }
        joined
    })
    .await
    .map_err(|e| PoolError::Failed(format!("waitlist task failed: {e}")))?
    .map_err(PoolError::store(UNEXPECTED))?;
    match joined {
        queue::Joined::Claimed(outcome) => Ok(Joined::Claimed(Box::new(Claim {
            seat: claim::seated(pool, *outcome, token)?,
            email,
        }))),
        queue::Joined::Queued { place, again } => {
            if !again {
                tracing::info!(%email, position = place.position, "participant joined the waiting list");
            }
            Ok(Joined::Queued {
                email,
                place,
                token: (!again).then_some(token),
            })
        }
        queue::Joined::QueuedElsewhere => Err(PoolError::Conflict(
            "This e-mail address is in the queue already, from another browser. Use that browser, or ask your instructor.".into(),
        )),
        queue::Joined::Full => Err(PoolError::Unavailable(
            "The queue is full. Please try again later, or ask your instructor for help.".into(),
        )),
    }
}

/// The participant leaves the queue; `token` is their browser's proof. `false` when they
/// were not in it (any more).
pub async fn leave(pool: &Pool, email: &str, token: &str) -> Result<bool, PoolError> {
    let (who, proof) = (email.to_owned(), sha256_hex(token));
    let removed = pool
        .store
        .write(move |tx| queue::remove(tx, &who, Some(&proof)))
        .await
        .map_err(PoolError::store(UNEXPECTED))?;
    match removed {
        Removed::Removed(_) => {
            tracing::info!(%email, "participant left the waiting list");
            Ok(true)
        }
        Removed::NotQueued => Ok(false),
        Removed::NotProven => Err(PoolError::Forbidden(
            "This browser did not join the queue for that e-mail address.".into(),
        )),
    }
}

/// The admin takes `email` out of the queue. Audited.
pub async fn remove(pool: &Pool, actor: &Actor, email: &str) -> Result<WaitEntry, PoolError> {
    let who = email.to_owned();
    let removed = pool
        .store
        .write(move |tx| queue::remove(tx, &who, None))
        .await
        .map_err(PoolError::store("Failed to change the waiting list."))?;
    match removed {
        Removed::Removed(entry) => {
            pool.audit_by(actor, "waitlist remove", entry.email.clone())
                .await;
            Ok(entry)
        }
        Removed::NotQueued | Removed::NotProven => {
            Err(PoolError::NotFound(format!("{email} is not in the queue.")))
        }
    }
}

/// Everyone waiting, the next to be seated first.
pub async fn list(pool: &Pool) -> Result<Vec<WaitEntry>, PoolError> {
    pool.store
        .read(queue::list)
        .await
        .map_err(PoolError::store("Failed to read the waiting list."))
}

/// How many wait.
pub async fn length(pool: &Pool) -> Result<u64, PoolError> {
    pool.store
        .read(queue::len)
        .await
        .map_err(PoolError::store("Failed to read the waiting list."))
}

/// Seats whoever waits, in order, while a VM is free for them: one write per seating,
/// the VM's agent woken after its commit. The seatings, for the event's journal (also
/// sent to [`Waitlist::seatings`]).
pub async fn seat_waiting(pool: &Pool) -> Result<Vec<Seating>, PoolError> {
    const FAILED: &str = "Failed to seat the waiting list.";
    let mut seated = Vec::new();
    // Past the event's end nobody is seated (the hard stop is about to take every VM).
    if super::event::closed(pool).is_some() {
        return Ok(seated);
    }
    loop {
        // Most wake-ups find nobody waiting or nothing free: a read, so they commit nothing.
        let (waiting, free) = pool
            .store
            .read(|tx| Ok((queue::len(tx)?, vms::count_free(tx)?)))
            .await
            .map_err(PoolError::store(FAILED))?;
        if waiting == 0 || free == 0 {
            return Ok(seated);
        }
        let (pin, now, liveness) = (random_pin(), pool.clock.now(), pool.liveness.clone());
        let head = pool
            .store
            .write(move |tx| queue::seat_head(tx, &pin, now, &|host| liveness.is_alive(host)))
            .await
            .map_err(PoolError::store(FAILED))?;
        let Some(head) = head else {
            return Ok(seated);
        };
        claim::wake_assigned(pool, &head.vm);
        let seating = Seating {
            email: head.entry.email,
            hostname: head.vm.hostname,
            joined_at: head.entry.joined_at,
            seated_at: now,
        };
        pool.metrics.waitlist_seated(seating.waited());
        tracing::info!(
            email = %seating.email,
            vm = %seating.hostname,
            waited_seconds = seating.waited().as_secs(),
            "waiting participant seated"
        );
        // Nobody listening is fine.
        let _ = pool.waitlist.seatings.send(seating.clone());
        seated.push(seating);
    }
}
