//! Scheduled destruction (upstream 0.1.2 paths and answers: `{"success": …, "message": …}`,
//! timestamps as HTTP dates), with the fixes: the rule is checked before anything is
//! stored (400), recurring schedules can be cancelled, and fire times come from stored data.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiPath, ApiQuery};
use crate::error::ApiError;
use crate::model::{Schedule, ScheduleStatus};
use crate::pool::schedules::{self, NewSchedule};
use crate::server::auth::Admin;
use crate::server::body::JsonBody;
use crate::server::state::App;
use crate::store;

/// These endpoints answer errors in upstream's shape, `{"success": false, "message": …}`.
fn refuse(e: ApiError) -> ApiError {
    e.refusal()
}

/// A store failure, answered with this endpoint's message (details go to the log).
fn store_failed(message: &'static str) -> impl FnOnce(crate::store::StoreError) -> ApiError {
    move |source| refuse(ApiError::Store { message, source })
}

fn refuse_bad(message: impl Into<String>) -> ApiError {
    refuse(ApiError::bad_request(message))
}

fn not_found() -> ApiError {
    refuse(ApiError::NotFound("Schedule not found".into()))
}

fn http_date(t: DateTime<Utc>) -> String {
    httpdate::fmt_http_date(t.into())
}

fn opt_date(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(http_date(t)))
}

pub fn to_json(s: &Schedule) -> Value {
    json!({
        "id": s.id,
        "schedule_name": s.schedule_name,
        "destruction_time": http_date(s.destruction_time),
        "recurrence_rule": s.recurrence_rule,
        "created_by": s.created_by,
        "status": s.status.as_str(),
        "execution_count": s.execution_count,
        "last_execution_time": opt_date(s.last_execution_time),
        "last_execution_result": s.last_execution_result,
        "notification_enabled": s.notification_enabled,
        "notification_hours_before": s.notification_hours_before,
        "created_at": http_date(s.created_at),
        "updated_at": http_date(s.updated_at),
        "next_run": opt_date(s.next_run),
    })
}

pub async fn create(
    State(app): State<App>,
    admin: Admin,
    body: Result<JsonBody<NewSchedule>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let JsonBody(req) = body.map_err(refuse)?;
    let created = schedules::create(&app.pool, &admin.actor(), req)
        .await
        .map_err(|e| refuse(e.into()))?;
    Ok(Json(json!({
        "success": true,
        "schedule_id": created.id,
        "message": "Scheduled destruction created successfully",
    })))
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
}

pub async fn list(
    State(app): State<App>,
    _: Admin,
    query: Result<ApiQuery<ListQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let ApiQuery(q) = query.map_err(refuse)?;
    let status = match q.status {
        Some(s) => Some(
            ScheduleStatus::parse(&s)
                .ok_or_else(|| refuse_bad(format!("Invalid status filter: {s}")))?,
        ),
        None => None,
    };
    let all = app
        .store
        .read(move |tx| store::schedules::list(tx, status))
        .await
        .map_err(store_failed("Failed to read schedules."))?;
    Ok(Json(json!({
        "success": true,
        "schedules": all.iter().map(to_json).collect::<Vec<_>>(),
        "count": all.len(),
    })))
}

/// Upstream's `<int:id>` route does not match anything else: no such schedule.
fn schedule_id(id: Result<ApiPath<u64>, ApiError>) -> Result<u64, ApiError> {
    id.map(|ApiPath(id)| id).map_err(|_| not_found())
}

pub async fn get(
    State(app): State<App>,
    _: Admin,
    id: Result<ApiPath<u64>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let id = schedule_id(id)?;
    let found = app
        .store
        .read(move |tx| store::schedules::get(tx, id))
        .await
        .map_err(store_failed("Failed to read the schedule."))?
        .ok_or_else(not_found)?;
    Ok(Json(json!({"success": true, "schedule": to_json(&found)})))
}

pub async fn cancel(
    State(app): State<App>,
    admin: Admin,
    id: Result<ApiPath<u64>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let id = schedule_id(id)?;
    schedules::cancel(&app.pool, &admin.actor(), id)
        .await
        .map_err(|e| refuse(e.into()))?;
    Ok(Json(json!({
        "success": true,
        "message": format!("Scheduled destruction {id} cancelled successfully"),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rendered_as_http_dates() {
        let t = crate::clock::parse_time("2026-05-01T18:00:00Z").expect("time");
        assert_eq!(http_date(t), "Fri, 01 May 2026 18:00:00 GMT");
    }
}
