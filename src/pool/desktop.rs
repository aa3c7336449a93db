//! Browser desktops: each VM's agent keeps a desktop channel open to the allocator; a
//! viewer (the participant, or the instructor's peek) asks for a stream, the agent is told
//! on its channel and dials back a tunnel carrying the VM's VNC stream, which is handed to
//! the waiting viewer. Also who is watching which seat, and cutting a seat's streams when
//! the seat changes hands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::error::PoolError;
use super::{Actor, Pool};
use crate::model::{DesktopKind, Vm};

/// A byte stream between the allocator and a VM's VNC server (through its agent).
pub trait TunnelIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> TunnelIo for T {}
pub type Tunnel = Box<dyn TunnelIo>;

/// Opens waiting on one agent's channel; past this the viewer is told to try again.
const CHANNEL_BACKLOG: usize = 32;
/// Streams open to one VM at once (the participant's tabs and the instructor's views):
/// each holds a connection to the VM's VNC server.
const MAX_STREAMS_PER_VM: usize = 8;
/// Of those, the participant's: the rest stay free for the instructor.
const MAX_PARTICIPANT_STREAMS: usize = 6;
/// Broadcast streams of one VM's desktop, counted apart from the above: one per broadcast
/// (its fan-out serves the viewers), more only while a cut one is still closing.
const MAX_BROADCAST_STREAMS: usize = 400;

/// What the agent is asked on its channel: dial back a tunnel for stream `id`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OpenRequest {
    pub id: String,
    /// Input from this viewer must not reach the desktop.
    pub view_only: bool,
}

/// Who a stream is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewer {
    Participant,
    /// The instructor watching, without input.
    Peek,
    /// The instructor driving the desktop.
    Control,
    /// The broadcast's one stream, which the allocator fans out to the participants.
    Broadcast,
}

impl Viewer {
    pub fn view_only(self) -> bool {
        matches!(self, Viewer::Peek | Viewer::Broadcast)
    }

    fn instructor(self) -> bool {
        matches!(self, Viewer::Peek | Viewer::Control)
    }
}

#[derive(Default)]
pub struct Desktops {
    inner: Mutex<Inner>,
    /// The seat wall's latest picture of each seat, dropped with its streams by `cut`.
    pub thumbnails: super::thumbnails::Thumbnails,
}

#[derive(Default)]
struct Inner {
    /// The agent channel of each VM (the latest one, when an agent reconnects).
    channels: HashMap<String, Channel>,
    /// Streams asked for, waiting for their agent's tunnel, by stream id.
    pending: HashMap<String, Pending>,
    seats: HashMap<String, SeatWatch>,
    next_serial: u64,
}

struct Channel {
    serial: u64,
    opens: mpsc::Sender<OpenRequest>,
}

struct Pending {
    host: String,
    reply: oneshot::Sender<Result<Tunnel, String>>,
}

/// Per VM: its streams (open, or waiting for the agent's tunnel), the instructor's open
/// views and controls (shown to the participant), the token that ends every stream of the
/// seat and its child that ends the broadcast's.
struct SeatWatch {
    participant_streams: usize,
    instructor_streams: usize,
    broadcast_streams: usize,
    instructor_views: usize,
    instructor_controls: usize,
    watched: watch::Sender<bool>,
    controlled: watch::Sender<bool>,
    cut: CancellationToken,
    broadcast_cut: CancellationToken,
}

impl SeatWatch {
    fn new() -> SeatWatch {
        let cut = CancellationToken::new();
        SeatWatch {
            participant_streams: 0,
            instructor_streams: 0,
            broadcast_streams: 0,
            instructor_views: 0,
            instructor_controls: 0,
            watched: watch::channel(false).0,
            controlled: watch::channel(false).0,
            broadcast_cut: cut.child_token(),
            cut,
        }
    }

    fn unused(&self) -> bool {
        self.participant_streams + self.instructor_streams + self.broadcast_streams == 0
            && self.watched.receiver_count() == 0
            && self.controlled.receiver_count() == 0
    }

    fn count(&mut self, viewer: Viewer) -> &mut usize {
        match viewer {
            Viewer::Participant => &mut self.participant_streams,
            Viewer::Peek | Viewer::Control => &mut self.instructor_streams,
            Viewer::Broadcast => &mut self.broadcast_streams,
        }
    }
}

/// An agent's open desktop channel: the opens it must answer. Dropping it (the agent's
/// connection closed) forgets the channel unless a newer one replaced it.
pub struct AgentChannel {
    desktops: Arc<Desktops>,
    host: String,
    serial: u64,
    pub opens: mpsc::Receiver<OpenRequest>,
}

