//! `GET /metrics`: the Prometheus (OpenMetrics text) exposition. Clients on this machine
//! need nothing; others send `Authorization: Bearer <server.metrics_token>`, and while that
//! key is empty remote scraping is off.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::metrics::CONTENT_TYPE;
use crate::server::client_ip::ClientIp;
use crate::server::state::App;
use crate::store::{vms, waitlist};

/// Who may read the metrics.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// Not from loopback, and no `server.metrics_token` is set.
    Disabled,
    /// Not from loopback, and the bearer token is missing or wrong.
    Refused,
}

/// Loopback means both the TCP peer and the client it speaks for (`X-Forwarded-For` of a
/// trusted proxy) are loopback addresses: a proxy on this machine forwarding a remote
/// client does not make that client local.
pub fn access(
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    authorization: Option<&str>,
    token: &str,
) -> Access {
    let local = |ip: Option<IpAddr>| ip.is_some_and(|ip| ip.to_canonical().is_loopback());
    if local(peer) && local(client) {
        return Access::Granted;
    }
    if token.is_empty() {
        return Access::Disabled;
    }
    let presented = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        Access::Granted
    } else {
        Access::Refused
    }
}

pub async fn metrics(State(app): State<App>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = request.extensions().get::<ClientIp>().map(|c| c.0);
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match access(
        peer,
        client,
        authorization,
        &app.config.server.metrics_token,
    ) {
        Access::Granted => {}
        Access::Disabled => {
            let error = "Remote scraping of /metrics is off: set server.metrics_token \
                         (or LABLINK_SERVER_METRICS_TOKEN_FILE) and send it as \
                         `Authorization: Bearer <token>`, or scrape from this machine.";
            return (StatusCode::FORBIDDEN, Json(json!({ "error": error }))).into_response();
        }
        Access::Refused => {
            let error = "Missing or wrong bearer token for /metrics (server.metrics_token).";
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
                Json(json!({ "error": error })),
            )
                .into_response();
        }
    }
    let (pool, waiting) = match app
        .store
        .read(|tx| Ok((vms::list(tx)?, waitlist::len(tx)?)))
        .await
    {
        Ok(read) => read,
        Err(e) => return ApiError::store("Failed to read the VM pool.")(e).into_response(),
    };
    app.metrics.waitlist_length(waiting);
    match crate::pool::budget::figures(&app.pool).await {
        Ok(figures) => app.metrics.cost(&figures),
        Err(e) => return ApiError::from(e).into_response(),
    }
    let body = app
        .metrics
        .render(&pool, app.waiters.parked(), &|vm| app.last_seen_secs(vm));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("ip"))
    }

    const TOKEN: &str = "0123456789abcdef0123";

    #[test]
    fn loopback_needs_no_token_and_others_need_the_right_one() {
        for local in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(access(ip(local), ip(local), None, ""), Access::Granted);
        }
        let remote = ip("203.0.113.9");
        assert_eq!(access(remote, remote, None, ""), Access::Disabled);
        assert_eq!(
            access(remote, remote, Some(&format!("Bearer {TOKEN}")), ""),
            Access::Disabled
        );
        assert_eq!(access(remote, remote, None, TOKEN), Access::Refused);
        assert_eq!(
            access(remote, remote, Some("Bearer wrong"), TOKEN),
            Access::Refused
        );
        assert_eq!(
            access(remote, remote, Some(&format!("Basic {TOKEN}")), TOKEN),
            Access::Refused
        );
        assert_eq!(
            access(remote, remote, Some(&format!("Bearer {TOKEN}")), TOKEN),
            Access::Granted
        );
    }

    #[test]
    fn a_remote_client_behind_a_local_proxy_is_remote() {
        let (proxy, client) = (ip("127.0.0.1"), ip("203.0.113.9"));
        assert_eq!(access(proxy, client, None, ""), Access::Disabled);
        // A remote proxy cannot claim its client is local either.
        assert_eq!(
            access(ip("10.0.0.5"), ip("127.0.0.1"), None, ""),
            Access::Disabled
        );
        assert_eq!(access(None, None, None, ""), Access::Disabled);
    }
}
