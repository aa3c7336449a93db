//! `/api/reboot-vm`: an admin reboots one VM now (upstream 0.1.2 paths and answers).
//! Manual reboots ignore the auto-reboot limits but count as attempts.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiPath, required_hostname, stored_vm};
use crate::error::ApiError;
use crate::model::{Vm, validate_hostname};
use crate::server::auth::Admin;
use crate::server::body::JsonBody;
use crate::server::state::App;
use crate::store::vms;

#[derive(Deserialize)]
pub struct RebootRequest {
    hostname: Option<String>,
}

/// Reboots `host` through the provider and records it; the audit log names `admin`.
pub async fn reboot_now(app: &App, admin: &Admin, host: &str) -> Result<Vm, ApiError> {
    stored_vm(app, host, "Failed to reboot VM.").await?;
    if !app.provisioner.can_reboot() {
        return Err(ApiError::Conflict(format!(
            "Failed to initiate reboot: the `{}` provider cannot reboot VMs; restart {host} yourself.",
            app.config.provision.provider
        )));
    }
    if let Err(why) = app.provisioner.reboot(host).await {
        tracing::warn!(vm = %host, %why, "manual reboot failed");
        app.audit(
            &admin.user,
            admin.from_ip(),
            "reboot-failed",
            format!("{host}: {why}"),
        )
        .await;
        return Err(ApiError::Failed(format!(
            "Failed to initiate reboot: {why}"
        )));
    }
    let at = app.clock.now();
    let h = host.to_owned();
    let vm = app
        .store
        .write(move |tx| vms::update(tx, &h, |vm| vm.rebooted(at)))
        .await
        .map_err(ApiError::store("Failed to reboot VM."))?
        .ok_or(ApiError::VmNotFound)?;
    app.audit(&admin.user, admin.from_ip(), "reboot", host.to_owned())
        .await;
    Ok(vm)
}

/// `POST /api/reboot-vm` `{"hostname"}`.
pub async fn post_reboot(
    State(app): State<App>,
    admin: Admin,
    body: Result<JsonBody<RebootRequest>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let JsonBody(req) = body?;
    let host = required_hostname(req.hostname, "Hostname is required.")?;
    reboot_now(&app, &admin, &host).await?;
    Ok(Json(
        json!({"message": format!("Reboot initiated for VM '{host}'.")}),
    ))
}

/// `GET /api/reboot-vm/<hostname>`: how often and when the VM was last rebooted.
pub async fn get_reboot_info(
    State(app): State<App>,
    _: Admin,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let vm = stored_vm(&app, &host, "Could not retrieve reboot info.").await?;
    Ok(Json(json!({
        "hostname": host,
        "reboot_count": vm.reboot_count,
        "last_reboot_time": vm.last_reboot_time.map(|t| httpdate::fmt_http_date(t.into())),
    })))
}
