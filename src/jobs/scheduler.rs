//! Fires scheduled destructions. Everything it needs is in the store (the next firing time
//! of each schedule), so schedules survive restarts; one missed while the allocator was
//! down fires at the next start.

use std::time::Duration;

use crate::model::{Execution, RunAction, RunState, Schedule, ScheduleStatus};
use crate::pool::provisioner::ProvisionError;
use crate::recurrence;
use std::sync::Arc;

use crate::pool::Pool;
use crate::store::{StoreError, runs, schedules};

/// How often due schedules are looked for.
pub const TICK: Duration = Duration::from_millis(500);

pub async fn run(pool: Arc<Pool>) {
    if let Err(e) = resume_interrupted(&pool).await {
        tracing::error!(error = %e, "cannot check schedules interrupted by the last stop");
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = pool.shutdown.cancelled() => return,
        }
        let now = pool.clock.now();
        let due = match pool.store.read(move |tx| schedules::due(tx, now)).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot read schedules");
                continue;
            }
        };
        for schedule in due {
            if pool.shutdown.is_cancelled() {
                return;
            }
            fire(&pool, schedule).await;
        }
    }
}

/// A firing cut short by a stop is done again (destroying is safe to repeat).
async fn resume_interrupted(pool: &Pool) -> Result<(), StoreError> {
    let now = pool.clock.now();
    let interrupted = pool
        .store
        .read(|tx| schedules::list(tx, Some(ScheduleStatus::Executing)))
        .await?;
    for s in interrupted {
        tracing::warn!(schedule = %s.schedule_name, "destruction was interrupted by a stop; firing again");
        pool.store
            .write(move |tx| {
                schedules::update(tx, s.id, |mut s| {
                    s.status = ScheduleStatus::Scheduled;
                    s.next_run = Some(now);
                    Ok::<_, ()>(s)
                })
            })
            .await?;
    }
    Ok(())
}

/// Why a firing is not going ahead.
enum NotClaimed {
    /// Cancelled, already firing, or not due any more: someone else decided.
    Changed,
}

async fn fire(pool: &Pool, schedule: Schedule) {
    let (id, name) = (schedule.id, schedule.schedule_name.clone());
    let started = pool.clock.now();
    let due_at = schedule.next_run;
    // Claim the firing in the store first: a cancel that won the race stops it here.
    let claimed = pool
        .store
        .write(move |tx| {
            schedules::update(tx, id, |s| {
                if s.status == ScheduleStatus::Scheduled && s.next_run.is_some_and(|t| t <= started)
                {
                    Ok(s.executing(started))
                } else {
                    Err(NotClaimed::Changed)
                }
            })
        })
        .await;
    match claimed {
        Ok(Some(Ok(_))) => {}
        Ok(_) => return,
        Err(e) => {
            tracing::error!(schedule = %name, error = %e, "cannot claim the firing");
            return;
        }
    }
    let late = due_at.map_or(0, |t| (started - t).num_seconds().max(0));
    let who = format!("schedule:{name}");
    let start = pool
        .provisioner
        .start(RunAction::DestroyAll, &who, None)
        .await;
    let (run_id, outcome) = match start {
        Err(ProvisionError::Busy(run)) => {
            // Not this firing's turn yet: hand it back, it is tried again next tick.
            tracing::info!(schedule = %name, busy = run.id, "destruction waits for the run in progress");
            let reverted = pool
                .store
                .write(move |tx| {
                    schedules::update(tx, id, |mut s| {
                        if s.status != ScheduleStatus::Executing {
                            return Err(NotClaimed::Changed);
                        }
                        s.status = ScheduleStatus::Scheduled;
                        s.execution_count = s.execution_count.saturating_sub(1);
                        Ok(s)
                    })
                })
                .await;
            if let Err(e) = reverted {
                tracing::error!(schedule = %name, error = %e, "cannot hand the firing back");
            }
            return;
        }
        Ok(run) => {
            pool.audit(
                &who,
                None,
                "destroy-all",
                format!("scheduled destruction '{name}' (run #{})", run.id),
            )
            .await;
            (Some(run.id), wait_for_run(pool, run.id).await)
        }
        Err(ProvisionError::NothingToDestroy) => (None, Ok("No VMs to destroy".to_owned())),
        Err(other) => (None, Err(format!("Destruction failed: {other}"))),
    };
    if pool.shutdown.is_cancelled() {
        // Left `executing`: the next start fires it again.
        return;
    }
    let (succeeded, mut result) = match outcome {
        Ok(text) => (true, text),
        Err(text) => (false, text),
    };
    if late > 60 {
        result.push_str(&format!(
            " (fired {late} s late: the allocator was not running)"
        ));
    }
    let finished = pool.clock.now();
    let next = match &schedule.recurrence_rule {
        Some(rule) => match recurrence::next_after(rule, schedule.destruction_time, finished) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(schedule = %name, error = %e, "stored rule no longer parses");
                None
            }
        },
        None => None,
    };
    let execution = Execution {
        at: finished,
        run_id,
        succeeded,
        result: result.clone(),
    };
    let saved = pool
        .store
        .write(move |tx| {
            schedules::update(tx, id, |s| {
                if s.status == ScheduleStatus::Executing {
                    Ok(s.executed(execution, next))
                } else {
                    Err(NotClaimed::Changed)
                }
            })
        })
        .await;
    match saved {
        Ok(_) => {
            tracing::info!(schedule = %name, succeeded, %result, ?next, "scheduled destruction fired")
        }
        Err(e) => {
            tracing::error!(schedule = %name, error = %e, "cannot record the firing's result")
        }
    }
}

/// Follows the destroy run to its end (it is bounded by the run timeout).
async fn wait_for_run(pool: &Pool, run_id: u64) -> Result<String, String> {
    // The run stops itself at its timeout; past that (plus Terraform's grace) something
    // else went wrong, and other schedules must not wait behind it forever.
    let limit = Duration::from_secs(pool.config.provision.run_timeout_seconds + 180);
    let started = std::time::Instant::now();
    loop {
        if started.elapsed() > limit {
            return Err(format!("run #{run_id} did not finish within {limit:?}"));
        }
        match pool.store.read(move |tx| runs::get(tx, run_id)).await {
            Ok(Some(run)) if run.state.is_finished() => {
                return if run.state == RunState::Succeeded {
                    Ok(format!("All VMs destroyed successfully (run #{run_id})"))
                } else {
                    Err(format!("Destroy run #{run_id} ended {:?}", run.state).to_lowercase())
                };
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the destroy run"),
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = pool.shutdown.cancelled() => return Err(format!("the allocator stopped during run #{run_id}")),
        }
    }
}
