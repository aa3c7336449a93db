//! Server-sent events for the admin console: the pool, the seat wall, a run's output, a
//! VM's logs and the raised hands.
//!
//! Each stream is fed by a task that waits on the store's commit counter (not a timer),
//! re-reads what it shows, and sends only what changed. The task ends when the browser
//! goes away or the allocator shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::logging::ring;
use crate::model::Counts;
use crate::model::log_errors::ErrorFilter;
use crate::model::validate_hostname;
use crate::pool::{thumbnails, usage};
use crate::server::api::allocator_log::level_and_limit;
use crate::server::api::logs::parse_errors_only;
use crate::server::api::{ApiPath, ApiQuery};
use crate::server::auth::{Admin, SignedIn, Staff};
use crate::server::state::App;
use crate::store::logs::{self, Keep, LogKind};
use crate::store::{runs, vms};
use crate::views::admin::allocator_log::lines_fragment as allocator_lines;
use crate::views::admin::hands as hands_view;
use crate::views::admin::pool::{counts, instance_rows, startup_chart};
use crate::views::admin::runs::{lines_fragment, progress, summary};
use crate::views::admin::sessions::rows as session_rows;
use crate::views::admin::wall as wall_view;

/// Changes closer together than this are sent as one update.
const SETTLE: Duration = Duration::from_millis(200);
/// A stream with nothing to send still checks this often that its session lives.
const RECHECK: Duration = Duration::from_secs(30);
/// The wall's pictures arrive all the time (200 seats every 5 s): it looks again at most
/// this often, sending what changed meanwhile together.
const WALL_SETTLE: Duration = Duration::from_secs(1);
/// Most output lines (or log bytes) one event carries.
const LINES_PER_EVENT: u64 = 2_000;
const LOG_BYTES_PER_EVENT: usize = 256 * 1024;

type EventStream = Sse<
    axum::response::sse::KeepAliveStream<
        futures_util::stream::BoxStream<'static, Result<Event, Infallible>>,
    >,
>;

/// Wraps a feeding task's channel as the response.
fn respond(rx: mpsc::Receiver<Event>) -> EventStream {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Sse::new(Box::pin(stream) as _).keep_alive(KeepAlive::default())
}

/// Waits for the next commit (or `RECHECK`); `false` when the stream should end instead:
/// the browser went away, the allocator stops, or the admin's session ended (or token was
/// revoked).
async fn next_change(
    app: &App,
    changes: &mut tokio::sync::watch::Receiver<u64>,
    tx: &mpsc::Sender<Event>,
    signed_in: &SignedIn,
) -> bool {
    tokio::select! {
        changed = changes.changed() => {
            if changed.is_err() {
                return false;
            }
            tokio::time::sleep(SETTLE).await;
            changes.borrow_and_update();
        }
        () = tokio::time::sleep(RECHECK) => {}
        () = tx.closed() => return false,
        () = app.shutdown.cancelled() => return false,
    }
    signed_in.still(app).await
}

/// An event carrying `html`; SSE cannot carry carriage returns, which only ever come
/// from a program's progress output here.
fn html_event(name: &str, html: &str) -> Event {
    Event::default().event(name).data(html.replace('\r', ""))
}

fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[derive(Deserialize)]
pub struct PoolView {
    view: Option<String>,
}

/// `GET /admin/events/pool?view=dashboard|instances|sessions`: the `counts` fragment, and
/// `chart` (dashboard), `instances` (the table) or `sessions` (the session summary), each
/// sent when it changed.
pub async fn pool(
    State(app): State<App>,
    admin: Staff,
    ApiQuery(q): ApiQuery<PoolView>,
) -> EventStream {
    let second = match q.view.as_deref() {
        Some("dashboard") => "chart",
        Some("sessions") => "sessions",
        _ => "instances",
    };
    let signed_in = SignedIn::of(&admin);
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut changes = app.store.changes();
        let mut sent: [String; 2] = Default::default();
        loop {
            let pool = match app.store.read(vms::list).await {
                Ok(pool) => pool,
                Err(e) => {
                    tracing::error!(error = %e, "live pool: cannot read the pool");
                    return;
                }
            };
            let viewer = admin.viewer(app.clock.now());
            let detail = match second {
                "chart" => Ok(startup_chart(&pool)),
                "sessions" => usage::current_sessions(&app.pool)
                    .await
                    .map(|seats| session_rows(&seats)),
                _ => usage::of_current_seats(&app.pool, &pool)
                    .await
                    .map(|seats| instance_rows(&pool, &seats, &viewer)),
            };
            let detail = match detail {
                Ok(detail) => detail,
                Err(e) => {
                    tracing::error!(error = ?e, "live pool: cannot read the session metrics");
                    return;
                }
            };
            let fresh = [
                counts(&Counts::of(&pool)).into_string(),
                detail.into_string(),
            ];
            for (i, name) in ["counts", second].into_iter().enumerate() {
                if fresh[i] != sent[i] {
                    if tx.send(html_event(name, &fresh[i])).await.is_err() {
                        return;
                    }
                    sent[i] = fresh[i].clone();
                }
            }
            if !next_change(&app, &mut changes, &tx, &signed_in).await {
                return;
            }
        }
    });
    respond(rx)
}

