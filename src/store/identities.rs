//! VM identities: which hostnames may hold a credential right now, and the nonce it must
//! name. Written when a VM is launched or minted, removed when it is destroyed or revoked.

use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::VM_IDENTITIES;
use super::{StoreError, codec};
use crate::model::Identity;

pub fn put(tx: &WriteTransaction, host: &str, identity: &Identity) -> Result<(), StoreError> {
    tx.open_table(VM_IDENTITIES)?
        .insert(host, codec::encode(identity).as_slice())?;
    Ok(())
}

/// The identity of `host`, created (as `origin`) if it has none.
pub fn get_or_mint(
    tx: &WriteTransaction,
    host: &str,
    origin: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Identity, StoreError> {
    let existing = {
        let table = tx.open_table(VM_IDENTITIES)?;
        let value = table.get(host)?;
        value
            .map(|v| codec::decode::<Identity>(VM_IDENTITIES.name(), host, v.value()))
            .transpose()?
    };
    match existing {
        Some(identity) => Ok(identity),
        None => {
            let identity = Identity::new(origin, now);
            put(tx, host, &identity)?;
            Ok(identity)
        }
    }
}

pub fn remove(tx: &WriteTransaction, host: &str) -> Result<bool, StoreError> {
    Ok(tx.open_table(VM_IDENTITIES)?.remove(host)?.is_some())
}

pub fn remove_all(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(VM_IDENTITIES)?.retain(|_, _| false)?;
    Ok(())
}

pub fn list(tx: &ReadTransaction) -> Result<Vec<(String, Identity)>, StoreError> {
    let table = tx.open_table(VM_IDENTITIES)?;
    let mut all = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let host = k.value().to_owned();
        let identity = codec::decode(VM_IDENTITIES.name(), &host, v.value())?;
        all.push((host, identity));
    }
    Ok(all)
}

/// Whether `nonce` is `host`'s identity now, read inside a write (so that a report cannot
/// bring back a VM whose identity a destroy or revoke just removed).
pub fn is_current(tx: &WriteTransaction, host: &str, nonce: &str) -> Result<bool, StoreError> {
    let table = tx.open_table(VM_IDENTITIES)?;
    let value = table.get(host)?;
    match value {
        Some(v) => {
            let identity: Identity = codec::decode(VM_IDENTITIES.name(), host, v.value())?;
            Ok(bool::from(subtle::ConstantTimeEq::ct_eq(
                identity.nonce.as_bytes(),
                nonce.as_bytes(),
            )))
        }
        None => Ok(false),
    }
}
