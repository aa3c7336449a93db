//! Work rescue: before the system takes a participant's VM away (a destroy, the event's
//! hard stop) or resets their seat (release, move, automatic release), the VM's agent packs
//! their files and uploads them; the allocator keeps the archive for a while.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The name of the list of files a rescue left out (too big), inside its archive.
pub const LEFT_OUT_ENTRY: &str = "LABLINK-NOT-INCLUDED.txt";

/// What an upload may add to the files it carries (zip headers, the list of files left
/// out, deflate's stored blocks): the allocator's limit is `max_bytes` plus this.
pub fn upload_limit(max_bytes: u64) -> u64 {
    max_bytes + max_bytes / 64 + 1024 * 1024
}

/// Why the files were rescued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RescueReason {
    /// The VM is destroyed (one VM, all of them, or a schedule).
    Destroy,
    /// The seat is reset: released by the instructor, moved, or released automatically.
    Release,
    /// The event's hard stop (a destroy-all requested by `event:<name>`).
    EventEnd,
}

impl RescueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RescueReason::Destroy => "destroy",
            RescueReason::Release => "release",
            RescueReason::EventEnd => "event-end",
        }
    }

    /// The reason of a destroy run requested by `requested_by`.
    pub fn of_destroy(requested_by: &str) -> RescueReason {
        if requested_by.starts_with("event:") {
            RescueReason::EventEnd
        } else {
            RescueReason::Destroy
        }
    }
}

/// How a rescue ended (or that it has not yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RescueOutcome {
    Pending,
    /// The archive is kept; `left_out` files did not fit in `rescue.max_mb`.
    Saved {
        files: u32,
        bytes: u64,
        #[serde(default)]
        left_out: u32,
    },
    /// No file matched the patterns.
    Empty,
    /// The agent could not pack or upload them.
    Failed {
        why: String,
    },
    /// No upload before the deadline.
    TimedOut,
    /// The VM's agent cannot do it (a client without heartbeats, or one with the shared
    /// token, which may not upload): not waited for.
    Unsupported,
}

impl RescueOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            RescueOutcome::Pending => "pending",
            RescueOutcome::Saved { .. } => "saved",
            RescueOutcome::Empty => "empty",
            RescueOutcome::Failed { .. } => "failed",
            RescueOutcome::TimedOut => "timed_out",
            RescueOutcome::Unsupported => "unsupported",
        }
    }

    pub fn is_pending(&self) -> bool {
        *self == RescueOutcome::Pending
    }
}

/// One rescue of one participant's files from one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rescue {
    pub id: u64,
    pub hostname: String,
    pub email: String,
    /// The assignment's token digest: only the browser that held the seat downloads it.
    pub claim_token_sha256: Option<String>,
    pub reason: RescueReason,
    pub requested_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    #[serde(flatten)]
    pub outcome: RescueOutcome,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the archive is deleted (`rescue.keep_days` after the request).
    pub expires_at: DateTime<Utc>,
    /// The archive was deleted after `expires_at`.
    #[serde(default)]
    pub expired: bool,
}

/// The rescue a VM's agent is asked to do (on the VM record while it is pending).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRescue {
    pub id: u64,
    pub deadline: DateTime<Utc>,
}

impl Rescue {
    /// A rescue of `assignment`'s files from `hostname`; `agent_can` false (an agent
    /// without heartbeats) records it as unsupported at once.
    pub fn new(
        hostname: &str,
        assignment: &super::Assignment,
        reason: RescueReason,
        agent_can: bool,
        now: DateTime<Utc>,
        wait: chrono::Duration,
        keep: chrono::Duration,
    ) -> Rescue {
        Rescue {
            id: 0,
            hostname: hostname.to_owned(),
            email: assignment.email.clone(),
            claim_token_sha256: assignment.claim_token_sha256.clone(),
            reason,
            requested_at: now,
            deadline: now + wait,
            outcome: if agent_can {
                RescueOutcome::Pending
            } else {
                RescueOutcome::Unsupported
            },
            finished_at: (!agent_can).then_some(now),
            expires_at: now + keep,
            expired: false,
        }
    }

    /// Ends a pending rescue; one that already ended keeps its outcome.
    pub fn finished(mut self, outcome: RescueOutcome, now: DateTime<Utc>) -> Rescue {
        if self.outcome.is_pending() && !outcome.is_pending() {
            self.outcome = outcome;
            self.finished_at = Some(now);
        }
        self
    }

    /// Whether an archive of it is on disk.
    pub fn has_archive(&self) -> bool {
        matches!(self.outcome, RescueOutcome::Saved { .. }) && !self.expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::t;

    fn assignment() -> crate::model::Assignment {
        crate::model::Assignment {
            email: "ada@example.org".into(),
            crd_code: String::new(),
            pin: "123456".into(),
            assigned_at: t(0),
            claim_token_sha256: Some("ab".into()),
            desktop: crate::model::DesktopKind::Browser,
            desktop_ready_at: None,
        }
    }

    #[test]
    fn a_rescue_ends_once() {
        let wait = chrono::Duration::seconds(30);
        let keep = chrono::Duration::days(14);
        let r = Rescue::new(
            "vm-1",
            &assignment(),
            RescueReason::Release,
            true,
            t(1),
            wait,
            keep,
        );
        assert!(r.outcome.is_pending());
        assert_eq!(r.deadline, t(31));
        let done = r.finished(RescueOutcome::Empty, t(5));
        assert_eq!(done.finished_at, Some(t(5)));
        let again = done.clone().finished(RescueOutcome::TimedOut, t(40));
        assert_eq!(
            again, done,
            "a late time-out does not overwrite the outcome"
        );
        let legacy = Rescue::new(
            "vm-2",
            &assignment(),
            RescueReason::Destroy,
            false,
            t(1),
            wait,
            keep,
        );
        assert_eq!(legacy.outcome, RescueOutcome::Unsupported);
        assert_eq!(legacy.finished_at, Some(t(1)));
    }

    #[test]
    fn the_event_stop_is_its_own_reason() {
        assert_eq!(
            RescueReason::of_destroy("event:spring"),
            RescueReason::EventEnd
        );
        assert_eq!(RescueReason::of_destroy("admin"), RescueReason::Destroy);
        let json = serde_json::to_value(RescueReason::EventEnd).expect("encode");
        assert_eq!(json, "event-end");
    }

    #[test]
    fn the_outcome_is_flat_in_the_record() {
        let r = Rescue::new(
            "vm-1",
            &assignment(),
            RescueReason::Destroy,
            true,
            t(1),
            chrono::Duration::seconds(1),
            chrono::Duration::days(1),
        )
        .finished(
            RescueOutcome::Saved {
                files: 2,
                bytes: 10,
                left_out: 0,
            },
            t(2),
        );
        let json = serde_json::to_value(&r).expect("encode");
        assert_eq!(json["outcome"], "saved");
        assert_eq!(json["files"], 2);
        let back: Rescue = serde_json::from_value(json).expect("decode");
        assert_eq!(back, r);
    }
}
