//! `GET /api/event/report`: the post-event report as JSON (the current event, or
//! `?event=ID`). `POST /api/desktop-started`: a VM's agent says the participant's Chrome
//! Remote Desktop host started (the time from claim to desktop, for the report).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::ApiQuery;
use super::required_hostname;
use crate::error::ApiError;
use crate::model::DesktopKind;
use crate::pool::report::{self, Report};
use crate::server::auth::{Admin, Agent};
use crate::server::body::JsonBody;
use crate::server::state::App;

/// Which event's report: the current one when `event` is left out.
#[derive(Debug, Default, Deserialize)]
pub struct WhichEvent {
    pub event: Option<u64>,
}

/// `GET /api/event/report`.
pub async fn get(
    State(app): State<App>,
    _admin: Admin,
    ApiQuery(which): ApiQuery<WhichEvent>,
) -> Result<Json<Report>, ApiError> {
    Ok(Json(report::report(&app.pool, which.event).await?))
}

#[derive(Deserialize)]
pub struct Started {
    hostname: Option<String>,
}

/// `POST /api/desktop-started`: recorded once per assignment; a repeat, or a browser
/// seat (timed by its first stream instead), is answered without recording.
pub async fn desktop_started(
    State(app): State<App>,
    agent: Agent,
    JsonBody(started): JsonBody<Started>,
) -> Result<Json<Value>, ApiError> {
    let host = required_hostname(started.hostname, "hostname is required.")?;
    agent.acts_as(&host)?;
    let seconds = report::desktop_ready(&app.pool, &host, DesktopKind::Crd).await?;
    Ok(Json(json!({
        "message": "Desktop start noted.",
        "recorded": seconds.is_some(),
        "seconds_since_claim": seconds,
    })))
}
