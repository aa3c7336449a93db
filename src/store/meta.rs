//! Store-wide secrets and settings kept across restarts.

use base64::Engine;
use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::META;
use super::{StoreError, codec};

const API_TOKEN: &str = "api_token";
const ADMIN_PASSWORD_HASH: &str = "admin_password_hash";
/// Hash of the configured password that was last applied: a configured password takes
/// effect when it changes, and does not undo `lablink admin set-password` otherwise.
const CONFIGURED_PASSWORD_HASH: &str = "configured_password_hash";

fn get_string(tx: &ReadTransaction, key: &str) -> Result<Option<String>, StoreError> {
    let meta = tx.open_table(META)?;
    let value = meta.get(key)?;
    value
        .map(|v| codec::decode(META.name(), key, v.value()))
        .transpose()
}

fn put_string(tx: &WriteTransaction, key: &str, value: &str) -> Result<(), StoreError> {
    tx.open_table(META)?
        .insert(key, codec::encode(&value).as_slice())?;
    Ok(())
}

/// A fresh random secret: 32 bytes, URL-safe base64 (the shape of upstream's token).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The agents' bearer token, created on first use and the same ever after.
pub fn api_token_or_create(tx: &WriteTransaction) -> Result<String, StoreError> {
    let existing = {
        let meta = tx.open_table(META)?;
        let value = meta.get(API_TOKEN)?;
        value
            .map(|v| codec::decode::<String>(META.name(), API_TOKEN, v.value()))
            .transpose()?
    };
    match existing {
        Some(token) => Ok(token),
        None => {
            let token = random_secret();
            put_string(tx, API_TOKEN, &token)?;
            Ok(token)
        }
    }
}

/// Replaces the agents' token with a new random one and returns it.
pub fn rotate_api_token(tx: &WriteTransaction) -> Result<String, StoreError> {
    let token = random_secret();
    put_string(tx, API_TOKEN, &token)?;
    Ok(token)
}

pub fn api_token(tx: &ReadTransaction) -> Result<Option<String>, StoreError> {
    get_string(tx, API_TOKEN)
}

pub fn admin_password_hash(tx: &ReadTransaction) -> Result<Option<String>, StoreError> {
    get_string(tx, ADMIN_PASSWORD_HASH)
}

pub fn set_admin_password_hash(tx: &WriteTransaction, hash: &str) -> Result<(), StoreError> {
    put_string(tx, ADMIN_PASSWORD_HASH, hash)
}

pub fn configured_password_hash(tx: &ReadTransaction) -> Result<Option<String>, StoreError> {
    get_string(tx, CONFIGURED_PASSWORD_HASH)
}

/// Applies a configured password: it becomes the admin password.
pub fn apply_configured_password(tx: &WriteTransaction, hash: &str) -> Result<(), StoreError> {
    put_string(tx, ADMIN_PASSWORD_HASH, hash)?;
    put_string(tx, CONFIGURED_PASSWORD_HASH, hash)
}

/// A read of the store's own bookkeeping: what the health check asks.
pub fn schema_version(tx: &ReadTransaction) -> Result<Option<u64>, StoreError> {
    let meta = tx.open_table(META)?;
    let value = meta.get("schema_version")?;
    value
        .map(|v| codec::decode(META.name(), "schema_version", v.value()))
        .transpose()
}
