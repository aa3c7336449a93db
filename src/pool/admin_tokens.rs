//! Admin API tokens: made and revoked by the admin (with the password or a console
//! session, never with a token), checked on every request that presents one. Their last
//! use is kept in memory and written at most once a minute per token, and at shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{Actor, Pool, PoolError};
use crate::model::{AdminToken, TOKEN_PREFIX, TokenScope, check_token_name, token_digest};
use crate::store::{Store, StoreError, admin_tokens, audit};

/// A token's last use is written to the store at most this often.
const WRITE_EVERY: Duration = Duration::from_secs(60);

/// A token that checked out: who is acting.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenUse {
    pub id: u64,
    pub name: String,
    pub scope: TokenScope,
}

struct Live {
    token: TokenUse,
    last_used: Option<(DateTime<Utc>, Option<String>)>,
    /// When the last use was last written; `None`: never by this process.
    written: Option<Instant>,
    /// A use newer than the store's.
    dirty: bool,
}

/// The tokens in force, by digest, with their last use.
pub struct AdminTokens {
    live: Mutex<HashMap<[u8; 32], Live>>,
    /// Last uses to write, handed to a task of their own (a request does not wait for it).
    writes: mpsc::UnboundedSender<(u64, DateTime<Utc>, Option<String>)>,
}

