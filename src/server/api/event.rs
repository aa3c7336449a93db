//! The workshop event over the JSON API: `GET /api/event` (where it stands), `POST` (plan
//! one), `PATCH` (change it), `DELETE` (call it off), `POST /api/event/end` (stop now).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::pool::event::{self, EventForm, EventStatus};
use crate::server::auth::Admin;
use crate::server::body::JsonBody;
use crate::server::state::App;

pub fn to_json(s: &EventStatus) -> Value {
    let e = &s.event;
    let plan = &e.plan;
    json!({
        "id": e.id,
        "name": plan.name,
        "phase": s.phase.as_str(),
        "start": plan.starts_at,
        "end": plan.ends_at,
        "prewarm_at": plan.prewarm_at(),
        "seconds_left": e.seconds_left(s.now),
        "seats": plan.seats,
        "spare_percent": plan.spare_percent,
        "target_vms": plan.target_vms(),
        "prewarm_minutes": plan.prewarm_minutes,
        "join_code_set": !plan.join_code.is_empty(),
        "warn_minutes": plan.warn_minutes,
        "marks_sent": e.marks_sent,
        "from_config": e.from_config,
        "created_by": e.created_by,
        "created_at": e.created_at,
        "vms": {"up": s.up, "free": s.free, "taken": s.taken},
        "launches": e.launches,
        "replaced": e.replaced,
        "stop_run": e.stop_run,
        "ended": e.ended,
        "cancelled_at": e.cancelled_at,
    })
}

async fn current(app: &App) -> Result<Json<Value>, ApiError> {
    let status = event::status(&app.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound("No event has been planned.".into()))?;
    let cost = crate::pool::budget::figures_of_event(&app.pool, &status.event).await?;
    let mut answer = to_json(&status);
    answer["cost"] = json!({
        "currency": cost.currency,
        "machine_type": cost.machine_type,
        "price_per_hour": cost.price_per_hour,
        "vms": cost.vms,
        "spent": cost.spent,
        "hours_left": cost.hours_left,
        "projected": cost.projected,
        "cap": cost.cap,
        "warn_percent": cost.warn_percent,
        "warn": cost.warn,
    });
    Ok(Json(answer))
}

/// `GET /api/event`.
pub async fn get(State(app): State<App>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    current(&app).await
}

/// `POST /api/event`: plans a new event (201).
pub async fn create(
    State(app): State<App>,
    admin: Admin,
    JsonBody(form): JsonBody<EventForm>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    event::create(&app.pool, &admin.actor(), form).await?;
    Ok((StatusCode::CREATED, current(&app).await?))
}

/// `PATCH /api/event`: changes the fields sent.
pub async fn update(
    State(app): State<App>,
    admin: Admin,
    JsonBody(form): JsonBody<EventForm>,
) -> Result<Json<Value>, ApiError> {
    event::update(&app.pool, &admin.actor(), form).await?;
    current(&app).await
}

/// `POST /api/event/end`: the hard stop begins now.
pub async fn end_now(State(app): State<App>, admin: Admin) -> Result<Json<Value>, ApiError> {
    event::end_now(&app.pool, &admin.actor()).await?;
    current(&app).await
}

/// `DELETE /api/event`: calls the event off (its VMs stay).
pub async fn cancel(State(app): State<App>, admin: Admin) -> Result<Json<Value>, ApiError> {
    event::cancel(&app.pool, &admin.actor()).await?;
    current(&app).await
}
