//! `lablink serve`: the HTTP server of the allocator.

pub mod api;
pub mod auth;
pub mod body;
pub mod client_ip;
pub mod login_limit;
pub mod pages;
pub mod router;
pub mod sessions;
pub mod sse;
pub mod state;
pub mod waiters;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

pub use state::App;

/// How long shutdown waits for requests in flight before closing their connections.
const DRAIN: Duration = Duration::from_secs(2);
/// How long shutdown waits for a provisioning run and local agents to stop.
const PROVISION_STOP: Duration = Duration::from_secs(2);
/// A client must send a complete request head within this time (also the idle limit of
/// a kept-alive connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, answers
/// parked long-polls, lets requests in flight finish (bounded) and commits every
/// acknowledged write before returning.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router::build(app.clone());
    if let Ok(addr) = listener.local_addr() {
        // Local agents reach the allocator on loopback even when it listens on all addresses.
        let host = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        app.provisioner.set_allocator_url(format!("http://{host}"));
    }
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    let scheduler = tokio::spawn(crate::scheduler::run(app.clone()));
    let rebooter = tokio::spawn(crate::autoreboot::run(app.clone()));
    let sweeper = tokio::spawn(sessions::sweep(app.store.clone(), app.shutdown.clone()));
    let trusted = std::sync::Arc::new(app.config.trusted_proxies().unwrap_or_default());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let trusted = trusted.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let client = client_ip::resolve(peer.ip(), req.headers(), &trusted);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req.extensions_mut().insert(client_ip::ClientIp(client));
            router.clone().oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: answering parked long-polls, finishing requests");
    app.shutdown.cancel();
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {DRAIN:?}; closing them");
    }
    let _ = scheduler.await;
    let _ = sweeper.await;
    // A reboot in progress is abandoned; the VM is looked at again after the restart.
    rebooter.abort();
    let _ = rebooter.await;
    // A run in progress is cancelled (its process group stopped); if it does not wrap up
    // in time it is marked interrupted at the next start.
    if tokio::time::timeout(PROVISION_STOP, app.provisioner.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("provisioning did not stop within {PROVISION_STOP:?}; leaving it");
    }
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(std::io::Error::other)?;
    tracing::info!("store closed; bye");
    Ok(())
}