impl AdminTokens {
    /// The stored tokens; `store` receives their last uses from now on.
    pub async fn load(store: &Store) -> Result<AdminTokens, StoreError> {
        let stored = store.read(admin_tokens::list).await?;
        let mut live = HashMap::with_capacity(stored.len());
        for token in stored {
            let Some(digest) = hex::decode(&token.digest)
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
            else {
                tracing::error!(name = %token.name, "an API token's stored digest is unreadable; it cannot be used");
                continue;
            };
            live.insert(digest, Live::from(&token));
        }
        let (writes, mut queue) = mpsc::unbounded_channel();
        let store = store.clone();
        tokio::spawn(async move {
            while let Some((id, at, from)) = queue.recv().await {
                let written = store
                    .write(move |tx| admin_tokens::record_use(tx, id, at, from))
                    .await;
                if let Err(e) = written {
                    tracing::warn!(error = %e, "cannot record an API token's last use");
                }
            }
        });
        Ok(AdminTokens {
            live: Mutex::new(live),
            writes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token `presented` names, if it is in force; its use is remembered.
    pub fn check(
        &self,
        presented: &str,
        from: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Option<TokenUse> {
        // Looked up by digest: timing reveals at most something about a SHA-256 of the
        // guess, which does not help to find a token.
        let digest = token_digest(presented);
        let mut live = self.lock();
        let entry = live.get_mut(&digest)?;
        let from = from.map(|ip| ip.to_string());
        entry.last_used = Some((now, from.clone()));
        if entry.written.is_none_or(|at| at.elapsed() >= WRITE_EVERY) {
            entry.written = Some(Instant::now());
            entry.dirty = false;
            // The writer task ends only with the process.
            let _ = self.writes.send((entry.token.id, now, from));
        } else {
            entry.dirty = true;
        }
        Some(entry.token.clone())
    }

    /// Whether token `id` is still in force (not revoked).
    pub fn in_force(&self, id: u64) -> bool {
        self.lock().values().any(|live| live.token.id == id)
    }

    fn insert(&self, digest: [u8; 32], token: &AdminToken) {
        self.lock().insert(digest, Live::from(token));
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|_, live| live.token.id != id);
    }

    /// The last use of token `id` as known in memory.
    fn last_used(&self, id: u64) -> Option<(DateTime<Utc>, Option<String>)> {
        self.lock()
            .values()
            .find(|live| live.token.id == id)
            .and_then(|live| live.last_used.clone())
    }

    /// Last uses not written yet, marked written.
    fn take_dirty(&self) -> Vec<(u64, DateTime<Utc>, Option<String>)> {
        let mut out = Vec::new();
        for live in self.lock().values_mut() {
            if live.dirty
                && let Some((at, from)) = live.last_used.clone()
            {
                live.dirty = false;
                out.push((live.token.id, at, from));
            }
        }
        out
    }
}

impl From<&AdminToken> for Live {
    fn from(token: &AdminToken) -> Live {
        Live {
            token: TokenUse {
                id: token.id,
                name: token.name.clone(),
                scope: token.scope,
            },
            last_used: token
                .last_used_at
                .map(|at| (at, token.last_used_from.clone())),
            written: None,
            dirty: false,
        }
    }
}

/// A token just made: its record and its text (shown this once).
pub struct Created {
    pub token: AdminToken,
    pub text: String,
}

/// Makes a token named `name` with `scope`; audited.
pub async fn create(
    pool: &Pool,
    actor: &Actor,
    name: &str,
    scope: TokenScope,
) -> Result<Created, PoolError> {
    check_token_name(name).map_err(|e| PoolError::Invalid(format!("name: {e}")))?;
    let text = format!("{TOKEN_PREFIX}{}", crate::store::meta::random_secret());
    let digest = token_digest(&text);
    let now = pool.clock.now();
    let record = AdminToken {
        id: 0,
        name: name.to_owned(),
        scope,
        digest: hex::encode(digest),
        created_at: now,
        created_by: actor.user.clone(),
        last_used_at: None,
        last_used_from: None,
    };
    let who = actor.clone();
    let stored = pool
        .store
        .write(move |tx| {
            let Ok(token) = admin_tokens::insert(tx, record)? else {
                return Ok(None);
            };
            audit::record(
                tx,
                &who.user,
                who.from.clone(),
                "create-api-token",
                &format!("\"{}\" ({})", token.name, token.scope.as_str()),
                now,
            )?;
            Ok(Some(token))
        })
        .await
        .map_err(PoolError::store("Failed to store the API token."))?;
    let token = stored.ok_or_else(|| {
        PoolError::Conflict(format!(
            "name: an API token named \"{name}\" exists already; choose another name or revoke that one"
        ))
    })?;
    pool.admin_tokens.insert(digest, &token);
    tracing::info!(target: "lablink::audit", actor = %actor.user, name = %token.name, scope = token.scope.as_str(), "API token created");
    Ok(Created { token, text })
}

/// Revokes token `id` at once; audited. The revoked token.
pub async fn revoke(pool: &Pool, actor: &Actor, id: u64) -> Result<AdminToken, PoolError> {
    let now = pool.clock.now();
    let who = actor.clone();
    let removed = pool
        .store
        .write(move |tx| {
            let removed = admin_tokens::remove(tx, id)?;
            if let Some(token) = &removed {
                audit::record(
                    tx,
                    &who.user,
                    who.from.clone(),
                    "revoke-api-token",
                    &format!("\"{}\" ({})", token.name, token.scope.as_str()),
                    now,
                )?;
            }
            Ok(removed)
        })
        .await
        .map_err(PoolError::store("Failed to revoke the API token."))?
        .ok_or_else(|| PoolError::NotFound(format!("No API token with id {id}.")))?;
    pool.admin_tokens.remove(id);
    tracing::info!(target: "lablink::audit", actor = %actor.user, name = %removed.name, "API token revoked");
    Ok(removed)
}

/// Every token in force, oldest first, with its last use as known now.
pub async fn list(pool: &Pool) -> Result<Vec<AdminToken>, PoolError> {
    let mut tokens = pool
        .store
        .read(admin_tokens::list)
        .await
        .map_err(PoolError::store("Failed to read the API tokens."))?;
    for token in &mut tokens {
        if let Some((at, from)) = pool.admin_tokens.last_used(token.id)
            && token.last_used_at.is_none_or(|t| t < at)
        {
            token.last_used_at = Some(at);
            token.last_used_from = from;
        }
    }
    Ok(tokens)
}

/// Writes the last uses not written yet (at shutdown).
pub async fn flush(pool: &Pool) {
    let dirty = pool.admin_tokens.take_dirty();
    if dirty.is_empty() {
        return;
    }
    let written = pool
        .store
        .write(move |tx| {
            for (id, at, from) in dirty {
                admin_tokens::record_use(tx, id, at, from)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot record the API tokens' last use");
    }
}
