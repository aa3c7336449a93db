//! The waiting list: participants queued while no VM is free, seated first come, first
//! served. The order is the place number (the key of `WAITLIST`, lowest first); the e-mail
//! index keeps one entry per participant. Joining decides between a claim and a place in
//! the same write transaction, and `vms::claim` refuses a new seat while anyone waits, so
//! nobody is passed over.

use chrono::{DateTime, Utc};
use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableHandle, WriteTransaction,
};

use super::tables::{WAITLIST, WAITLIST_BY_EMAIL};
use super::vms::{self, ClaimOutcome, ClaimRequest, Seat};
use super::{StoreError, codec};
use crate::model::{DesktopKind, Vm, WaitEntry};

/// Where a participant stands: `position` 1 is seated next, of `waiting` in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub position: u64,
    pub waiting: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Joined {
    /// In the queue at `place`; `again`: they were already (from this browser), and keep
    /// their place.
    Queued { place: Place, again: bool },
    /// This e-mail already waits, joined from another browser.
    QueuedElsewhere,
    /// The queue is at its bound.
    Full,
    /// No place needed: the claim went ahead (a VM was free and nobody waited, or this
    /// e-mail holds a VM already).
    Claimed(Box<ClaimOutcome>),
}

/// A participant who waited and now has `vm`.
#[derive(Clone, Debug, PartialEq)]
pub struct Seated {
    pub entry: WaitEntry,
    pub vm: Vm,
}

/// What `remove` did.
#[derive(Clone, Debug, PartialEq)]
pub enum Removed {
    Removed(WaitEntry),
    /// The browser did not present the token the entry was made with.
    NotProven,
    NotQueued,
}

fn decode(number: u64, bytes: &[u8]) -> Result<WaitEntry, StoreError> {
    codec::decode(WAITLIST.name(), &number.to_string(), bytes)
}

fn load(
    queue: &impl ReadableTable<u64, &'static [u8]>,
    number: u64,
) -> Result<Option<WaitEntry>, StoreError> {
    match queue.get(number)? {
        Some(bytes) => Ok(Some(decode(number, bytes.value())?)),
        None => Ok(None),
    }
}

fn place_of(
    queue: &impl ReadableTable<u64, &'static [u8]>,
    number: u64,
) -> Result<Place, StoreError> {
    Ok(Place {
        position: queue.range(..=number)?.count() as u64,
        waiting: queue.len()?,
    })
}

fn same_token(kept: &str, presented: Option<&str>) -> bool {
    presented
        .is_some_and(|p| bool::from(subtle::ConstantTimeEq::ct_eq(kept.as_bytes(), p.as_bytes())))
}

/// The claim `req`, or when it finds no free VM (or others waiting), a place at the end of
/// the queue (at most `max` wait). Joining again from the same browser keeps the place,
/// and a fresh Chrome Remote Desktop code replaces the one given before.
pub fn join(
    tx: &WriteTransaction,
    req: &ClaimRequest<'_>,
    now: DateTime<Utc>,
    alive: &dyn Fn(&str) -> bool,
    max: u64,
) -> Result<Joined, StoreError> {
    let waiting_as = tx
        .open_table(WAITLIST_BY_EMAIL)?
        .get(req.email)?
        .map(|n| n.value());
    if let Some(number) = waiting_as {
        let mut queue = tx.open_table(WAITLIST)?;
        if let Some(mut entry) = load(&queue, number)? {
            if !same_token(&entry.token_sha256, req.presented_sha256) {
                return Ok(Joined::QueuedElsewhere);
            }
            if entry.desktop == DesktopKind::Crd
                && !req.crd_code.is_empty()
                && entry.crd_code != req.crd_code
            {
                entry.crd_code = req.crd_code.to_owned();
                queue.insert(number, codec::encode(&entry).as_slice())?;
            }
            return Ok(Joined::Queued {
                place: place_of(&queue, number)?,
                again: true,
            });
        }
        drop(queue);
        tx.open_table(WAITLIST_BY_EMAIL)?.remove(req.email)?;
    }
    match vms::claim(tx, req, now, alive)? {
        ClaimOutcome::NoneFree => {}
        claimed => return Ok(Joined::Claimed(Box::new(claimed))),
    }
    let mut queue = tx.open_table(WAITLIST)?;
    if queue.len()? >= max {
        return Ok(Joined::Full);
    }
    let number = queue.last()?.map_or(1, |(k, _)| k.value() + 1);
    let entry = WaitEntry {
        email: req.email.to_owned(),
        token_sha256: req.new_token_sha256.to_owned(),
        desktop: req.desktop,
        crd_code: req.crd_code.to_owned(),
        joined_at: now,
    };
    queue.insert(number, codec::encode(&entry).as_slice())?;
    tx.open_table(WAITLIST_BY_EMAIL)?
        .insert(req.email, number)?;
    Ok(Joined::Queued {
        place: place_of(&queue, number)?,
        again: false,
    })
}

