//! Browser desktops. `GET /desktop`: the participant's desktop (noVNC), found by their
//! claim cookie; `GET /desktop/ws`: its WebSocket, relayed to the VM's agent;
//! `GET /desktop/events`: whether the instructor is viewing. `GET /admin/desktop/{host}`
//! and its `/ws`: the instructor's view of any VM, view-only unless `?control=1` (taking
//! over; closing it gives the desktop back).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::{SinkExt, StreamExt};
use maud::Markup;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::PagePath;
use super::participant::ClaimCookie;
use crate::error::{ApiError, PageError};
use crate::model::{DesktopKind, Vm, validate_hostname};
use crate::pool::claim::{self, SeatFound};
use crate::pool::desktop::{self, DesktopStream, Viewer};
use crate::server::api::ApiQuery;
use crate::server::auth::{SignedIn, Staff, cross_site};
use crate::server::state::App;
use crate::views::desktop as view;

/// Bytes read from the VM per WebSocket message: the relay's whole buffer per direction.
const CHUNK: usize = 64 * 1024;
/// Largest message a viewer may send (RFB client messages are small; clipboard text is
/// the large one).
const MAX_VIEWER_MESSAGE: usize = 1024 * 1024;
/// A browser that has sent nothing (not even a pong) this long is gone.
const VIEWER_SILENT: Duration = Duration::from_secs(90);
const PING_EVERY: Duration = Duration::from_secs(30);
/// How often an instructor's or helper's open desktop view checks they are still signed in.
const VIEWER_RECHECK: Duration = Duration::from_secs(30);

/// The participant's browser-desktop seat, or why there is none.
pub(super) async fn own_seat(app: &App, headers: &HeaderMap) -> Result<Option<Vm>, ApiError> {
    let Some(cookie) = ClaimCookie::from_headers(headers) else {
        return Ok(None);
    };
    Ok(
        match claim::find_seat(&app.pool, cookie.email, &cookie.token).await? {
            SeatFound::Mine(vm) => Some(*vm),
            _ => None,
        },
    )
}

fn is_browser_seat(vm: &Vm) -> bool {
    vm.assignment
        .as_ref()
        .is_some_and(|a| a.desktop == DesktopKind::Browser)
}

pub async fn participant_page(State(app): State<App>, headers: HeaderMap) -> Response {
    match own_seat(&app, &headers).await {
        Ok(Some(vm)) if is_browser_seat(&vm) => {
            let raised = vm
                .assignment
                .as_ref()
                .is_some_and(|a| app.hands.of_participant(&vm.hostname, &a.email).is_some());
            view::participant(&vm.hostname, raised).into_response()
        }
        // No seat, another kind of seat, or one that moved on: the seat page explains.
        Ok(_) => Redirect::to("/my-vm").into_response(),
        Err(e) => PageError::from(e).into_response(),
    }
}

/// A browser's WebSocket must come from our own pages: cookies ride along on a
/// cross-site WebSocket handshake too.
fn same_site(headers: &HeaderMap) -> Result<(), ApiError> {
    if cross_site(headers) {
        return Err(ApiError::CrossSite);
    }
    Ok(())
}

fn upgrade_or_error(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    ws.map_err(|rejection| {
        ApiError::bad_request(format!(
            "This address is a WebSocket ({rejection}); open the desktop page instead."
        ))
    })
}