/// `GET /admin/wall/events`: `tile-<hostname>` with a tile's content when it changed (a new
/// picture, status, participant, GPU, idle time), `grid` with every tile when VMs came or
/// went. Looks again after a commit, a picture arriving or going, or `RECHECK` (idle time).
pub async fn wall(State(app): State<App>, staff: Staff) -> EventStream {
    let signed_in = SignedIn::of(&staff);
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut changes = app.store.changes();
        let mut pictures = app.desktops.thumbnails.changes();
        let mut hands = app.hands.subscribe();
        // What the page shows now: the hosts in order, and each tile's content.
        let mut shown: Option<(Vec<String>, HashMap<String, String>)> = None;
        loop {
            let tiles = match thumbnails::wall(&app).await {
                Ok(tiles) => tiles,
                Err(e) => {
                    tracing::error!(error = ?e, "live wall: cannot read the pool");
                    return;
                }
            };
            let hosts: Vec<String> = tiles.iter().map(|t| t.vm.hostname.clone()).collect();
            let fresh: HashMap<String, String> = tiles
                .iter()
                .map(|t| (t.vm.hostname.clone(), wall_view::tile(t).into_string()))
                .collect();
            let events: Vec<Event> = match &shown {
                Some((was, sent)) if *was == hosts => hosts
                    .iter()
                    .filter(|h| sent.get(*h) != fresh.get(*h))
                    .map(|h| html_event(&format!("tile-{h}"), &fresh[h]))
                    .collect(),
                // On (re)connecting the whole grid: the page may be older than the stream.
                _ => vec![html_event("grid", &wall_view::grid(&tiles).into_string())],
            };
            for event in events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            shown = Some((hosts, fresh));
            // A raised hand is shown at once; commits and pictures, which come in bursts
            // (a launch, 200 agents), are gathered for `WALL_SETTLE` first.
            let settle = tokio::select! {
                biased;
                changed = hands.changed() => if changed.is_err() { return } else { false },
                changed = changes.changed() => if changed.is_err() { return } else { true },
                changed = pictures.changed() => if changed.is_err() { return } else { true },
                () = tokio::time::sleep(RECHECK) => false,
                () = tx.closed() => return,
                () = app.shutdown.cancelled() => return,
            };
            if settle {
                tokio::time::sleep(WALL_SETTLE).await;
            }
            changes.borrow_and_update();
            pictures.borrow_and_update();
            hands.borrow_and_update();
            if !signed_in.still(&app).await {
                return;
            }
        }
    });
    respond(rx)
}

#[derive(Deserialize)]
pub struct RunFrom {
    from: Option<u64>,
}

/// `GET /admin/runs/<id>/events?from=N`: `line` events (id = lines sent so far),
/// `progress` when it moved, then `state` and `done` when the run ends.
pub async fn run(
    State(app): State<App>,
    admin: Staff,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<RunFrom>,
    headers: HeaderMap,
) -> EventStream {
    let mut next = last_event_id(&headers).or(q.from).unwrap_or(0);
    let signed_in = SignedIn::of(&admin);
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut changes = app.store.changes();
        let mut shown_progress = None;
        loop {
            let from = next;
            let read = app
                .store
                .read(move |tx| {
                    let run = runs::get(tx, id)?;
                    let lines = runs::lines(tx, id, from, LINES_PER_EVENT)?;
                    Ok(run.map(|r| (r, lines)))
                })
                .await;
            let Ok(Some((run, lines))) = read else {
                return;
            };
            if run.progress != shown_progress {
                shown_progress = run.progress;
                let html = progress(&run).into_string();
                if tx.send(html_event("progress", &html)).await.is_err() {
                    return;
                }
            }
            if !lines.is_empty() {
                next = from + lines.len() as u64;
                let event = html_event("line", &lines_fragment(&lines)).id(next.to_string());
                if tx.send(event).await.is_err() {
                    return;
                }
                if lines.len() as u64 == LINES_PER_EVENT {
                    continue;
                }
            }
            if run.state.is_finished() && next >= run.lines {
                let _ = tx
                    .send(html_event("state", &summary(&run).into_string()))
                    .await;
                // Browsers drop events without data: `done` must carry some.
                let _ = tx.send(Event::default().event("done").data("done")).await;
                return;
            }
            if !next_change(&app, &mut changes, &tx, &signed_in).await {
                return;
            }
        }
    });
    respond(rx)
}

