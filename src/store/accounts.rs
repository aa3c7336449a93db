//! Console accounts (helpers), by name.

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::ACCOUNTS;
use super::{StoreError, codec};
use crate::model::Account;

fn decode(name: &str, bytes: &[u8]) -> Result<Account, StoreError> {
    codec::decode(ACCOUNTS.name(), name, bytes)
}

/// Every account, by name.
pub fn list(tx: &ReadTransaction) -> Result<Vec<Account>, StoreError> {
    let table = tx.open_table(ACCOUNTS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        out.push(decode(k.value(), v.value())?);
    }
    Ok(out)
}

pub fn get(tx: &ReadTransaction, name: &str) -> Result<Option<Account>, StoreError> {
    let table = tx.open_table(ACCOUNTS)?;
    table
        .get(name)?
        .map(|v| decode(name, v.value()))
        .transpose()
}

/// An account of this name exists.
pub struct NameTaken;

/// Stores a new account, unless its name is taken.
pub fn insert(
    tx: &WriteTransaction,
    account: &Account,
) -> Result<Result<(), NameTaken>, StoreError> {
    let mut table = tx.open_table(ACCOUNTS)?;
    if table.get(account.name.as_str())?.is_some() {
        return Ok(Err(NameTaken));
    }
    table.insert(account.name.as_str(), codec::encode(account).as_slice())?;
    Ok(Ok(()))
}

/// Changes account `name` with `change`; the account as changed, or `None` if there is none.
pub fn update(
    tx: &WriteTransaction,
    name: &str,
    change: impl FnOnce(&mut Account),
) -> Result<Option<Account>, StoreError> {
    let mut table = tx.open_table(ACCOUNTS)?;
    let current = table
        .get(name)?
        .map(|v| decode(name, v.value()))
        .transpose()?;
    let Some(mut account) = current else {
        return Ok(None);
    };
    change(&mut account);
    table.insert(name, codec::encode(&account).as_slice())?;
    Ok(Some(account))
}

/// Removes account `name`; what it was, if it existed.
pub fn remove(tx: &WriteTransaction, name: &str) -> Result<Option<Account>, StoreError> {
    let mut table = tx.open_table(ACCOUNTS)?;
    let removed = table.remove(name)?;
    removed.map(|v| decode(name, v.value())).transpose()
}

/// Records a sign-in of account `name` (nothing if it was removed meanwhile).
pub fn record_sign_in(
    tx: &WriteTransaction,
    name: &str,
    at: DateTime<Utc>,
    from: Option<String>,
) -> Result<(), StoreError> {
    update(tx, name, |account| {
        account.last_sign_in_at = Some(at);
        account.last_sign_in_from = from;
    })?;
    Ok(())
}
