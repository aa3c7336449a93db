//! `POST /api/session-metrics`: a VM's agent sends a batch of samples of its seat (GPU,
//! software in use, desktop connected). `GET /api/session-metrics`: every seat's series and
//! summary, for the admin (`?hostname=` or `?email=` to narrow).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::heartbeat::MAX_GPU_MEMORY_MIB;
use super::{ApiQuery, required_hostname, stored_vm};
use crate::error::ApiError;
use crate::model::{SeatSeries, SeriesPoint, SeriesSummary, validate_hostname};
use crate::pool::usage::{self, AgentSample, SeatFilter};
use crate::server::auth::{Admin, Agent};
use crate::server::body::JsonBody;
use crate::server::state::App;

/// Most samples one batch carries (the agent sends at most half as many).
pub const MAX_BATCH: usize = 240;
/// A sample older than this when it arrives is refused (a week: an agent holding samples
/// that long has a clock problem, not a backlog).
const MAX_AGE_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

#[derive(Deserialize)]
pub struct Batch {
    hostname: Option<String>,
    interval_seconds: Option<f64>,
    samples: Option<Vec<Sample>>,
}

#[derive(Deserialize)]
struct Sample {
    age_seconds: f64,
    gpu_utilization_pct: Option<f64>,
    gpu_memory_used_mib: Option<u64>,
    in_use: Option<bool>,
    desktop_connected: Option<bool>,
}

fn checked(i: usize, s: &Sample) -> Result<AgentSample, ApiError> {
    let bad = |field: &str, expected: String| {
        ApiError::bad_request(format!("samples[{i}].{field}: expected {expected}."))
    };
    if !(0.0..=MAX_AGE_SECONDS).contains(&s.age_seconds) {
        return Err(bad("age_seconds", format!("0 to {MAX_AGE_SECONDS}")));
    }
    if s.gpu_utilization_pct
        .is_some_and(|u| !(0.0..=100.0).contains(&u))
    {
        return Err(bad("gpu_utilization_pct", "0 to 100".into()));
    }
    if s.gpu_memory_used_mib
        .is_some_and(|m| m > MAX_GPU_MEMORY_MIB)
    {
        return Err(bad(
            "gpu_memory_used_mib",
            format!("0 to {MAX_GPU_MEMORY_MIB}"),
        ));
    }
    Ok(AgentSample {
        age_seconds: s.age_seconds,
        gpu_utilization_pct: s.gpu_utilization_pct,
        gpu_memory_used_mib: s.gpu_memory_used_mib,
        in_use: s.in_use,
        desktop_connected: s.desktop_connected,
    })
}

pub async fn post(
    State(app): State<App>,
    agent: Agent,
    JsonBody(batch): JsonBody<Batch>,
) -> Result<Json<Value>, ApiError> {
    let host = required_hostname(batch.hostname, "hostname is required.")?;
    if batch
        .interval_seconds
        .is_some_and(|s| !(1.0..=3600.0).contains(&s))
    {
        return Err(ApiError::bad_request(
            "interval_seconds: expected 1 to 3600.",
        ));
    }
    let raw = batch
        .samples
        .ok_or_else(|| ApiError::bad_request("samples is required (a list, may be empty)."))?;
    if raw.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "samples: at most {MAX_BATCH} per batch, got {}.",
            raw.len()
        )));
    }
    let samples = raw
        .iter()
        .enumerate()
        .map(|(i, s)| checked(i, s))
        .collect::<Result<Vec<_>, _>>()?;
    agent.acts_as(&host)?;
    let vm = stored_vm(&app, &host, "Failed to record the session metrics.").await?;
    let accepted = usage::record_samples(&app.pool, &vm, &samples, batch.interval_seconds).await?;
    Ok(Json(json!({
        "status": "ok",
        "accepted": accepted,
        "sample_seconds": app.config.metrics.sample_seconds,
    })))
}

/// The longest e-mail address (RFC 5321's path limit less its brackets).
const MAX_EMAIL_LEN: usize = 254;

#[derive(Deserialize)]
pub struct Which {
    hostname: Option<String>,
    email: Option<String>,
}

/// One seat as the API and the JSON export show it.
#[derive(Serialize)]
pub struct SeatMetrics<'a> {
    pub email: &'a str,
    pub hostname: &'a str,
    pub assigned_at: chrono::DateTime<chrono::Utc>,
    /// Samples a full point stands for (1 until the series first filled up).
    pub samples_per_point: u32,
    pub summary: SeriesSummary,
    pub points: &'a [SeriesPoint],
}

impl<'a> SeatMetrics<'a> {
    pub fn of(series: &'a SeatSeries) -> SeatMetrics<'a> {
        SeatMetrics {
            email: &series.email,
            hostname: &series.hostname,
            assigned_at: series.assigned_at,
            samples_per_point: series.per_point,
            summary: series.summary(),
            points: &series.points,
        }
    }
}

pub async fn get(
    State(app): State<App>,
    _admin: Admin,
    ApiQuery(which): ApiQuery<Which>,
) -> Result<Json<Value>, ApiError> {
    if let Some(host) = &which.hostname {
        validate_hostname(host).map_err(ApiError::BadRequest)?;
    }
    if let Some(email) = &which.email
        && (email.is_empty() || email.len() > MAX_EMAIL_LEN)
    {
        return Err(ApiError::bad_request(format!(
            "email: expected 1 to {MAX_EMAIL_LEN} characters."
        )));
    }
    let filter = SeatFilter {
        hostname: which.hostname,
        email: which.email,
    };
    let seats = usage::session_metrics(&app.pool, filter).await?;
    let shown: Vec<SeatMetrics> = seats.iter().map(SeatMetrics::of).collect();
    Ok(Json(json!({
        "sample_seconds": app.config.metrics.sample_seconds,
        "max_samples_per_seat": app.config.metrics.max_samples_per_seat,
        "seats": shown,
    })))
}