impl Drop for AgentChannel {
    fn drop(&mut self) {
        let mut inner = self.desktops.lock();
        if inner
            .channels
            .get(&self.host)
            .is_some_and(|c| c.serial == self.serial)
        {
            inner.channels.remove(&self.host);
        }
    }
}

/// An open stream to a VM's desktop: the tunnel, and the token cancelled when the seat
/// changes hands (the relay must stop then). Dropping it frees its place.
pub struct DesktopStream {
    pub tunnel: Tunnel,
    pub cut: CancellationToken,
    pub host: String,
    _place: Option<Place>,
}

impl DesktopStream {
    /// A stream the allocator serves itself (a viewer of the fanned-out broadcast): it
    /// takes no place among the VM's streams.
    pub(super) fn served(tunnel: Tunnel, cut: CancellationToken, host: String) -> DesktopStream {
        DesktopStream {
            tunnel,
            cut,
            host,
            _place: None,
        }
    }
}

/// A stream's place among its VM's streams, from the request until the stream ends.
struct Place {
    desktops: Arc<Desktops>,
    host: String,
    viewer: Viewer,
    /// An instructor's view is open (and shown to the participant).
    viewing: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut inner = self.desktops.lock();
        let Some(seat) = inner.seats.get_mut(&self.host) else {
            return;
        };
        let count = seat.count(self.viewer);
        *count = count.saturating_sub(1);
        if self.viewing {
            seat.instructor_views = seat.instructor_views.saturating_sub(1);
            seat.watched.send_replace(seat.instructor_views > 0);
            if self.viewer == Viewer::Control {
                seat.instructor_controls = seat.instructor_controls.saturating_sub(1);
                seat.controlled.send_replace(seat.instructor_controls > 0);
            }
        }
        if seat.unused() {
            inner.seats.remove(&self.host);
        }
    }
}

/// Removes a stream's pending entry when its opener gives up (timeout, viewer gone).
struct PendingGuard<'a> {
    desktops: &'a Desktops,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.desktops.lock().pending.remove(&self.id);
    }
}

impl Desktops {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `host`'s agent channel, replacing an older one of the same VM.
    pub fn attach(self: &Arc<Self>, host: &str) -> AgentChannel {
        let (opens_tx, opens) = mpsc::channel(CHANNEL_BACKLOG);
        let mut inner = self.lock();
        inner.next_serial += 1;
        let serial = inner.next_serial;
        inner.channels.insert(
            host.to_owned(),
            Channel {
                serial,
                opens: opens_tx,
            },
        );
        AgentChannel {
            desktops: self.clone(),
            host: host.to_owned(),
            serial,
            opens,
        }
    }

    pub fn attached(&self, host: &str) -> bool {
        self.lock().channels.contains_key(host)
    }

    /// Agents with an open desktop channel.
    pub fn attached_count(&self) -> usize {
        self.lock().channels.len()
    }

