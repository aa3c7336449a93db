//! The executable the allocator hands VMs as their agent (`GET /download/lablink`), so
//! every agent runs exactly the allocator's version. Its checksum goes into the VMs' boot
//! script.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::config::Config;

/// Name of the agent build installed beside the allocator's own executable.
pub const AGENT_BUILD_NAME: &str = "lablink-agent";

pub fn executable() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}

#[derive(Clone, Debug)]
pub struct AgentBuild {
    path: PathBuf,
    checksum: Arc<OnceCell<String>>,
}

impl AgentBuild {
    /// `provision.agent_binary`, else `lablink-agent` beside this executable (a static
    /// musl allocator cannot give VMs NVML; its glibc twin can), else this executable.
    pub fn from_config(config: &Config) -> AgentBuild {
        let own = executable().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let configured = config.provision.agent_binary.trim();
        let path = if !configured.is_empty() {
            PathBuf::from(configured)
        } else {
            own.parent()
                .map(|dir| dir.join(AGENT_BUILD_NAME))
                .filter(|sibling| sibling.is_file())
                .unwrap_or(own)
        };
        AgentBuild {
            path,
            checksum: Arc::new(OnceCell::new()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hex SHA-256 of the file, computed once.
    pub async fn sha256(&self) -> std::io::Result<String> {
        self.checksum
            .get_or_try_init(|| async {
                let path = self.path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut file = std::fs::File::open(&path).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                    })?;
                    let mut hasher = Sha256::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = std::io::Read::read(&mut file, &mut buf)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_configured_build_wins_and_is_checksummed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("agent");
        std::fs::write(&file, b"abc").expect("write");
        let mut config = Config::default();
        config.provision.agent_binary = file.display().to_string();
        let build = AgentBuild::from_config(&config);
        assert_eq!(build.path(), file);
        assert_eq!(
            build.sha256().await.expect("checksum"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn without_a_twin_it_is_this_executable() {
        let build = AgentBuild::from_config(&Config::default());
        let own = executable().expect("current exe");
        let twin = own.with_file_name(AGENT_BUILD_NAME);
        let expected = if twin.is_file() { twin } else { own };
        assert_eq!(build.path(), expected);
    }
}
