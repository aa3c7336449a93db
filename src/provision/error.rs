//! What went wrong when a provider acted on the VMs.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::RunFailure;
use crate::model::RunState;
use crate::secret_file::WriteError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// This provider cannot do that at all.
    #[error("the {provider} provider cannot {action}")]
    NotSupported {
        provider: &'static str,
        action: &'static str,
    },
    /// The VM is not one this provider runs (any more).
    #[error("{host} {why}")]
    UnknownVm { host: String, why: &'static str },
    #[error("no initialised Terraform folder yet (launch VMs first)")]
    NotInitialised,
    #[error("Terraform knows no public address for {host}")]
    NoAddress { host: String },
    #[error("cannot read the VMs' SSH key from the Terraform state")]
    NoSshKey,
    /// Not knowing what exists must stop a run: guessing "nothing" would destroy the pool.
    #[error("terraform output {name} failed; the state could not be read")]
    StateUnreadable { name: String, code: i32 },
    #[error(
        "VMs would not know where the allocator is: set provision.allocator_url \
         (or ALLOCATOR_FQDN / ALLOCATOR_PUBLIC_IP, as the lablink-template does)"
    )]
    NoAllocatorUrl,
    /// A configured value the VMs cannot be given.
    #[error("{key}: {problem}")]
    Config { key: String, problem: String },
    #[error(
        "the local provider runs at most {max} VMs ({running} running); raise provision.local_max_vms"
    )]
    TooManyVms { max: usize, running: usize },
    /// The program could not be started at all; `hint` says how to get it.
    #[error("cannot run {}: {source}{hint}", program.display())]
    Spawn {
        program: PathBuf,
        hint: &'static str,
        source: std::io::Error,
    },
    #[error("{command} exited with {status}")]
    Exited { command: String, status: ExitStatus },
    #[error("ssh to {host} ({ip}) exited with {code}{}", said(.stderr))]
    Ssh {
        host: String,
        ip: String,
        code: i32,
        /// Its first lines of standard error, when they were kept.
        stderr: Vec<String>,
    },
    #[error("{what} did not finish within {after:?}; its process group was stopped")]
    Timeout { what: String, after: Duration },
    /// Cancelled: by an admin (the run) or because the allocator stops.
    #[error("{what} was stopped before it finished")]
    Cancelled { what: String },
    #[error("cannot {doing} {}: {source}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    SecretFile(#[from] WriteError),
    #[error("the archive from {host} cannot be read: {source}")]
    Archive {
        host: String,
        source: std::io::Error,
    },
    #[error("cannot checksum the agent executable: {0}")]
    AgentChecksum(#[source] std::io::Error),
    #[error("cannot record the identities of {}: {source}", hosts.join(", "))]
    Identities {
        hosts: Vec<String>,
        source: StoreError,
    },
    #[error("cannot start the agent of {host}: {source}")]
    AgentStart {
        host: String,
        source: Box<ProviderError>,
    },
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn said(stderr: &[String]) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.join(" / "))
    }
}

impl ProviderError {
    pub fn io(
        doing: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ProviderError::Io {
            doing,
            path,
            source,
        }
    }

    /// How a run that ends with this error is recorded.
    pub fn run_state(&self) -> RunState {
        match self {
            ProviderError::Timeout { .. } => RunState::TimedOut,
            ProviderError::Cancelled { .. } => RunState::Cancelled,
            _ => RunState::Failed,
        }
    }

    /// The exit code of the program that failed, when one did.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ProviderError::Exited { status, .. } => status.code(),
            ProviderError::StateUnreadable { code, .. } | ProviderError::Ssh { code, .. } => {
                Some(*code)
            }
            _ => None,
        }
    }
}

impl From<ProviderError> for RunFailure {
    fn from(e: ProviderError) -> RunFailure {
        RunFailure {
            state: e.run_state(),
            exit_code: e.exit_code(),
            message: e.to_string(),
            rows_to_remove: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_run_failure_keeps_how_the_program_ended() {
        let timed_out = RunFailure::from(ProviderError::Timeout {
            what: "terraform apply".into(),
            after: Duration::from_secs(600),
        });
        assert_eq!(timed_out.state, RunState::TimedOut);
        assert_eq!(
            timed_out.message,
            "terraform apply did not finish within 600s; its process group was stopped"
        );
        let exited = RunFailure::from(ProviderError::Exited {
            command: "terraform apply".into(),
            status: ExitStatus::from_raw(3 << 8),
        });
        assert_eq!(
            (exited.state, exited.exit_code),
            (RunState::Failed, Some(3))
        );
        let stopped = RunFailure::from(ProviderError::Cancelled {
            what: "terraform init".into(),
        });
        assert_eq!(
            (stopped.state, stopped.exit_code),
            (RunState::Cancelled, None)
        );
    }

    #[test]
    fn ssh_failures_say_what_ssh_said_when_it_was_kept() {
        let mut e = ProviderError::Ssh {
            host: "vm-1".into(),
            ip: "192.0.2.1".into(),
            code: 255,
            stderr: Vec::new(),
        };
        assert_eq!(e.to_string(), "ssh to vm-1 (192.0.2.1) exited with 255");
        if let ProviderError::Ssh { stderr, .. } = &mut e {
            stderr.extend(["Permission denied".to_owned(), "try again".to_owned()]);
        }
        assert_eq!(
            e.to_string(),
            "ssh to vm-1 (192.0.2.1) exited with 255: Permission denied / try again"
        );
    }
}
