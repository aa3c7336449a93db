//! Where `/vm_startup` long-polls wait: one slot per hostname that has waiters, woken by
//! the claim after its commit. Waiting costs a map entry, a share of the slot (a few
//! words: thousands of agents wait at once) and nothing in the store until something
//! happens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::Notify;

use crate::model::DesktopKind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    Assigned {
        pin: String,
        command: String,
        desktop: DesktopKind,
    },
    Deleted,
}

/// What the waiters of one host share: the wake, once there is one.
#[derive(Default)]
struct Slot {
    wake: OnceLock<Wake>,
    notify: Notify,
}

#[derive(Default)]
pub struct Waiters {
    by_host: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One parked request. Dropping it (request answered, or client gone) frees its slot.
pub struct Waiter {
    host: String,
    /// `None` only while being dropped.
    slot: Option<Arc<Slot>>,
    waiters: Arc<Waiters>,
}

impl Waiters {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.by_host.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers interest in `host`. Register before reading the store, so a claim that
    /// commits in between is not missed.
    pub fn subscribe(self: &Arc<Self>, host: &str) -> Waiter {
        let mut map = self.map();
        let slot = match map.get(host) {
            Some(slot) => slot.clone(),
            None => {
                let slot = Arc::new(Slot::default());
                map.insert(host.to_owned(), slot.clone());
                slot
            }
        };
        Waiter {
            host: host.to_owned(),
            slot: Some(slot),
            waiters: self.clone(),
        }
    }

    /// Wakes everyone waiting on `host`. Call only after the change is committed.
    /// The entry goes with it: later waiters start afresh and read the store.
    pub fn notify(&self, host: &str, wake: Wake) {
        if let Some(slot) = self.map().remove(host) {
            let _ = slot.wake.set(wake);
            slot.notify.notify_waiters();
        }
    }

    /// Number of requests parked right now.
    pub fn parked(&self) -> usize {
        // Each waiter holds one share of its slot, the map another; shares change only
        // under the map's lock.
        self.map()
            .values()
            .map(|slot| Arc::strong_count(slot) - 1)
            .sum()
    }
}

impl Waiter {
    /// Resolves with the wake of this host.
    pub async fn wait(&self) -> Wake {
        let Some(slot) = self.slot.as_ref() else {
            return std::future::pending().await;
        };
        loop {
            // Made before the check, it receives a `notify_waiters` that follows it.
            let notified = slot.notify.notified();
            if let Some(wake) = slot.wake.get() {
                return wake.clone();
            }
            notified.await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut map = self.waiters.map();
        // Let go of this share under the lock, so two waiters dropped at once cannot each
        // see the other's share and leave the entry behind.
        drop(self.slot.take());
        if map
            .get(&self.host)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            map.remove(&self.host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_notify_reaches_every_waiter_of_that_host_only() {
        let waiters = Arc::new(Waiters::default());
        let a = waiters.subscribe("vm-1");
        let b = waiters.subscribe("vm-1");
        let other = waiters.subscribe("vm-2");
        assert_eq!(waiters.parked(), 3);
        let wake = Wake::Assigned {
            pin: "123456".into(),
            command: "--code=x".into(),
            desktop: DesktopKind::Crd,
        };
        waiters.notify("vm-1", wake.clone());
        assert_eq!(a.wait().await, wake);
        assert_eq!(b.wait().await, wake);
        let pending = tokio::time::timeout(Duration::from_millis(20), other.wait()).await;
        assert!(pending.is_err(), "vm-2 must not wake");
    }

    #[tokio::test]
    async fn dropped_waiters_free_their_entry() {
        let waiters = Arc::new(Waiters::default());
        let a = waiters.subscribe("vm-1");
        let b = waiters.subscribe("vm-1");
        drop(a);
        assert_eq!(waiters.map().len(), 1);
        drop(b);
        assert_eq!(waiters.map().len(), 0);
        assert_eq!(waiters.parked(), 0);
        waiters.notify("vm-1", Wake::Deleted); // nobody waiting: a no-op
    }

    #[tokio::test]
    async fn after_a_notify_new_waiters_start_pending() {
        let waiters = Arc::new(Waiters::default());
        let a = waiters.subscribe("vm-1");
        waiters.notify("vm-1", Wake::Deleted);
        assert_eq!(a.wait().await, Wake::Deleted);
        let b = waiters.subscribe("vm-1");
        let pending = tokio::time::timeout(Duration::from_millis(20), b.wait()).await;
        assert!(pending.is_err(), "a stale wake answered a new waiter");
    }

    #[test]
    fn waiters_dropped_on_two_threads_leave_no_entry() {
        let waiters = Arc::new(Waiters::default());
        for _ in 0..200 {
            let a = waiters.subscribe("vm-1");
            let b = waiters.subscribe("vm-1");
            let t = std::thread::spawn(move || drop(a));
            drop(b);
            t.join().expect("thread");
            assert_eq!(waiters.map().len(), 0);
        }
    }
}
