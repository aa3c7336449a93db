//! Rescues: pending ones past their deadline become timed out (also those an allocator
//! restart left behind), so the VMs' resets go on; archives past `rescue.keep_days` are
//! deleted. Wakes at the next deadline or expiry, or when a rescue is requested.

use std::sync::Arc;
use std::time::Duration;

use crate::pool::Pool;
use crate::store::rescues;

/// The longest sleep between two looks (a clock change is noticed within it).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

pub async fn run(pool: Arc<Pool>) {
    let rescuer = pool.rescues.clone();
    loop {
        let pause = match rescuer.next_times().await {
            Ok(rescues::NextTimes { deadline, expiry }) => {
                let now = chrono::Utc::now();
                if deadline.is_some_and(|t| t <= now)
                    && let Err(e) = rescuer.time_out_overdue().await
                {
                    tracing::error!(error = %e, "rescues: cannot time out overdue rescues");
                }
                if expiry.is_some_and(|t| t <= now) {
                    match rescuer.purge_expired().await {
                        Ok(n) => tracing::info!(archives = n, "rescues: expired archives deleted"),
                        Err(e) => {
                            tracing::error!(error = %e, "rescues: cannot delete expired archives")
                        }
                    }
                }
                [deadline, expiry]
                    .into_iter()
                    .flatten()
                    .filter(|t| *t > now)
                    .min()
                    .map_or(MAX_SLEEP, |t| {
                        // Deadlines are kept to the nanosecond; wake just after, not before.
                        (t - now).to_std().unwrap_or_default() + Duration::from_millis(5)
                    })
                    .min(MAX_SLEEP)
            }
            Err(e) => {
                tracing::error!(error = %e, "rescues: cannot read the next deadline");
                Duration::from_secs(60)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = rescuer.next_request() => {}
            () = pool.shutdown.cancelled() => return,
        }
    }
}
