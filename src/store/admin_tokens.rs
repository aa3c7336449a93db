//! Admin API tokens: their digests and last use. A revoked token's entry is removed.

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::{ADMIN_TOKENS, META};
use super::{StoreError, codec};
use crate::model::AdminToken;

/// In `META`: the highest id ever given, so a revoked token's id is never reused (a
/// stored login that names it cannot reach a newer token).
const LAST_ID: &str = "admin_token_last_id";

fn decode(id: u64, bytes: &[u8]) -> Result<AdminToken, StoreError> {
    codec::decode(ADMIN_TOKENS.name(), &id.to_string(), bytes)
}

/// Every token, oldest first.
pub fn list(tx: &ReadTransaction) -> Result<Vec<AdminToken>, StoreError> {
    let table = tx.open_table(ADMIN_TOKENS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        out.push(decode(k.value(), v.value())?);
    }
    Ok(out)
}

/// Another token of this name exists.
pub struct NameTaken;

/// Stores `token` under a new id (and returns it so), unless its name is taken.
pub fn insert(
    tx: &WriteTransaction,
    mut token: AdminToken,
) -> Result<Result<AdminToken, NameTaken>, StoreError> {
    let mut table = tx.open_table(ADMIN_TOKENS)?;
    for entry in table.iter()? {
        let (k, v) = entry?;
        if decode(k.value(), v.value())?.name == token.name {
            return Ok(Err(NameTaken));
        }
    }
    let mut meta = tx.open_table(META)?;
    let last: u64 = match meta.get(LAST_ID)? {
        Some(v) => codec::decode(META.name(), LAST_ID, v.value())?,
        None => 0,
    };
    token.id = last.max(table.last()?.map_or(0, |(k, _)| k.value())) + 1;
    meta.insert(LAST_ID, codec::encode(&token.id).as_slice())?;
    table.insert(token.id, codec::encode(&token).as_slice())?;
    Ok(Ok(token))
}

/// Removes token `id`; what it was, if it existed.
pub fn remove(tx: &WriteTransaction, id: u64) -> Result<Option<AdminToken>, StoreError> {
    let mut table = tx.open_table(ADMIN_TOKENS)?;
    let removed = table.remove(id)?;
    removed.map(|v| decode(id, v.value())).transpose()
}

/// Records the last use of token `id` (nothing if it was revoked meanwhile).
pub fn record_use(
    tx: &WriteTransaction,
    id: u64,
    at: DateTime<Utc>,
    from: Option<String>,
) -> Result<(), StoreError> {
    let mut table = tx.open_table(ADMIN_TOKENS)?;
    let current = table.get(id)?.map(|v| decode(id, v.value())).transpose()?;
    if let Some(mut token) = current
        && token.last_used_at.is_none_or(|t| t < at)
    {
        token.last_used_at = Some(at);
        token.last_used_from = from;
        table.insert(id, codec::encode(&token).as_slice())?;
    }
    Ok(())
}
