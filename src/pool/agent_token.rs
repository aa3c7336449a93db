//! The agents' shared token: replaced by the admin, in force at once, and written next to
//! the store so operators (and `lablink token`) can read it while the allocator runs.

use super::{Actor, Pool, PoolError};
use crate::store::meta;

/// The token's file in the data directory.
pub const TOKEN_FILE: &str = "api-token";

/// A new token, and why its file could not be written if it could not.
pub struct Rotated {
    pub token: String,
    pub file_problem: Option<String>,
}

/// Replaces the agents' token: the old one is refused from now on.
pub async fn rotate(pool: &Pool, actor: &Actor) -> Result<Rotated, PoolError> {
    // One rotation at a time: the store, the running server and the file agree.
    let rotating = pool.token_rotation.lock().await;
    let token = pool
        .store
        .write(meta::rotate_api_token)
        .await
        .map_err(PoolError::store("Failed to rotate the token."))?;
    pool.api_token.set(token.clone());
    let file = pool.config.data_dir().join(TOKEN_FILE);
    let file_problem = crate::secret_file::write(&file, &token).err().map(|e| {
        tracing::error!(error = %e, "the new agent token could not be written to its file");
        format!(
            "The new token is in force, but {} could not be written ({}); `lablink token` shows the old one until the next start.",
            file.display(),
            e.source
        )
    });
    drop(rotating);
    pool.audit_by(
        actor,
        "rotate-token",
        format!("new fingerprint {}", fingerprint(&token)),
    )
    .await;
    Ok(Rotated {
        token,
        file_problem,
    })
}

/// A short, safe-to-show name of a token: the start of its SHA-256.
pub fn fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))[..12].to_owned()
}
