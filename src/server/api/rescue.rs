//! Work rescue, the agents' side and the admin's list. `POST /api/rescue/{id}`: the VM's
//! agent uploads the zip of its participant's files (its own credential only, for its own
//! pending rescue). `POST /api/rescue/{id}/empty` and `/failed`: nothing to save, or it
//! could not. `GET /api/rescues`: every rescue with its outcome.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiPath;
use crate::error::ApiError;
use crate::model::{Rescue, RescueOutcome};
use crate::pool::rescue::UploadError;
use crate::server::auth::{Admin, Agent};
use crate::server::body::JsonBody;
use crate::server::state::App;

const MAX_REASON_LEN: usize = 500;

/// Rescue `id`, once the credential is its VM's own.
async fn owned(app: &App, agent: &Agent, id: u64) -> Result<Rescue, ApiError> {
    let rescue = app.rescues.find(id).await?;
    agent.acts_as_itself(&rescue.hostname)?;
    Ok(rescue)
}

pub async fn upload(
    State(app): State<App>,
    agent: Agent,
    ApiPath(id): ApiPath<u64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let rescue = owned(&app, &agent, id).await?;
    let zip = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/zip"));
    if !zip {
        return Err(ApiError::UnsupportedMediaType(
            "Send the archive with Content-Type: application/zip.".into(),
        ));
    }
    let kept = app
        .rescues
        .receive(&rescue, body.into_data_stream())
        .await
        .map_err(|e| match e {
            UploadError::Pool(e) => ApiError::from(e),
            UploadError::TooLarge(limit) => {
                ApiError::TooLarge(usize::try_from(limit).unwrap_or(usize::MAX))
            }
            UploadError::Invalid(why) => ApiError::BadRequest(why),
        })?;
    Ok(Json(
        json!({"message": "Files saved.", "rescue": describe(&kept)}),
    ))
}

pub async fn empty(
    State(app): State<App>,
    agent: Agent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Value>, ApiError> {
    let rescue = owned(&app, &agent, id).await?;
    let ended = app.rescues.report(&rescue, RescueOutcome::Empty).await?;
    Ok(Json(
        json!({"message": "Recorded: nothing to save.", "rescue": describe(&ended)}),
    ))
}

#[derive(Deserialize)]
pub struct Failed {
    reason: String,
}

pub async fn failed(
    State(app): State<App>,
    agent: Agent,
    ApiPath(id): ApiPath<u64>,
    JsonBody(failed): JsonBody<Failed>,
) -> Result<Json<Value>, ApiError> {
    let why = failed.reason.trim().to_owned();
    if why.is_empty() || why.chars().count() > MAX_REASON_LEN {
        return Err(ApiError::bad_request(format!(
            "reason: 1 to {MAX_REASON_LEN} characters saying why the files were not saved."
        )));
    }
    let rescue = owned(&app, &agent, id).await?;
    let ended = app
        .rescues
        .report(&rescue, RescueOutcome::Failed { why })
        .await?;
    Ok(Json(
        json!({"message": "Recorded: not saved.", "rescue": describe(&ended)}),
    ))
}

/// `GET /api/rescues`: every rescue, newest first.
pub async fn list(State(app): State<App>, _: Admin) -> Result<Json<Value>, ApiError> {
    let all = app.rescues.list().await?;
    Ok(Json(json!({
        "rescues": all.iter().map(describe).collect::<Vec<_>>(),
    })))
}

/// A rescue as the API shows it (the token digest left out).
pub fn describe(r: &Rescue) -> Value {
    let mut v = json!({
        "id": r.id,
        "hostname": r.hostname,
        "email": r.email,
        "reason": r.reason.as_str(),
        "requested_at": r.requested_at,
        "deadline": r.deadline,
        "outcome": r.outcome.as_str(),
        "finished_at": r.finished_at,
        "expires_at": r.expires_at,
        "expired": r.expired,
        "download": r.has_archive().then(|| format!("/admin/rescues/{}", r.id)),
    });
    match &r.outcome {
        RescueOutcome::Saved {
            files,
            bytes,
            left_out,
        } => {
            v["files"] = json!(files);
            v["bytes"] = json!(bytes);
            v["left_out"] = json!(left_out);
        }
        RescueOutcome::Failed { why } => v["why"] = json!(why),
        _ => {}
    }
    v
}
