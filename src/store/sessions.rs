//! Admin browser sessions. Keys are SHA-256 digests of the session ids, never the ids.

use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tables::SESSIONS;
use super::{StoreError, codec};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredSession {
    pub data: HashMap<String, serde_json::Value>,
    /// Unix seconds after which the session is void.
    pub expires_at: i64,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Stores a new session; `false` (and nothing written) if the id is already taken.
pub fn create(
    tx: &WriteTransaction,
    id: &str,
    session: &StoredSession,
) -> Result<bool, StoreError> {
    let mut table = tx.open_table(SESSIONS)?;
    let k = key(id);
    if table.get(&k)?.is_some() {
        return Ok(false);
    }
    table.insert(&k, codec::encode(session).as_slice())?;
    Ok(true)
}

pub fn save(tx: &WriteTransaction, id: &str, session: &StoredSession) -> Result<(), StoreError> {
    tx.open_table(SESSIONS)?
        .insert(&key(id), codec::encode(session).as_slice())?;
    Ok(())
}

/// The session if it exists and has not expired at `now` (unix seconds).
pub fn load(tx: &ReadTransaction, id: &str, now: i64) -> Result<Option<StoredSession>, StoreError> {
    let table = tx.open_table(SESSIONS)?;
    let Some(value) = table.get(&key(id))? else {
        return Ok(None);
    };
    let session: StoredSession = codec::decode(SESSIONS.name(), "<session>", value.value())?;
    Ok((session.expires_at > now).then_some(session))
}

pub fn delete(tx: &WriteTransaction, id: &str) -> Result<(), StoreError> {
    tx.open_table(SESSIONS)?.remove(&key(id))?;
    Ok(())
}

/// Drops sessions that expired before `now`, and any that cannot be read; returns how many.
pub fn delete_expired(tx: &WriteTransaction, now: i64) -> Result<usize, StoreError> {
    let mut table = tx.open_table(SESSIONS)?;
    let mut dead = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let expired = serde_json::from_slice::<StoredSession>(v.value())
            .map_or(true, |s| s.expires_at <= now);
        if expired {
            dead.push(*k.value());
        }
    }
    for k in &dead {
        table.remove(k)?;
    }
    Ok(dead.len())
}

/// The session's keys that name who signed in and with which role (the console writes
/// them at sign-in; a session from before roles has no role and is the admin's).
pub const USER_KEY: &str = "admin";
pub const ROLE_KEY: &str = "role";

/// Signs out every browser of account `user` signed in with `role` (after its removal or
/// a new password); how many sessions ended.
pub fn delete_of(tx: &WriteTransaction, user: &str, role: &str) -> Result<usize, StoreError> {
    let mut table = tx.open_table(SESSIONS)?;
    let mut ended = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let Ok(session) = serde_json::from_slice::<StoredSession>(v.value()) else {
            continue;
        };
        let holds =
            |key: &str, want: &str| session.data.get(key).and_then(|v| v.as_str()) == Some(want);
        if holds(USER_KEY, user) && holds(ROLE_KEY, role) {
            ended.push(*k.value());
        }
    }
    for k in &ended {
        table.remove(k)?;
    }
    Ok(ended.len())
}

/// Signs out every browser (after a password change).
pub fn delete_all(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(SESSIONS)?.retain(|_, _| false)?;
    Ok(())
}
