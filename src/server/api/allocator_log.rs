//! `GET /api/allocator-log`: the newest lines of the allocator's own log (the ring in
//! `logging`), filtered by level, for following from a script or the command line.

use axum::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiQuery;
use crate::error::ApiError;
use crate::logging::{LogLevel, ring};
use crate::server::auth::Admin;

/// Most lines one answer carries.
pub const MAX_LINES: usize = 10_000;
const DEFAULT_LINES: usize = 500;

#[derive(Deserialize)]
pub struct LogQuery {
    level: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// The level and the line limit asked for (every kept line and 500 by default).
pub fn level_and_limit(
    level: Option<&str>,
    limit: Option<usize>,
) -> Result<(LogLevel, usize), ApiError> {
    let level = match level {
        None => LogLevel::Debug,
        Some(name) => LogLevel::parse(name).ok_or_else(|| {
            ApiError::bad_request("level must be one of error, warn, info, debug.")
        })?,
    };
    let limit = limit.unwrap_or(DEFAULT_LINES);
    if !(1..=MAX_LINES).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LINES}."
        )));
    }
    Ok((level, limit))
}

/// `?level=warn&after=ID&limit=N`: lines at that level or more severe; after `ID` (the
/// oldest first), or else the newest. `next` is the `after` of the next question.
pub async fn get(_: Admin, ApiQuery(q): ApiQuery<LogQuery>) -> Result<Json<Value>, ApiError> {
    let (level, limit) = level_and_limit(q.level.as_deref(), q.limit)?;
    let (lines, next) = ring().read(level, q.after, limit);
    Ok(Json(json!({ "lines": lines, "next": next })))
}
