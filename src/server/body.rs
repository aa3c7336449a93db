//! JSON request bodies: parsed whatever the declared content type (upstream senders are
//! not all careful about it), with errors answered as JSON 400/413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(limit)
            } else {
                ApiError::bad_request(format!("Could not read the request body: {rejection}"))
            }
        })?;
        // serde would read a struct from an array too; the API takes objects only.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("A JSON object body is required."));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))
    }
}

/// Body limit of all routes but log shipping.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Log batches: the 0.1.2 shipper sends at most 50 lines, but a line can be long.
pub const LOG_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The limit in force for a route, so the 413 message can name it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);
