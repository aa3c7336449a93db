//! The pool's metered cost (`model::budget::Spend`), one record in the META table.

use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::META;
use super::{StoreError, codec};
use crate::model::budget::Spend;

const SPEND: &str = "spend";

pub fn get(tx: &ReadTransaction) -> Result<Spend, StoreError> {
    let meta = tx.open_table(META)?;
    let value = meta.get(SPEND)?;
    value.map_or(Ok(Spend::default()), |v| {
        codec::decode(META.name(), SPEND, v.value())
    })
}

pub fn get_for_update(tx: &WriteTransaction) -> Result<Spend, StoreError> {
    let meta = tx.open_table(META)?;
    let value = meta.get(SPEND)?;
    value.map_or(Ok(Spend::default()), |v| {
        codec::decode(META.name(), SPEND, v.value())
    })
}

pub fn put(tx: &WriteTransaction, spend: &Spend) -> Result<(), StoreError> {
    tx.open_table(META)?
        .insert(SPEND, codec::encode(spend).as_slice())?;
    Ok(())
}
