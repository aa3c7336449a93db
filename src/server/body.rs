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
        // JSON is UTF-8; serde would let bad bytes through in fields it skips.
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| ApiError::bad_request(format!("The request body is not UTF-8: {e}")))?;
        let mut json = serde_json::Deserializer::from_str(text);
        let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
            // Name the field whose value is wrong; a syntax error has no field.
            let path = e.path().to_string();
            if path == "." {
                ApiError::bad_request(format!("Invalid JSON body: {}", e.inner()))
            } else {
                ApiError::bad_request(format!("Invalid JSON body: {path}: {}", e.inner()))
            }
        })?;
        json.end()
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
        Ok(JsonBody(value))
    }
}

/// Body limit of all routes but log shipping.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Log batches: the 0.1.2 shipper sends at most 50 lines, but a line can be long.
pub const LOG_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The limit in force for a route, so the 413 message can name it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The error a [`DeadlineBody`] ends with when its deadline passes.
#[derive(Debug)]
pub struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// A request body that must have arrived completely by a deadline set when its head
/// arrived: a client that trickles or never finishes it gets an error instead of holding
/// the handler (and its connection) forever. Whether the deadline passed is recorded in
/// `expired`, so the server can answer 408 whatever the handler made of the error.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    expired: std::sync::Arc<std::sync::atomic::AtomicBool>,
    finished: bool,
}

impl<B> DeadlineBody<B> {
    pub fn new(
        inner: B,
        timeout: std::time::Duration,
        expired: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired,
            finished: false,
        }
    }
}

impl<B> hyper::body::Body for DeadlineBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.finished = true;
                    this.expired
                        .store(true, std::sync::atomic::Ordering::Release);
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request whose body did not arrive within `timeout`; the connection is
/// closed after it (the rest of the body would be read as the next request).
pub fn timed_out(
    timeout: std::time::Duration,
    handled: &axum::response::Response,
) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        axum::Json(serde_json::json!({
            "error": format!(
                "The request body did not arrive within {} s.",
                timeout.as_secs()
            )
        })),
    )
        .into_response();
    // Keep the headers every answer carries (security headers, caching).
    for name in [
        header::CONTENT_SECURITY_POLICY,
        header::X_CONTENT_TYPE_OPTIONS,
        header::X_FRAME_OPTIONS,
        header::REFERRER_POLICY,
        header::CACHE_CONTROL,
    ] {
        if let Some(v) = handled.headers().get(&name) {
            response.headers_mut().insert(name, v.clone());
        }
    }
    response
}
