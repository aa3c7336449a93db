//! `GET /api/health` (and `/health`, which upstream's load balancer template probes).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::server::state::App;
use crate::store::meta;

pub async fn health(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let store = app.store.read(meta::schema_version).await;
    let uptime = app.started_at.elapsed().as_secs();
    let writer = app.store.writer_alive();
    match store {
        Ok(Some(_)) if writer => (
            StatusCode::OK,
            Json(json!({
                "status": "ok",
                "checks": {"store": "ok"},
                "uptime_seconds": uptime,
            })),
        ),
        _ => {
            if let Err(e) = &store {
                tracing::error!(error = %e, "health check: store read failed");
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "checks": {
                        "store": if store.is_ok() { "ok" } else { "failed" },
                        "store_writer": if writer { "ok" } else { "stopped" },
                    },
                    "uptime_seconds": uptime,
                })),
            )
        }
    }
}
