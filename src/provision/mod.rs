//! The providers that create and destroy VMs: Terraform on AWS, local agent processes, or
//! nothing for machines the lab already owns. `pool::provisioner` runs them, one action
//! at a time, and keeps the VM rows in step.

mod error;
pub mod local;
pub mod manual;
mod runlog;
pub mod terraform;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use error::ProviderError;
pub use runlog::RunLog;

use crate::model::{Phase, RunState, Vm};
use crate::vm_identity::Identities;

/// What a provider needs to know to start VMs that find their way back.
pub struct LaunchContext {
    pub allocator_url: String,
    /// Each VM gets its own credential, bound to this launch of it.
    pub identities: Arc<Identities>,
    /// VMs known right now, to pick the next free VM numbers.
    pub existing: Vec<Vm>,
}

/// What a launch created.
#[derive(Debug, Default)]
pub struct Launched {
    pub hosts: Vec<String>,
    /// How long creating each VM took (Terraform reports it); recorded on the VM's row.
    pub creation_timings: Vec<(String, Phase)>,
}

/// How a provider action ended when it did not succeed.
#[derive(Debug)]
pub struct RunFailure {
    pub state: RunState,
    pub exit_code: Option<i32>,
    pub message: String,
    /// VMs whose rows must go: created by a failed launch and not in the state, or
    /// already gone when a destroy failed.
    pub rows_to_remove: Vec<String>,
}

impl RunFailure {
    pub fn failed(message: impl Into<String>) -> RunFailure {
        RunFailure {
            state: RunState::Failed,
            exit_code: None,
            message: message.into(),
            rows_to_remove: Vec::new(),
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;

    /// Why this provider cannot launch VMs, if it cannot.
    fn cannot_launch(&self) -> Option<&'static str> {
        None
    }

    /// Starts `count` more VMs.
    async fn launch(
        &self,
        log: &RunLog,
        ctx: LaunchContext,
        count: u32,
        cancel: &CancellationToken,
    ) -> Result<Launched, RunFailure>;

    /// Destroys these VMs; `all` when they are the whole pool ("destroy all").
    async fn destroy(
        &self,
        log: &RunLog,
        hosts: &[String],
        all: bool,
        cancel: &CancellationToken,
    ) -> Result<(), RunFailure>;

    /// Whether "destroy all" must run even when no VM rows exist (the provider's own
    /// state, not the rows, says what exists).
    fn destroys_without_rows(&self) -> bool {
        false
    }

    /// Whether `reboot` can work at all.
    fn can_reboot(&self) -> bool {
        false
    }

    /// Restarts one VM (auto-reboot). `Err` says why it could not.
    async fn reboot(&self, host: &str, cancel: &CancellationToken) -> Result<(), ProviderError> {
        let _ = (host, cancel);
        Err(ProviderError::NotSupported {
            provider: self.name(),
            action: "reboot VMs",
        })
    }

    /// Copies the participant's files named `*.<extension>` from the VM's desktop into
    /// `into`, keeping their paths relative to the desktop, and returns the bytes they
    /// take. Files of more than `max_bytes` are not kept: the answer is then above
    /// `max_bytes` (not necessarily their size). `Err` says why it could not.
    async fn collect_files(
        &self,
        host: &str,
        extension: &str,
        into: &Path,
        max_bytes: u64,
        cancel: &CancellationToken,
    ) -> Result<u64, ProviderError> {
        let _ = (host, extension, into, max_bytes, cancel);
        Err(ProviderError::NotSupported {
            provider: self.name(),
            action: "fetch files from VMs; copy them from the machines yourself",
        })
    }

    /// The allocator is stopping: release what only lives as long as this process.
    async fn shutdown(&self) {}
}
