//! Server-sent events for the admin console: the pool, a run's output and a VM's logs.
//!
//! Each stream is fed by a task that waits on the store's commit counter (not a timer),
//! re-reads what it shows, and sends only what changed. The task ends when the browser
//! goes away or the allocator shuts down.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::model::validate_hostname;
use crate::server::auth::Admin;
use crate::server::state::App;
use crate::store::logs::{self, LogKind};
use crate::store::{runs, vms};
use crate::views::admin::Viewer;
use crate::views::admin::pool::{Counts, counts, instance_rows, startup_chart};
use crate::views::admin::runs::{lines_fragment, summary};

/// Changes closer together than this are sent as one update.
const SETTLE: Duration = Duration::from_millis(200);
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

/// Waits for the next commit; `false` when the stream should end instead.
async fn next_change(
    app: &App,
    changes: &mut tokio::sync::watch::Receiver<u64>,
    tx: &mpsc::Sender<Event>,
) -> bool {
    tokio::select! {
        changed = changes.changed() => {
            if changed.is_err() {
                return false;
            }
        }
        () = tx.closed() => return false,
        () = app.shutdown.cancelled() => return false,
    }
    tokio::time::sleep(SETTLE).await;
    changes.borrow_and_update();
    true
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

/// `GET /admin/events/pool`: `counts`, `chart` and `instances` fragments.
pub async fn pool(State(app): State<App>, admin: Admin) -> EventStream {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut changes = app.store.changes();
        let mut sent: [String; 3] = Default::default();
        loop {
            let pool = match app.store.read(vms::list).await {
                Ok(pool) => pool,
                Err(e) => {
                    tracing::error!(error = %e, "live pool: cannot read the pool");
                    return;
                }
            };
            let viewer = Viewer {
                user: &admin.user,
                csrf: &admin.csrf,
            };
            let fresh = [
                counts(&Counts::of(&pool)).into_string(),
                startup_chart(&pool).into_string(),
                instance_rows(&pool, &viewer).into_string(),
            ];
            for (i, name) in ["counts", "chart", "instances"].into_iter().enumerate() {
                if fresh[i] != sent[i] {
                    if tx.send(html_event(name, &fresh[i])).await.is_err() {
                        return;
                    }
                    sent[i] = fresh[i].clone();
                }
            }
            if !next_change(&app, &mut changes, &tx).await {
                return;
            }
        }
    });
    respond(rx)
}

#[derive(Deserialize)]
pub struct From {
    from: Option<u64>,
    kind: Option<String>,
}

/// `GET /admin/runs/<id>/events?from=N`: `line` events (id = lines sent so far), then
/// `state` and `done` when the run ends.
pub async fn run(
    State(app): State<App>,
    _: Admin,
    Path(id): Path<u64>,
    Query(q): Query<From>,
    headers: HeaderMap,
) -> EventStream {
    let mut next = last_event_id(&headers).or(q.from).unwrap_or(0);
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut changes = app.store.changes();
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
            if !next_change(&app, &mut changes, &tx).await {
                return;
            }
        }
    });
    respond(rx)
}

/// `GET /admin/logs/<hostname>/events?kind=cloud-init|container&from=SEQ`: `chunk`
/// events (id = the batch's sequence number).
pub async fn logs(
    State(app): State<App>,
    _: Admin,
    Path(host): Path<String>,
    Query(q): Query<From>,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let kind = q
        .kind
        .as_deref()
        .and_then(LogKind::from_slug)
        .ok_or_else(|| ApiError::bad_request("kind must be cloud-init or container."))?;
    let mut next = last_event_id(&headers).map_or(q.from.unwrap_or(0), |id| id.saturating_add(1));
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut changes = app.store.changes();
        loop {
            let (h, from) = (host.clone(), next);
            let read = app
                .store
                .read(move |tx| logs::chunks_from(tx, &h, kind, from, LOG_BYTES_PER_EVENT))
                .await;
            let Ok(chunks) = read else {
                return;
            };
            let more = chunks.iter().map(|(_, t)| t.len()).sum::<usize>() >= LOG_BYTES_PER_EVENT;
            for (seq, text) in chunks {
                next = seq + 1;
                let html = maud::html! { (text) }.into_string();
                let event = html_event("chunk", &html).id(seq.to_string());
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if more {
                continue;
            }
            if !next_change(&app, &mut changes, &tx).await {
                return;
            }
        }
    });
    Ok(respond(rx))
}
