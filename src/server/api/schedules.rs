//! Scheduled destruction (upstream 0.1.2 paths and answers: `{"success": …, "message": …}`,
//! timestamps as HTTP dates), with the fixes: the rule is checked before anything is
//! stored (400), recurring schedules can be cancelled, and fire times come from stored data.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiPath;
use crate::error::ApiError;
use crate::model::{Schedule, ScheduleStatus};
use crate::pool::schedules::{self, NewSchedule};
use crate::server::auth::Admin;
use crate::server::body::JsonBody;
use crate::server::state::App;
use crate::store;

impl From<crate::pool::PoolError> for Refusal {
    fn from(e: crate::pool::PoolError) -> Refusal {
        let api = ApiError::from(e);
        let status = api.status();
        if let ApiError::Store { source, message } = &api {
            tracing::error!(error = %source, "{message}");
        }
        Refusal(status, api.to_string())
    }
}

/// Upstream's error shape for these endpoints.
pub struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"success": false, "message": self.1}))).into_response()
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        let status = match &e {
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Store { .. } => {
                tracing::error!(error = %e, "schedule store failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Refusal(status, e.to_string())
    }
}

/// A store failure, answered with this endpoint's message (details go to the log).
fn store_failed(message: &'static str) -> impl FnOnce(crate::store::StoreError) -> Refusal {
    move |source| Refusal::from(ApiError::Store { message, source })
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
) -> Result<Json<Value>, Refusal> {
    let JsonBody(req) = body?;
    let created = schedules::create(&app.pool, &admin.actor(), req).await?;
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
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, Refusal> {
    let status = match q.status {
        Some(s) => Some(ScheduleStatus::parse(&s).ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("Invalid status filter: {s}"),
            )
        })?),
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
fn schedule_id(id: Result<ApiPath<u64>, ApiError>) -> Result<u64, Refusal> {
    id.map(|ApiPath(id)| id)
        .map_err(|_| refuse(StatusCode::NOT_FOUND, "Schedule not found"))
}

pub async fn get(
    State(app): State<App>,
    _: Admin,
    id: Result<ApiPath<u64>, ApiError>,
) -> Result<Json<Value>, Refusal> {
    let id = schedule_id(id)?;
    let found = app
        .store
        .read(move |tx| store::schedules::get(tx, id))
        .await
        .map_err(store_failed("Failed to read the schedule."))?
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "Schedule not found"))?;
    Ok(Json(json!({"success": true, "schedule": to_json(&found)})))
}

pub async fn cancel(
    State(app): State<App>,
    admin: Admin,
    id: Result<ApiPath<u64>, ApiError>,
) -> Result<Json<Value>, Refusal> {
    let id = schedule_id(id)?;
    schedules::cancel(&app.pool, &admin.actor(), id).await?;
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
        let t = crate::pool::schedules::parse_time("2026-05-01T18:00:00Z").expect("time");
        assert_eq!(http_date(t), "Fri, 01 May 2026 18:00:00 GMT");
    }
}
