//! The agents' side of browser desktops. `GET /api/desktop/channel`: the agent's standing
//! connection, on which it is told (one JSON object per line) to open a stream.
//! `GET /api/desktop/tunnel/{id}` (HTTP upgrade to `lablink-rfb`): the agent dials back and
//! the connection becomes that stream's bytes. `POST /api/desktop/tunnel/{id}/refuse`: the
//! agent cannot open it, and says why. `PUT /api/desktop/thumbnail`: the agent's latest
//! picture of its desktop, for the seat wall.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::{ApiPath, ApiQuery, required_hostname};
use crate::error::ApiError;
use crate::pool::thumbnails;
use crate::server::auth::Agent;
use crate::server::body::JsonBody;
use crate::server::state::App;

/// The protocol name of a tunnel's upgrade.
pub const TUNNEL_PROTOCOL: &str = "lablink-rfb";
/// An idle channel carries an empty line this often, so both ends notice a dead peer.
const KEEPALIVE: Duration = Duration::from_secs(20);
const MAX_REASON_LEN: usize = 500;
const MAX_ID_LEN: usize = 128;

/// A stream id as the channel hands them out (checked before anything is looked up).
fn stream_id(id: String) -> Result<String, ApiError> {
    if id.is_empty() || id.chars().count() > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!(
            "id: 1 to {MAX_ID_LEN} characters (the id of the channel's open request)."
        )));
    }
    Ok(id)
}

#[derive(Deserialize)]
pub struct Named {
    hostname: Option<String>,
}

pub async fn channel(
    State(app): State<App>,
    agent: Agent,
    ApiQuery(named): ApiQuery<Named>,
) -> Result<Response, ApiError> {
    let host = required_hostname(named.hostname, "hostname is required.")?;
    agent.acts_as_itself(&host)?;
    let attached = app.desktops.attach(&host);
    tracing::info!(vm = %host, "agent's desktop channel open");
    let stopping = app.shutdown.clone();
    let lines = futures_util::stream::unfold(attached, move |mut attached| {
        let stopping = stopping.clone();
        async move {
            let line = tokio::select! {
                open = attached.opens.recv() => {
                    let open = open?;
                    let mut line = serde_json::to_vec(&open).ok()?;
                    line.push(b'\n');
                    line
                }
                () = tokio::time::sleep(KEEPALIVE) => b"\n".to_vec(),
                () = stopping.cancelled() => return None,
            };
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                attached,
            ))
        }
    });
    let mut response = Body::from_stream(lines).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

pub async fn tunnel(
    State(app): State<App>,
    agent: Agent,
    ApiPath(id): ApiPath<String>,
    ApiQuery(named): ApiQuery<Named>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let id = stream_id(id)?;
    let host = required_hostname(named.hostname, "hostname is required.")?;
    agent.acts_as_itself(&host)?;
    let asks_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(TUNNEL_PROTOCOL));
    if !asks_upgrade {
        return Err(ApiError::bad_request(
            "A tunnel needs `Connection: Upgrade` and `Upgrade: lablink-rfb`.",
        ));
    }
    if !app.desktops.is_pending(&host, &id) {
        return Err(ApiError::NotFound(
            "No desktop stream with this id is waiting for this VM (it timed out or was closed)."
                .into(),
        ));
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                if !app
                    .desktops
                    .deliver(&host, &id, Box::new(TokioIo::new(upgraded)))
                {
                    tracing::debug!(vm = %host, "a tunnel arrived after its viewer left");
                }
            }
            Err(e) => {
                tracing::warn!(vm = %host, error = %e, "a desktop tunnel's upgrade failed");
                app.desktops
                    .refuse(&host, &id, "the tunnel's connection failed".into());
            }
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(TUNNEL_PROTOCOL));
    Ok(response)
}

#[derive(Deserialize)]
pub struct Refusal {
    hostname: Option<String>,
    reason: Option<String>,
}

pub async fn refuse(
    State(app): State<App>,
    agent: Agent,
    ApiPath(id): ApiPath<String>,
    JsonBody(refusal): JsonBody<Refusal>,
) -> Result<StatusCode, ApiError> {
    let id = stream_id(id)?;
    let host = required_hostname(refusal.hostname, "hostname is required.")?;
    let reason = refusal
        .reason
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("reason is required."))?;
    if reason.chars().count() > MAX_REASON_LEN {
        return Err(ApiError::bad_request(format!(
            "reason: at most {MAX_REASON_LEN} characters."
        )));
    }
    agent.acts_as_itself(&host)?;
    tracing::warn!(vm = %host, %reason, "the agent could not open a desktop stream");
    if app.desktops.refuse(&host, &id, reason) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(
            "No desktop stream with this id is waiting for this VM.".into(),
        ))
    }
}

/// `PUT /api/desktop/thumbnail?hostname=…` (body: a JPEG, `Content-Type: image/jpeg`, at
/// most `thumbnails::MAX_BYTES_PER_SEAT`): kept as the seat's picture on the wall. The
/// answer tells the agent how often to send (`desktop.thumbnail_seconds`).
pub async fn thumbnail(
    State(app): State<App>,
    agent: Agent,
    ApiQuery(named): ApiQuery<Named>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let host = required_hostname(named.hostname, "hostname is required.")?;
    agent.acts_as_itself(&host)?;
    let jpeg = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("image/jpeg"));
    if !jpeg {
        return Err(ApiError::UnsupportedMediaType(
            "Send the thumbnail with Content-Type: image/jpeg.".into(),
        ));
    }
    let limit = thumbnails::MAX_BYTES_PER_SEAT;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let e = e.into_inner();
        if e.is::<http_body_util::LengthLimitError>() {
            ApiError::TooLarge(limit)
        } else {
            ApiError::bad_request(format!("Could not read the thumbnail: {e}"))
        }
    })?;
    // Every JPEG starts with a start-of-image marker and a segment marker.
    if !bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        return Err(ApiError::bad_request(
            "The body is not a JPEG (it must start with FF D8 FF).",
        ));
    }
    thumbnails::put(&app, &host, bytes).await?;
    Ok(axum::Json(serde_json::json!({
        "thumbnail_seconds": app.config.desktop.thumbnail_seconds,
    })))
}