    /// Asks `host`'s agent for a stream and waits up to `timeout` for its tunnel (or
    /// until the agent's channel closes or the allocator stops).
    pub(super) async fn open(
        self: &Arc<Self>,
        host: &str,
        viewer: Viewer,
        timeout: Duration,
        stopping: &CancellationToken,
    ) -> Result<DesktopStream, PoolError> {
        let instructor = viewer.instructor();
        let id = crate::store::meta::random_secret();
        let (reply, answer) = oneshot::channel();
        let (opens, cut, mut place) = {
            let mut inner = self.lock();
            let Some(channel) = inner.channels.get(host) else {
                return Err(PoolError::Unavailable(
                    "The desktop of this VM is not reachable yet (its agent is not connected); \
                     it usually is within a minute of the VM starting."
                        .into(),
                ));
            };
            let opens = channel.opens.clone();
            let seat = inner
                .seats
                .entry(host.to_owned())
                .or_insert_with(SeatWatch::new);
            let total = seat.participant_streams + seat.instructor_streams;
            if viewer == Viewer::Broadcast {
                if seat.broadcast_streams >= MAX_BROADCAST_STREAMS {
                    return Err(PoolError::Unavailable(format!(
                        "The broadcast has {MAX_BROADCAST_STREAMS} streams open to this desktop already; try again later."
                    )));
                }
            } else if total >= MAX_STREAMS_PER_VM
                || (!instructor && seat.participant_streams >= MAX_PARTICIPANT_STREAMS)
            {
                return Err(PoolError::Conflict(format!(
                    "This desktop is open in {total} windows already; close one and reload."
                )));
            }
            *seat.count(viewer) += 1;
            let cut = if viewer == Viewer::Broadcast {
                seat.broadcast_cut.clone()
            } else {
                seat.cut.clone()
            };
            inner.pending.insert(
                id.clone(),
                Pending {
                    host: host.to_owned(),
                    reply,
                },
            );
            let place = Place {
                desktops: self.clone(),
                host: host.to_owned(),
                viewer,
                viewing: false,
            };
            (opens, cut, place)
        };
        let _pending = PendingGuard {
            desktops: self,
            id: id.clone(),
        };
        let request = OpenRequest {
            id,
            view_only: viewer.view_only(),
        };
        if opens.try_send(request).is_err() {
            return Err(PoolError::Unavailable(
                "The VM's agent is busy opening other desktop streams; try again in a moment."
                    .into(),
            ));
        }
        let changed_hands =
            || PoolError::Conflict("This seat changed hands while its desktop was opening.".into());
        let tunnel = tokio::select! {
            answered = tokio::time::timeout(timeout, answer) => match answered {
                Ok(Ok(Ok(tunnel))) => tunnel,
                Ok(Ok(Err(reason))) => return Err(PoolError::Unavailable(format!(
                    "The VM could not open its desktop: {reason}"
                ))),
                Ok(Err(_)) | Err(_) => return Err(PoolError::Unavailable(format!(
                    "The VM's agent did not open its desktop within {} s; try again.",
                    timeout.as_secs()
                ))),
            },
            () = opens.closed() => return Err(PoolError::Unavailable(
                "The VM's agent disconnected while opening its desktop; try again in a moment."
                    .into(),
            )),
            () = cut.cancelled() => return Err(changed_hands()),
            () = stopping.cancelled() => return Err(PoolError::Unavailable(
                "The allocator is restarting; the desktop comes back in a moment.".into(),
            )),
        };
        {
            // A cut between the answer and here must still end this stream.
            let mut inner = self.lock();
            if cut.is_cancelled() {
                return Err(changed_hands());
            }
            if instructor && let Some(seat) = inner.seats.get_mut(host) {
                seat.instructor_views += 1;
                seat.watched.send_replace(true);
                if viewer == Viewer::Control {
                    seat.instructor_controls += 1;
                    seat.controlled.send_replace(true);
                }
                place.viewing = true;
            }
        }
        Ok(DesktopStream {
            tunnel,
            cut,
            host: host.to_owned(),
            _place: Some(place),
        })
    }

    /// Whether stream `id` is waiting for `host`'s tunnel.
    pub fn is_pending(&self, host: &str, id: &str) -> bool {
        self.lock().pending.get(id).is_some_and(|p| p.host == host)
    }

    /// Hands `host`'s tunnel to the viewer waiting for stream `id`; false when nobody
    /// waits for it any more (or it is another VM's stream).
    pub fn deliver(&self, host: &str, id: &str, tunnel: Tunnel) -> bool {
        self.answer(host, id, Ok(tunnel))
    }

    /// The agent cannot open stream `id`; the viewer is told why.
    pub fn refuse(&self, host: &str, id: &str, reason: String) -> bool {
        self.answer(host, id, Err(reason))
    }

    fn answer(&self, host: &str, id: &str, answer: Result<Tunnel, String>) -> bool {
        let pending = {
            let mut inner = self.lock();
            if inner.pending.get(id).is_none_or(|p| p.host != host) {
                return false;
            }
            inner.pending.remove(id)
        };
        pending.is_some_and(|p| p.reply.send(answer).is_ok())
    }

    /// Whether the instructor is viewing `host`'s desktop, as it changes.
    pub fn watched(&self, host: &str) -> watch::Receiver<bool> {
        self.lock()
            .seats
            .entry(host.to_owned())
            .or_insert_with(SeatWatch::new)
            .watched
            .subscribe()
    }

    /// Whether the instructor controls `host`'s desktop, as it changes.
    pub fn controlled(&self, host: &str) -> watch::Receiver<bool> {
        self.lock()
            .seats
            .entry(host.to_owned())
            .or_insert_with(SeatWatch::new)
            .controlled
            .subscribe()
    }

    /// Cancelled when `host`'s current seat ends (`cut`): for what lives as long as it.
    pub fn seat_cut(&self, host: &str) -> CancellationToken {
        self.lock()
            .seats
            .entry(host.to_owned())
            .or_insert_with(SeatWatch::new)
            .cut
            .clone()
    }

