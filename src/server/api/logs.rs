//! Log shipping from VMs (`POST /api/vm-logs`) and reading it back.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiPath, ApiQuery};
use crate::error::ApiError;
use crate::model::log_errors::errors_only;
use crate::model::validate_hostname;
use crate::server::auth::{Agent, AgentOrAdmin};
use crate::server::body::JsonBody;
use crate::server::state::App;
use crate::store::logs::{self, LogKind};
use crate::store::vms;

#[derive(Deserialize)]
pub struct LogBatch {
    log_group: Option<String>,
    log_stream: Option<String>,
    messages: Option<Vec<String>>,
}

/// Removes terminal escape sequences and keeps lines with something in them.
fn clean(messages: Vec<String>) -> Vec<String> {
    messages
        .into_iter()
        .map(|m| strip_ansi_escapes::strip_str(&m))
        .filter(|m| !m.trim().is_empty())
        .collect()
}

pub async fn post_logs(
    State(app): State<App>,
    agent: Agent,
    JsonBody(batch): JsonBody<LogBatch>,
) -> Result<Json<Value>, ApiError> {
    const MISSING: &str = "Log group, stream, and messages are required.";
    let group = batch.log_group.filter(|g| !g.is_empty());
    let host = batch.log_stream.filter(|s| !s.is_empty());
    let messages = batch.messages.filter(|m| !m.is_empty());
    let (Some(group), Some(host), Some(messages)) = (group, host, messages) else {
        return Err(ApiError::bad_request(MISSING));
    };
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    agent.acts_as(&host)?;
    let lines = clean(messages);
    let kind = LogKind::from_log_group(&group);
    let cap = app.config.server.log_cap_bytes;
    let found = app
        .store
        .write(move |tx| {
            if vms::exists(tx, &host)? {
                logs::append(tx, &host, kind, &lines, cap)?;
                Ok(Some(lines.len()))
            } else {
                Ok(None)
            }
        })
        .await
        .map_err(ApiError::store("Failed to post VM logs."))?;
    match found {
        None => Err(ApiError::VmNotFound),
        Some(0) => Ok(Json(json!({"message": "No log messages after filtering."}))),
        Some(_) => Ok(Json(json!({"message": "VM logs posted successfully."}))),
    }
}

#[derive(Deserialize)]
pub struct LogFilter {
    errors_only: Option<String>,
}

impl LogFilter {
    /// Upstream's `errors_only=true|false` (any case); anything else is refused.
    pub fn errors_only(&self) -> Result<bool, ApiError> {
        parse_errors_only(self.errors_only.as_deref())
    }
}

pub fn parse_errors_only(value: Option<&str>) -> Result<bool, ApiError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::bad_request("errors_only must be true or false.")),
    }
}

/// `GET /api/vm-logs/<hostname>[?errors_only=true]`: both logs; with `errors_only`, each
/// reduced to its error lines (`""` when it has none, `null` when nothing was shipped).
pub async fn get_logs(
    State(app): State<App>,
    caller: AgentOrAdmin,
    ApiPath(host): ApiPath<String>,
    ApiQuery(filter): ApiQuery<LogFilter>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let only_errors = filter.errors_only()?;
    caller.may_read(&host)?;
    let lookup = host.clone();
    let found = app
        .store
        .read(move |tx| {
            if vms::get(tx, &lookup)?.is_none() {
                return Ok(None);
            }
            let cloud_init = logs::read(tx, &lookup, LogKind::CloudInit)?;
            let container = logs::read(tx, &lookup, LogKind::Container)?;
            Ok(Some((cloud_init, container)))
        })
        .await
        .map_err(ApiError::store("Failed to get VM logs."))?;
    let (mut cloud_init, mut container) = found.ok_or(ApiError::VmNotFound)?;
    if only_errors {
        cloud_init = cloud_init.as_deref().map(errors_only);
        container = container.as_deref().map(errors_only);
    }
    // As upstream: the non-empty logs joined, `null` when there is no text at all.
    let combined = [cloud_init.as_deref(), container.as_deref()]
        .into_iter()
        .flatten()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let combined = (!combined.is_empty()).then_some(combined);
    Ok(Json(json!({
        "hostname": host,
        "cloud_init_logs": cloud_init,
        "docker_logs": container,
        "logs": combined,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_strips_colour_and_drops_blank_lines() {
        let out = clean(vec![
            "\u{1b}[32mok\u{1b}[0m done".into(),
            "   ".into(),
            "\u{1b}[1m\u{1b}[0m".into(),
            "plain".into(),
        ]);
        assert_eq!(out, vec!["ok done".to_owned(), "plain".to_owned()]);
    }
}
