//! The seat wall: the page, and each seat's latest picture (the live stream is
//! `sse::wall`).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::Markup;

use crate::error::{ApiError, PageError};
use crate::model::validate_hostname;
use crate::pool::thumbnails;
use crate::server::api::ApiPath;
use crate::server::auth::Staff;
use crate::server::state::App;
use crate::views::admin::wall as view;

/// `GET /admin/wall`.
pub async fn page(State(app): State<App>, staff: Staff) -> Result<Markup, PageError> {
    let tiles = thumbnails::wall(&app).await?;
    Ok(view::page(&staff.viewer(app.clock.now()), &tiles))
}

/// `GET /admin/wall/{hostname}/thumbnail`: the JPEG of the VM's current seat (404 when
/// there is none), 304 when the browser has it already.
pub async fn thumbnail(
    State(app): State<App>,
    staff: Staff,
    ApiPath(host): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    staff.not_read_only("see participants' screens")?;
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let Some(picture) = thumbnails::of_seat(&app, &host).await? else {
        return Err(ApiError::NotFound(format!(
            "{host} has no picture of its desktop: no participant on a browser seat, or its agent sent none yet."
        )));
    };
    let etag = picture.etag(app.desktops.thumbnails.epoch);
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"))],
            picture.jpeg,
        )
            .into_response()
    };
    let h = response.headers_mut();
    // Revalidated every time: the picture is of someone's screen and changes.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    Ok(response)
}
