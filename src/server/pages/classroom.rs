//! The classroom, participant side: `POST /api/my-vm/hand` and `/hand/lower` (the "I need
//! help" button), `GET /api/my-vm/classroom` (live: the hand, the latest announcement,
//! the broadcast, the instructor's control), `GET /broadcast` and `/broadcast/ws` (the
//! broadcast desktop, view-only). Console side: `GET /admin/hands` and its form actions
//! (take, done, announce, broadcast, stop). Helper accounts (`Staff`) may answer hands and
//! announce; starting and stopping a broadcast is the admin's (`Admin`).

use std::convert::Infallible;

use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::Markup;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::admin::action_result;
use super::desktop::{own_seat, participant_upgrade, relay};
use super::participant::from_elsewhere;
use super::{PageForm, PagePath};
use crate::error::{ApiError, PageError};
use crate::model::{Vm, validate_hostname};
use crate::pool::{announce, broadcast, hands};
use crate::server::auth::{Admin, Staff};
use crate::server::state::App;
use crate::store::vms;
use crate::views::admin::hands::{self as view, Broadcastable, Classroom};

#[derive(Deserialize)]
pub struct Back {
    back: Option<String>,
}

impl Back {
    fn participant_page(&self) -> &'static str {
        match self.back.as_deref() {
            Some("/desktop") => "/desktop",
            _ => "/my-vm",
        }
    }
}

/// The seat of this browser's claim cookie, or the page error saying there is none.
async fn seat_for_form(app: &App, headers: &HeaderMap, back: &str) -> Result<Vm, Response> {
    if let Some(refused) = from_elsewhere(headers, "Ask for help from your seat's own page.", back)
    {
        return Err(refused);
    }
    match own_seat(app, headers).await {
        Ok(Some(vm)) => Ok(vm),
        Ok(None) => Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This browser holds no seat; claim one on the start page first.",
        )
        .back("/")
        .into_response()),
        Err(e) => Err(PageError::from(e).back(back).into_response()),
    }
}

/// `POST /api/my-vm/hand` (form: `back`): the participant asks for help.
pub async fn raise(State(app): State<App>, headers: HeaderMap, form: PageForm<Back>) -> Response {
    let back = form.0.participant_page();
    let vm = match seat_for_form(&app, &headers, back).await {
        Ok(vm) => vm,
        Err(refused) => return refused,
    };
    match hands::raise(&app.pool, &vm).await {
        Ok(_) => Redirect::to(back).into_response(),
        Err(e) => PageError::from(e).back(back).into_response(),
    }
}

/// `POST /api/my-vm/hand/lower` (form: `back`): the participant no longer needs help.
pub async fn lower(State(app): State<App>, headers: HeaderMap, form: PageForm<Back>) -> Response {
    let back = form.0.participant_page();
    let vm = match seat_for_form(&app, &headers, back).await {
        Ok(vm) => vm,
        Err(refused) => return refused,
    };
    match hands::lower(&app.pool, &vm).await {
        Ok(()) => Redirect::to(back).into_response(),
        Err(e) => PageError::from(e).back(back).into_response(),
    }
}

