//! `GET /download/lablink` (the agent build VMs run, see `download::AgentBuild`) and
//! `GET /download/lablink.sha256`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

use crate::server::App;

fn unavailable(e: std::io::Error) -> Response {
    tracing::error!(error = %e, "cannot serve the agent executable");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "The agent executable cannot be read.",
    )
        .into_response()
}

pub async fn executable(State(app): State<App>) -> Response {
    let checksum = match app.agent_build.sha256().await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    let file = match tokio::fs::File::open(app.agent_build.path()).await {
        Ok(f) => f,
        Err(e) => return unavailable(e),
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    let mut response = Response::new(Body::from_stream(ReaderStream::new(file)));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        header::HeaderValue::from_static("attachment; filename=\"lablink\""),
    );
    if let Ok(v) = header::HeaderValue::from_str(&checksum) {
        h.insert("x-checksum-sha256", v);
    }
    if let Some(len) = length {
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    response
}

pub async fn checksum(State(app): State<App>) -> Response {
    match app.agent_build.sha256().await {
        Ok(c) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{c}  lablink\n"),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}
