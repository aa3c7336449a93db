//! `GET /api/unassigned_vms_count`: the free-VM count the landing page shows.
//! `GET /api/vms`: the pool as the instructor sees it, liveness included.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::model::Vm;
use crate::server::auth::Admin;
use crate::server::state::App;
use crate::store::vms;

pub async fn unassigned_count(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let count = app
        .store
        .read(vms::count_free)
        .await
        .map_err(ApiError::store("Failed to count free VMs."))?;
    Ok(Json(json!({ "count": count })))
}

/// One VM for the admin: state, seat and whether its agent is alive.
pub fn describe(app: &App, vm: &Vm) -> Value {
    let live = app.liveness.report(&vm.hostname);
    json!({
        "hostname": vm.hostname,
        "status": vm.status.map(|s| s.as_str()),
        "health": vm.health.as_ref().map(|h| h.as_str()),
        "in_use": vm.in_use,
        "participant": vm.assignment.as_ref().map(|a| a.email.as_str()),
        "assigned_at": vm.assignment.as_ref().map(|a| a.assigned_at),
        "available": vm.is_available(),
        "alive": live.is_some_and(|r| r.alive),
        "unresponsive": vm.unresponsive_since.is_some(),
        "unresponsive_since": vm.unresponsive_since,
        "last_seen_seconds_ago": app.last_seen_secs(vm),
        "heartbeats": live.is_some_and(|r| r.heartbeats),
        "disk_free_pct": live.and_then(|r| r.disk_free_pct),
        "reset_pending": vm.reset_pending,
        "destroying": vm.destroying,
        "reboot_count": vm.reboot_count,
        "reboots_observed": vm.reboots_observed,
    })
}

pub async fn list_vms(State(app): State<App>, _: Admin) -> Result<Json<Value>, ApiError> {
    let pool = app
        .store
        .read(vms::list)
        .await
        .map_err(ApiError::store("Failed to read the pool."))?;
    let vms: Vec<Value> = pool.iter().map(|vm| describe(&app, vm)).collect();
    Ok(Json(json!({
        "vms": vms,
        "stale_after_seconds": app.liveness.stale_after().as_secs(),
    })))
}
