//! One broadcast's fan-out: the allocator holds ONE stream to the seat on air and hands a
//! copy of every framebuffer update to each watching participant, so the seat's VNC server
//! encodes the screen once however many watch. A viewer starts at a keyframe (an update
//! covering the whole screen); joining or falling behind asks for one, and such asks are
//! coalesced to one every `KEYFRAME_EVERY`, so a room joining at once costs one encode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::broadcast::OnAir;
use super::desktop::{DesktopStream, Desktops, Viewer};
use super::error::PoolError;
use crate::rfb::RfbError;
use crate::rfb::fanout::{self as rfb, ServerInit};

/// Participants watching one broadcast at once.
const MAX_VIEWERS: usize = 400;
/// Updates a viewer may fall behind before it skips to the next keyframe.
const BACKLOG: usize = 16;
/// At most this many update requests per second go to the seat (10).
const REQUEST_EVERY: Duration = Duration::from_millis(100);
/// Keyframe requests, however many viewers join or fall behind, at most this often.
const KEYFRAME_EVERY: Duration = Duration::from_millis(500);
/// What a viewer's stream buffers between the hub and its websocket.
const VIEWER_BUFFER: usize = 256 * 1024;
/// A viewer that has not finished its handshake within this is dropped.
const VIEWER_HANDSHAKE: Duration = Duration::from_secs(30);
/// What one read from the seat's stream may take.
const READ_BUFFER: usize = 64 * 1024;

#[derive(Clone)]
struct Message {
    bytes: Bytes,
    keyframe: bool,
}

#[derive(Clone)]
enum Ready {
    Opening,
    Open(Arc<ServerInit>),
    Ended(String),
}

/// The fan-out of broadcast `id`, from its first viewer until its stream ends.
pub struct Hub {
    pub id: u64,
    host: String,
    updates: broadcast::Sender<Message>,
    ready: watch::Sender<Ready>,
    want_keyframe: AtomicBool,
    /// An update request is waiting for its answer.
    outstanding: AtomicBool,
    /// Wakes the request loop: an update arrived, or a viewer wants a keyframe.
    wake: Notify,
    /// Cancelled when the stream to the seat ends: every viewer's stream ends with it.
    ended: CancellationToken,
}

impl Hub {
    fn new(id: u64, host: &str) -> Hub {
        Hub {
            id,
            host: host.to_owned(),
            updates: broadcast::channel(BACKLOG).0,
            ready: watch::channel(Ready::Opening).0,
            want_keyframe: AtomicBool::new(false),
            outstanding: AtomicBool::new(false),
            wake: Notify::new(),
            ended: CancellationToken::new(),
        }
    }

    /// Whether it still serves (a new viewer of an ended hub starts a new one).
    pub fn live(&self) -> bool {
        !self.ended.is_cancelled()
    }

