//! What every request gets: an id (`x-request-id`, the client's own when it is short and
//! printable), a tracing span carrying it that every log line of the request is written
//! in, its duration in `lablink_http_request_duration_seconds`, and one log line when it is
//! answered (debug for successes and long-poll timeouts, info for other failures).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::{Instrument, Span};

use super::state::App;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The claim route, whose 503 means "no free VM" rather than a fault.
const NO_FREE_VM_ROUTE: &str = "/api/request_vm";
/// Longest incoming id taken as it is.
const MAX_ID_LEN: usize = 64;

pub async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .cloned()
        .map(Route::Matched);
    let observed = Observed::begin(&request, route);
    let response = next.run(request).instrument(observed.span.clone()).await;
    observed.finish(&app, response)
}

/// The route a request was matched to.
pub enum Route {
    /// By the router (an `Arc` shared with it).
    Matched(MatchedPath),
    /// Taken before the router, for a path that is its own route: the long-poll.
    Fixed(&'static str),
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Route::Matched(m) => m.as_str(),
            Route::Fixed(s) => s,
        }
    }
}

/// One request being observed, from its head to its answer. A parked long-poll holds it
/// for as long as it waits, so it keeps nothing of the request's own buffer.
pub struct Observed {
    started: Instant,
    id: String,
    route: Option<Route>,
    method: Method,
    /// The path for the answer's log line, when it is not the route itself.
    path: Option<Box<str>>,
    pub span: Span,
}

impl Observed {
    pub fn begin<B>(request: &Request<B>, route: Option<Route>) -> Observed {
        let started = Instant::now();
        let id = request
            .headers()
            .get(&REQUEST_ID)
            .and_then(accepted)
            .unwrap_or_else(generate);
        let path = request.uri().path();
        let path = match &route {
            Some(r) if r.as_str() == path => None,
            _ => Some(path.into()),
        };
        let method = request.method().clone();
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %method,
            route = route.as_ref().map_or("unmatched", Route::as_str),
        );
        Observed {
            started,
            id,
            route,
            method,
            path,
            span,
        }
    }

    /// Counts the request in the metrics, writes its log line and puts its id on the
    /// answer.
    pub fn finish(self, app: &App, mut response: Response) -> Response {
        let took = self.started.elapsed();
        let status = response.status();
        let route = self.route.as_ref().map(Route::as_str);
        app.metrics.http_request(route, &self.method, status, took);
        let latency_ms = took.as_secs_f64() * 1000.0;
        let path = self.path.as_deref().or(route).unwrap_or_default();
        self.span.in_scope(|| {
            // Long-polls end in 408 every `server.long_poll_seconds`, and all of them in 503
            // at shutdown; a claim with no free VM is a 503 too (counted in the metrics):
            // by design, not worth an info line each.
            let expected = status == StatusCode::REQUEST_TIMEOUT
                || (status == StatusCode::SERVICE_UNAVAILABLE
                    && (app.shutdown.is_cancelled() || route == Some(NO_FREE_VM_ROUTE)));
            if (status.is_client_error() || status.is_server_error()) && !expected {
                tracing::info!(
                    status = status.as_u16(),
                    latency_ms,
                    path,
                    "request answered"
                );
            } else {
                tracing::debug!(
                    status = status.as_u16(),
                    latency_ms,
                    path,
                    "request answered"
                );
            }
        });
        if let Ok(value) = HeaderValue::from_str(&self.id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        response
    }
}

/// A client's id, if it is 1 to 64 visible ASCII characters (nothing that could forge
/// or break a log line).
fn accepted(value: &HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let fits = (1..=MAX_ID_LEN).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic);
    fits.then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// 128 random bits in hex.
fn generate() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_ids_are_taken() {
        let take = |v: &[u8]| accepted(&HeaderValue::from_bytes(v).expect("header value"));
        assert_eq!(take(b"abc-123_X.y:z").as_deref(), Some("abc-123_X.y:z"));
        assert_eq!(take(&[b'a'; 64]).map(|s| s.len()), Some(64));
        assert_eq!(take(&[b'a'; 65]), None);
        assert_eq!(take(b""), None);
        assert_eq!(take(b"two words"), None);
        assert_eq!(take(b"tab\there"), None);
        assert_eq!(take("caf\u{e9}".as_bytes()), None);
        let id = generate();
        assert_eq!(id.len(), 32);
        assert!(accepted(&HeaderValue::from_str(&id).expect("value")).is_some());
        assert_ne!(generate(), id);
    }
}
