//! Every route, its limits, and the headers every answer carries.

use axum::Router;
use std::convert::Infallible;
use std::future::Future;

use axum::BoxError;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json};
use serde_json::json;
use tracing::Instrument;

use super::api::startup::Startup;
use super::api::{
    backup, desktop as agent_desktop, download, event, health, heartbeat, logs, participant_data,
    pool, provision, reboot, schedules, seats, startup, telemetry, waitlist,
};
use super::auth::{Agent, form_csrf};
use super::body::{BodyLimit, DEFAULT_BODY_LIMIT, JsonBody, LOG_BODY_LIMIT};
use super::observe;
use super::pages::{admin, desktop, event as event_page, login, participant, seat};
use super::state::App;
use super::{sessions, sse};
use crate::assets;

pub fn build(app: App) -> Router {
    let log_shipping = Router::new()
        .route("/api/vm-logs", post(logs::post_logs))
        .layer(DefaultBodyLimit::max(LOG_BODY_LIMIT))
        .layer(Extension(BodyLimit(LOG_BODY_LIMIT)));
    Router::new()
        .route("/", get(participant::landing))
        .route("/api/request_vm", post(participant::request_vm))
        .route("/my-vm", get(seat::page))
        .route("/api/my-vm", get(seat::state))
        .route("/api/my-vm/events", get(seat::events))
        .route("/api/my-vm/active", post(seat::still_here))
        .route("/desktop", get(desktop::participant_page))
        .route("/desktop/ws", get(desktop::participant_socket))
        .route("/desktop/events", get(desktop::participant_events))
        .route("/admin/desktop/{hostname}", get(desktop::instructor_page))
        .route(
            "/admin/desktop/{hostname}/ws",
            get(desktop::instructor_socket),
        )
        .route("/api/desktop/channel", get(agent_desktop::channel))
        .route("/api/desktop/tunnel/{id}", get(agent_desktop::tunnel))
        .route(
            "/api/desktop/tunnel/{id}/refuse",
            post(agent_desktop::refuse),
        )
        .route("/api/desktop/thumbnail", put(agent_desktop::thumbnail))
        .route(
            "/api/desktop/hand",
            post(super::api::classroom::desktop_hand),
        )
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
        .route(
            "/api/vm-logs/{hostname}/follow",
            get(super::api::log_follow::follow),
        )
        .route("/api/health", get(health::health))
        .route("/api/doctor", get(super::api::doctor::doctor))
        .route("/api/openapi.json", get(super::api::openapi::document))
        .route("/health", get(health::health))
        .route("/metrics", get(super::api::metrics::metrics))
        .route("/api/launch", post(provision::launch))
        .route("/destroy", post(provision::destroy_all))
        .route("/api/vms/{hostname}/destroy", post(provision::destroy_one))
        .route("/api/vms/{hostname}/release", post(seats::post_release))
        .route("/api/vms/{hostname}/move", post(seats::post_move))
        .route("/api/vms/{hostname}/clear", post(seats::post_clear))
        .route("/api/vms/{hostname}/revoke", post(seats::post_revoke))
        .route("/api/vms", get(pool::list_vms))
        .route(
            "/api/vm-credentials",
            post(seats::post_mint).get(seats::list_identities),
        )
        .route(
            "/api/event",
            get(event::get)
                .post(event::create)
                .patch(event::update)
                .delete(event::cancel),
        )
        .route("/api/event/end", post(event::end_now))
        .route("/api/heartbeat", post(heartbeat::post_heartbeat))
        .route("/api/vm-reset-done", post(heartbeat::post_reset_done))
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
        .route("/api/scp-client", get(participant_data::download))
        .route("/api/backup", get(backup::download))
        .route("/api/reboot-vm", post(reboot::post_reboot))
        .route("/api/reboot-vm/{hostname}", get(reboot::get_reboot_info))
        .route("/admin", get(admin::dashboard))
        .route("/admin/login", get(login::form).post(login::sign_in))
        .route("/admin/logout", post(login::sign_out))
        .route("/admin/instances", get(admin::instances))
        .route("/admin/instances/delete", get(admin::teardown))
        .route("/admin/instances/{hostname}/reboot", post(admin::reboot))
        .route(
            "/admin/instances/{hostname}/{action}",
            post(admin::seat_action),
        )
        .route("/admin/create", get(admin::create))
        .route("/admin/logs/{hostname}", get(admin::logs_page))
        .route("/admin/logs/{hostname}/events", get(sse::logs))
        .route(
            "/admin/scheduled-destruction",
            get(admin::scheduled_destruction).post(admin::schedule),
        )
        .route(
            "/admin/scheduled-destruction/{id}/cancel",
            post(admin::cancel),
        )
        .route("/admin/runs/{id}", get(admin::run))
        .route("/admin/runs/{id}/events", get(sse::run))
        .route("/admin/events/pool", get(sse::pool))
        .route("/admin/wall", get(super::pages::wall::page))
        .route("/admin/wall/events", get(sse::wall))
        .route(
            "/admin/wall/{hostname}/thumbnail",
            get(super::pages::wall::thumbnail),
        )
        .route("/admin/token", get(admin::token))
        .route("/admin/token/rotate", post(admin::rotate_token))
        .route("/admin/token/mint", post(admin::mint_credential))
        .route("/admin/audit", get(admin::audit_page))
        .route("/admin/event", get(event_page::page).post(event_page::save))
        .route("/admin/event/end", post(event_page::end_now))
        .route("/admin/event/cancel", post(event_page::cancel))
        .route("/api/waitlist", get(waitlist::list))
        .route("/api/waitlist/join", post(participant::join_waitlist))
        .route("/api/waitlist/leave", post(participant::leave_waitlist))
        .route("/admin/waitlist", get(admin::waitlist_page))
        .route("/admin/waitlist/remove", post(admin::waitlist_remove))
        .route("/admin/{export}", get(admin::export))
        .route("/download/lablink", get(download::executable))
        .route("/download/lablink.sha256", get(download::checksum))
        .route("/assets/{*path}", get(assets::serve))
        .merge(admin_token_routes())
        .merge(account_routes())
        .merge(rescue_routes())
        .merge(report_routes())
        .merge(session_metrics_routes())
        .merge(operations_routes())
        .merge(classroom_routes())
        .merge(log_shipping)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(Extension(BodyLimit(DEFAULT_BODY_LIMIT)))
        .layer(middleware::from_fn(crate::error::page_errors))
        .layer(middleware::from_fn(form_csrf))
        .layer(sessions::layer(app.store.clone(), &app.config))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            observe::observe,
        ))
        .with_state(app)
}

