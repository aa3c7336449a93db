//! `GET /api/vm-logs/{hostname}/follow`: a VM's log lines after a cursor, waiting (a
//! bounded long-poll) for new ones; what `lablink logs --follow` reads.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiPath, ApiQuery};
use crate::error::ApiError;
use crate::model::validate_hostname;
use crate::server::auth::Admin;
use crate::server::state::App;
use crate::store::logs::{self, Keep, LogKind};
use crate::store::vms;

/// Longest wait for new lines one request may ask for.
pub const MAX_WAIT_SECONDS: u64 = 30;
/// About this many bytes per kind in one answer; the cursor says where to go on.
const BYTES_PER_ANSWER: usize = 256 * 1024;

#[derive(Deserialize)]
pub struct FollowQuery {
    /// `CLOUD_INIT:CONTAINER`, the `cursor` of the previous answer; none: from the start.
    cursor: Option<String>,
    /// Seconds to wait when there is nothing new (0 to 30).
    wait: Option<u64>,
}

fn parse_cursor(cursor: Option<&str>) -> Result<[u64; 2], ApiError> {
    let Some(cursor) = cursor else {
        return Ok([0, 0]);
    };
    cursor
        .split_once(':')
        .and_then(|(a, b)| Some([a.parse().ok()?, b.parse().ok()?]))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "cursor must be two numbers as `N:M` (the cursor of the previous answer), not `{cursor}`."
            ))
        })
}

type Batches = [Vec<(u64, String)>; 2];

async fn read_after(app: &App, host: &str, from: [u64; 2]) -> Result<Option<Batches>, ApiError> {
    let host = host.to_owned();
    app.store
        .read(move |tx| {
            if vms::get(tx, &host)?.is_none() {
                return Ok(None);
            }
            let mut both: Batches = Default::default();
            for (i, kind) in LogKind::ALL.into_iter().enumerate() {
                both[i] = logs::chunks(tx, &host, kind, from[i], BYTES_PER_ANSWER, Keep::Oldest)?;
            }
            Ok(Some(both))
        })
        .await
        .map_err(ApiError::store("Failed to get VM logs."))
}

pub async fn follow(
    State(app): State<App>,
    _: Admin,
    ApiPath(host): ApiPath<String>,
    ApiQuery(q): ApiQuery<FollowQuery>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let from = parse_cursor(q.cursor.as_deref())?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::bad_request(format!(
            "wait must be 0 to {MAX_WAIT_SECONDS} seconds."
        )));
    }
    // Subscribed before the first read, so a line stored in between still wakes us.
    let mut changes = app.store.changes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let batches = loop {
        let batches = read_after(&app, &host, from)
            .await?
            .ok_or(ApiError::VmNotFound)?;
        if batches.iter().any(|b| !b.is_empty()) {
            break batches;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break batches },
            () = tokio::time::sleep_until(deadline) => break batches,
            () = app.shutdown.cancelled() => break batches,
        }
    };
    let mut next = from;
    let texts: Vec<Option<String>> = batches
        .into_iter()
        .enumerate()
        .map(|(i, batch)| {
            let last = batch.last()?.0;
            next[i] = last + 1;
            Some(batch.into_iter().map(|(_, text)| text).collect())
        })
        .collect();
    Ok(Json(json!({
        "hostname": host,
        "cloud_init_logs": texts[0],
        "docker_logs": texts[1],
        "cursor": format!("{}:{}", next[0], next[1]),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_two_numbers() {
        assert_eq!(parse_cursor(None).expect("no cursor"), [0, 0]);
        assert_eq!(parse_cursor(Some("3:17")).expect("a cursor"), [3, 17]);
        for bad in ["", "3", "a:b", "1:2:3", "-1:2"] {
            assert!(parse_cursor(Some(bad)).is_err(), "{bad}");
        }
    }
}
