//! Meters the pool's cost: every `METER_SECONDS` of the pool's clock the VM records' cost
//! since the last meter is added to the running event's spend (or to the spend outside
//! events) in the store.

use std::sync::Arc;
use std::time::Duration;

use crate::pool::{Pool, budget};

/// How often the clock is looked at.
const TICK: Duration = Duration::from_secs(1);

/// Seconds of the pool's clock between two meters.
pub const METER_SECONDS: i64 = 60;

pub async fn run(pool: Arc<Pool>) {
    loop {
        if let Err(e) = budget::meter(&pool, METER_SECONDS).await {
            tracing::error!(error = %e, "cannot meter the pool's cost");
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = pool.shutdown.cancelled() => return,
        }
    }
}
