//! Seats the waiting list: whenever a VM may have become available (a reset done, a VM
//! reporting running, an agent heard again, a new VM: `Waitlist::vacancy`, or an agent
//! heard for the first time since the start), and on a slow tick for any change nobody
//! pokes about, the head of the queue gets the first free VM whose agent is alive.

use std::sync::Arc;
use std::time::Duration;

use crate::pool::{Pool, waitlist};

/// The backstop for availability changes that do not poke the job (a GPU recovering, a
/// destroy that failed).
const SAFETY_TICK: Duration = Duration::from_secs(15);

pub async fn run(pool: Arc<Pool>) {
    loop {
        if let Err(e) = waitlist::seat_waiting(&pool).await {
            tracing::error!(error = ?e, "cannot seat the waiting list; trying again");
        }
        tokio::select! {
            () = pool.waitlist.vacancy_signalled() => {}
            () = pool.liveness.newly_heard() => {}
            () = tokio::time::sleep(SAFETY_TICK) => {}
            () = pool.shutdown.cancelled() => return,
        }
    }
}