/// `GET /api/my-vm/classroom`: events `hand` (`{"raised", "raised_at", "taken_by"}`),
/// `announcement` (the latest, or `null`), `broadcast` (`{"on", "id"}`) and `control`
/// (`true` while the instructor has control of the participant's desktop), each at once
/// and then whenever it changes, until the browser goes away or the allocator stops.
pub async fn participant_events(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let vm = own_seat(&app, &headers)
        .await?
        .ok_or_else(|| ApiError::Forbidden("This browser holds no seat.".into()))?;
    let email = vm
        .assignment
        .as_ref()
        .map(|a| a.email.clone())
        .unwrap_or_default();
    let host = vm.hostname;
    let (tx, rx) = mpsc::channel::<Event>(8);
    tokio::spawn(async move {
        let mut raised = app.hands.subscribe();
        let mut news = app.announcements.subscribe();
        let mut air = app.broadcast.subscribe();
        let mut control = app.desktops.controlled(&host);
        // The seat ended: this page's events end with it (a new stream finds its new seat,
        // or none).
        let seat_ended = app.desktops.seat_cut(&host);
        let mut sent: [String; 4] = Default::default();
        loop {
            let hand = app.hands.of_participant(&host, &email);
            let on_air = air.borrow_and_update().clone();
            let fresh = [
                json!({
                    "raised": hand.is_some(),
                    "raised_at": hand.as_ref().map(|h| h.raised_at),
                    "taken_by": hand.as_ref().and_then(|h| h.taken_by.clone()),
                })
                .to_string(),
                json!(news.borrow_and_update().as_ref().map(|a| json!({
                    "id": a.id, "text": a.text, "at": a.at,
                })))
                .to_string(),
                json!({
                    "on": on_air.is_some(),
                    "id": on_air.as_ref().map(|b| b.id),
                    // This seat is on air: its page keeps its own desktop.
                    "yours": on_air.as_ref().is_some_and(|b| b.hostname == host),
                })
                .to_string(),
                control.borrow_and_update().to_string(),
            ];
            let names = ["hand", "announcement", "broadcast", "control"];
            for (i, data) in fresh.into_iter().enumerate() {
                if data != sent[i] {
                    let event = Event::default().event(names[i]).data(&data);
                    if tx.send(event).await.is_err() {
                        return;
                    }
                    sent[i] = data;
                }
            }
            tokio::select! {
                changed = raised.changed() => if changed.is_err() { return },
                changed = news.changed() => if changed.is_err() { return },
                changed = air.changed() => if changed.is_err() { return },
                changed = control.changed() => if changed.is_err() { return },
                () = seat_ended.cancelled() => return,
                () = tx.closed() => return,
                () = app.shutdown.cancelled() => return,
            }
            raised.borrow_and_update();
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /broadcast`: the broadcast desktop, full size (the seat page links here).
pub async fn broadcast_page(State(app): State<App>, headers: HeaderMap) -> Response {
    match own_seat(&app, &headers).await {
        Ok(Some(_)) => crate::views::desktop::broadcast().into_response(),
        Ok(None) => Redirect::to("/my-vm").into_response(),
        Err(e) => PageError::from(e).into_response(),
    }
}

/// `GET /broadcast/ws`: a participant's view-only stream of the broadcast desktop.
pub async fn broadcast_socket(
    State(app): State<App>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (ws, vm) = participant_upgrade(&app, &headers, ws).await?;
    let (stream, watching) = broadcast::open_for_participant(&app.pool, &vm).await?;
    Ok(relay(ws, stream, app.shutdown.clone(), async move {
        drop(watching);
    }))
}

/// `GET /admin/hands`: the queue, the broadcast and announcements.
pub async fn page(State(app): State<App>, staff: Staff) -> Result<Markup, PageError> {
    let pool = app.store.read(vms::list).await?;
    let seats: Vec<Broadcastable> = pool
        .into_iter()
        .filter(|vm| app.desktops.attached(&vm.hostname))
        .map(|vm| Broadcastable {
            participant: vm.assignment.map(|a| a.email),
            hostname: vm.hostname,
        })
        .collect();
    let hands = app.hands.list();
    let on_air = app.broadcast.current();
    let announcements = app.announcements.recent();
    Ok(view::page(
        &staff.viewer(chrono::Utc::now()),
        &Classroom {
            hands: &hands,
            on_air: on_air.as_ref(),
            seats: &seats,
            announcements: &announcements,
        },
    ))
}

/// Where a console form returns: the hands page, or the peek it came from.
fn console_back(back: Option<&str>) -> String {
    match back.and_then(|b| b.strip_prefix("/admin/desktop/")) {
        Some(host) if validate_hostname(host).is_ok() => format!("/admin/desktop/{host}"),
        _ => "/admin/hands".to_owned(),
    }
}

/// `POST /admin/hands/{id}/take`. Audited.
pub async fn take(
    State(app): State<App>,
    staff: Staff,
    headers: HeaderMap,
    PagePath(id): PagePath<u64>,
) -> Response {
    let result = hands::take(&app.pool, &staff.actor(), id)
        .await
        .map(|h| {
            format!(
                "You have the request of {} ({}).",
                h.participant, h.hostname
            )
        })
        .map_err(ApiError::from);
    action_result(&headers, result, "/admin/hands")
}

/// `POST /admin/hands/{id}/done`. Audited.
pub async fn done(
    State(app): State<App>,
    staff: Staff,
    headers: HeaderMap,
    PagePath(id): PagePath<u64>,
) -> Response {
    let result = hands::done(&app.pool, &staff.actor(), id)
        .await
        .map(|h| format!("The request of {} is done.", h.participant))
        .map_err(ApiError::from);
    action_result(&headers, result, "/admin/hands")
}

#[derive(Deserialize)]
pub struct AnnounceForm {
    text: String,
}

/// `POST /admin/announce` (form: `text`). Audited.
pub async fn announce(
    State(app): State<App>,
    staff: Staff,
    headers: HeaderMap,
    PageForm(form): PageForm<AnnounceForm>,
) -> Response {
    let result = announce::announce(&app.pool, &staff.actor(), &form.text)
        .await
        .map(|_| "Announced.".to_owned())
        .map_err(ApiError::from);
    action_result(&headers, result, "/admin/hands")
}

#[derive(Deserialize)]
pub struct BroadcastForm {
    hostname: String,
    back: Option<String>,
}

/// `POST /admin/broadcast` (form: `hostname`, `back`). Audited.
pub async fn broadcast_start(
    State(app): State<App>,
    admin: Admin,
    headers: HeaderMap,
    PageForm(form): PageForm<BroadcastForm>,
) -> Response {
    let back = console_back(form.back.as_deref());
    let result = match validate_hostname(&form.hostname) {
        Err(e) => Err(ApiError::BadRequest(e)),
        Ok(()) => broadcast::start(&app.pool, &admin.actor(), &form.hostname)
            .await
            .map(|b| format!("Broadcasting {}.", b.hostname))
            .map_err(ApiError::from),
    };
    action_result(&headers, result, &back)
}

/// `POST /admin/broadcast/stop` (form: `back`). Audited.
pub async fn broadcast_stop(
    State(app): State<App>,
    admin: Admin,
    headers: HeaderMap,
    PageForm(form): PageForm<Back>,
) -> Response {
    let back = console_back(form.back.as_deref());
    let result = broadcast::stop(&app.pool, &admin.actor())
        .await
        .map(|b| format!("The broadcast of {} stopped.", b.hostname))
        .map_err(ApiError::from);
    action_result(&headers, result, &back)
}
