//! AWS EC2 VMs through Terraform: the production path.
//!
//! The templates in `terraform/client-vm/` are embedded in the binary and written to a
//! folder named after their version before each run; the variables go in as a generated
//! `lablink.tfvars.json` (never spliced into HCL). Which VMs exist is read back from the
//! Terraform state, not from the allocator's rows.

mod cli;
mod settings;
mod ssh;
mod workdir;

use std::path::Path;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use settings::{Backend, Settings, allocator_url, is_gpu_type};
pub use workdir::{template_version, templates};

use super::{LaunchContext, Launched, Provider, ProviderError, RunFailure, RunLog};
use crate::model::{Phase, Vm};

pub struct Terraform {
    settings: Settings,
}

impl Terraform {
    pub fn new(settings: Settings) -> Terraform {
        Terraform { settings }
    }

    fn index_of(&self, host: &str) -> Option<u64> {
        host.strip_prefix(&self.settings.resource_prefix)?
            .strip_prefix("-vm-")?
            .parse()
            .ok()
    }

    fn name(&self, index: u64) -> String {
        format!("{}-vm-{index}", self.settings.resource_prefix)
    }
}

fn phase(entry: &Value) -> Phase {
    let time = |k: &str| {
        entry[k]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    Phase {
        start: time("start_time"),
        end: time("end_time"),
        duration_seconds: entry["seconds"].as_f64(),
    }
}

#[async_trait]
impl Provider for Terraform {
    fn name(&self) -> &'static str {
        "terraform"
    }

    fn destroys_without_rows(&self) -> bool {
        true
    }

    async fn launch(
        &self,
        log: &RunLog,
        ctx: LaunchContext,
        count: u32,
        cancel: &CancellationToken,
    ) -> Result<Launched, RunFailure> {
        let dir = self.prepare()?;
        self.init(&dir, log, cancel).await?;
        let before = self.existing(&dir, log, cancel).await?;
        let mut indices: Vec<u64> = before.iter().filter_map(|h| self.index_of(h)).collect();
        let highest = indices
            .iter()
            .copied()
            .chain(
                ctx.existing
                    .iter()
                    .filter_map(|v: &Vm| self.index_of(&v.hostname)),
            )
            .max()
            .unwrap_or(0);
        let new: Vec<u64> = (highest + 1..=highest + u64::from(count)).collect();
        indices.extend(&new);
        log.line(format!(
            "{} VM(s) exist; creating {}",
            before.len(),
            new.iter()
                .map(|i| self.name(*i))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.write_vars(&dir, &indices, &new).await?;
        if let Err(e) = self.apply(&dir, log, cancel).await {
            let mut failure = RunFailure::from(e);
            // Keep the rows only of VMs the state says exist.
            let after = self
                .existing(&dir, log, &CancellationToken::new())
                .await
                .unwrap_or_default();
            failure.rows_to_remove = new
                .iter()
                .map(|i| self.name(*i))
                .filter(|n| !after.contains(n))
                .collect();
            let created: Vec<String> = new
                .iter()
                .map(|i| self.name(*i))
                .filter(|n| after.contains(n))
                .collect();
            failure.message = if created.is_empty() {
                format!("{}; no new VM was created", failure.message)
            } else {
                format!(
                    "{}; created before it stopped: {} (they stay in the Terraform state: \
                     they join the pool when they boot, and a destroy removes them)",
                    failure.message,
                    created.join(", ")
                )
            };
            return Err(failure);
        }
        let times = self
            .output(&dir, "instance_terraform_apply_times", log, cancel)
            .await?;
        let hosts: Vec<String> = new.iter().map(|i| self.name(*i)).collect();
        let creation_timings = hosts
            .iter()
            .filter_map(|h| times.get(h).map(|entry| (h.clone(), phase(entry))))
            .collect();
        Ok(Launched {
            hosts,
            creation_timings,
        })
    }

    fn can_reboot(&self) -> bool {
        true
    }

    /// As upstream: over SSH with the pool's key, `cloud-init clean` and reboot.
    async fn reboot(&self, host: &str, cancel: &CancellationToken) -> Result<(), ProviderError> {
        self.reboot_over_ssh(host, cancel).await
    }

    /// Over SSH, as upstream: from the desktop of the VM's first running container.
    async fn collect_files(
        &self,
        host: &str,
        extension: &str,
        into: &Path,
        max_bytes: u64,
        cancel: &CancellationToken,
    ) -> Result<u64, ProviderError> {
        self.fetch_over_ssh(host, extension, into, max_bytes, cancel)
            .await
    }

    async fn destroy(
        &self,
        log: &RunLog,
        hosts: &[String],
        all: bool,
        cancel: &CancellationToken,
    ) -> Result<(), RunFailure> {
        let dir = self.prepare()?;
        self.init(&dir, log, cancel).await?;
        let before = self.existing(&dir, log, cancel).await?;
        let keep: Vec<u64> = if all {
            Vec::new()
        } else {
            before
                .iter()
                .filter(|h| !hosts.contains(h))
                .filter_map(|h| self.index_of(h))
                .collect()
        };
        self.write_vars(&dir, &keep, &[]).await?;
        let done = if all {
            self.destroy_all(&dir, log, cancel).await
        } else {
            self.apply(&dir, log, cancel).await
        };
        if let Err(e) = done {
            let mut failure = RunFailure::from(e);
            // Some may be gone already: their rows go, the rest return to the pool. Read
            // with a fresh token: after a cancel, the run's own is cancelled already.
            if let Ok(after) = self.existing(&dir, log, &CancellationToken::new()).await {
                failure.rows_to_remove = hosts
                    .iter()
                    .filter(|h| !after.contains(h))
                    .cloned()
                    .collect();
            }
            return Err(failure);
        }
        Ok(())
    }
}
