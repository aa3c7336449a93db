//! `GET /api/doctor`: the checks of `lablink doctor` that make sense inside a running
//! allocator, run by the allocator itself, answered as `lablink doctor --json` prints them.
//! A read-only API token may read it: the findings name paths, addresses, versions and
//! which kind of cloud credentials is set, never a secret's value.

use axum::Json;
use axum::extract::State;

use crate::doctor::{self, Finding, Setup};
use crate::error::ApiError;
use crate::server::auth::Admin;
use crate::server::state::App;

/// Roughly how long a run takes, for the refused caller's `Retry-After`.
const RETRY_AFTER_SECONDS: u64 = 15;

pub async fn doctor(State(app): State<App>, _admin: Admin) -> Result<Json<Vec<Finding>>, ApiError> {
    // One run at a time: each runs Terraform and probes the network. A request arriving
    // during a run is told to come back rather than queued, so callers cannot pile them up.
    let Ok(_turn) = app.doctor_run.try_lock() else {
        return Err(ApiError::Limited(RETRY_AFTER_SECONDS));
    };
    let mut config = app.config.clone();
    // Where it really listens (a port of 0 is chosen at start).
    if let Some(addr) = app.listening.get() {
        config.server.listen = addr.to_string();
    }
    let config_problems = config.validate().iter().map(ToString::to_string).collect();
    let setup = Setup {
        config,
        config_file: app.config_file.get().cloned(),
        config_problems,
        env: std::env::vars().collect(),
        min_free_mb: doctor::DEFAULT_MIN_FREE_MB,
        // dns.domain's URL: its probe asks for `/`, never this route again.
        public_url: None,
        inside_allocator: true,
    };
    Ok(Json(doctor::examine(&setup).await))
}
