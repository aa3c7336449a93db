//! Reaching one VM over SSH, as upstream does: its address and the pool's key come from
//! the Terraform state. Needs `ssh` on the allocator.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::cli::{TERRAFORM_HINT, capture};
use super::{ProviderError, Terraform};
use crate::process::{self, Limits, Outcome};

const SSH_HINT: &str = " (install an OpenSSH client or set provision.ssh_bin)";

/// How to reach one VM.
struct Target {
    /// The ssh arguments up to `ubuntu@<ip>`.
    args: Vec<String>,
    /// Where ssh runs (its key and known hosts are there).
    dir: PathBuf,
    ip: String,
}

impl Terraform {
    async fn ssh_to(
        &self,
        host: &str,
        cancel: &CancellationToken,
    ) -> Result<Target, ProviderError> {
        let dir = self.workdir();
        if !dir.join(".terraform").is_dir() {
            return Err(ProviderError::NotInitialised);
        }
        let bin = &self.settings.bin;
        let quick = Duration::from_secs(60);
        let args = ["output", "-json", "vm_public_ips"].map(String::from);
        let (code, lines) = capture(bin, TERRAFORM_HINT, &dir, &args, quick, cancel).await?;
        let ips: Value = serde_json::from_str(&lines.join("\n")).unwrap_or(Value::Null);
        let ip = match (code, ips.get(host).and_then(Value::as_str)) {
            (0, Some(ip)) if !ip.is_empty() => ip.to_owned(),
            _ => {
                return Err(ProviderError::NoAddress {
                    host: host.to_owned(),
                });
            }
        };
        let args = ["output", "-raw", "lablink_private_key_pem"].map(String::from);
        let (code, key) = capture(bin, TERRAFORM_HINT, &dir, &args, quick, cancel).await?;
        if code != 0 || key.is_empty() {
            return Err(ProviderError::NoSshKey);
        }
        let ssh_dir = self.settings.root.join("ssh");
        std::fs::create_dir_all(&ssh_dir).map_err(ProviderError::io("create", &ssh_dir))?;
        let key_file = ssh_dir.join("client-vm.pem");
        crate::secret_file::write(&key_file, &key.join("\n"))?;
        let args = vec![
            "-i".into(),
            key_file.display().to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!(
                "UserKnownHostsFile={}",
                ssh_dir.join("known_hosts").display()
            ),
            "-o".into(),
            "ConnectTimeout=10".into(),
            format!("ubuntu@{ip}"),
        ];
        Ok(Target {
            args,
            dir: ssh_dir,
            ip,
        })
    }

    /// `cloud-init clean` and reboot, so the boot script runs again (and the VM
    /// re-registers).
    pub(super) async fn reboot_over_ssh(
        &self,
        host: &str,
        cancel: &CancellationToken,
    ) -> Result<(), ProviderError> {
        let Target { mut args, dir, ip } = self.ssh_to(host, cancel).await?;
        args.push(
            // Reboot a moment later, so the command itself ends cleanly (exit 0).
            "sudo cloud-init clean --logs && sudo systemd-run --on-active=3 systemctl reboot"
                .into(),
        );
        let ssh = &self.settings.ssh_bin;
        let (code, _) =
            capture(ssh, SSH_HINT, &dir, &args, Duration::from_secs(30), cancel).await?;
        if code == 0 {
            Ok(())
        } else {
            Err(ProviderError::Ssh {
                host: host.to_owned(),
                ip,
                code,
                stderr: Vec::new(),
            })
        }
    }

    /// The desktop files of the VM's first running container as a tar stream (as
    /// upstream: `/home/client/Desktop`, without `models/` and `predictions/`), unpacked
    /// below `into`.
    pub(super) async fn fetch_over_ssh(
        &self,
        host: &str,
        extension: &str,
        into: &Path,
        max_bytes: u64,
        cancel: &CancellationToken,
    ) -> Result<u64, ProviderError> {
        let Target { mut args, dir, ip } = self.ssh_to(host, cancel).await?;
        // `extension` is checked by the config validator: letters and digits only.
        args.push(format!(
            "sudo docker exec \"$(sudo docker ps -q | head -n1)\" sh -c 'cd /home/client/Desktop \
             && find . -type f -name \"*.{extension}\" ! -path \"*/models/*\" ! -path \"*/predictions/*\" -print0 \
             | tar --null -T - -cf -'"
        ));
        let archive = into.with_extension("tar");
        let file =
            std::fs::File::create(&archive).map_err(ProviderError::io("create", &archive))?;
        let ssh = &self.settings.ssh_bin;
        let mut cmd = Command::new(ssh);
        cmd.args(&args).current_dir(&dir);
        let timeout = Duration::from_secs(600);
        let limits = Limits {
            timeout,
            grace: Duration::from_secs(5),
        };
        let mut errors = Vec::new();
        let outcome = process::run_to_file(cmd, file, max_bytes, limits, cancel, |_, line| {
            if errors.len() < 5 {
                errors.push(line);
            }
        })
        .await
        .map_err(|source| ProviderError::Spawn {
            program: ssh.clone(),
            hint: SSH_HINT,
            source,
        })?;
        let size = std::fs::metadata(&archive).map_or(0, |m| m.len());
        if size > max_bytes {
            let _ = std::fs::remove_file(&archive);
            return Ok(size);
        }
        let what = || format!("fetching files from {host}");
        match outcome {
            Outcome::Exited(status) if status.success() => {}
            Outcome::Exited(status) => {
                return Err(ProviderError::Ssh {
                    host: host.to_owned(),
                    ip,
                    code: status.code().unwrap_or(-1),
                    stderr: errors,
                });
            }
            Outcome::TimedOut => {
                return Err(ProviderError::Timeout {
                    what: what(),
                    after: timeout,
                });
            }
            Outcome::Cancelled => return Err(ProviderError::Cancelled { what: what() }),
        }
        let into = into.to_path_buf();
        tokio::task::spawn_blocking(move || crate::export::unpack_tar(&archive, &into))
            .await?
            .map_err(|source| ProviderError::Archive {
                host: host.to_owned(),
                source,
            })?;
        Ok(size)
    }
}
