//! The allocator's background jobs: scheduled teardown, auto-reboot of failed VMs, the
//! liveness watchdog, the workshop event, the seating of the waiting list and idle reclaim.
//! Each runs until the pool's shutdown token is cancelled.

pub mod autoreboot;
pub mod budget;
pub mod event;
pub mod idle;
pub mod rescue;
pub mod scheduler;
pub mod waitlist;
pub mod watchdog;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::pool::Pool;

pub struct Jobs {
    scheduler: JoinHandle<()>,
    watchdog: JoinHandle<()>,
    rebooter: JoinHandle<()>,
    event: JoinHandle<()>,
    waitlist: JoinHandle<()>,
    rescues: JoinHandle<()>,
    budget: JoinHandle<()>,
    idle: JoinHandle<()>,
}

impl Jobs {
    pub fn start(pool: &Arc<Pool>) -> Jobs {
        Jobs {
            scheduler: tokio::spawn(scheduler::run(pool.clone())),
            watchdog: tokio::spawn(watchdog::run(pool.clone())),
            rebooter: tokio::spawn(autoreboot::run(pool.clone())),
            event: tokio::spawn(event::run(pool.clone())),
            waitlist: tokio::spawn(waitlist::run(pool.clone())),
            rescues: tokio::spawn(rescue::run(pool.clone())),
            budget: tokio::spawn(budget::run(pool.clone())),
            idle: tokio::spawn(idle::run(pool.clone())),
        }
    }

    /// Waits for the jobs to stop once the pool's shutdown token is cancelled. A reboot in
    /// progress is abandoned; the VM is looked at again after the restart.
    pub async fn stopped(self) {
        let _ = self.scheduler.await;
        let _ = self.watchdog.await;
        let _ = self.event.await;
        let _ = self.waitlist.await;
        let _ = self.rescues.await;
        let _ = self.budget.await;
        let _ = self.idle.await;
        self.rebooter.abort();
        let _ = self.rebooter.await;
    }
}
