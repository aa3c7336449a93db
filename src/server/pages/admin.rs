//! Admin pages (plain HTML; HTTP Basic like upstream).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;
use crate::server::auth::Admin;
use crate::server::state::App;
use crate::store::{runs, vms};
use crate::views::admin as view;

pub async fn home(_: Admin) -> Redirect {
    Redirect::to("/admin/instances")
}

pub async fn instances(State(app): State<App>, _: Admin) -> Result<Response, ApiError> {
    let (pool, recent) = app
        .store
        .read(|tx| Ok((vms::list(tx)?, runs::recent(tx, 10)?)))
        .await
        .map_err(ApiError::store("Failed to read the pool."))?;
    let current = app.provisioner.current().await;
    Ok(view::instances(
        &pool,
        app.provisioner.provider_name(),
        current.as_ref(),
        &recent,
    )
    .into_response())
}

pub async fn run(
    State(app): State<App>,
    _: Admin,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let found = app
        .store
        .read(move |tx| {
            let Some(run) = runs::get(tx, id)? else {
                return Ok(None);
            };
            Ok(Some((run, runs::lines(tx, id, 0, 100_000)?)))
        })
        .await
        .map_err(ApiError::store("Failed to read the run."))?;
    let (run, lines) = found.ok_or_else(|| ApiError::NotFound(format!("No run #{id}.")))?;
    Ok(view::run(&run, &lines).into_response())
}
