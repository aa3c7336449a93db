//! `GET /api/doctor`: the checks of `lablink doctor` that make sense inside a running
//! allocator, run by the allocator itself, answered as `lablink doctor --json` prints them.
//! A read-only API token may read it: the findings name paths, addresses, versions and
//! which kind of cloud credentials is set, never a secret's value.

use axum::Json;
use axum::extract::State;

use crate::doctor::{self, Finding, Setup};
use crate::server::auth::Admin;
use crate::server::state::App;

/// One run at a time: each runs Terraform and probes the network; a second request waits
/// for the first (every probe is bounded) rather than doubling the work.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn doctor(State(app): State<App>, _admin: Admin) -> Json<Vec<Finding>> {
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
    let _turn = ONE_AT_A_TIME.lock().await;
    Json(doctor::examine(&setup).await)
}
