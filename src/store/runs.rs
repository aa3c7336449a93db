//! Provisioning runs and their output lines.

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::{RUN_LINES, RUNS};
use super::{StoreError, codec};
use crate::model::{Run, RunAction, RunProgress, RunState};

fn decode(id: u64, bytes: &[u8]) -> Result<Run, StoreError> {
    codec::decode(RUNS.name(), &id.to_string(), bytes)
}

/// Records a new running run and returns it with its id.
pub fn start(
    tx: &WriteTransaction,
    action: RunAction,
    provider: &str,
    requested_by: &str,
    requested_from: Option<String>,
    now: DateTime<Utc>,
) -> Result<Run, StoreError> {
    let mut runs = tx.open_table(RUNS)?;
    let id = runs.last()?.map_or(1, |(k, _)| k.value() + 1);
    let run = Run {
        id,
        action,
        provider: provider.to_owned(),
        requested_by: requested_by.to_owned(),
        requested_from,
        state: RunState::Running,
        started_at: now,
        ended_at: None,
        exit_code: None,
        lines: 0,
        progress: None,
        cancelled_by: None,
    };
    runs.insert(id, codec::encode(&run).as_slice())?;
    Ok(run)
}

/// Appends output lines and records the progress (when the provider told one); returns
/// the run's new line count.
pub fn append_lines(
    tx: &WriteTransaction,
    id: u64,
    lines: &[String],
    progress: Option<RunProgress>,
) -> Result<u64, StoreError> {
    let mut runs = tx.open_table(RUNS)?;
    let mut out = tx.open_table(RUN_LINES)?;
    let mut run = match runs.get(id)? {
        Some(v) => decode(id, v.value())?,
        None => return Ok(0),
    };
    for line in lines {
        out.insert((id, run.lines), line.as_str())?;
        run.lines += 1;
    }
    if progress.is_some() {
        run.progress = progress;
    }
    runs.insert(id, codec::encode(&run).as_slice())?;
    Ok(run.lines)
}

/// Records how the run ended, and who cancelled it when an admin did.
pub fn finish(
    tx: &WriteTransaction,
    id: u64,
    state: RunState,
    exit_code: Option<i32>,
    cancelled_by: Option<String>,
    now: DateTime<Utc>,
) -> Result<Option<Run>, StoreError> {
    let mut runs = tx.open_table(RUNS)?;
    let mut run: Run = match runs.get(id)? {
        Some(v) => decode(id, v.value())?,
        None => return Ok(None),
    };
    run.cancelled_by = cancelled_by;
    let run = run.finished(state, exit_code, now);
    runs.insert(id, codec::encode(&run).as_slice())?;
    Ok(Some(run))
}

/// Marks runs left `running` by a previous process as interrupted (at start-up).
pub fn interrupt_unfinished(
    tx: &WriteTransaction,
    now: DateTime<Utc>,
) -> Result<Vec<u64>, StoreError> {
    let mut runs = tx.open_table(RUNS)?;
    let mut open = Vec::new();
    for entry in runs.iter()? {
        let (k, v) = entry?;
        let run = decode(k.value(), v.value())?;
        if run.state == RunState::Running {
            open.push(run);
        }
    }
    let ids = open.iter().map(|r| r.id).collect();
    for run in open {
        let id = run.id;
        let run = run.finished(RunState::Interrupted, None, now);
        runs.insert(id, codec::encode(&run).as_slice())?;
    }
    Ok(ids)
}

pub fn get(tx: &ReadTransaction, id: u64) -> Result<Option<Run>, StoreError> {
    let runs = tx.open_table(RUNS)?;
    let run = runs.get(id)?;
    run.map(|v| decode(id, v.value())).transpose()
}

/// The newest `limit` runs, newest first.
pub fn recent(tx: &ReadTransaction, limit: usize) -> Result<Vec<Run>, StoreError> {
    let runs = tx.open_table(RUNS)?;
    let mut out = Vec::new();
    for entry in runs.iter()?.rev().take(limit) {
        let (k, v) = entry?;
        out.push(decode(k.value(), v.value())?);
    }
    Ok(out)
}

/// Output lines `from..from+limit` of a run.
pub fn lines(
    tx: &ReadTransaction,
    id: u64,
    from: u64,
    limit: u64,
) -> Result<Vec<String>, StoreError> {
    let table = tx.open_table(RUN_LINES)?;
    let mut out = Vec::new();
    for entry in table.range((id, from)..(id, from.saturating_add(limit)))? {
        out.push(entry?.1.value().to_owned());
    }
    Ok(out)
}
