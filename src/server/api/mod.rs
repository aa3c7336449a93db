//! The JSON API: what VM agents call (upstream 0.1.2 paths and bodies) and the health check.

pub mod download;
pub mod health;
pub mod logs;
pub mod pool;
pub mod provision;
pub mod reboot;
pub mod schedules;
pub mod startup;
pub mod telemetry;

use crate::error::ApiError;
use crate::model::validate_hostname;

/// A required hostname field: absent, null or empty gets upstream's message.
fn required_hostname(value: Option<String>, missing: &str) -> Result<String, ApiError> {
    let host = value
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ApiError::bad_request(missing))?;
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    Ok(host)
}