/// Whether nobody waits (read inside the claim's write).
pub fn is_empty(tx: &WriteTransaction) -> Result<bool, StoreError> {
    Ok(tx.open_table(WAITLIST)?.is_empty()?)
}

/// Empties the queue (the event is over: nobody will be seated); how many waited.
pub fn clear(tx: &WriteTransaction) -> Result<u64, StoreError> {
    let mut places = tx.open_table(WAITLIST)?;
    let waited = places.len()?;
    places.retain(|_, _| false)?;
    tx.open_table(WAITLIST_BY_EMAIL)?.retain(|_, _| false)?;
    Ok(waited)
}

pub fn len(tx: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(tx.open_table(WAITLIST)?.len()?)
}

/// `email`'s entry and place, if they wait.
pub fn find(tx: &ReadTransaction, email: &str) -> Result<Option<(WaitEntry, Place)>, StoreError> {
    let Some(number) = tx
        .open_table(WAITLIST_BY_EMAIL)?
        .get(email)?
        .map(|n| n.value())
    else {
        return Ok(None);
    };
    let queue = tx.open_table(WAITLIST)?;
    match load(&queue, number)? {
        Some(entry) => Ok(Some((entry, place_of(&queue, number)?))),
        None => Ok(None),
    }
}

/// Everyone waiting, the next to be seated first.
pub fn list(tx: &ReadTransaction) -> Result<Vec<WaitEntry>, StoreError> {
    let queue = tx.open_table(WAITLIST)?;
    let mut all = Vec::new();
    for entry in queue.iter()? {
        let (k, v) = entry?;
        all.push(decode(k.value(), v.value())?);
    }
    Ok(all)
}

fn take(
    queue: &mut Table<u64, &'static [u8]>,
    by_email: &mut Table<&'static str, u64>,
    number: u64,
    email: &str,
) -> Result<(), StoreError> {
    queue.remove(number)?;
    if by_email.get(email)?.is_some_and(|n| n.value() == number) {
        by_email.remove(email)?;
    }
    Ok(())
}

/// Takes `email` out of the queue: the participant leaving (their browser's token digest
/// in `proof`), or the admin (`None`).
pub fn remove(
    tx: &WriteTransaction,
    email: &str,
    proof: Option<&str>,
) -> Result<Removed, StoreError> {
    let mut queue = tx.open_table(WAITLIST)?;
    let mut by_email = tx.open_table(WAITLIST_BY_EMAIL)?;
    let Some(number) = by_email.get(email)?.map(|n| n.value()) else {
        return Ok(Removed::NotQueued);
    };
    let Some(entry) = load(&queue, number)? else {
        by_email.remove(email)?;
        return Ok(Removed::NotQueued);
    };
    if proof.is_some() && !same_token(&entry.token_sha256, proof) {
        return Ok(Removed::NotProven);
    }
    take(&mut queue, &mut by_email, number, email)?;
    Ok(Removed::Removed(entry))
}

