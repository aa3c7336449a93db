//! Admin API tokens: what scripts and the command line sign in with instead of the admin
//! password. Only the token's SHA-256 is kept; the text is shown once, when it is made.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How every admin API token begins: it tells one from an agent's credential in the same
/// `Authorization: Bearer` header, and lets secret scanners recognise a leaked one.
pub const TOKEN_PREFIX: &str = "lablink_at_";

/// Longest token name.
pub const MAX_TOKEN_NAME_LEN: usize = 64;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// Safe requests only (GET, HEAD).
    ReadOnly,
    /// Everything the admin may do, except managing API tokens.
    Admin,
}

impl TokenScope {
    pub const ALL: [TokenScope; 2] = [TokenScope::ReadOnly, TokenScope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::ReadOnly => "read_only",
            TokenScope::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<TokenScope> {
        TokenScope::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether a request with this method is within the scope.
    pub fn allows(self, method: &str) -> bool {
        match self {
            TokenScope::Admin => true,
            TokenScope::ReadOnly => matches!(method, "GET" | "HEAD"),
        }
    }
}

/// One admin API token as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminToken {
    pub id: u64,
    pub name: String,
    pub scope: TokenScope,
    /// Hex SHA-256 of the token's text.
    pub digest: String,
    pub created_at: DateTime<Utc>,
    /// Who made it (the admin, as the audit log names them).
    pub created_by: String,
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// The client address of the last use.
    #[serde(default)]
    pub last_used_from: Option<String>,
}

/// SHA-256 of a token's text. Tokens carry 256 random bits, so a fast hash is enough: no
/// dictionary or brute force reaches them, unlike a password, which needs a slow one.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A token name: 1 to 64 characters, no control characters, no leading or trailing space.
pub fn check_token_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("give the token a name (what uses it, e.g. \"ci\")".into());
    }
    if name.chars().count() > MAX_TOKEN_NAME_LEN {
        return Err(format!("at most {MAX_TOKEN_NAME_LEN} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("no control characters".into());
    }
    if name.trim() != name {
        return Err("no leading or trailing spaces".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_read_only_only_reads() {
        for scope in TokenScope::ALL {
            assert_eq!(TokenScope::parse(scope.as_str()), Some(scope));
            let json = serde_json::to_string(&scope).expect("json");
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
        }
        assert_eq!(TokenScope::parse("root"), None);
        assert!(TokenScope::ReadOnly.allows("GET") && TokenScope::ReadOnly.allows("HEAD"));
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            assert!(!TokenScope::ReadOnly.allows(method), "{method}");
            assert!(TokenScope::Admin.allows(method), "{method}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_token_name("ci").is_ok());
        assert!(check_token_name("alice@laptop 2").is_ok());
        assert!(check_token_name(&"x".repeat(MAX_TOKEN_NAME_LEN)).is_ok());
        assert_eq!(
            check_token_name("  "),
            Err("give the token a name (what uses it, e.g. \"ci\")".into())
        );
        for bad in [
            "",
            " ci",
            "ci ",
            "a\nb",
            &"x".repeat(MAX_TOKEN_NAME_LEN + 1),
        ] {
            assert!(check_token_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_old_record_without_last_use_decodes() {
        let old = r#"{"id":1,"name":"ci","scope":"admin","digest":"00","created_at":"2025-01-01T00:00:00Z","created_by":"admin"}"#;
        let token: AdminToken = serde_json::from_str(old).expect("decodes");
        assert_eq!(token.last_used_at, None);
        assert_eq!(token.last_used_from, None);
    }
}
