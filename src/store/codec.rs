//! The one value encoding of the store (JSON through serde: self-describing, so a field
//! added with a default needs no migration). Nothing else knows the byte format.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain structs of strings, numbers and timestamps cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(table: &str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: table.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
