//! `GET /admin/event/report` (the console page) and `/admin/event/report.csv` (one row per
//! seat): the current event's report, or `?event=ID`'s.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::Markup;

use crate::error::{ApiError, PageError};
use crate::pool::report::{self, Report};
use crate::server::api::extract::ApiQuery;
use crate::server::api::report::WhichEvent;
use crate::server::auth::Admin;
use crate::server::state::App;
use crate::views::admin::report as view;

async fn made(
    app: &App,
    which: Result<ApiQuery<WhichEvent>, ApiError>,
) -> Result<(Report, bool), PageError> {
    let ApiQuery(which) = which?;
    let report = report::report(&app.pool, which.event).await?;
    Ok((report, which.event.is_some()))
}

pub async fn page(
    State(app): State<App>,
    admin: Admin,
    which: Result<ApiQuery<WhichEvent>, ApiError>,
) -> Result<Markup, PageError> {
    let (report, past) = made(&app, which).await?;
    let viewer = admin.viewer(app.clock.now());
    Ok(view::page(&viewer, &report, past))
}

pub async fn csv(
    State(app): State<App>,
    _admin: Admin,
    which: Result<ApiQuery<WhichEvent>, ApiError>,
) -> Result<Response, PageError> {
    let (report, _) = made(&app, which).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", view::csv_file_name(&report)),
            ),
        ],
        view::csv(&report),
    )
        .into_response())
}
