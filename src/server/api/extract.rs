//! Extractors of the JSON API. Each answers a rejected path, query string or form as an
//! [`ApiError`] (JSON, the field named), never axum's plain-text rejection. JSON bodies
//! are read by [`crate::server::body::JsonBody`].

use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::server::body::{BodyLimit, DEFAULT_BODY_LIMIT};

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_rejected(parts, state, rejection).await),
        }
    }
}

async fn path_rejected<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    rejection: PathRejection,
) -> ApiError {
    use axum::extract::path::ErrorKind;
    let PathRejection::FailedToDeserializePathParams(failed) = rejection else {
        // The route and the handler disagree: a bug, not the client's doing.
        return ApiError::Failed(rejection.body_text());
    };
    // A single value is parsed without its name; the route knows it.
    let names: Vec<String> = axum::extract::RawPathParams::from_request_parts(parts, state)
        .await
        .map(|raw| raw.iter().map(|(name, _)| name.to_owned()).collect())
        .unwrap_or_default();
    match (failed.kind(), names.as_slice()) {
        (
            ErrorKind::ParseError {
                value,
                expected_type,
            },
            [name],
        ) => ApiError::bad_request(format!(
            "Invalid path parameter {name}: cannot parse `{value}` as {}.",
            type_name(expected_type)
        )),
        _ => ApiError::bad_request(failed.body_text()),
    }
}

fn type_name(rust: &str) -> String {
    match rust {
        "u8" | "u16" | "u32" | "u64" | "usize" => "an integer ≥ 0".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
        other => format!("a `{other}`"),
    }
}

/// The query string.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            // The text names the parameter: "Failed to deserialize query string: limit: …".
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// A urlencoded form body: another content type is 415, a body over the limit 413.
pub struct ApiForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
        axum::extract::Form::<T>::from_request(req, state)
            .await
            .map(|axum::extract::Form(value)| ApiForm(value))
            .map_err(|rejection| match rejection {
                FormRejection::InvalidFormContentType(e) => {
                    ApiError::UnsupportedMediaType(e.body_text())
                }
                FormRejection::BytesRejection(_)
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::TooLarge(limit)
                }
                FormRejection::BytesRejection(e) => {
                    ApiError::bad_request(format!("Could not read the request body: {e}"))
                }
                other => {
                    ApiError::bad_request(format!("Could not read the form: {}", other.body_text()))
                }
            })
    }
}
