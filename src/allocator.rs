//! The allocator as one running thing: the background jobs and the HTTP server over one
//! pool, started together and stopped in order (requests drained, jobs stopped, the
//! provisioning run wound down, the store closed).

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::jobs::Jobs;
use crate::server::{self, App};

/// How long shutdown waits for a provisioning run and local agents to stop.
const PROVISION_STOP: Duration = Duration::from_secs(2);

/// Runs `app` on `listener` until `shutdown` resolves; returns once every acknowledged
/// write is committed and the store closed.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let jobs = Jobs::start(&app.pool);
    let served = server::serve(listener, app.clone(), shutdown).await;
    // `serve` cancels the pool's shutdown token on its way out, however it ended.
    jobs.stopped().await;
    // A run in progress is cancelled (its process group stopped); if it does not wrap up
    // in time it is marked interrupted at the next start.
    if tokio::time::timeout(PROVISION_STOP, app.provisioner.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("provisioning did not stop within {PROVISION_STOP:?}; leaving it");
    }
    crate::pool::admin_tokens::flush(&app.pool).await;
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(std::io::Error::other)?;
    tracing::info!("store closed; bye");
    served
}
