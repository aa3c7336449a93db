//! What VMs report about themselves: status, in-use, GPU health, startup timings.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiPath, required_hostname, stored_vm};
use crate::error::ApiError;
use crate::model::{Health, MAX_FIELD_LEN, MetricsReport, Vm, VmStatus, validate_hostname};
use crate::pool::report;
use crate::server::auth::{Agent, AgentOrAdmin};
use crate::server::body::JsonBody;
use crate::server::state::App;
use crate::store::{identities, vms};

#[derive(Deserialize)]
pub struct StatusReport {
    hostname: Option<String>,
    status: Option<String>,
}

enum Recorded {
    /// Recorded; `available`: the VM can be handed out now.
    Yes {
        available: bool,
        /// The VM turned to `error` with this report.
        failed: Option<Box<Vm>>,
    },
    NotThisLaunch,
    Destroyed,
}

/// Upsert: the first report creates the VM (only a VM of the current launch, or any name
/// with the shared token).
pub async fn post_status(
    State(app): State<App>,
    agent: Agent,
    JsonBody(report): JsonBody<StatusReport>,
) -> Result<Json<Value>, ApiError> {
    const MISSING: &str = "Hostname and status are required.";
    let host = required_hostname(report.hostname, MISSING)?;
    agent.acts_as(&host)?;
    let text = report
        .status
        .ok_or_else(|| ApiError::bad_request(MISSING))?;
    let status = VmStatus::parse(&text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Unknown status '{}'; expected one of initializing, running, error, rebooting, unknown.",
            text.chars().take(64).collect::<String>()
        ))
    })?;
    let now = Utc::now();
    let gone = app.provisioner.gone();
    let name = host.clone();
    let nonce = agent.nonce().map(str::to_owned);
    // Checked inside the write: the store orders it against a destroy's or revoke's delete.
    let recorded = app
        .store
        .write(move |tx| {
            if let Some(nonce) = &nonce
                && !identities::is_current(tx, &name, nonce)?
            {
                return Ok(Recorded::NotThisLaunch);
            }
            if gone.contains(&name) {
                return Ok(Recorded::Destroyed);
            }
            let was = vms::get_in(tx, &name)?.and_then(|vm| vm.status);
            let vm = vms::report_status(tx, &name, Some(status), now)?;
            let turned_error = status == VmStatus::Error && was != Some(VmStatus::Error);
            Ok(Recorded::Yes {
                available: vm.is_available(),
                failed: turned_error.then(|| Box::new(vm)),
            })
        })
        .await
        .map_err(ApiError::store("Failed to update VM status."))?;
    match recorded {
        Recorded::Yes { available, failed } => {
            if available {
                app.waitlist.vacancy();
            }
            if let Some(vm) = failed {
                report::vm_failed(&app.pool, &vm, report::FAILED_STATUS_ERROR).await;
            }
            Ok(Json(json!({"message": "VM status updated successfully."})))
        }
        Recorded::NotThisLaunch => Err(ApiError::BadToken),
        Recorded::Destroyed => Err(ApiError::Gone(format!(
            "VM {host} was destroyed; it is not registered again until the next launch."
        ))),
    }
}

pub async fn get_status(
    State(app): State<App>,
    agent: Agent,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    agent.acts_as(&host)?;
    let vm = stored_vm(&app, &host, "Failed to get VM status.").await?;
    match vm.status {
        Some(status) => Ok(Json(json!({"hostname": host, "status": status.as_str()}))),
        None => Err(ApiError::VmNotFound),
    }
}

