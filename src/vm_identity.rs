//! Which VMs may act right now, and their credentials. The store's identity table is the
//! truth; this keeps a copy in memory for the check every agent request makes, reloaded
//! after each change. Row-creating writes check the table again inside their transaction.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;

use crate::shared_token::SharedToken;
use crate::store::{Store, StoreError, identities};

pub struct Identities {
    store: Store,
    token: SharedToken,
    nonces: RwLock<HashMap<String, String>>,
    /// Held from reading the table to installing the copy: two reloads never cross (an
    /// older read installed last would bring back a revoked nonce).
    reloading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identities(<redacted>)")
    }
}

impl Identities {
    pub async fn load(store: Store, token: SharedToken) -> Result<Arc<Identities>, StoreError> {
        let this = Arc::new(Identities {
            store,
            token,
            nonces: RwLock::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
        });
        this.reload().await?;
        Ok(this)
    }

    /// Reads the table again; call after every committed change of it.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let all = self.store.read(identities::list).await?;
        let map = all.into_iter().map(|(h, i)| (h, i.nonce)).collect();
        *self.nonces.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }

    /// Whether `nonce` is the identity `host` holds now.
    pub fn is_current(&self, host: &str, nonce: &str) -> bool {
        let nonces = self.nonces.read().unwrap_or_else(|e| e.into_inner());
        nonces
            .get(host)
            .is_some_and(|n| bool::from(n.as_bytes().ct_eq(nonce.as_bytes())))
    }

    /// The credential of a VM that has an identity.
    pub fn credential(&self, host: &str) -> Option<String> {
        let nonces = self.nonces.read().unwrap_or_else(|e| e.into_inner());
        nonces.get(host).map(|n| self.token.for_vm(host, n))
    }

    /// Hostnames that hold an identity, sorted.
    pub fn names(&self) -> Vec<String> {
        let nonces = self.nonces.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = nonces.keys().cloned().collect();
        names.sort();
        names
    }

    /// Gives every host in `hosts` an identity (keeping the ones they have) and returns
    /// their credentials in the same order.
    pub async fn ensure(&self, hosts: &[String], origin: &str) -> Result<Vec<String>, StoreError> {
        let (list, origin, now) = (hosts.to_vec(), origin.to_owned(), chrono::Utc::now());
        let minted = self
            .store
            .write(move |tx| {
                list.iter()
                    .map(|h| identities::get_or_mint(tx, h, &origin, now).map(|i| i.nonce))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        self.reload().await?;
        Ok(hosts
            .iter()
            .zip(minted)
            .map(|(h, nonce)| self.token.for_vm(h, &nonce))
            .collect())
    }

    /// A new identity for `host` (the admin's mint for a machine of the manual provider):
    /// any credential it had before stops working.
    pub async fn reissue(&self, host: &str, origin: &str) -> Result<String, StoreError> {
        let identity = crate::model::Identity::new(origin, chrono::Utc::now());
        let (h, saved) = (host.to_owned(), identity.clone());
        self.store
            .write(move |tx| identities::put(tx, &h, &saved))
            .await?;
        self.reload().await?;
        Ok(self.token.for_vm(host, &identity.nonce))
    }

    /// Takes `host`'s identity away: its credential stops working. `false` if it had none.
    pub async fn revoke(&self, host: &str) -> Result<bool, StoreError> {
        let h = host.to_owned();
        let removed = self
            .store
            .write(move |tx| identities::remove(tx, &h))
            .await?;
        self.reload().await?;
        Ok(removed)
    }
}