/// The classroom: raised hands, announcements, take-over's audit, the broadcast.
fn classroom_routes() -> Router<App> {
    use super::api::classroom as api;
    use super::pages::classroom as pages;
    Router::new()
        .route("/api/my-vm/hand", post(pages::raise))
        .route("/api/my-vm/hand/lower", post(pages::lower))
        .route("/api/my-vm/classroom", get(pages::participant_events))
        .route("/broadcast", get(pages::broadcast_page))
        .route("/broadcast/ws", get(pages::broadcast_socket))
        .route("/api/hands", get(api::list_hands))
        .route("/api/hands/{id}/take", post(api::take))
        .route("/api/hands/{id}/done", post(api::done))
        .route(
            "/api/announcements",
            get(api::list_announcements).post(api::announce),
        )
        .route("/api/broadcast", get(api::current).post(api::start))
        .route("/api/broadcast/stop", post(api::stop))
        .route("/admin/hands", get(pages::page))
        .route("/admin/hands/events", get(sse::hands))
        .route("/admin/hands/{id}/take", post(pages::take))
        .route("/admin/hands/{id}/done", post(pages::done))
        .route("/admin/announce", post(pages::announce))
        .route("/admin/broadcast", post(pages::broadcast_start))
        .route("/admin/broadcast/stop", post(pages::broadcast_stop))
}

/// Admin API tokens: the JSON API and the console's page.
fn admin_token_routes() -> Router<App> {
    use super::api::admin_tokens as api;
    use super::pages::api_tokens as pages;
    Router::new()
        .route("/api/admin-tokens", get(api::list).post(api::create))
        .route("/api/admin-tokens/{id}", delete(api::revoke))
        .route("/admin/api-tokens", get(pages::page).post(pages::create))
        .route("/admin/api-tokens/{id}/revoke", post(pages::revoke))
}

/// Console accounts (helpers): the JSON API and the console's page, the admin's only.
fn account_routes() -> Router<App> {
    use super::api::accounts as api;
    use super::pages::accounts as pages;
    Router::new()
        .route("/api/accounts", get(api::list).post(api::create))
        .route("/api/accounts/{name}", delete(api::remove))
        .route("/api/accounts/{name}/password", post(api::set_password))
        .route("/admin/accounts", get(pages::page).post(pages::create))
        .route("/admin/accounts/{name}/password", post(pages::set_password))
        .route("/admin/accounts/{name}/remove", post(pages::remove))
}

