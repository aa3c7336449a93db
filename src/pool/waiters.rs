//! Where `/vm_startup` long-polls wait: one `watch` channel per hostname that has waiters,
//! woken by the claim after its commit. Waiting costs a map entry and a receiver; nothing
//! touches the store until something happens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    Pending,
    Assigned { pin: String, command: String },
    Deleted,
}

#[derive(Default)]
pub struct Waiters {
    by_host: Mutex<HashMap<String, watch::Sender<Wake>>>,
}

/// One parked request. Dropping it (request answered, or client gone) frees its slot.
pub struct Waiter {
    host: String,
    /// `None` only while being dropped.
    rx: Option<watch::Receiver<Wake>>,
    waiters: Arc<Waiters>,
}

impl Waiters {
    fn map(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<Wake>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.by_host.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers interest in `host`. Register before reading the store, so a claim that
    /// commits in between is not missed.
    pub fn subscribe(self: &Arc<Self>, host: &str) -> Waiter {
        let mut map = self.map();
        let rx = match map.get(host) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(Wake::Pending);
                map.insert(host.to_owned(), tx);
                rx
            }
        };
        Waiter {
            host: host.to_owned(),
            rx: Some(rx),
            waiters: self.clone(),
        }
    }

    /// Wakes everyone waiting on `host`. Call only after the change is committed.
    /// The entry goes with it: later waiters start afresh and read the store.
    pub fn notify(&self, host: &str, wake: Wake) {
        if let Some(tx) = self.map().remove(host) {
            tx.send_replace(wake);
        }
    }

    /// Number of requests parked right now.
    pub fn parked(&self) -> usize {
        self.map().values().map(|tx| tx.receiver_count()).sum()
    }
}

impl Waiter {
    /// Resolves with the first `Assigned` or `Deleted` for this host.
    pub async fn wait(&mut self) -> Wake {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        let woken = rx
            .wait_for(|w| *w != Wake::Pending)
            .await
            .map(|w| w.clone());
        match woken {
            Ok(w) => w,
            // The sender is dropped only by `notify`, after sending: not reached.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut map = self.waiters.map();
        // This receiver is still alive here, so "only me" is a count of one.
        if map
            .get(&self.host)
            .is_some_and(|tx| tx.receiver_count() <= 1)
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
        let mut a = waiters.subscribe("vm-1");
        let mut b = waiters.subscribe("vm-1");
        let mut other = waiters.subscribe("vm-2");
        assert_eq!(waiters.parked(), 3);
        let wake = Wake::Assigned {
            pin: "123456".into(),
            command: "--code=x".into(),
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
        let mut a = waiters.subscribe("vm-1");
        waiters.notify("vm-1", Wake::Deleted);
        assert_eq!(a.wait().await, Wake::Deleted);
        let mut b = waiters.subscribe("vm-1");
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
