//! Console accounts besides the configured admin: made, given a new password and removed
//! by the admin (audited); looked up at sign-in. Passwords are hashed with Argon2 (the
//! same parameters as the admin's); a new password or a removal ends the account's
//! console sessions in the same transaction.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use super::{Actor, Pool, PoolError};
use crate::model::{Account, Role, check_account_name, check_new_password};
use crate::store::{accounts, audit, sessions};

/// The PHC string of `password`'s Argon2 hash (a fresh random salt each time).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` is the one `hash` was made from.
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// `hash_password` off the async threads.
async fn hash_blocking(password: String) -> Result<String, PoolError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| e.to_string())
        .and_then(|hashed| hashed)
        .map_err(|e| PoolError::Failed(format!("Cannot hash the password: {e}")))
}

fn check_password(name: &str, password: &str) -> Result<(), PoolError> {
    check_new_password(name, password).map_err(|e| PoolError::Invalid(format!("password: {e}")))
}

/// Makes account `name` with `role` and `password`; audited.
pub async fn create(
    pool: &Pool,
    actor: &Actor,
    name: &str,
    role: Role,
    password: &str,
) -> Result<Account, PoolError> {
    check_account_name(name).map_err(|e| PoolError::Invalid(format!("name: {e}")))?;
    if name == pool.config.app.admin_user {
        return Err(PoolError::Conflict(format!(
            "name: \"{name}\" is the admin's user name (app.admin_user); choose another name"
        )));
    }
    check_password(name, password)?;
    let now = pool.clock.now();
    let account = Account {
        name: name.to_owned(),
        role,
        password_hash: hash_blocking(password.to_owned()).await?,
        created_at: now,
        created_by: actor.user.clone(),
        last_sign_in_at: None,
        last_sign_in_from: None,
    };
    let (who, stored) = (actor.clone(), account.clone());
    let inserted = pool
        .store
        .write(move |tx| {
            if accounts::insert(tx, &stored)?.is_err() {
                return Ok(false);
            }
            let detail = format!("\"{}\" ({})", stored.name, stored.role.as_str());
            audit::record(
                tx,
                &who.user,
                who.from.clone(),
                "create-account",
                &detail,
                now,
            )?;
            Ok(true)
        })
        .await
        .map_err(PoolError::store("Failed to store the account."))?;
    if !inserted {
        return Err(PoolError::Conflict(format!(
            "name: an account named \"{name}\" exists already; choose another name, or give it a new password"
        )));
    }
    tracing::info!(target: "lablink::audit", actor = %actor.user, name, role = role.as_str(), "account created");
    Ok(account)
}

/// Gives account `name` a new password and ends its console sessions; audited.
pub async fn reset_password(
    pool: &Pool,
    actor: &Actor,
    name: &str,
    password: &str,
) -> Result<Account, PoolError> {
    check_password(name, password)?;
    let hash = hash_blocking(password.to_owned()).await?;
    let now = pool.clock.now();
    let (who, key) = (actor.clone(), name.to_owned());
    let changed = pool
        .store
        .write(move |tx| {
            let Some(account) = accounts::update(tx, &key, |a| a.password_hash = hash)? else {
                return Ok(None);
            };
            let ended = sessions::delete_of(tx, &account.name, account.role.as_str())?;
            let detail = format!("\"{}\"; {ended} console session(s) ended", account.name);
            audit::record(
                tx,
                &who.user,
                who.from.clone(),
                "reset-account-password",
                &detail,
                now,
            )?;
            Ok(Some(account))
        })
        .await
        .map_err(PoolError::store("Failed to change the account's password."))?
        .ok_or_else(|| unknown(name))?;
    tracing::info!(target: "lablink::audit", actor = %actor.user, name, "account password reset");
    Ok(changed)
}

/// Removes account `name` and ends its console sessions; audited.
pub async fn remove(pool: &Pool, actor: &Actor, name: &str) -> Result<Account, PoolError> {
    let now = pool.clock.now();
    let (who, key) = (actor.clone(), name.to_owned());
    let removed = pool
        .store
        .write(move |tx| {
            let Some(account) = accounts::remove(tx, &key)? else {
                return Ok(None);
            };
            let ended = sessions::delete_of(tx, &account.name, account.role.as_str())?;
            let detail = format!(
                "\"{}\" ({}); {ended} console session(s) ended",
                account.name,
                account.role.as_str()
            );
            audit::record(
                tx,
                &who.user,
                who.from.clone(),
                "remove-account",
                &detail,
                now,
            )?;
            Ok(Some(account))
        })
        .await
        .map_err(PoolError::store("Failed to remove the account."))?
        .ok_or_else(|| unknown(name))?;
    tracing::info!(target: "lablink::audit", actor = %actor.user, name, "account removed");
    Ok(removed)
}

fn unknown(name: &str) -> PoolError {
    PoolError::NotFound(format!(
        "No account named \"{}\" (`lablink accounts list` shows them).",
        name.chars().take(64).collect::<String>()
    ))
}

/// Every account, by name.
pub async fn list(pool: &Pool) -> Result<Vec<Account>, PoolError> {
    pool.store
        .read(accounts::list)
        .await
        .map_err(PoolError::store("Failed to read the accounts."))
}

/// Account `name`, if there is one (for signing in, and for checking a session still
/// belongs to an account).
pub async fn find(pool: &Pool, name: &str) -> Result<Option<Account>, PoolError> {
    let key = name.to_owned();
    pool.store
        .read(move |tx| accounts::get(tx, &key))
        .await
        .map_err(PoolError::store("Failed to read the accounts."))
}

/// What a console session of `account` remembers to tell that it began with the current
/// password of this very account: it changes with a new password (or a removed account made
/// again), so such a session is over even if its deletion raced a request that saved it.
pub fn session_key(account: &Account) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(account.name.as_bytes())
        .chain_update([0u8])
        .chain_update(account.password_hash.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// Notes a successful sign-in of account `name` (its last sign-in on the Accounts page).
pub async fn record_sign_in(pool: &Pool, name: &str, from: Option<String>) {
    let (key, at) = (name.to_owned(), pool.clock.now());
    let written = pool
        .store
        .write(move |tx| accounts::record_sign_in(tx, &key, at, from))
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot record an account's sign-in");
    }
}
