//! Admin actions on the pool: launch, destroy (all or one), and reading runs.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiForm, ApiPath, ApiQuery};
use crate::error::ApiError;
use crate::model::{RunAction, validate_hostname};
use crate::pool::launch;
use crate::server::auth::Admin;
use crate::server::pages::admin::{Confirm, action_result, confirmed, is_htmx};
use crate::server::state::App;
use crate::store::runs;
use crate::views::admin::teardown::DESTROY_CONFIRMATION;

/// Most VMs one launch may ask for.
pub const MAX_LAUNCH: u32 = 500;
/// Most output lines one `GET /api/runs/<id>` answers.
pub const MAX_RUN_LINES: u64 = 10_000;

/// Upstream's rule: JSON when the client prefers it, a page otherwise (browsers).
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let first = accept
        .split(',')
        .next()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    first == "application/json"
}

/// For htmx requests a problem is a message fragment (htmx swaps only 2xx answers).
fn for_console(
    headers: &HeaderMap,
    answer: Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    match answer {
        Err(e) if is_htmx(headers) => Ok(action_result(headers, Err(e), "")),
        other => other,
    }
}

async fn start(
    app: &App,
    admin: &Admin,
    headers: &HeaderMap,
    action: RunAction,
) -> Result<Response, ApiError> {
    let run = launch::start(&app.pool, &admin.actor(), action).await?;
    if is_htmx(headers) {
        // The launch and teardown forms show the run below them, streaming.
        return Ok(match &run.action {
            RunAction::DestroyVm { hostname } => action_result(
                headers,
                Ok(format!("Deleting {hostname} (run #{}).", run.id)),
                "",
            ),
            _ => crate::views::admin::runs::panel(&run, &[], Some(&admin.csrf)).into_response(),
        });
    }
    if wants_json(headers) {
        let body = json!({
            "status": "accepted",
            "run_id": run.id,
            "run": format!("/api/runs/{}", run.id),
        });
        Ok((StatusCode::ACCEPTED, Json(body)).into_response())
    } else {
        Ok(Redirect::to(&format!("/admin/runs/{}", run.id)).into_response())
    }
}

#[derive(Deserialize)]
pub struct LaunchForm {
    num_vms: Option<String>,
}

fn launch_count(form: Result<ApiForm<LaunchForm>, ApiError>) -> Result<u32, ApiError> {
    let ApiForm(form) = form?;
    let raw = form.num_vms.unwrap_or_default();
    if raw.trim().is_empty() {
        return Err(ApiError::bad_request("Number of VMs is required."));
    }
    let count: i64 = raw.trim().parse().map_err(|_| {
        ApiError::bad_request("Invalid number of VMs. Please enter a valid integer.")
    })?;
    if count <= 0 {
        return Err(ApiError::bad_request(
            "Number of VMs must be greater than 0.",
        ));
    }
    u32::try_from(count)
        .ok()
        .filter(|c| *c <= MAX_LAUNCH)
        .ok_or_else(|| {
            ApiError::bad_request(format!("At most {MAX_LAUNCH} VMs can be launched at once."))
        })
}

/// `POST /api/launch` (form `num_vms`): starts the launch and answers at once.
pub async fn launch(
    State(app): State<App>,
    admin: Admin,
    headers: HeaderMap,
    form: Result<ApiForm<LaunchForm>, ApiError>,
) -> Result<Response, ApiError> {
    let answer = match launch_count(form) {
        Ok(count) => start(&app, &admin, &headers, RunAction::Launch { count }).await,
        Err(e) => Err(e),
    };
    for_console(&headers, answer)
}

/// `POST /destroy`: destroys every VM. From the console (a session) the admin must have
/// typed the confirmation; scripts with HTTP Basic post nothing, as upstream.
pub async fn destroy_all(
    State(app): State<App>,
    admin: Admin,
    headers: HeaderMap,
    form: Result<ApiForm<Confirm>, ApiError>,
) -> Result<Response, ApiError> {
    // Scripts post no form at all; a form that cannot be read is refused.
    let form = match form {
        Ok(ApiForm(form)) => Some(form),
        Err(ApiError::UnsupportedMediaType(_)) => None,
        Err(refused) => return for_console(&headers, Err(refused)),
    };
    let answer = if admin.from_console() && !confirmed(form, DESTROY_CONFIRMATION) {
        Err(ApiError::bad_request(format!(
            "Type '{DESTROY_CONFIRMATION}' to confirm destroying every VM."
        )))
    } else {
        start(&app, &admin, &headers, RunAction::DestroyAll).await
    };
    for_console(&headers, answer)
}

/// `POST /api/vms/<hostname>/destroy`: destroys one VM.
pub async fn destroy_one(
    State(app): State<App>,
    admin: Admin,
    headers: HeaderMap,
    ApiPath(hostname): ApiPath<String>,
) -> Result<Response, ApiError> {
    let answer = match validate_hostname(&hostname) {
        Ok(()) => start(&app, &admin, &headers, RunAction::DestroyVm { hostname }).await,
        Err(e) => Err(ApiError::BadRequest(e)),
    };
    for_console(&headers, answer)
}

pub async fn list_runs(State(app): State<App>, _: Admin) -> Result<Response, ApiError> {
    let recent = app
        .store
        .read(|tx| runs::recent(tx, 100))
        .await
        .map_err(ApiError::store("Failed to read runs."))?;
    Ok(Json(json!({ "runs": recent })).into_response())
}

#[derive(Deserialize)]
pub struct LinesQuery {
    from: Option<u64>,
    limit: Option<u64>,
}

/// A run and its output from line `from` (for following a run: ask again from `next`).
pub async fn get_run(
    State(app): State<App>,
    _: Admin,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<LinesQuery>,
) -> Result<Response, ApiError> {
    let from = q.from.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000);
    if !(1..=MAX_RUN_LINES).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_RUN_LINES}."
        )));
    }
    let found = app
        .store
        .read(move |tx| {
            let Some(run) = runs::get(tx, id)? else {
                return Ok(None);
            };
            let lines = runs::lines(tx, id, from, limit)?;
            Ok(Some((run, lines)))
        })
        .await
        .map_err(ApiError::store("Failed to read the run."))?;
    let (run, lines) = found.ok_or_else(|| ApiError::NotFound(format!("No run #{id}.")))?;
    let next = from + lines.len() as u64;
    Ok(Json(json!({ "run": run, "lines": lines, "next": next })).into_response())
}

/// `POST /api/runs/<id>/cancel`: stops a run in progress (404 unknown, 409 finished).
/// Answers 202 with the run as it is (still `running` until its processes stopped) in
/// JSON; the console (htmx) gets a message, and a browser's plain form post (one that
/// prefers HTML) goes back to the run's page.
pub async fn cancel_run(
    State(app): State<App>,
    admin: Admin,
    headers: HeaderMap,
    ApiPath(id): ApiPath<u64>,
) -> Result<Response, ApiError> {
    let cancelled = launch::cancel(&app.pool, &admin.actor(), id)
        .await
        .map_err(ApiError::from);
    let back = format!("/admin/runs/{id}");
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.trim_start().starts_with("text/html"));
    if is_htmx(&headers) || browser {
        return Ok(action_result(
            &headers,
            cancelled.map(|_| format!("Cancelling run #{id}: its processes were told to stop.")),
            &back,
        ));
    }
    let run = cancelled?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "cancelling", "run": run })),
    )
        .into_response())
}
