//! Scheduled destructions.

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::{SCHEDULE_NAMES, SCHEDULES};
use super::{StoreError, codec};
use crate::model::{Schedule, ScheduleStatus};

fn decode(id: u64, bytes: &[u8]) -> Result<Schedule, StoreError> {
    codec::decode(SCHEDULES.name(), &id.to_string(), bytes)
}

/// Stores a new schedule under the next id; `Ok(None)` if the name is taken.
pub fn create(
    tx: &WriteTransaction,
    mut schedule: Schedule,
) -> Result<Option<Schedule>, StoreError> {
    let mut names = tx.open_table(SCHEDULE_NAMES)?;
    if names.get(schedule.schedule_name.as_str())?.is_some() {
        return Ok(None);
    }
    let mut table = tx.open_table(SCHEDULES)?;
    schedule.id = table.last()?.map_or(1, |(k, _)| k.value() + 1);
    table.insert(schedule.id, codec::encode(&schedule).as_slice())?;
    names.insert(schedule.schedule_name.as_str(), schedule.id)?;
    Ok(Some(schedule))
}

pub fn get(tx: &ReadTransaction, id: u64) -> Result<Option<Schedule>, StoreError> {
    let table = tx.open_table(SCHEDULES)?;
    let value = table.get(id)?;
    value.map(|v| decode(id, v.value())).transpose()
}

/// Every schedule (optionally of one status), ordered by destruction time.
pub fn list(
    tx: &ReadTransaction,
    status: Option<ScheduleStatus>,
) -> Result<Vec<Schedule>, StoreError> {
    let table = tx.open_table(SCHEDULES)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let s = decode(k.value(), v.value())?;
        if status.is_none_or(|st| s.status == st) {
            out.push(s);
        }
    }
    out.sort_by_key(|s| (s.destruction_time, s.id));
    Ok(out)
}

/// Scheduled ones whose next firing is at or before `now`.
pub fn due(tx: &ReadTransaction, now: DateTime<Utc>) -> Result<Vec<Schedule>, StoreError> {
    Ok(list(tx, Some(ScheduleStatus::Scheduled))?
        .into_iter()
        .filter(|s| s.next_run.is_some_and(|t| t <= now))
        .collect())
}

/// Applies `change` to a stored schedule; the change may refuse with its own error.
pub fn update<E>(
    tx: &WriteTransaction,
    id: u64,
    change: impl FnOnce(Schedule) -> Result<Schedule, E>,
) -> Result<Option<Result<Schedule, E>>, StoreError> {
    let mut table = tx.open_table(SCHEDULES)?;
    let current = match table.get(id)? {
        Some(v) => decode(id, v.value())?,
        None => return Ok(None),
    };
    match change(current) {
        Ok(next) => {
            table.insert(id, codec::encode(&next).as_slice())?;
            Ok(Some(Ok(next)))
        }
        Err(e) => Ok(Some(Err(e))),
    }
}
