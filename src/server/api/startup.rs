//! `POST /vm_startup`: the agent's long-poll for its assignment.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{required_hostname, stored_vm};
use crate::error::ApiError;
use crate::pool::waiters::Wake;
use crate::server::auth::Agent;
use crate::server::body::JsonBody;
use crate::server::state::App;

#[derive(Deserialize)]
pub struct StartupRequest {
    hostname: Option<String>,
}

/// The 0.1.2 client reads exactly these keys; `status` is always "success" on a 200.
#[derive(Serialize)]
pub struct StartupAnswer {
    status: &'static str,
    pin: String,
    command: String,
}

fn success(pin: String, command: String) -> Json<StartupAnswer> {
    Json(StartupAnswer {
        status: "success",
        pin,
        command,
    })
}

/// Answers at once when the VM is assigned; otherwise parks until the claim wakes it, the
/// hold time ends (408, the agent asks again), or the server shuts down (503).
pub async fn vm_startup(
    State(app): State<App>,
    agent: Agent,
    JsonBody(req): JsonBody<StartupRequest>,
) -> Result<Json<StartupAnswer>, ApiError> {
    let host = required_hostname(req.hostname, "Hostname is required.")?;
    agent.acts_as(&host)?;
    let mut waiter = app.waiters.subscribe(&host);
    let vm = stored_vm(&app, &host, "Failed to read the VM.").await?;
    if let Some(a) = vm.assignment {
        if !agent.still_current(&app) {
            return Err(ApiError::BadToken);
        }
        return Ok(success(a.pin.clone(), a.crd_command()));
    }
    // Waiting here is the 0.1.2 client's only sign of life (not for agents that heartbeat).
    let _parked = app.liveness.park(&host);
    tokio::select! {
        wake = waiter.wait() => match wake {
            Wake::Assigned { .. } if !agent.still_current(&app) => Err(ApiError::BadToken),
            Wake::Assigned { pin, command } => Ok(success(pin, command)),
            Wake::Deleted | Wake::Pending => Err(ApiError::VmNotFound),
        },
        () = tokio::time::sleep(app.long_poll()) => Err(ApiError::PollTimeout),
        () = app.shutdown.cancelled() => Err(ApiError::ShuttingDown),
    }
}
