//! Console accounts besides the configured admin: who else may sign in, and with which
//! role. Only an Argon2 hash of the password is kept.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest account name.
pub const MAX_ACCOUNT_NAME_LEN: usize = 64;
/// Shortest password an account may be given.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password (Argon2 hashes anything, but a megabyte "password" is a mistake).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// What a signed-in person may do. The configured admin is `Admin`; accounts are made with
/// one of `Role::GRANTABLE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Watches the room: the console's pages, peeking at and taking over desktops; no
    /// launches, teardowns, seat changes, tokens, accounts, schedules or participants' data.
    Helper,
}

impl Role {
    /// The roles an account can be given (the admin is the one from the configuration).
    pub const GRANTABLE: [Role; 1] = [Role::Helper];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Helper => "helper",
        }
    }

    /// A role an account can be given, by name.
    pub fn parse_grantable(value: &str) -> Option<Role> {
        Role::GRANTABLE.into_iter().find(|r| r.as_str() == value)
    }
}

/// One account as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    pub role: Role,
    /// The PHC string of the password's Argon2 hash.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// Who made it (as the audit log names them).
    pub created_by: String,
    #[serde(default)]
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// The client address of the last sign-in.
    #[serde(default)]
    pub last_sign_in_from: Option<String>,
}

/// An account name: 1 to 64 letters, digits, `.`, `_`, `-` or `@` (it appears in URLs,
/// the audit log and the console's header).
pub fn check_account_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("give the account a name (e.g. \"maria\")".into());
    }
    if name.chars().count() > MAX_ACCOUNT_NAME_LEN {
        return Err(format!("at most {MAX_ACCOUNT_NAME_LEN} characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!(
            "letters, digits, '.', '_', '-' and '@' only (not {bad:?})"
        ));
    }
    Ok(())
}

/// A password for account `name`: long enough, and not containing the name (a name of
/// three characters or fewer is too short to matter).
pub fn check_new_password(name: &str, password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(format!(
            "at least {MIN_PASSWORD_LEN} characters (this one has {len})"
        ));
    }
    if len > MAX_PASSWORD_LEN {
        return Err(format!("at most {MAX_PASSWORD_LEN} characters"));
    }
    if name.chars().count() > 3 && password.to_lowercase().contains(&name.to_lowercase()) {
        return Err("it must not contain the account's name".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_helper_can_be_granted() {
        assert_eq!(Role::parse_grantable("helper"), Some(Role::Helper));
        assert_eq!(Role::parse_grantable("admin"), None);
        assert_eq!(Role::parse_grantable(""), None);
        for role in [Role::Admin, Role::Helper] {
            let json = serde_json::to_string(&role).expect("json");
            assert_eq!(json, format!("\"{}\"", role.as_str()));
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_account_name("maria").is_ok());
        assert!(check_account_name("m.rossi-2@lab").is_ok());
        assert!(check_account_name(&"x".repeat(MAX_ACCOUNT_NAME_LEN)).is_ok());
        for bad in [
            "",
            "a b",
            "a/b",
            "a:b",
            "a\nb",
            &"x".repeat(MAX_ACCOUNT_NAME_LEN + 1),
        ] {
            assert!(check_account_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn weak_passwords_are_refused() {
        assert!(check_new_password("maria", "correct horse battery").is_ok());
        assert_eq!(
            check_new_password("maria", "short"),
            Err("at least 12 characters (this one has 5)".into())
        );
        assert!(check_new_password("maria", "").is_err());
        assert!(check_new_password("maria", "xxMARIAxx1234567").is_err());
        assert!(check_new_password("a", "correct horse battery").is_ok());
        assert!(check_new_password("maria", &"ab".repeat(MAX_PASSWORD_LEN)).is_err());
    }

    #[test]
    fn an_account_without_sign_in_decodes() {
        let old = r#"{"name":"maria","role":"helper","password_hash":"$argon2id$x","created_at":"2026-01-01T00:00:00Z","created_by":"admin"}"#;
        let account: Account = serde_json::from_str(old).expect("decodes");
        assert_eq!(account.last_sign_in_at, None);
        assert_eq!(account.role, Role::Helper);
    }
}