    /// Ends every stream of `host`, open or opening, and drops its thumbnail (its seat
    /// changed hands, or the VM went).
    pub fn cut(&self, host: &str) {
        self.thumbnails.forget(host);
        let mut inner = self.lock();
        if let Some(seat) = inner.seats.get_mut(host) {
            seat.cut.cancel();
            seat.cut = CancellationToken::new();
            seat.broadcast_cut = seat.cut.child_token();
            if seat.unused() {
                inner.seats.remove(host);
            }
        }
    }

    /// Ends the broadcast streams of `host`, open or opening (the broadcast stopped).
    pub fn cut_broadcast(&self, host: &str) {
        let mut inner = self.lock();
        if let Some(seat) = inner.seats.get_mut(host) {
            seat.broadcast_cut.cancel();
            seat.broadcast_cut = seat.cut.child_token();
        }
    }

    /// Broadcast streams of `host`, open or opening.
    pub fn broadcast_streams(&self, host: &str) -> usize {
        self.lock()
            .seats
            .get(host)
            .map_or(0, |s| s.broadcast_streams)
    }

    /// The participant's streams to `host`, open or opening.
    pub fn participant_streams(&self, host: &str) -> usize {
        self.lock()
            .seats
            .get(host)
            .map_or(0, |s| s.participant_streams)
    }

    /// Streams open or opening, all VMs together.
    pub fn streams(&self) -> usize {
        self.lock()
            .seats
            .values()
            .map(|s| s.participant_streams + s.instructor_streams + s.broadcast_streams)
            .sum()
    }
}

/// `viewer`'s stream of `host`'s desktop, waiting as configured and ending when the
/// allocator stops.
pub(super) async fn open_stream(
    pool: &Pool,
    host: &str,
    viewer: Viewer,
) -> Result<DesktopStream, PoolError> {
    pool.desktops
        .open(
            host,
            viewer,
            pool.config.desktop_open_timeout(),
            &pool.shutdown,
        )
        .await
}

/// The participant's own desktop: their seat must be a browser seat.
pub async fn open_for_participant(pool: &Pool, vm: &Vm) -> Result<DesktopStream, PoolError> {
    match vm.assignment.as_ref().map(|a| a.desktop) {
        Some(DesktopKind::Browser) => {}
        Some(DesktopKind::Crd) => {
            return Err(PoolError::Conflict(
                "Your seat uses Chrome Remote Desktop, not the browser desktop.".into(),
            ));
        }
        None => return Err(PoolError::Forbidden("This seat is not yours.".into())),
    }
    let stream = open_stream(pool, &vm.hostname, Viewer::Participant).await?;
    // The first stream of the seat is when its desktop answered, for the event's report.
    if vm
        .assignment
        .as_ref()
        .is_some_and(|a| a.desktop_ready_at.is_none())
        && let Err(e) = super::report::desktop_ready(pool, &vm.hostname, DesktopKind::Browser).await
    {
        tracing::error!(vm = %vm.hostname, error = %e, "cannot record the desktop's start");
    }
    Ok(stream)
}

/// The instructor's view of any VM's desktop, audited: `Peek` sends no input, `Control`
/// drives the desktop.
pub async fn open_for_instructor(
    pool: &Pool,
    actor: &Actor,
    host: &str,
    viewer: Viewer,
) -> Result<DesktopStream, PoolError> {
    let vm = super::stored_vm(pool, host, "Failed to read the VM.").await?;
    let stream = open_stream(pool, &vm.hostname, viewer).await?;
    let (action, detail) = match viewer {
        Viewer::Control => ("desktop_control", "took over the desktop"),
        _ => ("desktop_peek", "viewed the desktop"),
    };
    let participant = vm
        .assignment
        .as_ref()
        .map_or_else(|| "no participant".to_owned(), |a| a.email.clone());
    pool.audit_by(
        actor,
        action,
        format!("{host}: {detail} (seat: {participant})"),
    )
    .await;
    Ok(stream)
}

