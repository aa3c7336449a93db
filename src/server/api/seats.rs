//! The seat actions of `pool::seats` over the JSON API: release, move, clear, revoke, and
//! minting the manual provider's credentials.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiPath, required_hostname};
use crate::error::ApiError;
use crate::model::{Vm, validate_hostname};
use crate::pool::seats;
use crate::server::auth::Admin;
use crate::server::body::JsonBody;
use crate::server::state::App;

fn seat(vm: &Vm) -> Value {
    json!({
        "hostname": vm.hostname,
        "participant": vm.assignment.as_ref().map(|a| a.email.as_str()),
        "reset_pending": vm.reset_pending,
    })
}

/// `POST /api/vms/<hostname>/release`.
pub async fn post_release(
    State(app): State<App>,
    admin: Admin,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let vm = seats::release(&app.pool, &admin.actor(), &host).await?;
    Ok(Json(json!({
        "message": format!("Seat on {host} released; the VM is handed out again once its desktop is reset."),
        "vm": seat(&vm),
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    to: Option<String>,
}

/// `POST /api/vms/<hostname>/move` `{"to": "<hostname>"}` (optional).
pub async fn post_move(
    State(app): State<App>,
    admin: Admin,
    ApiPath(host): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let request: MoveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MoveRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?
    };
    let to = request.to.filter(|t| !t.is_empty());
    if let Some(to) = &to {
        validate_hostname(to).map_err(|e| ApiError::bad_request(format!("to: {e}")))?;
    }
    let (old, new) =
        seats::move_participant(&app.pool, &admin.actor(), &host, to.as_deref()).await?;
    Ok(Json(json!({
        "message": format!("Participant moved from {host} to {}.", new.hostname),
        "from": seat(&old),
        "to": seat(&new),
    })))
}

/// `POST /api/vms/<hostname>/clear`.
pub async fn post_clear(
    State(app): State<App>,
    admin: Admin,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let vm = seats::clear(&app.pool, &admin.actor(), &host).await?;
    Ok(Json(json!({
        "message": format!("{host} cleared."),
        "vm": seat(&vm),
        "available": vm.is_available(),
    })))
}

/// `POST /api/vms/<hostname>/revoke`.
pub async fn post_revoke(
    State(app): State<App>,
    admin: Admin,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    seats::revoke(&app.pool, &admin.actor(), &host).await?;
    Ok(Json(json!({
        "message": format!("{host} revoked: its credential no longer works and its record is gone."),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    hostname: Option<String>,
    hostnames: Option<Vec<String>>,
}

/// `POST /api/vm-credentials` `{"hostname"}` or `{"hostnames": […]}`: credentials for
/// machines that join by themselves (the manual provider), or for a rehearsal.
pub async fn post_mint(
    State(app): State<App>,
    admin: Admin,
    body: Result<JsonBody<MintRequest>, ApiError>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let JsonBody(req) = body?;
    let hosts = match (req.hostname, req.hostnames) {
        (Some(one), None) => vec![required_hostname(Some(one), "hostname is required.")?],
        (None, Some(many)) if !many.is_empty() && many.len() <= seats::MAX_MINT => {
            for h in &many {
                validate_hostname(h)
                    .map_err(|e| ApiError::bad_request(format!("hostnames: {h:?}: {e}")))?;
            }
            many
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "hostnames: give 1 to {} names.",
                seats::MAX_MINT
            )));
        }
        _ => {
            return Err(ApiError::bad_request(
                "Give either hostname or hostnames (a list).",
            ));
        }
    };
    let minted = seats::mint(&app.pool, &admin.actor(), &hosts).await?;
    let credentials: serde_json::Map<String, Value> = minted
        .into_iter()
        .map(|(h, c)| (h, Value::String(c)))
        .collect();
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({ "credentials": credentials })),
    ))
}

/// `GET /api/vm-credentials`: the names that hold a credential now (never the secrets).
pub async fn list_identities(State(app): State<App>, _: Admin) -> Json<Value> {
    Json(json!({ "hostnames": app.identities.names() }))
}
