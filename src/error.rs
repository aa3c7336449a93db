//! Errors at the HTTP boundary. API errors answer JSON `{"error": …}` with upstream's
//! messages; page errors render the page again with the message. Internals go to the
//! log, never to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::pool::PoolError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Missing or invalid Authorization header.")]
    MissingToken,
    #[error("Invalid API token.")]
    BadToken,
    #[error("This token belongs to VM {0}; it cannot act for another VM.")]
    OtherVm(String),
    #[error("Unauthorized Access")]
    BadBasic,
    #[error("Cross-site requests are not accepted here.")]
    CrossSite,
    #[error("Too many sign-in checks at once; try again in a moment.")]
    Busy,
    #[error("Too many failed sign-ins from your address; try again in {0} s.")]
    TooManyAttempts(u64),
    #[error("This form has expired or did not come from this site; reload the page and try again.")]
    BadCsrf,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// Nothing can be done now; ask again later.
    #[error("{0}")]
    Unavailable(String),
    #[error("Too many requests; wait {0} s and try again.")]
    Limited(u64),
    /// An outside action (a provider command) failed; the message says why.
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    NotFound(String),
    #[error("VM not found.")]
    VmNotFound,
    #[error("{0}")]
    Gone(String),
    #[error("No VMs found.")]
    NoVms,
    #[error("Request body is larger than {0} bytes.")]
    TooLarge(usize),
    #[error("timeout")]
    PollTimeout,
    #[error("The allocator is shutting down; ask again shortly.")]
    ShuttingDown,
    /// A store failure, answered with the endpoint's generic message.
    #[error("{message}")]
    Store {
        message: &'static str,
        source: StoreError,
    },
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    /// Wraps a store error with the message this endpoint shows for it.
    pub fn store(message: &'static str) -> impl FnOnce(StoreError) -> ApiError {
        move |source| ApiError::Store { message, source }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingToken | ApiError::BadToken | ApiError::BadBasic => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::VmNotFound | ApiError::NoVms | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::CrossSite
            | ApiError::BadCsrf
            | ApiError::OtherVm(_)
            | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooManyAttempts(_) | ApiError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::PollTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::ShuttingDown | ApiError::Busy | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Store { .. } | ApiError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> ApiError {
        match e {
            PoolError::Invalid(m) => ApiError::BadRequest(m),
            PoolError::NotFound(m) => ApiError::NotFound(m),
            PoolError::VmNotFound => ApiError::VmNotFound,
            PoolError::Forbidden(m) => ApiError::Forbidden(m),
            PoolError::Conflict(m) => ApiError::Conflict(m),
            PoolError::NoneFree => ApiError::Unavailable(e.to_string()),
            PoolError::Limited(wait) => ApiError::Limited(wait.as_secs().max(1)),
            PoolError::Failed(m) => ApiError::Failed(m),
            PoolError::Store { message, source } => ApiError::Store { message, source },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Store { source, message } = &self {
            tracing::error!(error = %source, "{message}");
        }
        let status = self.status();
        match self {
            // Flask-HTTPAuth's answer, which scripts written for upstream expect.
            ApiError::BadBasic => (
                status,
                [(
                    axum::http::header::WWW_AUTHENTICATE,
                    "Basic realm=\"Authentication Required\"",
                )],
                "Unauthorized Access",
            )
                .into_response(),
            ApiError::TooManyAttempts(wait) | ApiError::Limited(wait) => (
                status,
                [(axum::http::header::RETRY_AFTER, wait.to_string())],
                Json(json!({ "error": self.to_string() })),
            )
                .into_response(),
            other => (status, Json(json!({ "error": other.to_string() }))).into_response(),
        }
    }
}
