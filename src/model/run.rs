//! Provisioning runs and the audit log's entries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a provisioning run does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RunAction {
    Launch { count: u32 },
    DestroyAll,
    DestroyVm { hostname: String },
}

impl RunAction {
    pub fn describe(&self) -> String {
        match self {
            RunAction::Launch { count } => format!("launch {count} VM(s)"),
            RunAction::DestroyAll => "destroy all VMs".into(),
            RunAction::DestroyVm { hostname } => format!("destroy {hostname}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// The allocator stopped while the run was going; its outcome is unknown.
    Interrupted,
}

impl RunState {
    pub fn is_finished(self) -> bool {
        self != RunState::Running
    }
}

/// One admin action, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    pub at: DateTime<Utc>,
    /// The admin user name (or "scheduler" for scheduled teardown).
    pub actor: String,
    /// The client's IP address, when the action came over HTTP.
    pub from: Option<String>,
    /// A short fixed verb: "login", "launch", "destroy-all", "reboot", …
    pub action: String,
    pub detail: String,
}

/// One provisioning run (Terraform apply/destroy, or a local/manual provider action):
/// who asked for what, when, and how it ended. Its output lines are stored separately.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: u64,
    #[serde(flatten)]
    pub action: RunAction,
    pub provider: String,
    pub requested_by: String,
    pub requested_from: Option<String>,
    pub state: RunState,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    /// Output lines stored so far.
    pub lines: u64,
}

impl Run {
    pub fn finished(mut self, state: RunState, exit_code: Option<i32>, now: DateTime<Utc>) -> Run {
        self.state = state;
        self.exit_code = exit_code;
        self.ended_at = Some(now);
        self
    }
}