/// The instructor's control of `host`'s desktop ended (the taking-over view closed):
/// audited as giving it back.
pub async fn gave_back(pool: &Pool, actor: &Actor, host: &str) {
    pool.audit_by(
        actor,
        "desktop_give_back",
        format!("{host}: gave the desktop back"),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio::task::JoinHandle;

    type Opening = JoinHandle<Result<DesktopStream, PoolError>>;

    fn desktops() -> Arc<Desktops> {
        Arc::new(Desktops::default())
    }

    /// `vm-1`'s desktop asked for by `viewer`, in a task (it waits for the agent).
    fn open(
        d: &Arc<Desktops>,
        viewer: Viewer,
        wait: Duration,
        stopping: &CancellationToken,
    ) -> Opening {
        let (d, stopping) = (d.clone(), stopping.clone());
        tokio::spawn(async move { d.open("vm-1", viewer, wait, &stopping).await })
    }

    fn open_now(d: &Arc<Desktops>, viewer: Viewer) -> Opening {
        open(
            d,
            viewer,
            Duration::from_secs(30),
            &CancellationToken::new(),
        )
    }

    /// The agent's side: the next open request answered with a tunnel; its far end.
    async fn answer(d: &Desktops, channel: &mut AgentChannel) -> (OpenRequest, DuplexStream) {
        let asked = channel.opens.recv().await.expect("an open");
        let (tunnel, far) = tokio::io::duplex(64);
        assert!(d.deliver("vm-1", &asked.id, Box::new(tunnel)));
        (asked, far)
    }

    async fn opened(
        d: &Desktops,
        channel: &mut AgentChannel,
        opening: Opening,
    ) -> (DesktopStream, DuplexStream) {
        let (_, far) = answer(d, channel).await;
        (opening.await.expect("join").expect("open"), far)
    }

    async fn failed(opening: Opening) -> PoolError {
        match opening.await.expect("join") {
            Ok(_) => panic!("the open went ahead"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn an_open_is_answered_by_the_agents_tunnel() {
        let d = desktops();
        let mut channel = d.attach("vm-1");
        let opening = open_now(&d, Viewer::Peek);
        let asked = channel.opens.recv().await.expect("an open");
        assert!(asked.view_only);
        assert!(d.is_pending("vm-1", &asked.id));
        assert!(!d.is_pending("vm-2", &asked.id), "another VM's stream");
        let (tunnel, _far) = tokio::io::duplex(64);
        assert!(!d.deliver("vm-2", &asked.id, Box::new(tunnel)));
        let (tunnel, _far) = tokio::io::duplex(64);
        assert!(d.deliver("vm-1", &asked.id, Box::new(tunnel)));
        assert_eq!(opening.await.expect("join").expect("open").host, "vm-1");
        assert!(!d.is_pending("vm-1", &asked.id));
    }

    #[tokio::test]
    async fn no_channel_a_refusal_and_a_silent_agent_are_errors() {
        let d = desktops();
        let err = failed(open_now(&d, Viewer::Participant)).await;
        assert!(matches!(err, PoolError::Unavailable(_)), "{err:?}");

        let mut channel = d.attach("vm-1");
        let refused = open_now(&d, Viewer::Participant);
        let asked = channel.opens.recv().await.expect("an open");
        assert!(!asked.view_only);
        assert!(d.refuse("vm-1", &asked.id, "no VNC server".into()));
        let err = failed(refused).await;
        assert!(err.to_string().contains("no VNC server"), "{err}");

        let silent = open(
            &d,
            Viewer::Participant,
            Duration::from_millis(50),
            &CancellationToken::new(),
        );
        let err = failed(silent).await;
        assert!(err.to_string().contains("did not open"), "{err}");
        let late = channel.opens.recv().await.expect("the open was sent");
        assert!(
            !d.is_pending("vm-1", &late.id),
            "forgotten after the timeout"
        );
    }

    #[tokio::test]
    async fn a_reconnected_agent_replaces_its_old_channel() {
        let d = desktops();
        let old = d.attach("vm-1");
        let new = d.attach("vm-1");
        drop(old);
        assert!(
            d.attached("vm-1"),
            "the old channel's end must not forget the new one"
        );
        drop(new);
        assert!(!d.attached("vm-1"));
    }

    #[tokio::test]
    async fn instructor_views_are_shown_and_a_cut_ends_the_seats_streams() {
        let d = desktops();
        let mut channel = d.attach("vm-1");
        let mut watched = d.watched("vm-1");
        assert!(!*watched.borrow());
        let (own, _a) = opened(&d, &mut channel, open_now(&d, Viewer::Participant)).await;
        assert!(!*watched.borrow_and_update(), "the participant's own view");
        let (peek, _b) = opened(&d, &mut channel, open_now(&d, Viewer::Peek)).await;
        watched.changed().await.expect("changed");
        assert!(*watched.borrow_and_update());
        assert_eq!(d.streams(), 2);
        drop(peek);
        watched.changed().await.expect("changed");
        assert!(!*watched.borrow_and_update());

        d.cut("vm-1");
        assert!(own.cut.is_cancelled());
        let (after, _c) = opened(&d, &mut channel, open_now(&d, Viewer::Participant)).await;
        assert!(!after.cut.is_cancelled(), "a new stream after the cut runs");
    }

    #[tokio::test]
    async fn broadcast_streams_count_apart_and_only_they_end_at_the_stop() {
        let d = desktops();
        let mut channel = d.attach("vm-1");
        let mut full = Vec::new();
        for _ in 0..MAX_STREAMS_PER_VM {
            full.push(opened(&d, &mut channel, open_now(&d, Viewer::Control)).await);
        }
        let (watching, _far) = opened(&d, &mut channel, open_now(&d, Viewer::Broadcast)).await;
        assert_eq!(
            d.broadcast_streams("vm-1"),
            1,
            "not held back by the seat's own streams"
        );
        d.cut_broadcast("vm-1");
        assert!(watching.cut.is_cancelled());
        assert!(
            full.iter().all(|(s, _)| !s.cut.is_cancelled()),
            "the seat's own go on"
        );
        let (next, _far) = opened(&d, &mut channel, open_now(&d, Viewer::Broadcast)).await;
        assert!(!next.cut.is_cancelled(), "the next broadcast runs");
        d.cut("vm-1");
        assert!(
            next.cut.is_cancelled(),
            "a seat change ends its broadcast too"
        );
        drop((watching, next));
        assert_eq!(d.broadcast_streams("vm-1"), 0);
    }

    #[tokio::test]
    async fn taking_over_is_shown_until_given_back() {
        let d = desktops();
        let mut channel = d.attach("vm-1");
        let mut controlled = d.controlled("vm-1");
        let (peek, _a) = opened(&d, &mut channel, open_now(&d, Viewer::Peek)).await;
        assert!(!*controlled.borrow_and_update(), "a peek is no take-over");
        let (control, _b) = opened(&d, &mut channel, open_now(&d, Viewer::Control)).await;
        controlled.changed().await.expect("changed");
        assert!(*controlled.borrow_and_update());
        drop(control);
        controlled.changed().await.expect("changed");
        assert!(!*controlled.borrow_and_update());
        drop(peek);
    }

    #[tokio::test]
    async fn a_cut_while_opening_ends_that_stream_too() {
        let d = desktops();
        let mut channel = d.attach("vm-1");
        let opening = open_now(&d, Viewer::Participant);
        let asked = channel.opens.recv().await.expect("an open");
        d.cut("vm-1");
        let (tunnel, _far) = tokio::io::duplex(64);
        d.deliver("vm-1", &asked.id, Box::new(tunnel));
        let err = failed(opening).await;
        assert!(err.to_string().contains("changed hands"), "{err}");
        assert_eq!(d.streams(), 0);
    }

    #[tokio::test]
    async fn the_participant_cannot_take_the_instructors_places() {
        let d = desktops();
        let mut channel = d.attach("vm-1");
        let mut open_streams = Vec::new();
        for _ in 0..MAX_PARTICIPANT_STREAMS {
            open_streams.push(opened(&d, &mut channel, open_now(&d, Viewer::Participant)).await);
        }
        let refused = failed(open_now(&d, Viewer::Participant)).await;
        assert!(matches!(refused, PoolError::Conflict(_)), "{refused:?}");
        let (peek, _far) = opened(&d, &mut channel, open_now(&d, Viewer::Peek)).await;
        assert_eq!(peek.host, "vm-1", "the instructor still gets in");
    }

    #[tokio::test]
    async fn an_open_fails_at_once_when_the_agent_disconnects_or_the_allocator_stops() {
        let d = desktops();
        let forever = Duration::from_secs(3600);
        let mut channel = d.attach("vm-1");
        let opening = open(&d, Viewer::Participant, forever, &CancellationToken::new());
        channel.opens.recv().await.expect("an open");
        drop(channel);
        let err = failed(opening).await;
        assert!(err.to_string().contains("disconnected"), "{err}");

        let mut channel = d.attach("vm-1");
        let stopping = CancellationToken::new();
        let opening = open(&d, Viewer::Peek, forever, &stopping);
        channel.opens.recv().await.expect("an open");
        stopping.cancel();
        let err = failed(opening).await;
        assert!(err.to_string().contains("restarting"), "{err}");
        assert_eq!(d.streams(), 0, "a failed open frees its place");
    }
}
