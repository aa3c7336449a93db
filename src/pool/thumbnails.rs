//! The seat wall's pictures: the latest thumbnail (a small JPEG the agent of a browser seat
//! makes of its desktop every `desktop.thumbnail_seconds`) of every seat, in memory only.
//! Each is bound to the seat it was taken of (the participant and when they were seated):
//! it is dropped when the seat changes hands or the VM goes (`Desktops::cut`), and one
//! that arrives late for an earlier seat is never shown for the next, nor kept (a cut
//! between reading the seat and storing its picture refuses the picture). Bounded per
//! seat (the route's body limit) and in total.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{Pool, PoolError};
use crate::model::{DesktopKind, Vm};
use crate::store::vms;

/// The most one thumbnail may weigh (a 320-pixel-wide JPEG is some 10 to 20 KB).
pub const MAX_BYTES_PER_SEAT: usize = 64 * 1024;
/// The most all thumbnails together may weigh: room for 512 seats at the largest.
pub const MAX_TOTAL_BYTES: usize = 512 * MAX_BYTES_PER_SEAT;

/// Who sat on the VM when the picture was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SeatOf {
    email: String,
    assigned_at: DateTime<Utc>,
}

impl SeatOf {
    fn of(vm: &Vm) -> Option<SeatOf> {
        vm.assignment.as_ref().map(|a| SeatOf {
            email: a.email.clone(),
            assigned_at: a.assigned_at,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Thumbnail {
    pub jpeg: Bytes,
    /// Unique among this allocator's thumbnails (ETag, and the wall's image address).
    pub version: u64,
    pub taken_at: DateTime<Utc>,
    seat: SeatOf,
}

impl Thumbnail {
    /// The entity tag of this picture, quoted; a restart starts `version` over, so the
    /// allocator's start is part of it.
    pub fn etag(&self, epoch: u64) -> String {
        format!("\"{epoch:x}-{}\"", self.version)
    }
}

pub struct Thumbnails {
    inner: Mutex<Inner>,
    /// Bumped whenever a thumbnail arrives or goes (the wall's live stream looks again).
    changes: watch::Sender<u64>,
    /// Random per allocator start, for entity tags.
    pub epoch: u64,
}

#[derive(Default)]
struct Inner {
    seats: HashMap<String, Thumbnail>,
    total: usize,
    next_version: u64,
    /// Seats cut so far (`forget`), all VMs together.
    cuts: u64,
}

/// When the caller started reading the seat a picture is for (see [`Thumbnails::ticket`]).
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    cuts: u64,
}

impl Default for Thumbnails {
    fn default() -> Thumbnails {
        Thumbnails {
            inner: Mutex::default(),
            changes: watch::Sender::new(0),
            epoch: rand::random(),
        }
    }
}

/// Why a thumbnail was not kept.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooLarge(usize),
    /// Every seat's picture together would exceed `MAX_TOTAL_BYTES`.
    Full,
    /// A seat was cut after the ticket was taken: the seat read may be gone.
    Stale,
}

impl Thumbnails {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Taken before reading the seat a picture is for. A cut after it (the seat read may
    /// have ended, its `forget` done already) makes `put` refuse the picture.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            cuts: self.lock().cuts,
        }
    }

    /// Keeps `jpeg` as `vm`'s latest picture (in place of the one before), `vm` as read
    /// after `ticket` was taken; its version.
    fn put(
        &self,
        vm: &Vm,
        jpeg: Bytes,
        taken_at: DateTime<Utc>,
        ticket: Ticket,
    ) -> Result<Option<u64>, Refused> {
        let Some(seat) = SeatOf::of(vm) else {
            return Ok(None);
        };
        if jpeg.len() > MAX_BYTES_PER_SEAT {
            return Err(Refused::TooLarge(jpeg.len()));
        }
        let mut inner = self.lock();
        if inner.cuts != ticket.cuts {
            return Err(Refused::Stale);
        }
        let replaced = inner.seats.get(&vm.hostname).map_or(0, |t| t.jpeg.len());
        if inner.total - replaced + jpeg.len() > MAX_TOTAL_BYTES {
            return Err(Refused::Full);
        }
        inner.next_version += 1;
        let version = inner.next_version;
        inner.total = inner.total - replaced + jpeg.len();
        inner.seats.insert(
            vm.hostname.clone(),
            Thumbnail {
                jpeg,
                version,
                taken_at,
                seat,
            },
        );
        drop(inner);
        self.changes.send_modify(|n| *n += 1);
        Ok(Some(version))
    }

    /// `vm`'s latest picture, if it was taken of the seat as it is now.
    pub fn get(&self, vm: &Vm) -> Option<Thumbnail> {
        let seat = SeatOf::of(vm)?;
        self.lock()
            .seats
            .get(&vm.hostname)
            .filter(|t| t.seat == seat)
            .cloned()
    }

    /// The version of `vm`'s picture of its current seat, without copying it.
    pub fn version(&self, vm: &Vm) -> Option<u64> {
        let seat = SeatOf::of(vm)?;
        self.lock()
            .seats
            .get(&vm.hostname)
            .filter(|t| t.seat == seat)
            .map(|t| t.version)
    }

    /// Drops `host`'s picture (its seat changed hands, or the VM went); pictures of seats
    /// read before are not kept after this.
    pub fn forget(&self, host: &str) {
        let mut inner = self.lock();
        inner.cuts += 1;
        if let Some(gone) = inner.seats.remove(host) {
            inner.total -= gone.jpeg.len();
            drop(inner);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Bytes held, all seats together.
    pub fn total_bytes(&self) -> usize {
        self.lock().total
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Reads of the seat before a thumbnail is given up when seats keep being cut meanwhile.
const PUT_ATTEMPTS: usize = 3;

/// A thumbnail from `host`'s agent: kept while a participant sits at the VM with a browser
/// desktop. A VM without one (free, or in Chrome Remote Desktop mode) has nothing to show.
pub async fn put(pool: &Pool, host: &str, jpeg: Bytes) -> Result<(), PoolError> {
    let thumbnails = &pool.desktops.thumbnails;
    for _ in 0..PUT_ATTEMPTS {
        let ticket = thumbnails.ticket();
        let vm = super::stored_vm(pool, host, "Failed to keep the thumbnail.").await?;
        if vm
            .assignment
            .as_ref()
            .is_none_or(|a| a.desktop != DesktopKind::Browser)
        {
            return Err(PoolError::Conflict(format!(
                "{host} has no participant on a browser desktop: there is no seat to show."
            )));
        }
        match thumbnails.put(&vm, jpeg.clone(), pool.clock.now(), ticket) {
            Ok(_) => return Ok(()),
            // A seat was cut while this one was read (rarely this one): read it again.
            Err(Refused::Stale) => {}
            Err(Refused::TooLarge(len)) => {
                return Err(PoolError::Invalid(format!(
                    "The thumbnail is {len} bytes; at most {MAX_BYTES_PER_SEAT} are kept."
                )));
            }
            Err(Refused::Full) => {
                return Err(PoolError::Unavailable(format!(
                    "The allocator holds {MAX_TOTAL_BYTES} bytes of thumbnails already; try again later."
                )));
            }
        }
    }
    Err(PoolError::Conflict(format!(
        "Seats kept changing while the thumbnail of {host} was being kept; send the next one."
    )))
}

/// One VM on the wall.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    pub vm: Vm,
    /// The version of its current seat's picture.
    pub thumbnail: Option<u64>,
    /// How long its seat has been idle, as of its agent's last heartbeat.
    pub idle: Option<chrono::Duration>,
    pub gpu_pct: Option<f64>,
    /// How long its participant's hand has been up, if it is.
    pub hand_waiting: Option<chrono::Duration>,
}

/// Every VM as the wall shows it, by name.
pub async fn wall(pool: &Pool) -> Result<Vec<Tile>, PoolError> {
    let vms = pool
        .store
        .read(vms::list)
        .await
        .map_err(PoolError::store("Failed to read the pool."))?;
    let now = pool.clock.now();
    let thumbnails = &pool.desktops.thumbnails;
    Ok(vms
        .into_iter()
        .map(|vm| {
            let (idle, gpu_pct) = super::idle::activity(pool, &vm, now);
            Tile {
                thumbnail: thumbnails.version(&vm),
                idle,
                gpu_pct,
                hand_waiting: vm
                    .assignment
                    .as_ref()
                    .and_then(|a| pool.hands.of_participant(&vm.hostname, &a.email))
                    .map(|h| now - h.raised_at),
                vm,
            }
        })
        .collect())
}

/// The picture of `host`'s current seat.
pub async fn of_seat(pool: &Pool, host: &str) -> Result<Option<Thumbnail>, PoolError> {
    let vm = super::stored_vm(pool, host, "Failed to read the VM.").await?;
    Ok(pool.desktops.thumbnails.get(&vm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Assignment, DesktopKind};

    fn vm(host: &str, email: Option<&str>, at: i64) -> Vm {
        let now = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let mut vm = Vm::new(host, now);
        vm.assignment = email.map(|email| Assignment {
            email: email.to_owned(),
            crd_code: String::new(),
            pin: "123456".into(),
            assigned_at: DateTime::from_timestamp(at, 0).expect("time"),
            claim_token_sha256: None,
            desktop: DesktopKind::Browser,
            desktop_ready_at: None,
        });
        vm
    }

    fn jpeg(len: usize) -> Bytes {
        Bytes::from(vec![0xff; len])
    }

    #[test]
    fn a_picture_belongs_to_the_seat_it_was_taken_of() {
        let thumbnails = Thumbnails::default();
        let ada = vm("vm-1", Some("ada@example.org"), 100);
        let v1 = thumbnails
            .put(&ada, jpeg(10), Utc::now(), thumbnails.ticket())
            .expect("kept");
        assert_eq!(thumbnails.get(&ada).map(|t| t.version), v1);
        // Someone else seated on the same VM does not see Ada's desktop.
        let bob = vm("vm-1", Some("bob@example.org"), 200);
        assert!(thumbnails.get(&bob).is_none());
        assert!(thumbnails.version(&bob).is_none());
        // Ada again, seated later, neither.
        assert!(
            thumbnails
                .get(&vm("vm-1", Some("ada@example.org"), 300))
                .is_none()
        );
        // A free VM keeps nothing.
        assert_eq!(
            thumbnails.put(
                &vm("vm-2", None, 0),
                jpeg(10),
                Utc::now(),
                thumbnails.ticket()
            ),
            Ok(None)
        );
        assert_eq!(thumbnails.total_bytes(), 10);
    }

    #[test]
    fn a_new_picture_replaces_the_last_and_forget_drops_it() {
        let thumbnails = Thumbnails::default();
        let mut changes = thumbnails.changes();
        let ada = vm("vm-1", Some("ada@example.org"), 100);
        let v1 = thumbnails
            .put(&ada, jpeg(10), Utc::now(), thumbnails.ticket())
            .expect("kept");
        let v2 = thumbnails
            .put(&ada, jpeg(30), Utc::now(), thumbnails.ticket())
            .expect("kept");
        assert!(v2 > v1);
        assert_eq!(thumbnails.total_bytes(), 30);
        assert!(changes.has_changed().expect("open"));
        changes.borrow_and_update();
        thumbnails.forget("vm-1");
        assert!(thumbnails.get(&ada).is_none());
        assert_eq!(thumbnails.total_bytes(), 0);
        assert!(changes.has_changed().expect("open"));
        // Forgetting what is not there changes nothing.
        changes.borrow_and_update();
        thumbnails.forget("vm-1");
        assert!(!changes.has_changed().expect("open"));
    }

    #[test]
    fn bytes_are_bounded_per_seat_and_in_total() {
        let thumbnails = Thumbnails::default();
        let ada = vm("vm-0", Some("ada@example.org"), 100);
        assert_eq!(
            thumbnails.put(
                &ada,
                jpeg(MAX_BYTES_PER_SEAT + 1),
                Utc::now(),
                thumbnails.ticket()
            ),
            Err(Refused::TooLarge(MAX_BYTES_PER_SEAT + 1))
        );
        let seats = MAX_TOTAL_BYTES / MAX_BYTES_PER_SEAT;
        for i in 0..seats {
            let seat = vm(&format!("vm-{i}"), Some("p@example.org"), 1);
            thumbnails
                .put(
                    &seat,
                    jpeg(MAX_BYTES_PER_SEAT),
                    Utc::now(),
                    thumbnails.ticket(),
                )
                .expect("room");
        }
        assert_eq!(thumbnails.total_bytes(), MAX_TOTAL_BYTES);
        let one_more = vm("vm-extra", Some("p@example.org"), 1);
        assert_eq!(
            thumbnails.put(&one_more, jpeg(1), Utc::now(), thumbnails.ticket()),
            Err(Refused::Full)
        );
        // Replacing a seat's picture with a smaller one always fits.
        let first = vm("vm-0", Some("p@example.org"), 1);
        thumbnails
            .put(&first, jpeg(5), Utc::now(), thumbnails.ticket())
            .expect("replaced");
        assert_eq!(
            thumbnails.total_bytes(),
            MAX_TOTAL_BYTES - MAX_BYTES_PER_SEAT + 5
        );
    }

    #[test]
    fn a_picture_of_a_seat_cut_while_it_was_read_is_not_kept() {
        let thumbnails = Thumbnails::default();
        let ada = vm("vm-1", Some("ada@example.org"), 100);
        // The picture's request reads Ada's seat; the seat ends (the VM is deleted, or
        // Ada released) and is cut before the picture is stored.
        let ticket = thumbnails.ticket();
        thumbnails.forget("vm-1");
        assert_eq!(
            thumbnails.put(&ada, jpeg(10), Utc::now(), ticket),
            Err(Refused::Stale)
        );
        assert_eq!(thumbnails.total_bytes(), 0, "nothing left behind");
        assert!(thumbnails.get(&ada).is_none());
        // Read again after the cut, the seat as it is now is kept.
        let ticket = thumbnails.ticket();
        assert!(
            thumbnails
                .put(&ada, jpeg(10), Utc::now(), ticket)
                .expect("kept")
                .is_some()
        );
    }
}
