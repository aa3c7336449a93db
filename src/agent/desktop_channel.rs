//! The agent's standing desktop channel: it dials out to the allocator (no inbound port on
//! the VM) and, for every stream a viewer asks for, connects to the local VNC server,
//! authenticates with the seat's password, dials a tunnel back and relays the RFB stream
//! (input dropped for a view-only viewer). Comes back by itself after the allocator
//! restarts or the network drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::api::{Allocator, CallError};
use super::retry::backoff;
use super::vnc::Endpoint;

/// Where a stream's VNC server is: the seat's own (`vnc::VncServer`), or any running
/// server (the bench's).
pub trait DesktopSource: Send + Sync + 'static {
    /// The server to connect to, or why there is none right now.
    fn endpoint(&self) -> Result<Endpoint, String>;
}

/// The allocator sends a keep-alive line every 20 s: this much silence means it is gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(65);
/// An allocator without browser desktops (upstream's) is asked again this rarely.
const NOT_SERVED_RETRY: Duration = Duration::from_secs(300);
/// The VNC handshake on loopback takes milliseconds; a server that hangs must not hold a
/// viewer longer than this.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// The viewer (the allocator's relay, and the browser behind it) must finish its side of
/// the handshake within this, or the VNC connection it holds is given back.
const VIEWER_HANDSHAKE: Duration = Duration::from_secs(30);
/// A channel open this long counted as working.
const STABLE: Duration = Duration::from_secs(60);
/// A longer line than any open request is not from our allocator.
const MAX_LINE: usize = 4096;

/// How many streams with input (the participant's, or an instructor's taking control) are
/// open right now: whether a desktop is connected, for the session metrics.
#[derive(Debug, Default)]
pub struct OpenStreams(AtomicUsize);

impl OpenStreams {
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// Counts a stream as open while it lives.
struct Counted(Arc<OpenStreams>);

impl Counted {
    fn new(open: Arc<OpenStreams>) -> Counted {
        open.0.fetch_add(1, Ordering::Relaxed);
        Counted(open)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Deserialize)]
struct Open {
    id: String,
    view_only: bool,
}

pub async fn run(
    alloc: Arc<Allocator>,
    vnc: Arc<dyn DesktopSource>,
    open: Arc<OpenStreams>,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let mut delays = backoff(Duration::from_secs(30));
    let mut told_not_served = false;
    loop {
        let opened = tokio::select! {
            opened = alloc.desktop_channel() => opened,
            () = cancel.cancelled() => return Ok(()),
        };
        let pause = match opened {
            Ok(channel) => {
                tracing::info!("desktop channel open");
                let opened = tokio::time::Instant::now();
                let ended = listen(channel, &alloc, &vnc, &open, &cancel).await;
                if cancel.is_cancelled() {
                    return Ok(());
                }
                // A channel that lasted starts the waits over; one closed at once (a proxy
                // that cuts long requests) backs off like a failure.
                if opened.elapsed() >= STABLE {
                    delays = backoff(Duration::from_secs(30));
                }
                tracing::warn!(reason = %ended, "desktop channel closed; reconnecting");
                delays.next().unwrap_or(Duration::from_secs(30))
            }
            Err(CallError::NotFound) => {
                if !told_not_served {
                    tracing::info!(
                        "the allocator serves no browser desktops (an older version); asking again every {NOT_SERVED_RETRY:?}"
                    );
                    told_not_served = true;
                }
                NOT_SERVED_RETRY
            }
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in = ?delay, "cannot open the desktop channel");
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return Ok(()),
        }
    }
}

/// Reads open requests off the channel until it ends; why it ended.
async fn listen(
    mut channel: reqwest::Response,
    alloc: &Arc<Allocator>,
    vnc: &Arc<dyn DesktopSource>,
    streams: &Arc<OpenStreams>,
    cancel: &CancellationToken,
) -> String {
    let mut line = Vec::new();
    loop {
        let chunk = tokio::select! {
            chunk = tokio::time::timeout(SILENCE_LIMIT, channel.chunk()) => chunk,
            () = cancel.cancelled() => return "stopping".into(),
        };
        let bytes = match chunk {
            Err(_) => return format!("nothing heard for {SILENCE_LIMIT:?}"),
            Ok(Err(e)) => return e.to_string(),
            Ok(Ok(None)) => return "the allocator closed it".into(),
            Ok(Ok(Some(bytes))) => bytes,
        };
        for &byte in bytes.iter() {
            if byte != b'\n' {
                if line.len() == MAX_LINE {
                    return "an over-long line".into();
                }
                line.push(byte);
                continue;
            }
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Open>(&line) {
                Ok(open) => {
                    tokio::spawn(serve_stream(
                        alloc.clone(),
                        vnc.clone(),
                        streams.clone(),
                        open,
                    ));
                }
                Err(e) => tracing::warn!(error = %e, "unreadable line on the desktop channel"),
            }
            line.clear();
        }
    }
}

/// One viewer's stream: refused with the reason when the desktop cannot be reached.
async fn serve_stream(
    alloc: Arc<Allocator>,
    vnc: Arc<dyn DesktopSource>,
    streams: Arc<OpenStreams>,
    open: Open,
) {
    let server = match connect(vnc.as_ref()).await {
        Ok(server) => server,
        Err(reason) => {
            tracing::warn!(%reason, "cannot open a desktop stream");
            if let Err(e) = alloc.refuse_desktop(&open.id, &reason).await {
                tracing::warn!(error = %e, "cannot tell the allocator");
            }
            return;
        }
    };
    let tunnel = match alloc.desktop_tunnel(&open.id).await {
        Ok(tunnel) => tunnel,
        Err(e) => {
            tracing::warn!(error = %e, "cannot dial the desktop tunnel back");
            return;
        }
    };
    tracing::info!(view_only = open.view_only, "desktop stream open");
    let _counted = (!open.view_only).then(|| Counted::new(streams));
    match crate::rfb::serve(tunnel, server, open.view_only, VIEWER_HANDSHAKE).await {
        Ok(()) => tracing::info!("desktop stream closed"),
        Err(e) => tracing::info!(error = %e, "desktop stream ended"),
    }
}

/// The local VNC server, authenticated with the seat's password.
pub(super) async fn connect(vnc: &dyn DesktopSource) -> Result<tokio::net::TcpStream, String> {
    let endpoint = vnc.endpoint()?;
    let mut server = tokio::net::TcpStream::connect(("127.0.0.1", endpoint.port))
        .await
        .map_err(|e| format!("the VNC server on port {} refused: {e}", endpoint.port))?;
    let _ = server.set_nodelay(true);
    match tokio::time::timeout(
        HANDSHAKE_LIMIT,
        crate::rfb::authenticate(&mut server, &endpoint.password),
    )
    .await
    {
        Ok(Ok(())) => Ok(server),
        Ok(Err(e)) => Err(format!("VNC handshake failed: {e}")),
        Err(_) => Err(format!(
            "the VNC server did not complete its handshake within {HANDSHAKE_LIMIT:?}"
        )),
    }
}
