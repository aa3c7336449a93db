//! The JSON API: what VM agents call (upstream 0.1.2 paths and bodies) and the health check.

pub mod backup;
pub mod download;
pub mod health;
pub mod heartbeat;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod participant_data;
pub mod pool;
pub mod provision;
pub mod reboot;
pub mod schedules;
pub mod seats;
pub mod startup;
pub mod telemetry;

use crate::error::ApiError;
use crate::model::{Vm, validate_hostname};
use crate::server::state::App;
use crate::store::vms;

/// A path parameter whose rejection (not a number, not UTF-8) is a JSON 400 like every
/// other error of the API, not axum's plain-text one.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for ApiPath<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// A required hostname field: absent, null or empty gets upstream's message.
pub fn required_hostname(value: Option<String>, missing: &str) -> Result<String, ApiError> {
    let host = value
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ApiError::bad_request(missing))?;
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    Ok(host)
}

/// The stored VM `host` (already a valid hostname), or 404 `VM not found.`; a store
/// failure is answered with `failure`.
pub async fn stored_vm(app: &App, host: &str, failure: &'static str) -> Result<Vm, ApiError> {
    let lookup = host.to_owned();
    app.store
        .read(move |tx| vms::get(tx, &lookup))
        .await
        .map_err(ApiError::store(failure))?
        .ok_or(ApiError::VmNotFound)
}
