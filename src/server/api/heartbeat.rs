//! `POST /api/heartbeat`: the agent says it is alive (every `server.heartbeat_seconds`),
//! how busy its GPUs are, and learns whether its participant's files must be rescued, its desktop reset, and what to
//! show on it (the countdown). `POST /api/vm-reset-done`: it was.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{required_hostname, stored_vm};
use crate::error::ApiError;
use crate::pool::report;
use crate::pool::usage::{self, GpuFigures};
use crate::server::auth::Agent;
use crate::server::body::JsonBody;
use crate::server::state::App;
use crate::store::vms;

/// LabLink's shape, and upstream's later one (`vm_id`, `boot_id`, `disk_free_pct`).
#[derive(Deserialize)]
pub struct Heartbeat {
    hostname: Option<String>,
    vm_id: Option<Value>,
    boot_id: Option<String>,
    disk_free_pct: Option<f64>,
    gpu_utilization_pct: Option<f64>,
    gpu_memory_used_mib: Option<u64>,
}

/// More GPU memory than any machine has (16 TiB, in MiB).
pub const MAX_GPU_MEMORY_MIB: u64 = 16 * 1024 * 1024;

fn boot_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

pub async fn post_heartbeat(
    State(app): State<App>,
    agent: Agent,
    JsonBody(beat): JsonBody<Heartbeat>,
) -> Result<Json<Value>, ApiError> {
    let named = beat.hostname.or(match beat.vm_id {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    });
    let host = required_hostname(named, "hostname (or vm_id) is required.")?;
    if let Some(id) = &beat.boot_id
        && !boot_id_ok(id)
    {
        return Err(ApiError::bad_request(
            "boot_id: expected the kernel's boot id (hex digits and '-', at most 64).",
        ));
    }
    if let Some(pct) = beat.disk_free_pct
        && !(0.0..=100.0).contains(&pct)
    {
        return Err(ApiError::bad_request("disk_free_pct: expected 0 to 100."));
    }
    if let Some(pct) = beat.gpu_utilization_pct
        && !(0.0..=100.0).contains(&pct)
    {
        return Err(ApiError::bad_request(
            "gpu_utilization_pct: expected 0 to 100.",
        ));
    }
    if beat
        .gpu_memory_used_mib
        .is_some_and(|mib| mib > MAX_GPU_MEMORY_MIB)
    {
        return Err(ApiError::bad_request(format!(
            "gpu_memory_used_mib: expected 0 to {MAX_GPU_MEMORY_MIB}."
        )));
    }
    agent.acts_as(&host)?;
    app.liveness.heartbeat(&host, beat.disk_free_pct);
    let mut vm = stored_vm(&app, &host, "Failed to record the heartbeat.").await?;
    if let Some(id) = beat.boot_id
        && vm.boot_id.as_deref() != Some(id.as_str())
    {
        let (h, at) = (host.clone(), app.clock.now());
        let rebooted = vm.boot_id.is_some();
        vm = app
            .store
            .write(move |tx| vms::update(tx, &h, |vm| vm.with_boot_id(&id, at)))
            .await
            .map_err(ApiError::store("Failed to record the heartbeat."))?
            .ok_or(ApiError::VmNotFound)?;
        if rebooted {
            tracing::warn!(vm = %host, "new boot id: the VM rebooted");
            report::rebooted(&app.pool, &host, report::REBOOT_SEEN.into()).await;
        }
    }
    let gpu = GpuFigures {
        utilization_pct: beat.gpu_utilization_pct,
        memory_used_mib: beat.gpu_memory_used_mib,
    };
    if let Err(e) = usage::heartbeat(&app.pool, &vm, gpu).await {
        // The heartbeat's other work goes on: the report misses one sample.
        tracing::error!(vm = %host, error = ?e, "cannot record the seat's usage");
    }
    if let Some(pending) = &vm.rescue
        && agent.nonce().is_none()
        && app.identities.credential(&host).is_none()
    {
        // Uploads take the VM's own credential only: a VM that has none (its agent uses the
        // shared token) cannot deliver, and the reset must not wait for it. A VM that has
        // one keeps its rescue, whoever else sends a heartbeat in its name.
        app.rescues
            .unsupported(pending.id)
            .await
            .map_err(ApiError::from)?;
        vm = stored_vm(&app, &host, "Failed to record the heartbeat.").await?;
    }
    let notice = vm
        .assignment
        .as_ref()
        .and_then(|_| crate::pool::event::desktop_notice(&app.pool))
        .map(|(id, text)| json!({"id": id, "text": text}));
    let announcement = vm
        .assignment
        .as_ref()
        .and_then(|_| crate::pool::announce::for_desktop(&app.pool))
        .map(|a| json!({"id": a.id.to_string(), "text": a.text}));
    let mut answer = json!({
        "status": "ok",
        "interval_seconds": app.config.server.heartbeat_seconds,
        "metrics_sample_seconds": app.config.metrics.sample_seconds,
        "reset_requested": vm.reset_requested(),
        "reset_id": vm.resets,
        "notice": notice,
        "announcement": announcement,
    });
    if let Some(rescue) = &vm.rescue {
        // Rescue deadlines are real time (an upload takes real seconds), not the pool's clock.
        let left = (rescue.deadline - chrono::Utc::now()).num_seconds().max(0);
        answer["rescue"] = json!({
            "id": rescue.id,
            "patterns": app.rescues.patterns(),
            "max_bytes": app.rescues.max_bytes(),
            "seconds_left": left,
        });
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
pub struct ResetDone {
    hostname: Option<String>,
    reset_id: Option<u32>,
}

/// The agent stopped the desktop and moved the last participant's files aside: the VM
/// may be handed out again.
pub async fn post_reset_done(
    State(app): State<App>,
    agent: Agent,
    JsonBody(done): JsonBody<ResetDone>,
) -> Result<Json<Value>, ApiError> {
    let host = required_hostname(done.hostname, "hostname is required.")?;
    agent.acts_as(&host)?;
    let (h, at, id) = (host.clone(), app.clock.now(), done.reset_id);
    let vm = app
        .store
        .write(move |tx| vms::update(tx, &h, |vm| vm.reset_done(id, at)))
        .await
        .map_err(ApiError::store("Failed to record the reset."))?
        .ok_or(ApiError::VmNotFound)?;
    tracing::info!(vm = %host, "desktop reset after its participant left");
    app.waitlist.offer(&vm);
    Ok(Json(json!({
        "message": "Reset recorded.",
        "available": vm.is_available(),
    })))
}
