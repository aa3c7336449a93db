//! `GET /my-vm` and `GET /api/my-vm`: a participant's seat as their browser's claim cookie
//! finds it. The page follows the seat by itself: a move shows the new VM, a dead VM or a
//! released seat offers a new one.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::participant::ClaimCookie;
use crate::error::PageError;
use crate::model::VmStatus;
use crate::pool::PoolError;
use crate::pool::claim::{self, SeatFound};
use crate::server::state::App;
use crate::views::participant::{self as view, Seat};

async fn find(app: &App, headers: &HeaderMap) -> Result<SeatFound, PoolError> {
    match ClaimCookie::from_headers(headers) {
        Some(cookie) => claim::find_seat(&app.pool, cookie.email, &cookie.token).await,
        None => Ok(SeatFound::Nothing),
    }
}

fn view_of<'a>(app: &App, found: &'a SeatFound) -> (Seat<'a>, Option<u64>) {
    match found {
        SeatFound::Mine(vm) if vm.unresponsive_since.is_some() => {
            let seen = app.last_seen_secs(vm);
            (
                Seat::Unresponsive {
                    hostname: &vm.hostname,
                    email: vm.assignment.as_ref().map_or("", |a| a.email.as_str()),
                    last_seen_seconds: seen,
                },
                seen,
            )
        }
        SeatFound::Mine(vm) => (
            Seat::Ready {
                hostname: &vm.hostname,
                pin: vm.assignment.as_ref().map_or("", |a| a.pin.as_str()),
                coming_back: vm.status == Some(VmStatus::Rebooting),
                desktop: vm
                    .assignment
                    .as_ref()
                    .map(|a| a.desktop)
                    .unwrap_or_default(),
            },
            None,
        ),
        SeatFound::OtherBrowser => (Seat::OtherBrowser, None),
        SeatFound::Waiting(place) => (
            Seat::Waiting {
                position: place.position,
                waiting: place.waiting,
            },
            None,
        ),
        SeatFound::WaitingElsewhere => (Seat::WaitingElsewhere, None),
        SeatFound::Released(email) => (Seat::Released { email }, None),
        SeatFound::Nothing => (Seat::Unknown, None),
    }
}

/// How many archives of this browser's participant's files are kept (`/my-files`).
async fn saved_files(app: &App, headers: &HeaderMap) -> usize {
    let Some(ClaimCookie {
        email: Some(email),
        token,
    }) = ClaimCookie::from_headers(headers)
    else {
        return 0;
    };
    match app.rescues.of_participant(&email, &token).await {
        Ok(mine) => mine.iter().filter(|r| r.has_archive()).count(),
        Err(e) => {
            tracing::error!(error = ?e, "cannot read a participant's saved files");
            0
        }
    }
}

pub async fn page(State(app): State<App>, headers: HeaderMap) -> Response {
    let saved = saved_files(&app, &headers).await;
    match find(&app, &headers).await {
        Ok(found) => {
            let (seat, _) = view_of(&app, &found);
            let ask = !crate::pool::event::join_code(&app.pool).is_empty();
            let desktop = match &found {
                SeatFound::Mine(vm) => vm.assignment.as_ref().map(|a| a.desktop),
                _ => None,
            }
            .unwrap_or(app.config.desktop_kinds()[0]);
            let raised = match &found {
                SeatFound::Mine(vm) => vm
                    .assignment
                    .as_ref()
                    .is_some_and(|a| app.hands.of_participant(&vm.hostname, &a.email).is_some()),
                _ => false,
            };
            (
                StatusCode::OK,
                view::seat(&seat, ask, desktop, saved, raised),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = ?e, "cannot read a participant's seat");
            PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Your seat cannot be read right now; reload the page in a moment.",
            )
            .back("/my-vm")
            .into_response()
        }
    }
}

/// What the page's script is told: the seat's state and VM (never the PIN), and the
/// workshop event's countdown.
async fn snapshot(app: &App, headers: &HeaderMap) -> Result<Value, PoolError> {
    let found = find(app, headers).await?;
    let (seat, seen) = view_of(app, &found);
    let mut answer = json!({
        "state": seat.state(),
        "hostname": seat.hostname(),
        "last_seen_seconds_ago": seen,
        "event": crate::pool::event::participant_view(&app.pool),
        "saved_files": saved_files(app, headers).await,
    });
    if let Seat::Waiting { position, waiting } = seat {
        answer["position"] = json!(position);
        answer["waiting"] = json!(waiting);
    }
    if let SeatFound::Mine(vm) = &found
        && let Some(release_at) = crate::pool::idle::warning(&app.pool, vm)
    {
        answer["idle"] = json!({ "release_at": release_at });
    }
    Ok(answer)
}

#[derive(serde::Deserialize)]
pub struct StillHere {
    back: Option<String>,
}

/// `POST /api/my-vm/active` (the idle warning's "I'm still here"): the seat of this
/// browser's claim cookie starts its idle time over; back to the page it came from.
pub async fn still_here(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<axum::Form<StillHere>, axum::extract::rejection::FormRejection>,
) -> Response {
    let back = match form.ok().and_then(|f| f.0.back).as_deref() {
        Some("/desktop") => "/desktop",
        _ => "/my-vm",
    };
    if let Some(refused) =
        super::participant::from_elsewhere(&headers, "Answer from your seat's own page.", back)
    {
        return refused;
    }
    match find(&app, &headers).await {
        Ok(SeatFound::Mine(vm)) => {
            crate::pool::idle::still_here(&app.pool, &vm);
            axum::response::Redirect::to(back).into_response()
        }
        Ok(_) => PageError::new(StatusCode::FORBIDDEN, "This browser holds no seat.")
            .back("/my-vm")
            .into_response(),
        Err(e) => PageError::from(e).back(back).into_response(),
    }
}

/// For the page's script: the seat's state and VM (never the PIN); in the queue, the
/// participant's place (`position`, 1 is next) and how many wait (`waiting`).
pub async fn state(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Value>, crate::error::ApiError> {
    Ok(Json(snapshot(&app, &headers).await?))
}

/// Updates closer together than this are sent as one.
const SETTLE: Duration = Duration::from_secs(1);
/// Sent again this often even without a change (the agent's silence is measured in time).
const RECHECK: Duration = Duration::from_secs(15);

/// `GET /api/my-vm/events`: `GET /api/my-vm`'s answer as a `seat` event, at once and then
/// whenever it changes (after any store change, at most once a second), until the browser
/// goes away or the allocator stops.
pub async fn events(State(app): State<App>, headers: HeaderMap) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(4);
    tokio::spawn(async move {
        let mut changes = app.store.changes();
        let mut warnings = app.idle.warnings();
        let mut sent = String::new();
        loop {
            match snapshot(&app, &headers).await {
                Ok(now) => {
                    // The allocator's time alone is no news.
                    let mut news = now.clone();
                    if let Some(event) = news["event"].as_object_mut() {
                        event.remove("server_now");
                    }
                    let news = news.to_string();
                    if news != sent {
                        if tx
                            .send(Event::default().event("seat").data(now.to_string()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        sent = news;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a participant's seat for their page")
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                changed = warnings.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(RECHECK) => {}
                () = tx.closed() => return,
                () = app.shutdown.cancelled() => return,
            }
            tokio::time::sleep(SETTLE).await;
            changes.borrow_and_update();
            warnings.borrow_and_update();
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
