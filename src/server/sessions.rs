//! Admin sessions for tower-sessions, kept in the redb store so they survive restarts.

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error, Result};
use tower_sessions::{Expiry, SessionManagerLayer, SessionStore, cookie::SameSite};

use crate::config::Config;
use crate::store::sessions::{self, StoredSession};
use crate::store::{Store, StoreError};

pub const COOKIE: &str = "lablink_session";
/// A session ends this long after it was last used (see `auth::SESSION_RENEWED`).
const IDLE: time::Duration = time::Duration::hours(12);

#[derive(Clone)]
pub struct RedbSessions {
    store: Store,
}

impl std::fmt::Debug for RedbSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbSessions")
    }
}

fn backend(e: StoreError) -> Error {
    Error::Backend(e.to_string())
}

fn stored(record: &Record) -> StoredSession {
    StoredSession {
        data: record.data.clone(),
        expires_at: record.expiry_date.unix_timestamp(),
    }
}

#[async_trait]
impl SessionStore for RedbSessions {
    async fn create(&self, record: &mut Record) -> Result<()> {
        // A fresh random id collides with an existing one practically never; if it does,
        // draw another rather than overwrite someone's session.
        for _ in 0..8 {
            let id = record.id.to_string();
            let value = stored(record);
            let created = self
                .store
                .write(move |tx| sessions::create(tx, &id, &value))
                .await
                .map_err(backend)?;
            if created {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(Error::Backend("could not draw an unused session id".into()))
    }

    async fn save(&self, record: &Record) -> Result<()> {
        let id = record.id.to_string();
        let value = stored(record);
        self.store
            .write(move |tx| sessions::save(tx, &id, &value))
            .await
            .map_err(backend)
    }

    async fn load(&self, id: &Id) -> Result<Option<Record>> {
        let key = id.to_string();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let found = self
            .store
            .read(move |tx| sessions::load(tx, &key, now))
            .await
            .map_err(backend)?;
        Ok(found.and_then(|s| {
            Some(Record {
                id: *id,
                data: s.data,
                expiry_date: OffsetDateTime::from_unix_timestamp(s.expires_at).ok()?,
            })
        }))
    }

    async fn delete(&self, id: &Id) -> Result<()> {
        let key = id.to_string();
        self.store
            .write(move |tx| sessions::delete(tx, &key))
            .await
            .map_err(backend)
    }
}

/// The session cookie: HttpOnly, SameSite=Strict, Secure when the allocator is reached
/// over TLS, expiring after `IDLE` without use.
pub fn layer(store: Store, config: &Config) -> SessionManagerLayer<RedbSessions> {
    SessionManagerLayer::new(RedbSessions { store })
        .with_name(COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(config.serves_tls())
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(IDLE))
}

/// Removes expired sessions now and then; ends with `shutdown`.
pub async fn sweep(store: Store, shutdown: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        match store
            .write(move |tx| sessions::delete_expired(tx, now))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "expired admin sessions removed"),
            Err(e) => tracing::warn!(error = %e, "cannot remove expired admin sessions"),
        }
    }
}
