//! `POST /vm_startup`: the agent's long-poll for its assignment.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{required_hostname, stored_vm};
use crate::error::ApiError;
use crate::model::DesktopKind;
use crate::pool::liveness;
use crate::pool::waiters::{Waiter, Wake};
use crate::server::auth::Agent;
use crate::server::body::JsonBody;
use crate::server::state::App;

#[derive(Deserialize)]
pub struct StartupRequest {
    hostname: Option<String>,
}

/// The 0.1.2 client reads exactly these keys; `status` is always "success" on a 200.
/// `desktop` is sent only for a browser seat (`lablink agent` serves it; the command is
/// empty then).
#[derive(Serialize)]
pub struct StartupAnswer {
    status: &'static str,
    pin: String,
    command: String,
    #[serde(skip_serializing_if = "is_crd")]
    desktop: DesktopKind,
}

fn is_crd(kind: &DesktopKind) -> bool {
    *kind == DesktopKind::Crd
}

fn success(pin: String, command: String, desktop: DesktopKind) -> Json<StartupAnswer> {
    Json(StartupAnswer {
        status: "success",
        pin,
        command,
        desktop,
    })
}

/// Answers at once when the VM is assigned; otherwise parks until the claim wakes it, the
/// hold time ends (408, the agent asks again), or the server shuts down (503).
pub async fn vm_startup(
    State(app): State<App>,
    agent: Agent,
    JsonBody(req): JsonBody<StartupRequest>,
) -> Result<Json<StartupAnswer>, ApiError> {
    match begin(&app, agent, req).await? {
        Startup::Answer(answer) => Ok(answer),
        Startup::Park(parked) => parked.answer(&app).await,
    }
}

/// Where a long-poll stands once its request is read.
pub enum Startup {
    Answer(Json<StartupAnswer>),
    Park(Parked),
}

/// A long-poll waiting for its VM's assignment: all it holds while it waits (thousands
/// wait at once).
pub struct Parked {
    agent: Agent,
    waiter: Waiter,
    /// Waiting here is the 0.1.2 client's only sign of life (not for agents that
    /// heartbeat).
    _alive: liveness::Parked,
}

/// Everything before the wait: the answer if the VM is assigned already.
pub async fn begin(app: &App, agent: Agent, req: StartupRequest) -> Result<Startup, ApiError> {
    let host = required_hostname(req.hostname, "Hostname is required.")?;
    agent.acts_as(&host)?;
    let waiter = app.waiters.subscribe(&host);
    // Only the assignment: the rest of the record is not held through the wait.
    let assignment = stored_vm(app, &host, "Failed to read the VM.")
        .await?
        .assignment;
    if let Some(a) = assignment {
        if !agent.still_current(app) {
            return Err(ApiError::BadToken);
        }
        return Ok(Startup::Answer(success(
            a.pin.clone(),
            a.startup_command(),
            a.desktop,
        )));
    }
    Ok(Startup::Park(Parked {
        agent,
        waiter,
        _alive: app.liveness.park(&host),
    }))
}

impl Parked {
    pub async fn answer(self, app: &App) -> Result<Json<StartupAnswer>, ApiError> {
        tokio::select! {
            wake = self.waiter.wait() => match wake {
                Wake::Assigned { .. } if !self.agent.still_current(app) => Err(ApiError::BadToken),
                Wake::Assigned { pin, command, desktop } => Ok(success(pin, command, desktop)),
                Wake::Deleted => Err(ApiError::VmNotFound),
            },
            () = tokio::time::sleep(app.long_poll()) => Err(ApiError::PollTimeout),
            () = app.shutdown.cancelled() => Err(ApiError::ShuttingDown),
        }
    }
}
