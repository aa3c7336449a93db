//! `GET /api/unassigned_vms_count`: the free-VM count the landing page shows.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
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