/// A participant's WebSocket: from our own pages, a WebSocket indeed, and from a browser
/// holding a seat.
pub(super) async fn participant_upgrade(
    app: &App,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(WebSocketUpgrade, Vm), ApiError> {
    same_site(headers)?;
    let ws = upgrade_or_error(ws)?;
    let vm = own_seat(app, headers).await?.ok_or_else(|| {
        ApiError::Forbidden("This browser holds no seat; claim one on the start page first.".into())
    })?;
    Ok((ws, vm))
}

pub async fn participant_socket(
    State(app): State<App>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (ws, vm) = participant_upgrade(&app, &headers, ws).await?;
    let stream = desktop::open_for_participant(&app.pool, &vm).await?;
    Ok(relay(ws, stream, app.shutdown.clone(), async {}))
}

/// `viewing` events: `true` while the instructor has the participant's desktop open.
pub async fn participant_events(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let vm = own_seat(&app, &headers)
        .await?
        .ok_or_else(|| ApiError::Forbidden("This browser holds no seat.".into()))?;
    let watched = app.desktops.watched(&vm.hostname);
    let stopping = app.shutdown.clone();
    let events = futures_util::stream::unfold(
        (watched, stopping, true),
        |(mut watched, stopping, first)| async move {
            if !first {
                tokio::select! {
                    changed = watched.changed() => changed.ok()?,
                    () = stopping.cancelled() => return None,
                }
            }
            let viewing = *watched.borrow_and_update();
            let event =
                Event::default()
                    .event("viewing")
                    .data(if viewing { "true" } else { "false" });
            Some((Ok::<_, Infallible>(event), (watched, stopping, false)))
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize)]
pub struct Mode {
    control: Option<u8>,
}

impl Mode {
    fn viewer(&self) -> Result<Viewer, ApiError> {
        match self.control {
            None | Some(0) => Ok(Viewer::Peek),
            Some(1) => Ok(Viewer::Control),
            Some(_) => Err(ApiError::bad_request("control: expected 0 or 1.")),
        }
    }
}

pub async fn instructor_page(
    State(app): State<App>,
    staff: Staff,
    PagePath(host): PagePath<String>,
    ApiQuery(mode): ApiQuery<Mode>,
) -> Result<Markup, PageError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let viewer = mode.viewer()?;
    let vm = crate::pool::stored_vm(&app.pool, &host, "Failed to read the VM.").await?;
    let participant = vm.assignment.as_ref().map(|a| a.email.as_str());
    let broadcasting = app.broadcast.current().is_some_and(|b| b.hostname == host);
    Ok(view::instructor(&view::Instructor {
        hostname: &host,
        participant,
        control: viewer == Viewer::Control,
        csrf: &staff.csrf,
        broadcasting,
        may_broadcast: staff.is_admin(),
    }))
}

pub async fn instructor_socket(
    State(app): State<App>,
    admin: Staff,
    PagePath(host): PagePath<String>,
    ApiQuery(mode): ApiQuery<Mode>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    same_site(&headers)?;
    admin.not_read_only("watch or take over a participant's desktop")?;
    let ws = upgrade_or_error(ws)?;
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let viewer = mode.viewer()?;
    let actor = admin.actor();
    let stream = desktop::open_for_instructor(&app.pool, &actor, &host, viewer).await?;
    // The view ends when whoever opened it is signed out, removed or revoked: a helper
    // taken off the team does not keep a participant's desktop.
    let stopping = app.shutdown.child_token();
    let signed_in = SignedIn::of(&admin);
    let (ended, app_ref) = (stopping.clone(), app.clone());
    tokio::spawn(async move {
        // Removing an account or a session is a commit; look again after commits (at most
        // once a second) and every `VIEWER_RECHECK` (a session expiring commits nothing).
        let mut commits = app_ref.store.changes();
        loop {
            tokio::select! {
                () = ended.cancelled() => return,
                changed = commits.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(VIEWER_RECHECK) => {}
            }
            if !signed_in.still(&app_ref).await {
                ended.cancel();
                return;
            }
            tokio::select! {
                () = ended.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            commits.borrow_and_update();
        }
    });
    let pool = app.pool.clone();
    let done = stopping.clone();
    let after = async move {
        done.cancel();
        if viewer == Viewer::Control {
            desktop::gave_back(&pool, &actor, &host).await;
        }
    };
    Ok(relay(ws, stream, stopping, after))
}

/// Upgrades to the WebSocket and copies bytes both ways between it and the VM's tunnel
/// until either side closes, the seat changes hands, or the allocator stops; then runs
/// `after`. Each direction holds at most one chunk: a slow browser slows the VM's sending
/// down rather than making the allocator buffer.
pub(super) fn relay(
    ws: WebSocketUpgrade,
    stream: DesktopStream,
    stopping: CancellationToken,
    after: impl Future<Output = ()> + Send + 'static,
) -> Response {
    ws.protocols(["binary"])
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(CHUNK * 4)
        .max_message_size(MAX_VIEWER_MESSAGE)
        .max_frame_size(MAX_VIEWER_MESSAGE)
        .on_upgrade(move |socket| async move {
            pump(socket, stream, stopping).await;
            after.await;
        })
}

async fn pump(socket: WebSocket, mut stream: DesktopStream, stopping: CancellationToken) {
    let cut = stream.cut.clone();
    let (mut to_viewer, mut from_viewer) = socket.split();
    let (mut from_vm, mut to_vm) = tokio::io::split(&mut stream.tunnel);
    let upstream = async {
        loop {
            let message = match tokio::time::timeout(VIEWER_SILENT, from_viewer.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(None | Some(Err(_))) | Err(_) => return,
            };
            match message {
                Message::Binary(bytes) => {
                    if to_vm.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Message::Close(_) | Message::Text(_) => return,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    };
    let downstream = async {
        let mut chunk = vec![0u8; CHUNK];
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            let message = tokio::select! {
                read = from_vm.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => Message::Binary(Bytes::copy_from_slice(&chunk[..n])),
                },
                _ = ping.tick() => Message::Ping(Bytes::new()),
            };
            if to_viewer.send(message).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
        () = cut.cancelled() => {}
        () = stopping.cancelled() => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), to_viewer.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), to_vm.shutdown()).await;
    tracing::debug!(vm = %stream.host, "desktop stream closed");
}
