//! The audit log: every admin action, who did it, from where, and when.

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::AUDIT;
use super::{StoreError, codec};
use crate::model::AuditEntry;

/// Appends one entry and returns it with its id.
pub fn record(
    tx: &WriteTransaction,
    actor: &str,
    from: Option<String>,
    action: &str,
    detail: &str,
    at: DateTime<Utc>,
) -> Result<AuditEntry, StoreError> {
    let mut table = tx.open_table(AUDIT)?;
    let id = table.last()?.map_or(1, |(k, _)| k.value() + 1);
    let entry = AuditEntry {
        id,
        at,
        actor: actor.to_owned(),
        from,
        action: action.to_owned(),
        detail: detail.to_owned(),
    };
    table.insert(id, codec::encode(&entry).as_slice())?;
    Ok(entry)
}

/// The newest `limit` entries, newest first.
pub fn recent(tx: &ReadTransaction, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
    let table = tx.open_table(AUDIT)?;
    let mut out = Vec::with_capacity(limit.min(1024));
    for entry in table.iter()?.rev().take(limit) {
        let (k, v) = entry?;
        out.push(codec::decode(
            AUDIT.name(),
            &k.value().to_string(),
            v.value(),
        )?);
    }
    Ok(out)
}
