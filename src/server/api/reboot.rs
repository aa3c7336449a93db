//! `/api/reboot-vm`: an admin reboots one VM now (upstream 0.1.2 paths and answers).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiPath, required_hostname, stored_vm};
use crate::error::ApiError;
use crate::model::validate_hostname;
use crate::pool::reboot;
use crate::server::auth::Admin;
use crate::server::body::JsonBody;
use crate::server::state::App;

#[derive(Deserialize)]
pub struct RebootRequest {
    hostname: Option<String>,
}

/// `POST /api/reboot-vm` `{"hostname"}`.
pub async fn post_reboot(
    State(app): State<App>,
    admin: Admin,
    body: Result<JsonBody<RebootRequest>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let JsonBody(req) = body?;
    let host = required_hostname(req.hostname, "Hostname is required.")?;
    reboot::reboot_now(&app.pool, &admin.actor(), &host).await?;
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
