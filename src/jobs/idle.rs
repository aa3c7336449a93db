//! Idle reclaim (`pool::idle`): looks at every seat once a second, warns participants of
//! seats idle for long and releases those idle past `idle.reclaim_minutes`.

use std::sync::Arc;
use std::time::Duration;

use crate::pool::{Pool, idle};

const TICK: Duration = Duration::from_secs(1);

pub async fn run(pool: Arc<Pool>) {
    loop {
        if let Err(e) = idle::sweep(&pool).await {
            tracing::error!(error = ?e, "cannot look for idle seats; trying again");
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = pool.shutdown.cancelled() => return,
        }
    }
}