/// Seats the head of the queue on the first free VM whose agent is alive, with `pin`:
/// `None` when nobody waits or no VM is free. One whose e-mail holds a VM already (which
/// the claim's rule keeps from happening) leaves the queue and the next one is tried.
pub fn seat_head(
    tx: &WriteTransaction,
    pin: &str,
    now: DateTime<Utc>,
    alive: &dyn Fn(&str) -> bool,
) -> Result<Option<Seated>, StoreError> {
    let mut queue = tx.open_table(WAITLIST)?;
    let mut by_email = tx.open_table(WAITLIST_BY_EMAIL)?;
    loop {
        let Some((number, entry)) = (match queue.first()? {
            Some((k, v)) => Some((k.value(), decode(k.value(), v.value())?)),
            None => None,
        }) else {
            return Ok(None);
        };
        match vms::seat(tx, entry.assignment(pin, now), alive)? {
            Seat::Given(vm) => {
                take(&mut queue, &mut by_email, number, &entry.email)?;
                return Ok(Some(Seated { entry, vm: *vm }));
            }
            Seat::AlreadyHolds(host) => {
                tracing::warn!(email = %entry.email, vm = %host, "a waiting participant holds a VM already; taken out of the queue");
                take(&mut queue, &mut by_email, number, &entry.email)?;
            }
            Seat::NoneFree => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VmStatus;
    use crate::store::Store;

    fn request<'a>(email: &'a str, token: &'a str, presented: Option<&'a str>) -> ClaimRequest<'a> {
        ClaimRequest {
            email,
            crd_code: "4/0Code",
            desktop: DesktopKind::Crd,
            pin: "123456",
            new_token_sha256: token,
            presented_sha256: presented,
            reseat: false,
        }
    }

    async fn with_vms(hosts: &'static [&'static str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let now = Utc::now();
        store
            .write(move |tx| {
                for host in hosts {
                    vms::report_status(tx, host, Some(VmStatus::Running), now)?;
                }
                Ok(())
            })
            .await
            .expect("write");
        (dir, store)
    }

    async fn join_as(store: &Store, email: &'static str, token: &'static str) -> Joined {
        store
            .write(move |tx| {
                join(
                    tx,
                    &request(email, token, Some(token)),
                    Utc::now(),
                    &|_| true,
                    3,
                )
            })
            .await
            .expect("join")
    }

    fn queued(position: u64, waiting: u64, again: bool) -> Joined {
        Joined::Queued {
            place: Place { position, waiting },
            again,
        }
    }

    #[tokio::test]
    async fn a_free_vm_goes_to_the_queue_before_a_new_claim() {
        let (_dir, store) = with_vms(&["vm-1"]).await;
        assert!(matches!(
            join_as(&store, "ada@example.org", "t-ada").await,
            Joined::Claimed(c) if matches!(*c, ClaimOutcome::Assigned(_))
        ));
        assert_eq!(
            join_as(&store, "bob@example.org", "t-bob").await,
            queued(1, 1, false)
        );
        assert_eq!(
            join_as(&store, "cy@example.org", "t-cy").await,
            queued(2, 2, false)
        );
        // Joining again keeps the place; another browser of the same e-mail is told so.
        assert_eq!(
            join_as(&store, "bob@example.org", "t-bob").await,
            queued(1, 2, true)
        );
        assert_eq!(
            join_as(&store, "bob@example.org", "t-other").await,
            Joined::QueuedElsewhere
        );

        // vm-2 comes up: a claim does not take it from those waiting, seating does.
        let now = Utc::now();
        store
            .write(move |tx| vms::report_status(tx, "vm-2", Some(VmStatus::Running), now))
            .await
            .expect("vm-2");
        let claimed = store
            .write(|tx| {
                vms::claim(
                    tx,
                    &request("dan@example.org", "t-dan", None),
                    Utc::now(),
                    &|_| true,
                )
            })
            .await
            .expect("claim");
        assert_eq!(claimed, ClaimOutcome::NoneFree);
        let seated = store
            .write(|tx| seat_head(tx, "654321", Utc::now(), &|_| true))
            .await
            .expect("seat")
            .expect("bob is seated");
        assert_eq!(seated.entry.email, "bob@example.org");
        assert_eq!(seated.vm.hostname, "vm-2");
        let a = seated.vm.assignment.expect("assigned");
        assert_eq!(
            (a.pin.as_str(), a.claim_token_sha256.as_deref()),
            ("654321", Some("t-bob"))
        );
        let cy = store
            .read(|tx| find(tx, "cy@example.org"))
            .await
            .expect("find")
            .expect("cy waits");
        assert_eq!(
            cy.1,
            Place {
                position: 1,
                waiting: 1
            }
        );
        let held = store
            .read(|tx| vms::held_by(tx, "bob@example.org"))
            .await
            .expect("held");
        assert_eq!(held.map(|vm| vm.hostname).as_deref(), Some("vm-2"));
        // Nothing free: nobody is seated, nothing changes.
        assert_eq!(
            store
                .write(|tx| seat_head(tx, "1", Utc::now(), &|_| true))
                .await
                .expect("seat"),
            None
        );
        assert_eq!(store.read(len).await.expect("len"), 1);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_an_entry_leaves_only_with_its_token() {
        let (_dir, store) = with_vms(&[]).await;
        for (email, token) in [("a@x.org", "ta"), ("b@x.org", "tb"), ("c@x.org", "tc")] {
            assert!(matches!(
                join_as(&store, email, token).await,
                Joined::Queued { .. }
            ));
        }
        assert_eq!(join_as(&store, "d@x.org", "td").await, Joined::Full);
        let wrong = store
            .write(|tx| remove(tx, "a@x.org", Some("tb")))
            .await
            .expect("remove");
        assert_eq!(wrong, Removed::NotProven);
        let left = store
            .write(|tx| remove(tx, "a@x.org", Some("ta")))
            .await
            .expect("remove");
        assert!(matches!(left, Removed::Removed(e) if e.email == "a@x.org"));
        let by_admin = store
            .write(|tx| remove(tx, "c@x.org", None))
            .await
            .expect("remove");
        assert!(matches!(by_admin, Removed::Removed(_)));
        assert_eq!(
            store
                .write(|tx| remove(tx, "c@x.org", None))
                .await
                .expect("remove"),
            Removed::NotQueued
        );
        // A newcomer goes after those still waiting.
        assert_eq!(join_as(&store, "d@x.org", "td").await, queued(2, 2, false));
        let order: Vec<String> = store
            .read(list)
            .await
            .expect("list")
            .into_iter()
            .map(|e| e.email)
            .collect();
        assert_eq!(order, ["b@x.org", "d@x.org"]);
    }
}
