//! A participant waiting for a seat: what they sent when they joined, kept until a VM is
//! free for them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Assignment, DesktopKind};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitEntry {
    pub email: String,
    /// SHA-256 (hex) of the claim token their browser got when they joined; the seat they
    /// are given carries it, so that browser finds the seat.
    pub token_sha256: String,
    pub desktop: DesktopKind,
    /// The Chrome Remote Desktop code they gave (empty for a browser desktop).
    pub crd_code: String,
    pub joined_at: DateTime<Utc>,
}

impl WaitEntry {
    /// The seat this participant gets when a VM is free for them.
    pub fn assignment(&self, pin: &str, now: DateTime<Utc>) -> Assignment {
        Assignment {
            email: self.email.clone(),
            crd_code: self.crd_code.clone(),
            pin: pin.to_owned(),
            assigned_at: now,
            claim_token_sha256: Some(self.token_sha256.clone()),
            desktop: self.desktop,
            desktop_ready_at: None,
        }
    }
}