    fn ask_keyframe(&self) {
        self.want_keyframe.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn end(&self, reason: &str) {
        self.ready.send_replace(Ready::Ended(reason.to_owned()));
        self.ended.cancel();
    }

    /// Starts broadcast `on_air`'s hub: a task opens the stream to its seat and fans it out
    /// until the broadcast's streams are cut, the seat's stream ends or the allocator stops.
    pub(super) fn start(
        on_air: &OnAir,
        desktops: Arc<Desktops>,
        mut air: watch::Receiver<Option<OnAir>>,
        open_timeout: Duration,
        stopping: CancellationToken,
    ) -> Arc<Hub> {
        let hub = Arc::new(Hub::new(on_air.id, &on_air.hostname));
        let running = hub.clone();
        tokio::spawn(async move {
            let hub = running;
            let opened = desktops
                .open(&hub.host, Viewer::Broadcast, open_timeout, &stopping)
                .await;
            let mut stream = match opened {
                // Stopped or switched while opening: the cut may have come before this
                // stream took its token.
                Ok(_) if air.borrow_and_update().as_ref().map(|b| b.id) != Some(hub.id) => {
                    return hub.end("The broadcast ended.");
                }
                Ok(stream) => stream,
                Err(e) => return hub.end(&e.to_string()),
            };
            let cut = stream.cut.clone();
            let reason = tokio::select! {
                pumped = hub.pump(&mut stream.tunnel, open_timeout) => match pumped {
                    Ok(()) => "the seat's desktop closed".to_owned(),
                    Err(e) => e.to_string(),
                },
                () = cut.cancelled() => "the broadcast stopped".to_owned(),
                () = stopping.cancelled() => "the allocator is stopping".to_owned(),
            };
            tracing::info!(vm = %hub.host, %reason, "broadcast stream ended");
            hub.end("The broadcast stream ended; the page reconnects.");
        });
        hub
    }

    /// The seat's side: the handshake, then requests paced to `REQUEST_EVERY` and every
    /// update read whole and sent to the viewers, until the stream ends.
    async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        server: &mut S,
        handshake: Duration,
    ) -> Result<(), RfbError> {
        let init = tokio::time::timeout(handshake, rfb::connect(server))
            .await
            .map_err(|_| {
                RfbError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the seat's desktop did not finish its handshake",
                ))
            })??;
        let init = Arc::new(init);
        self.ready.send_replace(Ready::Open(init.clone()));
        let (from_seat, mut to_seat) = tokio::io::split(server);
        let mut from_seat = BufReader::with_capacity(READ_BUFFER, from_seat);
        let read = async {
            loop {
                let update = rfb::read_update(&mut from_seat, &init).await?;
                self.outstanding.store(false, Ordering::SeqCst);
                // Cleared before the keyframe goes out: a viewer subscribing after it
                // went sets the flag again.
                if update.full {
                    self.want_keyframe.store(false, Ordering::SeqCst);
                }
                let _ = self.updates.send(Message {
                    bytes: update.bytes.into(),
                    keyframe: update.full,
                });
                self.wake.notify_one();
            }
        };
        let ask = async {
            let mut last_request: Option<Instant> = None;
            let mut last_keyframe: Option<Instant> = None;
            loop {
                let now = Instant::now();
                let watched = self.updates.receiver_count() > 0;
                let keyframe_at = last_keyframe.map_or(now, |at| at + KEYFRAME_EVERY);
                let request_at = last_request.map_or(now, |at| at + REQUEST_EVERY);
                let want_keyframe = watched && self.want_keyframe.load(Ordering::SeqCst);
                let can_request = watched && !self.outstanding.load(Ordering::SeqCst);
                // A keyframe request does not wait for the outstanding one: on a still
                // screen that may never be answered.
                let incremental = if want_keyframe && keyframe_at <= now {
                    last_keyframe = Some(now);
                    Some(false)
                } else if can_request && request_at <= now {
                    Some(true)
                } else {
                    None
                };
                if let Some(incremental) = incremental {
                    last_request = Some(now);
                    self.outstanding.store(true, Ordering::SeqCst);
                    to_seat.write_all(&rfb::request(&init, incremental)).await?;
                    to_seat.flush().await?;
                    continue;
                }
                let due = [
                    want_keyframe.then_some(keyframe_at),
                    can_request.then_some(request_at),
                ]
                .into_iter()
                .flatten()
                .min();
                match due {
                    Some(due) => tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep_until(due) => {}
                    },
                    None => self.wake.notified().await,
                }
            }
        };
        tokio::select! {
            read = read => read,
            asked = ask => asked,
        }
    }

    /// A new viewer: waits for the seat's stream to open, then serves the viewer's RFB
    /// session on the returned stream (which the relay carries to the browser).
    pub(super) async fn join(self: &Arc<Self>) -> Result<DesktopStream, PoolError> {
        let mut ready = self.ready.subscribe();
        let init = loop {
            let state = ready.borrow_and_update().clone();
            match state {
                Ready::Opening => {}
                Ready::Open(init) => break init,
                Ready::Ended(reason) => return Err(PoolError::Unavailable(reason)),
            }
            // The hub holds the sender: this only returns once the state changed.
            let _ = ready.changed().await;
        };
        if self.updates.receiver_count() >= MAX_VIEWERS {
            return Err(PoolError::Unavailable(format!(
                "The broadcast has {MAX_VIEWERS} viewers already; try again later."
            )));
        }
        let (ours, theirs) = tokio::io::duplex(VIEWER_BUFFER);
        let hub = self.clone();
        tokio::spawn(async move {
            if let Err(e) = hub.serve(ours, &init).await {
                tracing::debug!(vm = %hub.host, error = %e, "broadcast viewer dropped");
            }
        });
        Ok(DesktopStream::served(
            Box::new(theirs),
            self.ended.child_token(),
            self.host.clone(),
        ))
    }

    /// One viewer's session: the handshake, then the updates from the next keyframe on;
    /// what the viewer sends is read and dropped.
    async fn serve<V: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut viewer: V,
        init: &ServerInit,
    ) -> Result<(), RfbError> {
        tokio::time::timeout(VIEWER_HANDSHAKE, rfb::greet(&mut viewer, init))
            .await
            .map_err(|_| RfbError::ViewerTimeout(VIEWER_HANDSHAKE))??;
        let mut updates = self.updates.subscribe();
        self.ask_keyframe();
        let (mut from_viewer, mut to_viewer) = tokio::io::split(viewer);
        let send = async {
            let mut synced = false;
            loop {
                match updates.recv().await {
                    Ok(message) => {
                        synced |= message.keyframe;
                        if synced {
                            to_viewer.write_all(&message.bytes).await?;
                            to_viewer.flush().await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        synced = false;
                        self.ask_keyframe();
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        };
        tokio::select! {
            sent = send => sent,
            drained = rfb::drain_viewer(&mut from_viewer) => drained,
            () = self.ended.cancelled() => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream};

    const SIZE: u16 = 64;

    fn screen() -> ServerInit {
        ServerInit {
            width: SIZE,
            height: SIZE,
            name: b"seat".to_vec(),
        }
    }

    /// A hub fanning out the fake seat at the other end of the returned stream.
    fn running_hub() -> (Arc<Hub>, DuplexStream) {
        let hub = Arc::new(Hub::new(1, "vm-1"));
        let (mut ours, seat) = tokio::io::duplex(64 * 1024);
        let running = hub.clone();
        tokio::spawn(async move {
            let pumped = running.pump(&mut ours, Duration::from_secs(10)).await;
            running.end(&format!("{pumped:?}"));
        });
        (hub, seat)
    }

    /// The seat's side of the handshake, up to the pixel format and encodings asked for.
    async fn seat_handshake(seat: &mut DuplexStream) {
        seat.write_all(b"RFB 003.008\n\x01\x01")
            .await
            .expect("greet");
        let mut answer = [0; 13];
        seat.read_exact(&mut answer).await.expect("version, type");
        seat.write_all(&[0; 4]).await.expect("result");
        let mut shared = [0];
        seat.read_exact(&mut shared).await.expect("client init");
        let mut init = vec![0, SIZE as u8, 0, SIZE as u8];
        init.extend_from_slice(&rfb::NOVNC_SET_PIXEL_FORMAT[4..]);
        init.extend_from_slice(&[0, 0, 0, 0]);
        seat.write_all(&init).await.expect("server init");
        let mut asked = [0; 36];
        seat.read_exact(&mut asked)
            .await
            .expect("format, encodings");
    }

    /// Whether the seat's next request asks for a full (not incremental) update.
    async fn next_request(seat: &mut DuplexStream) -> bool {
        let mut request = [0; 10];
        seat.read_exact(&mut request).await.expect("request");
        assert_eq!(request[0], 3);
        request[1] == 0
    }

    /// Reads requests until a non-incremental one.
    async fn keyframe_request(seat: &mut DuplexStream) {
        while !next_request(seat).await {}
    }

    /// An update of one Raw rectangle, every byte `mark`: the whole screen, or its top half.
    fn update(mark: u8, full: bool) -> Vec<u8> {
        let h = if full { SIZE } else { SIZE / 2 };
        let mut m = vec![
            0, 0, 0, 1, 0, 0, 0, 0, 0, SIZE as u8, 0, h as u8, 0, 0, 0, 0,
        ];
        m.extend(std::iter::repeat_n(
            mark,
            usize::from(SIZE) * usize::from(h) * 4,
        ));
        m
    }

    /// A viewer's handshake on a joined stream, as noVNC does it.
    async fn viewer_handshake(viewer: &mut DesktopStream) {
        let t = &mut viewer.tunnel;
        let mut version = [0; 12];
        t.read_exact(&mut version).await.expect("version");
        t.write_all(b"RFB 003.008\n").await.expect("version");
        let mut types = [0; 2];
        t.read_exact(&mut types).await.expect("types");
        t.write_all(&[1]).await.expect("none");
        let mut result = [0; 4];
        t.read_exact(&mut result).await.expect("result");
        t.write_all(&[1]).await.expect("client init");
        // The fake seat's desktop has no name.
        let mut init = [0; 24];
        t.read_exact(&mut init).await.expect("server init");
        assert_eq!(init[..4], [0, SIZE as u8, 0, SIZE as u8]);
        t.write_all(&rfb::NOVNC_SET_PIXEL_FORMAT)
            .await
            .expect("format");
    }

    /// The mark of the viewer's next update, and whether it was full.
    async fn next_update(viewer: &mut DesktopStream) -> (u8, bool) {
        let update = rfb::read_update(&mut viewer.tunnel, &screen())
            .await
            .expect("update");
        (update.bytes[16], update.full)
    }

    async fn join(hub: &Arc<Hub>) -> DesktopStream {
        let mut viewer = hub.join().await.expect("joined");
        viewer_handshake(&mut viewer).await;
        viewer
    }

    /// Until the hub serves `n` viewers (each subscribes just after its handshake).
    async fn viewers(hub: &Hub, n: usize) {
        while hub.updates.receiver_count() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_viewer_starts_at_a_keyframe() {
        let (hub, mut seat) = running_hub();
        let joining = tokio::spawn({
            let hub = hub.clone();
            async move { join(&hub).await }
        });
        seat_handshake(&mut seat).await;
        let mut a = joining.await.expect("join");
        keyframe_request(&mut seat).await;
        seat.write_all(&update(1, false)).await.expect("sent");
        seat.write_all(&update(2, true)).await.expect("sent");
        seat.write_all(&update(3, false)).await.expect("sent");
        assert_eq!(next_update(&mut a).await, (2, true));
        assert_eq!(next_update(&mut a).await, (3, false));

        let mut b = join(&hub).await;
        viewers(&hub, 2).await;
        seat.write_all(&update(4, false)).await.expect("sent");
        keyframe_request(&mut seat).await;
        seat.write_all(&update(5, true)).await.expect("sent");
        assert_eq!(
            next_update(&mut b).await,
            (5, true),
            "not the update before"
        );
        assert_eq!(next_update(&mut a).await, (4, false));
        assert_eq!(next_update(&mut a).await, (5, true));
    }

    #[tokio::test]
    async fn a_viewer_that_falls_behind_skips_to_the_next_keyframe() {
        let (hub, mut seat) = running_hub();
        let joining = tokio::spawn({
            let hub = hub.clone();
            async move { join(&hub).await }
        });
        seat_handshake(&mut seat).await;
        let mut slow = joining.await.expect("join");
        keyframe_request(&mut seat).await;
        seat.write_all(&update(0, true)).await.expect("sent");
        // Far more than the viewer's buffer and the backlog hold, while it reads nothing.
        for mark in 1..=100 {
            seat.write_all(&update(mark, false)).await.expect("sent");
        }
        // The viewer asks for a keyframe once it reads again and finds it fell behind.
        let answering = tokio::spawn(async move {
            keyframe_request(&mut seat).await;
            seat.write_all(&update(200, true)).await.expect("sent");
            seat
        });
        let mut marks = Vec::new();
        loop {
            let (mark, full) = next_update(&mut slow).await;
            marks.push(mark);
            if mark == 200 {
                assert!(full);
                break;
            }
        }
        let _seat = answering.await.expect("answered");
        let behind = marks.len() - 2;
        assert!(behind < 100, "it lagged: {marks:?}");
        let expected: Vec<u8> = (0..=behind as u8).chain([200]).collect();
        assert_eq!(
            marks, expected,
            "a run from the first keyframe, then the next"
        );
    }

    #[tokio::test]
    async fn viewers_joining_together_cost_one_keyframe() {
        let (hub, mut seat) = running_hub();
        let first = tokio::spawn({
            let hub = hub.clone();
            async move { join(&hub).await }
        });
        seat_handshake(&mut seat).await;
        let mut room = vec![first.await.expect("join")];
        keyframe_request(&mut seat).await;
        let started = Instant::now();
        // The first keyframe is not answered until the whole room is in.
        for _ in 1..10 {
            room.push(join(&hub).await);
        }
        viewers(&hub, 10).await;
        let joined = started.elapsed();
        seat.write_all(&update(1, true)).await.expect("sent");
        for viewer in &mut room {
            assert_eq!(next_update(viewer).await, (1, true));
        }
        // Every request since, until the hub has nothing more to ask.
        let mut requests = Vec::new();
        while let Ok(full) =
            tokio::time::timeout(Duration::from_millis(800), next_request(&mut seat)).await
        {
            requests.push(full);
        }
        let keyframes = requests.iter().filter(|full| **full).count();
        // Requests come at most once per KEYFRAME_EVERY; none once answered.
        let allowed = (joined.as_millis() / KEYFRAME_EVERY.as_millis()) as usize;
        assert!(
            keyframes <= allowed,
            "{} keyframe requests for 10 viewers joining in {joined:?}",
            keyframes + 1
        );
        assert!(
            requests.last() == Some(&false),
            "the hub goes on with incremental requests: {requests:?}"
        );
    }

    #[tokio::test]
    async fn an_encoding_the_hub_cannot_frame_ends_the_broadcast_stream() {
        let (hub, mut seat) = running_hub();
        let joining = tokio::spawn({
            let hub = hub.clone();
            async move { join(&hub).await }
        });
        seat_handshake(&mut seat).await;
        let viewer = joining.await.expect("join");
        keyframe_request(&mut seat).await;
        // A Tight rectangle.
        seat.write_all(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 4, 0, 0, 0, 7])
            .await
            .expect("sent");
        viewer.cut.cancelled().await;
        assert!(!hub.live());
        let refused = hub.join().await.map(|_| ()).expect_err("ended");
        assert!(
            refused.to_string().contains("UpdateEncoding(7)"),
            "{refused}"
        );
    }
}
