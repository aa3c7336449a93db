//! The allocator hands VMs its own executable (`GET /download/lablink`), so every agent runs
//! exactly the allocator's version. Its checksum goes into the VMs' boot script.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

static CHECKSUM: OnceCell<String> = OnceCell::const_new();

pub fn executable() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}

/// Hex SHA-256 of this executable, computed once.
pub async fn sha256() -> std::io::Result<String> {
    CHECKSUM
        .get_or_try_init(|| async {
            let path = executable()?;
            tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut file = std::fs::File::open(path)?;
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                Ok(hex::encode(hasher.finalize()))
            })
            .await
            .map_err(std::io::Error::other)?
        })
        .await
        .cloned()
}
