//! The JSON API: what VM agents call (upstream 0.1.2 paths and bodies) and the health check.

pub mod accounts;
pub mod admin_tokens;
pub mod allocator_log;
pub mod backup;
pub mod classroom;
pub mod desktop;
pub mod doctor;
pub mod download;
pub mod event;
pub mod extract;
pub mod health;
pub mod heartbeat;
pub mod log_follow;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod participant_data;
pub mod pool;
pub mod provision;
pub mod reboot;
pub mod report;
pub mod rescue;
pub mod schedules;
pub mod seats;
pub mod session_metrics;
pub mod startup;
pub mod telemetry;
pub mod waitlist;

pub use extract::{ApiForm, ApiPath, ApiQuery};

use crate::error::ApiError;
use crate::model::{Vm, validate_hostname};
use crate::server::state::App;

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
    Ok(crate::pool::stored_vm(app, host, failure).await?)
}
