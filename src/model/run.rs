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

    pub fn describe(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed out",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
        }
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
    /// Resources (Terraform) or VMs (local provider) done out of the total; `None` when
    /// the provider does not tell (and for runs stored before it was kept).
    #[serde(default)]
    pub progress: Option<RunProgress>,
    /// The admin who cancelled the run, when it was cancelled by one.
    #[serde(default)]
    pub cancelled_by: Option<String>,
}

/// How far a run has come: `done` and `failed` out of `total` (`total` may grow while a
/// provider still plans).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProgress {
    pub done: u32,
    pub total: u32,
    pub failed: u32,
}

impl Run {
    pub fn finished(mut self, state: RunState, exit_code: Option<i32>, now: DateTime<Utc>) -> Run {
        self.state = state;
        self.exit_code = exit_code;
        self.ended_at = Some(now);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_stored_before_progress_was_kept_still_reads() {
        let stored = r#"{"id":4,"action":"launch","count":2,"provider":"terraform",
            "requested_by":"admin","requested_from":null,"state":"succeeded",
            "started_at":"2026-01-01T00:00:00Z","ended_at":"2026-01-01T00:05:00Z",
            "exit_code":0,"lines":12}"#;
        let run: Run = serde_json::from_str(stored).expect("an old run");
        assert_eq!((run.progress, run.cancelled_by.as_deref()), (None, None));
        let shown = serde_json::to_value(&run).expect("json");
        assert_eq!(shown["progress"], serde_json::Value::Null);
    }
}