/// hostname → status (null before the first report) for every VM.
pub async fn all_statuses(
    State(app): State<App>,
    caller: AgentOrAdmin,
) -> Result<Json<BTreeMap<String, Option<&'static str>>>, ApiError> {
    caller.may_read_all()?;
    let all = app
        .store
        .read(vms::list)
        .await
        .map_err(ApiError::store("Failed to get VM status."))?;
    if all.is_empty() {
        return Err(ApiError::NoVms);
    }
    Ok(Json(
        all.into_iter()
            .map(|vm| (vm.hostname, vm.status.map(VmStatus::as_str)))
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct InUseReport {
    hostname: Option<String>,
    status: Option<bool>,
}

pub async fn post_in_use(
    State(app): State<App>,
    agent: Agent,
    JsonBody(report): JsonBody<InUseReport>,
) -> Result<Json<Value>, ApiError> {
    let host = required_hostname(report.hostname, "Hostname is required.")?;
    agent.acts_as(&host)?;
    let in_use = report
        .status
        .ok_or_else(|| ApiError::bad_request("status is required: true or false."))?;
    let now = Utc::now();
    app.store
        .write(move |tx| vms::update(tx, &host, |vm| vm.with_in_use(in_use, now)))
        .await
        .map_err(ApiError::store("Failed to update in-use status."))?
        .ok_or(ApiError::VmNotFound)?;
    Ok(Json(
        json!({"message": "In-use status updated successfully."}),
    ))
}

#[derive(Deserialize)]
pub struct GpuReport {
    hostname: Option<String>,
    gpu_status: Option<String>,
}

pub async fn post_gpu_health(
    State(app): State<App>,
    agent: Agent,
    JsonBody(report): JsonBody<GpuReport>,
) -> Result<Json<Value>, ApiError> {
    const MISSING: &str = "GPU status and hostname are required.";
    let host = required_hostname(report.hostname, MISSING)?;
    agent.acts_as(&host)?;
    let gpu = report
        .gpu_status
        .ok_or_else(|| ApiError::bad_request(MISSING))?;
    if gpu.len() > MAX_FIELD_LEN {
        return Err(ApiError::bad_request(format!(
            "gpu_status is longer than {MAX_FIELD_LEN} bytes."
        )));
    }
    let health = Health::from(gpu);
    let turns_unhealthy = health == Health::Unhealthy;
    let now = Utc::now();
    let (was, vm) = app
        .store
        .write(move |tx| {
            let was = vms::get_in(tx, &host)?.and_then(|vm| vm.health);
            Ok((
                was,
                vms::update(tx, &host, |vm| vm.with_health(health, now))?,
            ))
        })
        .await
        .map_err(ApiError::store("Failed to update GPU health status."))?;
    let vm = vm.ok_or(ApiError::VmNotFound)?;
    if turns_unhealthy && was != Some(Health::Unhealthy) {
        report::vm_failed(&app.pool, &vm, report::FAILED_GPU_UNHEALTHY).await;
    }
    Ok(Json(
        json!({"message": "GPU health status updated successfully."}),
    ))
}

/// Unix seconds (integer or fractional), as start.sh and user_data send them.
#[derive(Deserialize)]
pub struct MetricsBody {
    cloud_init_start: Option<f64>,
    cloud_init_end: Option<f64>,
    cloud_init_duration_seconds: Option<f64>,
    container_start: Option<f64>,
    container_end: Option<f64>,
    container_startup_duration_seconds: Option<f64>,
}

fn timestamp(key: &str, value: Option<f64>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(secs) = value else { return Ok(None) };
    let millis = (secs * 1000.0).round();
    if !millis.is_finite() || millis < 0.0 {
        return Err(ApiError::bad_request(format!(
            "{key} must be Unix seconds ≥ 0."
        )));
    }
    DateTime::from_timestamp_millis(millis as i64)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("{key} is out of range.")))
}

fn duration(key: &str, value: Option<f64>) -> Result<Option<f64>, ApiError> {
    match value {
        Some(d) if !d.is_finite() || d < 0.0 => Err(ApiError::bad_request(format!(
            "{key} must be a number of seconds ≥ 0."
        ))),
        other => Ok(other),
    }
}

pub async fn post_metrics(
    State(app): State<App>,
    agent: Agent,
    ApiPath(host): ApiPath<String>,
    body: Result<JsonBody<MetricsBody>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    agent.acts_as(&host)?;
    // Upstream answers an unknown host before looking at the body.
    stored_vm(&app, &host, "Failed to post VM metrics.").await?;
    let JsonBody(body) = body?;
    let report = MetricsReport {
        cloud_init_start: timestamp("cloud_init_start", body.cloud_init_start)?,
        cloud_init_end: timestamp("cloud_init_end", body.cloud_init_end)?,
        cloud_init_duration_seconds: duration(
            "cloud_init_duration_seconds",
            body.cloud_init_duration_seconds,
        )?,
        container_start: timestamp("container_start", body.container_start)?,
        container_end: timestamp("container_end", body.container_end)?,
        container_startup_duration_seconds: duration(
            "container_startup_duration_seconds",
            body.container_startup_duration_seconds,
        )?,
    };
    let now = Utc::now();
    app.store
        .write(move |tx| vms::update(tx, &host, |vm| vm.with_metrics(&report, now)))
        .await
        .map_err(ApiError::store("Failed to post VM metrics."))?
        .ok_or(ApiError::VmNotFound)?;
    Ok(Json(json!({"message": "VM metrics posted successfully."})))
}