/// `GET /admin/logs/<hostname>/events?cloud-init=N&container=M[&errors_only=true]`: both
/// logs of a VM on one connection, as `cloud-init` and `container` events carrying new
/// batches (only their error lines with `errors_only`); the event id `N:M` names the next
/// batch of each, for resuming.
pub async fn logs(
    State(app): State<App>,
    admin: Staff,
    ApiPath(host): ApiPath<String>,
    ApiQuery(q): ApiQuery<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let errors_only = parse_errors_only(q.get("errors_only").map(String::as_str))?;
    let mut from_query = [0; 2];
    for (i, kind) in LogKind::ALL.into_iter().enumerate() {
        if let Some(value) = q.get(kind.slug()) {
            from_query[i] = value.trim().parse().map_err(|_| {
                ApiError::bad_request(format!("{} must be a batch number.", kind.slug()))
            })?;
        }
    }
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(':'))
        .and_then(|(a, b)| Some([a.trim().parse().ok()?, b.trim().parse().ok()?]));
    let mut next: [u64; 2] = resumed.unwrap_or(from_query);
    let mut filters: [ErrorFilter; 2] = Default::default();
    let signed_in = SignedIn::of(&admin);
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut changes = app.store.changes();
        loop {
            let (h, from) = (host.clone(), next);
            let read = app
                .store
                .read(move |tx| {
                    let mut both = Vec::new();
                    for (i, kind) in LogKind::ALL.into_iter().enumerate() {
                        let batch =
                            logs::chunks(tx, &h, kind, from[i], LOG_BYTES_PER_EVENT, Keep::Oldest)?;
                        both.push((i, kind, batch));
                    }
                    Ok(both)
                })
                .await;
            let Ok(both) = read else {
                return;
            };
            let mut more = false;
            for (i, kind, batch) in both {
                let Some((last, _)) = batch.last() else {
                    continue;
                };
                next[i] = last + 1;
                more |= batch.iter().map(|(_, t)| t.len()).sum::<usize>() >= LOG_BYTES_PER_EVENT;
                let text: String = batch
                    .into_iter()
                    .map(|(_, t)| if errors_only { filters[i].feed(&t) } else { t })
                    .collect();
                if text.is_empty() {
                    continue;
                }
                let html = maud::html! { (text) }.into_string();
                let event = html_event(kind.slug(), &html).id(format!("{}:{}", next[0], next[1]));
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if more {
                continue;
            }
            if !next_change(&app, &mut changes, &tx, &signed_in).await {
                return;
            }
        }
    });
    Ok(respond(rx))
}

#[derive(Deserialize)]
pub struct AllocatorLogFrom {
    pub level: Option<String>,
    pub after: Option<u64>,
}

/// `GET /admin/allocator-log/events?level=warn&after=ID`: the allocator's new log lines at
/// that level or more severe, as `line` events (event id: the `after` to resume from).
pub async fn allocator_log(
    admin: Admin,
    State(app): State<App>,
    ApiQuery(q): ApiQuery<AllocatorLogFrom>,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    let (level, _) = level_and_limit(q.level.as_deref(), None)?;
    let mut after = last_event_id(&headers).or(q.after).unwrap_or(0);
    let signed_in = SignedIn::of(&admin);
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut changes = ring().subscribe();
        loop {
            let (lines, next) = ring().read(level, Some(after), LINES_PER_EVENT as usize);
            let full = lines.len() as u64 == LINES_PER_EVENT;
            if !lines.is_empty() {
                let html = allocator_lines(&lines).into_string();
                if tx
                    .send(html_event("line", &html).id(next.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            after = next;
            if full {
                continue;
            }
            if !next_change(&app, &mut changes, &tx, &signed_in).await {
                return;
            }
        }
    });
    Ok(respond(rx))
}

/// Waiting times on `/admin/hands` are shown in minutes: the queue is rendered again this
/// often even without a change.
const HANDS_CLOCK: Duration = Duration::from_secs(15);

/// `GET /admin/hands/events`: the `hands` queue and the `broadcast` state, each at once and
/// then as soon as it changes (a raised hand is pushed when it is raised, not polled).
pub async fn hands(State(app): State<App>, staff: Staff) -> EventStream {
    let signed_in = SignedIn::of(&staff);
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut raised = app.hands.subscribe();
        let mut air = app.broadcast.subscribe();
        let mut sent: [String; 2] = Default::default();
        let mut checked = tokio::time::Instant::now();
        loop {
            let viewer = staff.viewer(app.clock.now());
            raised.borrow_and_update();
            let on_air = air.borrow_and_update().clone();
            let fresh = [
                hands_view::queue(&viewer, &app.hands.list()).into_string(),
                hands_view::on_air(&viewer, on_air.as_ref()).into_string(),
            ];
            for (i, name) in ["hands", "broadcast"].into_iter().enumerate() {
                if fresh[i] != sent[i] {
                    if tx.send(html_event(name, &fresh[i])).await.is_err() {
                        return;
                    }
                    sent[i] = fresh[i].clone();
                }
            }
            tokio::select! {
                changed = raised.changed() => if changed.is_err() { return },
                changed = air.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(HANDS_CLOCK) => {}
                () = tx.closed() => return,
                () = app.shutdown.cancelled() => return,
            }
            if checked.elapsed() >= RECHECK {
                if !signed_in.still(&app).await {
                    return;
                }
                checked = tokio::time::Instant::now();
            }
        }
    });
    respond(rx)
}
