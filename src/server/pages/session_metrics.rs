//! `GET /admin/sessions` (one row per seat of the day, with its sparkline) and the session
//! metrics exports, `/admin/export-sessions.csv` (one summary row per seat) and
//! `/admin/export-sessions.json` (every seat's series and summary).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::Markup;

use crate::error::{ApiError, PageError};
use crate::pool::usage::{self, SeatFilter};
use crate::server::api::session_metrics::SeatMetrics;
use crate::server::auth::Admin;
use crate::server::state::App;
use crate::views::admin::sessions as view;

pub async fn page(State(app): State<App>, admin: Admin) -> Result<Markup, PageError> {
    let seats = usage::current_sessions(&app.pool).await?;
    let viewer = admin.viewer(app.clock.now());
    Ok(view::page(&viewer, &seats))
}

async fn export(app: &App, admin: &Admin, ext: &str) -> Result<Response, ApiError> {
    let seats = usage::session_metrics(&app.pool, SeatFilter::default()).await?;
    let (body, mime) = if ext == "csv" {
        (view::csv(&seats), "text/csv; charset=utf-8")
    } else {
        let shown: Vec<SeatMetrics> = seats.iter().map(SeatMetrics::of).collect();
        let body = serde_json::to_vec_pretty(&serde_json::json!({ "seats": shown }))
            .map_err(|e| ApiError::Failed(format!("Cannot write the export: {e}")))?;
        (body, "application/json")
    };
    app.audit(
        &admin.user,
        admin.from_ip(),
        "export",
        format!("session metrics of {} seat(s) as {ext}", seats.len()),
    )
    .await;
    let stamp = app.clock.now().format("%Y%m%d_%H%M%S");
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"lablink_sessions_{stamp}.{ext}\""),
            ),
        ],
        body,
    )
        .into_response())
}

pub async fn csv(State(app): State<App>, admin: Admin) -> Result<Response, ApiError> {
    export(&app, &admin, "csv").await
}

pub async fn json(State(app): State<App>, admin: Admin) -> Result<Response, ApiError> {
    export(&app, &admin, "json").await
}
