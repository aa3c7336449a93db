//! A VM's identity: what its credential is bound to.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who a VM is, for as long as it exists: its credential carries `nonce`, so a destroyed
/// VM's credential is dead even when a new VM gets the same name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Random, per launch of the VM (hex). Empty for VMs that were in the store before
    /// identities existed: their old credentials hold until the VM is destroyed.
    pub nonce: String,
    pub issued_at: DateTime<Utc>,
    /// "launch #12", "minted by admin", …
    pub origin: String,
}

impl Identity {
    pub fn new(origin: &str, now: DateTime<Utc>) -> Identity {
        let mut bytes = [0u8; 16];
        rand::fill(&mut bytes);
        Identity {
            nonce: hex::encode(bytes),
            issued_at: now,
            origin: origin.to_owned(),
        }
    }

    pub fn legacy(now: DateTime<Utc>) -> Identity {
        Identity {
            nonce: String::new(),
            issued_at: now,
            origin: "before launch-bound credentials".into(),
        }
    }
}
