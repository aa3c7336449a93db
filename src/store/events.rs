//! Events (the newest is the current one) and their journals.

use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::{EVENT_JOURNAL, EVENTS};
use super::{StoreError, codec};
use crate::model::{Event, JournalEntry};

/// Journal entries kept per event; later ones are dropped (and counted as dropped).
pub const JOURNAL_CAP: u64 = 200_000;

fn decode(id: u64, bytes: &[u8]) -> Result<Event, StoreError> {
    codec::decode(EVENTS.name(), &id.to_string(), bytes)
}

/// The newest event, whatever its phase.
pub fn current(tx: &ReadTransaction) -> Result<Option<Event>, StoreError> {
    let table = tx.open_table(EVENTS)?;
    let last = table.last()?;
    last.map(|(k, v)| decode(k.value(), v.value())).transpose()
}

/// As `current`, inside a write.
pub fn current_for_update(tx: &WriteTransaction) -> Result<Option<Event>, StoreError> {
    let table = tx.open_table(EVENTS)?;
    let last = table.last()?;
    last.map(|(k, v)| decode(k.value(), v.value())).transpose()
}

pub fn get(tx: &ReadTransaction, id: u64) -> Result<Option<Event>, StoreError> {
    let table = tx.open_table(EVENTS)?;
    let value = table.get(id)?;
    value.map(|v| decode(id, v.value())).transpose()
}

/// Every event, newest first.
pub fn list(tx: &ReadTransaction) -> Result<Vec<Event>, StoreError> {
    let table = tx.open_table(EVENTS)?;
    let mut out = Vec::new();
    for entry in table.iter()?.rev() {
        let (k, v) = entry?;
        out.push(decode(k.value(), v.value())?);
    }
    Ok(out)
}

/// Stores `event` under the next id (which it returns with).
pub fn create(tx: &WriteTransaction, mut event: Event) -> Result<Event, StoreError> {
    let mut table = tx.open_table(EVENTS)?;
    event.id = table.last()?.map_or(1, |(k, _)| k.value() + 1);
    table.insert(event.id, codec::encode(&event).as_slice())?;
    Ok(event)
}

pub fn put(tx: &WriteTransaction, event: &Event) -> Result<(), StoreError> {
    let mut table = tx.open_table(EVENTS)?;
    table.insert(event.id, codec::encode(event).as_slice())?;
    Ok(())
}

/// Appends to `event`'s journal; `false` once the journal is full.
pub fn journal(
    tx: &WriteTransaction,
    event: u64,
    entry: &JournalEntry,
) -> Result<bool, StoreError> {
    let mut table = tx.open_table(EVENT_JOURNAL)?;
    let next = table
        .range((event, 0)..=(event, u64::MAX))?
        .next_back()
        .transpose()?
        .map_or(0, |(k, _)| k.value().1 + 1);
    if next >= JOURNAL_CAP {
        return Ok(false);
    }
    table.insert((event, next), codec::encode(entry).as_slice())?;
    Ok(true)
}

/// `event`'s journal, in order.
pub fn journal_of(tx: &ReadTransaction, event: u64) -> Result<Vec<JournalEntry>, StoreError> {
    let table = tx.open_table(EVENT_JOURNAL)?;
    let mut out = Vec::new();
    for entry in table.range((event, 0)..=(event, u64::MAX))? {
        let (k, v) = entry?;
        let (id, seq) = k.value();
        out.push(codec::decode(
            EVENT_JOURNAL.name(),
            &format!("{id}/{seq}"),
            v.value(),
        )?);
    }
    Ok(out)
}
