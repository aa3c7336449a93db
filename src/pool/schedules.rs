//! Scheduled destruction: checking and storing a schedule, cancelling one. The scheduler
//! job (`jobs::scheduler`) fires them.

use serde::Deserialize;

use super::{Actor, Pool, PoolError};
use crate::clock::parse_time;
use crate::model::{Schedule, ScheduleStatus};
use crate::recurrence;
use crate::store::schedules;

#[derive(Deserialize)]
pub struct NewSchedule {
    pub schedule_name: Option<String>,
    pub destruction_time: Option<String>,
    pub recurrence_rule: Option<String>,
    pub notification_enabled: Option<bool>,
    pub notification_hours_before: Option<i64>,
}

/// Checks and stores a new schedule.
pub async fn create(pool: &Pool, actor: &Actor, req: NewSchedule) -> Result<Schedule, PoolError> {
    let name = req
        .schedule_name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| PoolError::Invalid("schedule_name is required".into()))?;
    if name.chars().count() > 255 {
        return Err(PoolError::Invalid(
            "schedule_name is longer than 255 characters".into(),
        ));
    }
    let when = req
        .destruction_time
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| PoolError::Invalid("destruction_time is required".into()))?;
    let when = parse_time(&when)
        .map_err(|e| PoolError::Invalid(format!("Invalid destruction_time format: {e}")))?;
    let now = pool.clock.now();
    if when <= now {
        return Err(PoolError::Invalid(
            "destruction_time must be in the future".into(),
        ));
    }
    let rule = match req.recurrence_rule.filter(|r| !r.trim().is_empty()) {
        Some(r) => Some(recurrence::normalize(&r).map_err(PoolError::Invalid)?),
        None => None,
    };
    let next_run = match &rule {
        Some(r) => recurrence::next_after(r, when, when - chrono::Duration::seconds(1))
            .map_err(PoolError::Invalid)?
            .ok_or_else(|| PoolError::Invalid("recurrence_rule never fires".into()))?,
        None => when,
    };
    let hours_before = req.notification_hours_before.unwrap_or(1);
    if !(0..=168).contains(&hours_before) {
        return Err(PoolError::Invalid(
            "notification_hours_before must be 0 to 168".into(),
        ));
    }
    let schedule = Schedule {
        id: 0,
        schedule_name: name.clone(),
        destruction_time: when,
        recurrence_rule: rule,
        created_by: actor.user.clone(),
        status: ScheduleStatus::Scheduled,
        execution_count: 0,
        last_execution_time: None,
        last_execution_result: None,
        notification_enabled: req.notification_enabled.unwrap_or(false),
        notification_hours_before: hours_before,
        created_at: now,
        updated_at: now,
        next_run: Some(next_run),
        executions: Vec::new(),
    };
    let created = pool
        .store
        .write(move |tx| schedules::create(tx, schedule))
        .await
        .map_err(PoolError::store("Failed to create the schedule."))?
        .ok_or_else(|| PoolError::Conflict(format!("Schedule '{name}' already exists")))?;
    pool.audit_by(
        actor,
        "schedule-destruction",
        format!(
            "'{}' (#{}), next at {next_run}",
            created.schedule_name, created.id
        ),
    )
    .await;
    Ok(created)
}

/// Cancels a schedule that has not fired.
pub async fn cancel(pool: &Pool, actor: &Actor, id: u64) -> Result<Schedule, PoolError> {
    let now = pool.clock.now();
    let outcome = pool
        .store
        .write(move |tx| schedules::update(tx, id, |s| s.cancelled(now)))
        .await
        .map_err(PoolError::store("Failed to cancel the schedule."))?
        .ok_or_else(|| PoolError::NotFound("Schedule not found".into()))?;
    match outcome {
        Ok(s) => {
            pool.audit_by(
                actor,
                "cancel-schedule",
                format!("'{}' (#{id})", s.schedule_name),
            )
            .await;
            Ok(s)
        }
        Err(status) => Err(PoolError::Invalid(format!(
            "Cannot cancel schedule with status '{}'",
            status.as_str()
        ))),
    }
}
