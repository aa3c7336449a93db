//! The allocator's HTTP side: the participant pages, the admin console and the JSON API
//! over the pool (`crate::pool`). `crate::allocator` runs it together with the jobs.

pub mod api;
pub mod auth;
pub mod body;
pub mod client_ip;
pub mod login_limit;
pub mod observe;
pub mod pages;
pub mod router;
pub mod sessions;
pub mod sse;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

pub use state::App;

/// How long shutdown waits for requests in flight before closing their connections.
const DRAIN: Duration = Duration::from_secs(2);
/// With `server.max_connections` connections open, a new one waits this long for one of
/// them to end; then it is answered 503 and closed.
const CONNECTION_WAIT: Duration = Duration::from_secs(1);
/// What a connection beyond `server.max_connections` is told before it is closed.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
    retry-after: 1\r\nconnection: close\r\ncontent-length: 57\r\n\r\n\
    {\"error\": \"Too many connections; try again in a moment.\"}";

/// One of the `server.max_connections` slots when none was free at once: waited for (in
/// the connection's own task, so accepting goes on) up to `CONNECTION_WAIT`.
async fn connection_slot(
    connections: Arc<Semaphore>,
    stopping: &tokio_util::sync::CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        slot = tokio::time::timeout(CONNECTION_WAIT, connections.acquire_owned()) => {
            slot.ok()?.ok()
        }
        () = stopping.cancelled() => None,
    }
}

/// A connection served to its end, holding its slot meanwhile. A combinator rather than
/// an async block: the task of each of thousands of parked agents holds the connection
/// once, not also the parts it was made of.
fn served(
    conn: impl Future<Output = hyper::Result<()>>,
    slot: OwnedSemaphorePermit,
    peer: SocketAddr,
) -> impl Future<Output = ()> {
    conn.map(move |ended| {
        drop(slot);
        if let Err(e) = ended {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    })
}

/// Serves `conn` (upgrades included: desktop WebSockets and tunnels) to its end; once
/// `stopping` is cancelled, lets the request in flight finish and closes it.
async fn drained<I, S, B>(
    conn: hyper::server::conn::http1::UpgradeableConnection<I, S>,
    stopping: tokio_util::sync::CancellationToken,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => return ended,
        () = stopping.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// TCP keep-alive probes: a peer that vanished without closing (a VM switched off, a
/// laptop's lid shut) is noticed by the kernel within about two minutes, even on a
/// connection that carries nothing (a parked long-poll, an idle desktop stream or tunnel).
fn keep_alive(stream: &tokio::net::TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(stream, sockopt::KeepAlive, &true);
    let _ = setsockopt(stream, sockopt::TcpKeepIdle, &60);
    let _ = setsockopt(stream, sockopt::TcpKeepInterval, &15);
    let _ = setsockopt(stream, sockopt::TcpKeepCount, &4);
}

/// Logs a connection refused for `server.max_connections`: a warning at most once a
/// minute (a flood must not flood the log too), the rest at debug level.
fn refused_connection(peer: SocketAddr) {
    use std::sync::atomic::AtomicU64;
    static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_WARNED.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST_WARNED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(%peer, "server.max_connections reached; refusing new connections");
    } else {
        tracing::debug!(%peer, "server.max_connections reached; refused a connection");
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, cancels the
/// pool's shutdown token (parked long-polls answer, jobs stop) and lets requests in flight
/// finish (bounded).
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router::build(app.clone());
    if let Ok(addr) = listener.local_addr() {
        let _ = app.listening.set(addr);
        // Local agents reach the allocator on loopback even when it listens on all addresses.
        let host = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        app.provisioner.set_allocator_url(format!("http://{host}"));
    }
    let connections_open = tokio_util::task::TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.config.header_timeout())
        .max_header_size(usize::try_from(app.config.server.max_header_bytes).unwrap_or(65536))
        .keep_alive(true);
    let body_timeout = app.config.body_timeout();
    let rescue_timeout = app.config.rescue_timeout();
    let max_connections = usize::try_from(app.config.server.max_connections)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(max_connections));
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
        keep_alive(&stream);
        let router = router.clone();
        let state = app.clone();
        let trusted = trusted.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let client = client_ip::resolve(peer.ip(), req.headers(), &trusted);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req.extensions_mut().insert(client_ip::ClientIp(client));
            let expired = Arc::new(AtomicBool::new(false));
            let body_timeout = if router::is_rescue_upload(&req) {
                body_timeout.max(rescue_timeout)
            } else {
                body_timeout
            };
            let req = req.map(|b| body::DeadlineBody::new(b, body_timeout, expired.clone()));
            let handled = if router::is_long_poll(&req) {
                Either::Left(router::long_poll(state.clone(), req))
            } else {
                Either::Right(router.clone().oneshot(req))
            };
            async move {
                let response = handled.await?;
                if expired.load(Ordering::Acquire) {
                    return Ok(body::timed_out(body_timeout, &response));
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        if let Ok(slot) = connections.clone().try_acquire_owned() {
            let conn = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            connections_open.spawn(served(drained(conn, app.shutdown.clone()), slot, peer));
            continue;
        }
        let http = http.clone();
        let connections = connections.clone();
        let stopping = app.shutdown.clone();
        connections_open.spawn(async move {
            let Some(slot) = connection_slot(connections, &stopping).await else {
                refused_connection(peer);
                let _ = stream.try_write(FULL);
                return;
            };
            let conn = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            served(drained(conn, stopping), slot, peer).await;
        });
    }
    drop(listener);
    tracing::info!("shutting down: answering parked long-polls, finishing requests");
    app.shutdown.cancel();
    connections_open.close();
    if tokio::time::timeout(DRAIN, connections_open.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {DRAIN:?}; closing them");
    }
    let _ = sweeper.await;
    Ok(())
}
