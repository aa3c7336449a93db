//! Scheduled destruction: a schedule, its firings and their outcomes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleStatus {
    Scheduled,
    Executing,
    Completed,
    Failed,
    Cancelled,
}

impl ScheduleStatus {
    pub const ALL: [ScheduleStatus; 5] = [
        ScheduleStatus::Scheduled,
        ScheduleStatus::Executing,
        ScheduleStatus::Completed,
        ScheduleStatus::Failed,
        ScheduleStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleStatus::Scheduled => "scheduled",
            ScheduleStatus::Executing => "executing",
            ScheduleStatus::Completed => "completed",
            ScheduleStatus::Failed => "failed",
            ScheduleStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<ScheduleStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// One firing of a scheduled destruction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub at: DateTime<Utc>,
    pub run_id: Option<u64>,
    pub succeeded: bool,
    pub result: String,
}

/// Executions kept per schedule (the newest).
pub const EXECUTIONS_KEPT: usize = 50;

/// A teardown planned for a time, once or recurring (iCalendar RRULE, DAILY or WEEKLY).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: u64,
    pub schedule_name: String,
    pub destruction_time: DateTime<Utc>,
    pub recurrence_rule: Option<String>,
    pub created_by: String,
    pub status: ScheduleStatus,
    pub execution_count: u32,
    pub last_execution_time: Option<DateTime<Utc>>,
    pub last_execution_result: Option<String>,
    pub notification_enabled: bool,
    pub notification_hours_before: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it fires next; `None` once it will not fire again.
    pub next_run: Option<DateTime<Utc>>,
    #[serde(default)]
    pub executions: Vec<Execution>,
}

impl Schedule {
    /// Marks the start of a firing.
    pub fn executing(mut self, now: DateTime<Utc>) -> Schedule {
        self.status = ScheduleStatus::Executing;
        self.execution_count += 1;
        self.last_execution_time = Some(now);
        self.updated_at = now;
        self
    }

    /// Records how a firing ended; a recurring schedule waits for `next`, a one-off ends.
    pub fn executed(mut self, execution: Execution, next: Option<DateTime<Utc>>) -> Schedule {
        self.status = match (next, execution.succeeded) {
            (Some(_), _) => ScheduleStatus::Scheduled,
            (None, true) => ScheduleStatus::Completed,
            (None, false) => ScheduleStatus::Failed,
        };
        self.next_run = next;
        self.updated_at = execution.at;
        self.last_execution_result = Some(execution.result.clone());
        self.executions.push(execution);
        if self.executions.len() > EXECUTIONS_KEPT {
            let extra = self.executions.len() - EXECUTIONS_KEPT;
            self.executions.drain(..extra);
        }
        self
    }

    pub fn cancelled(mut self, now: DateTime<Utc>) -> Result<Schedule, ScheduleStatus> {
        match self.status {
            ScheduleStatus::Scheduled => {
                self.status = ScheduleStatus::Cancelled;
                self.next_run = None;
                self.updated_at = now;
                Ok(self)
            }
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::t;

    fn schedule(rule: Option<&str>) -> Schedule {
        Schedule {
            id: 1,
            schedule_name: "wrap-up".into(),
            destruction_time: t(100),
            recurrence_rule: rule.map(str::to_owned),
            created_by: "admin".into(),
            status: ScheduleStatus::Scheduled,
            execution_count: 0,
            last_execution_time: None,
            last_execution_result: None,
            notification_enabled: false,
            notification_hours_before: 1,
            created_at: t(0),
            updated_at: t(0),
            next_run: Some(t(100)),
            executions: Vec::new(),
        }
    }

    fn execution(ok: bool) -> Execution {
        Execution {
            at: t(101),
            run_id: Some(3),
            succeeded: ok,
            result: if ok { "done".into() } else { "broke".into() },
        }
    }

    #[test]
    fn a_one_off_schedule_completes_or_fails_and_counts_once() {
        let s = schedule(None).executing(t(100));
        assert_eq!(s.status, ScheduleStatus::Executing);
        assert_eq!(s.execution_count, 1);
        let done = s.clone().executed(execution(true), None);
        assert_eq!(done.status, ScheduleStatus::Completed);
        assert_eq!(done.execution_count, 1);
        assert_eq!(done.next_run, None);
        assert_eq!(
            s.executed(execution(false), None).status,
            ScheduleStatus::Failed
        );
    }

    #[test]
    fn a_recurring_schedule_stays_scheduled_and_can_be_cancelled() {
        let s = schedule(Some("FREQ=DAILY"))
            .executing(t(100))
            .executed(execution(false), Some(t(86_500)));
        assert_eq!(s.status, ScheduleStatus::Scheduled);
        assert_eq!(s.last_execution_result.as_deref(), Some("broke"));
        let c = s.cancelled(t(200)).expect("cancellable");
        assert_eq!(c.status, ScheduleStatus::Cancelled);
        assert_eq!(c.clone().cancelled(t(300)), Err(ScheduleStatus::Cancelled));
    }

    #[test]
    fn executions_are_bounded() {
        let mut s = schedule(Some("FREQ=DAILY"));
        for _ in 0..EXECUTIONS_KEPT + 5 {
            s = s.executing(t(100)).executed(execution(true), Some(t(200)));
        }
        assert_eq!(s.executions.len(), EXECUTIONS_KEPT);
        assert_eq!(s.execution_count as usize, EXECUTIONS_KEPT + 5);
    }
}
