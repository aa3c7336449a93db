//! The agents' bearer token, readable everywhere and replaceable while the allocator runs.

use std::sync::{Arc, RwLock};

#[derive(Clone)]
pub struct SharedToken(Arc<RwLock<String>>);

impl SharedToken {
    pub fn new(token: String) -> SharedToken {
        SharedToken(Arc::new(RwLock::new(token)))
    }

    pub fn get(&self) -> String {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, token: String) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let current = self.0.read().unwrap_or_else(|e| e.into_inner());
        presented.as_bytes().ct_eq(current.as_bytes()).into()
    }
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedToken(<redacted>)")
    }
}