/// The post-event report (HTML, CSV, JSON) and the agents' "desktop started" it times.
fn report_routes() -> Router<App> {
    use super::api::report as api;
    use super::pages::report as pages;
    Router::new()
        .route("/api/event/report", get(api::get))
        .route("/api/desktop-started", post(api::desktop_started))
        .route("/admin/event/report", get(pages::page))
        .route("/admin/event/report.csv", get(pages::csv))
}

/// Session metrics: the agents' sample batches, the API, the console's page and exports.
fn session_metrics_routes() -> Router<App> {
    use super::api::session_metrics as api;
    use super::pages::session_metrics as pages;
    Router::new()
        .route("/api/session-metrics", get(api::get).post(api::post))
        .route("/admin/sessions", get(pages::page))
        .route("/admin/export-sessions.csv", get(pages::csv))
        .route("/admin/export-sessions.json", get(pages::json))
}

/// Following the allocator's own log, and cancelling a run.
fn operations_routes() -> Router<App> {
    use super::api::allocator_log;
    use super::pages::allocator_log as page;
    Router::new()
        .route("/api/allocator-log", get(allocator_log::get))
        .route("/admin/allocator-log", get(page::page))
        .route("/admin/allocator-log/events", get(sse::allocator_log))
        .route("/api/runs/{id}/cancel", post(provision::cancel_run))
}

/// Work rescue: the agents' uploads (streamed to disk, limited by `rescue.max_mb`), the
/// participants' and the admin's downloads.
fn rescue_routes() -> Router<App> {
    use super::api::rescue as api;
    use super::pages::rescue as pages;
    Router::new()
        .route("/api/rescue/{id}", post(api::upload))
        .route("/api/rescue/{id}/empty", post(api::empty))
        .route("/api/rescue/{id}/failed", post(api::failed))
        .route("/api/rescues", get(api::list))
        .route("/my-files", get(pages::my_files))
        .route("/my-files/{id}", get(pages::my_file))
        .route("/admin/rescues", get(pages::admin_list))
        .route("/admin/rescues/all.zip", get(pages::admin_all))
        .route("/admin/rescues/{id}", get(pages::admin_file))
}

/// Whether `request` uploads a rescue's archive: its body may take until the rescue's
/// deadline rather than `server.body_timeout_seconds`.
pub fn is_rescue_upload<B>(request: &Request<B>) -> bool {
    request.method() == Method::POST
        && request
            .uri()
            .path()
            .strip_prefix("/api/rescue/")
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "Not found."}))).into_response()
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    secure(response.headers_mut());
    response
}

/// The headers every answer carries.
fn secure(h: &mut HeaderMap) {
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
}

/// The agents' long-poll, served by [`long_poll`] rather than through the router.
const LONG_POLL: &str = "/vm_startup";

/// Whether `request` is the agents' long-poll (its other methods go to the router).
pub fn is_long_poll<B>(request: &Request<B>) -> bool {
    request.method() == Method::POST && request.uri().path() == LONG_POLL
}

/// `POST /vm_startup`, answered as its route in [`build`] would be (observed, the default
/// body limit, the same extractors in the same order, the security headers) but without
/// the router: thousands of agents park here at once, and through the router each would
/// hold a boxed future per layer, a session it never uses and its CSRF check. Reading the
/// request runs in a future of its own, freed before the wait.
pub fn long_poll<B>(
    app: App,
    request: Request<B>,
) -> impl Future<Output = Result<Response, Infallible>> + Send
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let observed = observe::Observed::begin(&request, Some(observe::Route::Fixed(LONG_POLL)));
    let request = request.map(|b| Body::new(http_body_util::Limited::new(b, DEFAULT_BODY_LIMIT)));
    let started = Box::pin(start_long_poll(app.clone(), request));
    async move {
        let mut response = match started.instrument(observed.span.clone()).await {
            Ok(Startup::Park(parked)) => parked
                .answer(&app)
                .instrument(observed.span.clone())
                .await
                .into_response(),
            Ok(Startup::Answer(answer)) => answer.into_response(),
            Err(rejection) => rejection,
        };
        secure(response.headers_mut());
        Ok(observed.finish(&app, response))
    }
}

async fn start_long_poll(app: App, request: Request) -> Result<Startup, Response> {
    let (mut parts, body) = request.into_parts();
    let agent = Agent::from_request_parts(&mut parts, &app)
        .await
        .map_err(IntoResponse::into_response)?;
    let JsonBody(body) = JsonBody::from_request(Request::from_parts(parts, body), &app)
        .await
        .map_err(IntoResponse::into_response)?;
    startup::begin(&app, agent, body)
        .await
        .map_err(IntoResponse::into_response)
}
