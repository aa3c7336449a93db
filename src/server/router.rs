//! Every route, its limits, and the headers every answer carries.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde_json::json;

use super::api::{download, health, logs, pool, provision, schedules, startup, telemetry};
use super::body::{BodyLimit, DEFAULT_BODY_LIMIT, LOG_BODY_LIMIT};
use super::pages::{admin, participant};
use super::state::App;
use crate::assets;

pub fn build(app: App) -> Router {
    let log_shipping = Router::new()
        .route("/api/vm-logs", post(logs::post_logs))
        .layer(DefaultBodyLimit::max(LOG_BODY_LIMIT))
        .layer(Extension(BodyLimit(LOG_BODY_LIMIT)));
    Router::new()
        .route("/", get(participant::landing))
        .route("/api/request_vm", post(participant::request_vm))
        .route("/api/unassigned_vms_count", get(pool::unassigned_count))
        .route("/vm_startup", post(startup::vm_startup))
        .route(
            "/api/vm-status",
            post(telemetry::post_status).get(telemetry::all_statuses),
        )
        .route("/api/vm-status/{hostname}", get(telemetry::get_status))
        .route("/api/update_inuse_status", post(telemetry::post_in_use))
        .route("/api/gpu_health", post(telemetry::post_gpu_health))
        .route("/api/vm-metrics/{hostname}", post(telemetry::post_metrics))
        .route("/api/vm-logs/{hostname}", get(logs::get_logs))
        .route("/api/health", get(health::health))
        .route("/health", get(health::health))
        .route("/api/launch", post(provision::launch))
        .route("/destroy", post(provision::destroy_all))
        .route("/api/vms/{hostname}/destroy", post(provision::destroy_one))
        .route("/api/runs", get(provision::list_runs))
        .route("/api/runs/{id}", get(provision::get_run))
        .route(
            "/api/schedule-destruction",
            post(schedules::create).get(schedules::list),
        )
        .route(
            "/api/schedule-destruction/{id}",
            get(schedules::get).delete(schedules::cancel),
        )
        .route("/admin", get(admin::home))
        .route("/admin/instances", get(admin::instances))
        .route("/admin/runs/{id}", get(admin::run))
        .route("/download/lablink", get(download::executable))
        .route("/download/lablink.sha256", get(download::checksum))
        .route("/assets/{*path}", get(assets::serve))
        .merge(log_shipping)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(Extension(BodyLimit(DEFAULT_BODY_LIMIT)))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "Not found."}))).into_response()
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
