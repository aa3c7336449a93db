//! The rescued files. `GET /my-files` and `/my-files/{id}`: the participant's own, found by
//! their browser's claim cookie (e-mail and token, as `/my-vm` finds the seat).
//! `GET /admin/rescues`, `/admin/rescues/{id}` and `/admin/rescues/all.zip`: every one.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::Markup;

use super::PagePath;
use super::participant::ClaimCookie;
use crate::error::PageError;
use crate::model::Rescue;
use crate::pool::rescue::archive_name;
use crate::server::auth::Admin;
use crate::server::state::App;

/// The rescues of the participant whose browser sent `headers`; 401 without a claim.
async fn participants_own(app: &App, headers: &HeaderMap) -> Result<Vec<Rescue>, PageError> {
    let cookie = ClaimCookie::from_headers(headers)
        .filter(|c| c.email.is_some())
        .ok_or_else(|| {
            PageError::new(
                StatusCode::UNAUTHORIZED,
                "This browser has not claimed a seat; open this page in the browser you used for the workshop.",
            )
            .back("/")
        })?;
    let email = cookie.email.unwrap_or_default();
    Ok(app.rescues.of_participant(&email, &cookie.token).await?)
}

pub async fn my_files(State(app): State<App>, headers: HeaderMap) -> Result<Markup, PageError> {
    let mine = participants_own(&app, &headers).await?;
    Ok(crate::views::rescues::participant(
        &mine,
        app.config.rescue.keep_days,
    ))
}

pub async fn my_file(
    State(app): State<App>,
    headers: HeaderMap,
    PagePath(id): PagePath<u64>,
) -> Result<Response, PageError> {
    let mine = participants_own(&app, &headers).await?;
    let rescue = mine.into_iter().find(|r| r.id == id).ok_or_else(|| {
        PageError::new(StatusCode::NOT_FOUND, "No such saved files of yours.").back("/my-files")
    })?;
    download(&app, &rescue).await
}

async fn download(app: &App, rescue: &Rescue) -> Result<Response, PageError> {
    let file = app.rescues.open(rescue).await?;
    Ok(zip_response(
        &archive_name(rescue),
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    ))
}

fn zip_response(name: &str, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

pub async fn admin_list(State(app): State<App>, admin: Admin) -> Result<Markup, PageError> {
    let all = app.rescues.list().await?;
    let viewer = admin.viewer(chrono::Utc::now());
    Ok(crate::views::rescues::admin(&viewer, &all))
}

pub async fn admin_file(
    State(app): State<App>,
    admin: Admin,
    PagePath(id): PagePath<u64>,
) -> Result<Response, PageError> {
    admin.not_read_only("download participants' files")?;
    let rescue = app.rescues.find(id).await?;
    let response = download(&app, &rescue).await?;
    app.audit_by(
        &admin.actor(),
        "download-rescue",
        format!("rescue {id} ({} of {})", rescue.hostname, rescue.email),
    )
    .await;
    Ok(response)
}

/// Every kept archive in one zip, streamed as it is written.
pub async fn admin_all(State(app): State<App>, admin: Admin) -> Result<Response, PageError> {
    admin.not_read_only("download participants' files")?;
    let all = app.rescues.list().await?;
    let kept = all.iter().filter(|r| r.has_archive()).count();
    if kept == 0 {
        return Err(
            PageError::new(StatusCode::NOT_FOUND, "No rescued files are kept.")
                .back("/admin/rescues"),
        );
    }
    let (reader, writer) = tokio::io::duplex(256 * 1024);
    let rescues = app.rescues.clone();
    tokio::task::spawn_blocking(move || {
        let out = tokio_util::io::SyncIoBridge::new(writer);
        if let Err(e) = rescues.zip_all(&all, out) {
            // The client sees a cut download; the zip has no end record.
            tracing::warn!(error = %e, "the zip of all rescued files was not finished");
        }
    });
    app.audit_by(
        &admin.actor(),
        "download-rescues",
        format!("{kept} rescued archive(s)"),
    )
    .await;
    let stamp = app.clock.now().format("%Y%m%d_%H%M%S");
    Ok(zip_response(
        &format!("lablink_rescued_{stamp}.zip"),
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    ))
}
