//! `GET /api/backup` (admin): a consistent snapshot of the whole store, taken while the
//! allocator runs, as a redb file (`lablink backup` downloads it, `lablink restore` puts
//! it in place).

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::server::auth::Admin;
use crate::server::state::App;
use crate::store::{backup, meta};

/// The scratch file of one backup, removed when dropped (on every path out).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove a backup scratch file");
        }
    }
}

pub async fn download(State(app): State<App>, admin: Admin) -> Result<Response, ApiError> {
    // The store holds the agents' token and the password hash.
    admin.not_read_only("download a backup")?;
    let stamp = app.clock.now().format("%Y%m%dT%H%M%SZ").to_string();
    // Next to the store: same file system, same private directory.
    let dir = app
        .store
        .path()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| app.config.data_dir());
    let scratch = Scratch(dir.join(format!(
        "{}{}.redb",
        crate::store::backup::SCRATCH_PREFIX,
        meta::random_secret()
    )));
    let target = scratch.0.clone();
    let summary = app
        .store
        .read(move |tx| backup::snapshot(tx, &target))
        .await
        .map_err(ApiError::store("Failed to take the backup."))?;
    let file = tokio::fs::File::open(&scratch.0)
        .await
        .map_err(|e| ApiError::Failed(format!("cannot read the backup: {e}")))?;
    let length = file
        .metadata()
        .await
        .map_err(|e| ApiError::Failed(format!("cannot read the backup: {e}")))?
        .len();
    // The open file stays readable once its name is gone.
    drop(scratch);
    app.audit(
        &admin.user,
        admin.from_ip(),
        "backup",
        format!("{length} bytes: {summary}"),
    )
    .await;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"lablink-backup-{stamp}.redb\""),
            ),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        body,
    )
        .into_response())
}
