//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the JSON API. Hand-written
//! (`openapi.json` beside this file); `tests/it/openapi.rs` checks it against the router
//! in both directions.

pub mod markdown;

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
