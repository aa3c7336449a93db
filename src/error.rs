//! Errors at the HTTP boundary. API errors answer JSON `{"error": …}` with upstream's
//! messages (the schedule endpoints upstream's `{"success": false, "message": …}`); page
//! errors answer an HTML page, or the message alone to htmx. Internals go to the log,
//! never to the client.

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::html;
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
    #[error("API token unknown or revoked.")]
    UnknownApiToken,
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
    #[error("{0}")]
    UnsupportedMediaType(String),
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
    /// The same error in the shape upstream's schedule endpoints answer:
    /// `{"success": false, "message": …}`.
    #[error("{0}")]
    Refusal(Box<ApiError>),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    /// Wraps a store error with the message this endpoint shows for it.
    pub fn store(message: &'static str) -> impl FnOnce(StoreError) -> ApiError {
        move |source| ApiError::Store { message, source }
    }

    /// This error as the schedule endpoints answer it.
    pub fn refusal(self) -> ApiError {
        match self {
            ApiError::Refusal(_) => self,
            other => ApiError::Refusal(Box::new(other)),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Refusal(inner) => inner.status(),
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingToken
            | ApiError::BadToken
            | ApiError::BadBasic
            | ApiError::UnknownApiToken => StatusCode::UNAUTHORIZED,
            ApiError::VmNotFound | ApiError::NoVms | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::CrossSite
            | ApiError::BadCsrf
            | ApiError::OtherVm(_)
            | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooManyAttempts(_) | ApiError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
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
            PoolError::Unavailable(m) => ApiError::Unavailable(m),
            PoolError::Limited(wait) => ApiError::Limited(wait.as_secs().max(1)),
            PoolError::Failed(m) => ApiError::Failed(m),
            PoolError::Store { message, source } => ApiError::Store { message, source },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let inner = match &self {
            ApiError::Refusal(inner) => inner,
            other => other,
        };
        if let ApiError::Store { source, message } = inner {
            tracing::error!(error = %source, "{message}");
        }
        let status = self.status();
        match self {
            ApiError::Refusal(inner) if !matches!(*inner, ApiError::BadBasic) => (
                status,
                Json(json!({ "success": false, "message": inner.to_string() })),
            )
                .into_response(),
            ApiError::Refusal(inner) => inner.into_response(),
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

/// A page (admin console, participant seat) that failed: an HTML page with the status,
/// the message and a link back. To an htmx request the answer is the message alone, as
/// the console's flash box shows it (see [`htmx_page_errors`]).
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
    back: String,
}

/// What a store failure shows on a page when the handler has no message of its own.
const STORE_FAILED: &str = "The allocator could not read or write its data; try again in a moment.";

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
            back: "/admin".into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }

    /// Where the page's link goes (the console's dashboard unless told).
    pub fn back(mut self, href: impl Into<String>) -> PageError {
        self.back = href.into();
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        match e {
            ApiError::Refusal(inner) => PageError::from(*inner),
            ApiError::Store { message, source } => {
                tracing::error!(error = %source, "{message}");
                PageError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
            other => PageError::new(other.status(), other.to_string()),
        }
    }
}

impl From<PoolError> for PageError {
    fn from(e: PoolError) -> PageError {
        PageError::from(ApiError::from(e))
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        tracing::error!(error = %e, "a page could not use the store");
        PageError::new(StatusCode::INTERNAL_SERVER_ERROR, STORE_FAILED)
    }
}

/// Marks an answer as a failed page, so [`htmx_page_errors`] can answer htmx with the
/// message alone.
#[derive(Clone)]
struct FailedPage(String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let page = crate::views::layout::page(
            title,
            &[],
            html! {
                h1 { (self.status.as_u16()) " " (title) }
                p.error role="alert" { (self.message) }
                p { a href=(self.back) { "Back" } }
            },
        );
        let mut response = (self.status, page).into_response();
        response.extensions_mut().insert(FailedPage(self.message));
        response
    }
}

/// A failed page asked for by htmx (`HX-Request`) answers the message fragment the
/// console swaps into its flash box, with 200: htmx swaps nothing from an error status.
/// Asked for by a script that takes JSON and not HTML (a download by `lablink export`),
/// it answers `{"error": message}` with the page's status.
pub async fn page_errors(request: Request, next: Next) -> Response {
    let htmx = request.headers().contains_key("hx-request");
    let accept = request
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let script = accept.contains("application/json") && !accept.contains("text/html");
    let response = next.run(request).await;
    match response.extensions().get::<FailedPage>() {
        Some(FailedPage(message)) if htmx => {
            let problem = crate::views::admin::Flash::Problem(message.clone());
            crate::views::admin::flash(Some(&problem)).into_response()
        }
        Some(FailedPage(message)) if script => (
            response.status(),
            axum::Json(serde_json::json!({ "error": message })),
        )
            .into_response(),
        _ => response,
    }
}
