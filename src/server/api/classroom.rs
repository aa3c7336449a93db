//! The classroom over the JSON API: raised hands (`GET /api/hands`, take, done),
//! announcements (`GET`/`POST /api/announcements`) and the broadcast (`GET`/`POST
//! /api/broadcast`, `POST /api/broadcast/stop`). Helper accounts (`Staff`) may read all of it,
//! answer hands and announce; starting and stopping a broadcast is the admin's (`Admin`).
//! `POST /api/desktop/hand` is the agent's: the "I need help" launcher on the seat's desktop.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiPath;
use crate::error::ApiError;
use crate::model::validate_hostname;
use crate::pool::{announce, broadcast, hands};
use crate::server::auth::{Admin, Agent, Staff};
use crate::server::body::JsonBody;
use crate::server::state::App;

/// `GET /api/hands`: open requests for help, oldest first.
pub async fn list_hands(State(app): State<App>, _staff: Staff) -> Json<Value> {
    Json(json!({ "hands": app.hands.list() }))
}

/// `POST /api/hands/{id}/take`. Audited.
pub async fn take(
    State(app): State<App>,
    staff: Staff,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Value>, ApiError> {
    let hand = hands::take(&app.pool, &staff.actor(), id).await?;
    Ok(Json(json!({ "hand": hand })))
}

/// `POST /api/hands/{id}/done`. Audited.
pub async fn done(
    State(app): State<App>,
    staff: Staff,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Value>, ApiError> {
    let hand = hands::done(&app.pool, &staff.actor(), id).await?;
    Ok(Json(json!({ "hand": hand })))
}

/// `GET /api/announcements`: the kept announcements, newest first.
pub async fn list_announcements(State(app): State<App>, _staff: Staff) -> Json<Value> {
    Json(json!({ "announcements": app.announcements.recent() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAnnouncement {
    text: String,
}

/// `POST /api/announcements` `{"text": "…"}`. Audited.
pub async fn announce(
    State(app): State<App>,
    staff: Staff,
    JsonBody(body): JsonBody<NewAnnouncement>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let announcement = announce::announce(&app.pool, &staff.actor(), &body.text).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "announcement": announcement })),
    ))
}

/// `GET /api/broadcast`: what is on air (`null`: nothing).
pub async fn current(State(app): State<App>, _staff: Staff) -> Json<Value> {
    Json(json!({ "on_air": app.broadcast.current() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBroadcast {
    hostname: String,
}

/// `POST /api/broadcast` `{"hostname": "…"}`: show that VM's desktop to every participant.
/// Audited.
pub async fn start(
    State(app): State<App>,
    admin: Admin,
    JsonBody(body): JsonBody<NewBroadcast>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&body.hostname).map_err(ApiError::BadRequest)?;
    let on_air = broadcast::start(&app.pool, &admin.actor(), &body.hostname).await?;
    Ok(Json(json!({ "on_air": on_air })))
}

/// `POST /api/broadcast/stop`: every participant's broadcast stream is cut. Audited.
pub async fn stop(State(app): State<App>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let stopped = broadcast::stop(&app.pool, &admin.actor()).await?;
    Ok(Json(json!({ "stopped": stopped })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesktopHand {
    hostname: String,
    raised: bool,
}

/// `POST /api/desktop/hand` `{"hostname", "raised"}`: the participant at that VM pressed
/// the launcher on their desktop; with the VM's own credential only (the shared token
/// could raise any seat's hand). Answers the hand as it is now. Audited (as the
/// participant), like the page's button.
pub async fn desktop_hand(
    State(app): State<App>,
    agent: Agent,
    JsonBody(body): JsonBody<DesktopHand>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&body.hostname)
        .map_err(|e| ApiError::BadRequest(format!("hostname: {e}")))?;
    agent.acts_as_itself(&body.hostname)?;
    let hand = hands::from_desktop(&app.pool, &body.hostname, body.raised).await?;
    Ok(Json(json!({
        "raised": hand.is_some(),
        "raised_at": hand.as_ref().map(|h| h.raised_at),
        "taken_by": hand.and_then(|h| h.taken_by),
    })))
}
