//! Scheduled destruction (upstream 0.1.2 paths and answers: `{"success": …, "message": …}`,
//! timestamps as HTTP dates), with the fixes: the rule is checked before anything is
//! stored (400), recurring schedules can be cancelled, and fire times come from stored data.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiPath, ApiQuery};
use crate::error::ApiError;
use crate::model::{Schedule, ScheduleStatus};
use crate::recurrence;
use crate::server::auth::Admin;
use crate::server::body::JsonBody;
use crate::server::state::App;
use crate::store::schedules;

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

/// ISO 8601 as the admin page sends it (`toISOString()`), or with an offset; a time
/// without an offset is taken as UTC.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text.trim(), format) {
            return Ok(t.and_utc());
        }
    }
    Err(format!(
        "'{text}' is not an ISO 8601 time such as 2026-05-01T18:00:00Z"
    ))
}

#[derive(Deserialize)]
pub struct NewSchedule {
    pub schedule_name: Option<String>,
    pub destruction_time: Option<String>,
    pub recurrence_rule: Option<String>,
    pub notification_enabled: Option<bool>,
    pub notification_hours_before: Option<i64>,
}

pub async fn create(
    State(app): State<App>,
    admin: Admin,
    body: Result<JsonBody<NewSchedule>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let JsonBody(req) = body.map_err(refuse)?;
    let created = create_schedule(&app, &admin, req).await?;
    Ok(Json(json!({
        "success": true,
        "schedule_id": created.id,
        "message": "Scheduled destruction created successfully",
    })))
}

/// Checks and stores a new schedule (the JSON API and the admin form both use it).
pub async fn create_schedule(
    app: &App,
    admin: &Admin,
    req: NewSchedule,
) -> Result<Schedule, ApiError> {
    let name = req
        .schedule_name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| refuse_bad("schedule_name is required"))?;
    if name.chars().count() > 255 {
        return Err(refuse_bad("schedule_name is longer than 255 characters"));
    }
    let when = req
        .destruction_time
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| refuse_bad("destruction_time is required"))?;
    let when = parse_time(&when)
        .map_err(|e| refuse_bad(format!("Invalid destruction_time format: {e}")))?;
    let now = app.clock.now();
    if when <= now {
        return Err(refuse_bad("destruction_time must be in the future"));
    }
    let rule = match req.recurrence_rule.filter(|r| !r.trim().is_empty()) {
        Some(r) => Some(recurrence::normalize(&r).map_err(refuse_bad)?),
        None => None,
    };
    let next_run = match &rule {
        Some(r) => recurrence::next_after(r, when, when - chrono::Duration::seconds(1))
            .map_err(refuse_bad)?
            .ok_or_else(|| refuse_bad("recurrence_rule never fires"))?,
        None => when,
    };
    let hours_before = req.notification_hours_before.unwrap_or(1);
    if !(0..=168).contains(&hours_before) {
        return Err(refuse_bad("notification_hours_before must be 0 to 168"));
    }
    let schedule = Schedule {
        id: 0,
        schedule_name: name.clone(),
        destruction_time: when,
        recurrence_rule: rule,
        created_by: admin.user.clone(),
        status: ScheduleStatus::Scheduled,
        execution_count: 0,
        last_execution_time: None,
        last_execution_result: None,
        notification_enabled: req.notification_enabled.unwrap_or(false),
        notification_hours_before: hours_before,
        created_at: now,
        updated_at: now,
        next_run: Some(next_run),
        executions: Vec::new(),
    };
    let created = app
        .store
        .write(move |tx| schedules::create(tx, schedule))
        .await
        .map_err(store_failed("Failed to create the schedule."))?
        .ok_or_else(|| {
            refuse(ApiError::Conflict(format!(
                "Schedule '{name}' already exists"
            )))
        })?;
    app.audit(
        &admin.user,
        admin.from_ip(),
        "schedule-destruction",
        format!(
            "'{}' (#{}), next at {next_run}",
            created.schedule_name, created.id
        ),
    )
    .await;
    Ok(created)
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
        .read(move |tx| schedules::list(tx, status))
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
        .read(move |tx| schedules::get(tx, id))
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
    cancel_schedule(&app, &admin, id).await?;
    Ok(Json(json!({
        "success": true,
        "message": format!("Scheduled destruction {id} cancelled successfully"),
    })))
}

/// Cancels a schedule that has not fired (the JSON API and the admin form both use it).
pub async fn cancel_schedule(app: &App, admin: &Admin, id: u64) -> Result<Schedule, ApiError> {
    let now = app.clock.now();
    let outcome = app
        .store
        .write(move |tx| schedules::update(tx, id, |s| s.cancelled(now)))
        .await
        .map_err(store_failed("Failed to cancel the schedule."))?
        .ok_or_else(not_found)?;
    match outcome {
        Ok(s) => {
            app.audit(
                &admin.user,
                admin.from_ip(),
                "cancel-schedule",
                format!("'{}' (#{id})", s.schedule_name),
            )
            .await;
            Ok(s)
        }
        Err(status) => Err(refuse_bad(format!(
            "Cannot cancel schedule with status '{}'",
            status.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_like_the_admin_page_sends_them() {
        let want = "2026-05-01T18:00:00Z";
        for text in [
            "2026-05-01T18:00:00Z",
            "2026-05-01T18:00:00.000Z",
            "2026-05-01T20:00:00+02:00",
            "2026-05-01T18:00:00",
            "2026-05-01T18:00",
        ] {
            let t = parse_time(text).expect(text);
            assert_eq!(
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                want,
                "{text}"
            );
        }
        assert!(parse_time("tomorrow").is_err());
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn dates_are_rendered_as_http_dates() {
        let t = parse_time("2026-05-01T18:00:00Z").expect("time");
        assert_eq!(http_date(t), "Fri, 01 May 2026 18:00:00 GMT");
    }
}
