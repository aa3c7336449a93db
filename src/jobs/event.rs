//! Runs the current event: from the pre-warm on it keeps seats plus spares launched
//! (replacing VMs that die, within a bound), announces each countdown mark, and at the end
//! does the hard stop: one "destroy all" run, which rescues the participants' files before
//! anything is destroyed. Everything it needs is stored, so a restart picks up where it
//! was (a mark missed while stopped is announced late, the hard stop still happens).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    Event, EventEnd, EventLaunch, EventPhase, JournalKind, LaunchReason, RunAction, RunState, Vm,
};
use crate::pool::event::{change, counts_as_seat, journal};
use crate::pool::provisioner::ProvisionError;
use crate::pool::{Actor, Pool, PoolError, launch};
use crate::store::{runs, vms};

/// How often the event is looked at.
pub const TICK: Duration = Duration::from_millis(500);

/// After a refused launch, the next attempt waits this long (seconds of the pool's clock).
const RETRY_REFUSED_SECS: i64 = 60;

pub async fn run(pool: Arc<Pool>) {
    let mut refused: Option<(DateTime<Utc>, String)> = None;
    let mut seatings = pool.waitlist.seatings();
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            seated = seatings.recv() => {
                if let Ok(s) = seated {
                    let waited = s.waited().as_secs_f64();
                    journal(&pool, JournalKind::Seated, Some(&s.hostname), Some(&s.email), Some(waited), String::new()).await;
                    journal(&pool, JournalKind::Claimed, Some(&s.hostname), Some(&s.email), None, "from the waitlist".into()).await;
                }
                continue;
            }
            () = pool.shutdown.cancelled() => return,
        }
        let Some(event) = pool.event.get() else {
            continue;
        };
        let now = pool.clock.now();
        match event.phase(now) {
            EventPhase::Warming | EventPhase::Open => {
                if let Some(mark) = event.due_mark(now) {
                    announce(&pool, &event, mark).await;
                }
                keep_pool(&pool, &event, &mut refused).await;
            }
            EventPhase::Stopping => hard_stop(&pool, &event).await,
            EventPhase::Planned | EventPhase::Ended | EventPhase::Cancelled => {}
        }
    }
}

fn actor(event: &Event) -> Actor {
    Actor::new(format!("event:{}", event.plan.name), None)
}

async fn announce(pool: &Pool, event: &Event, mark: u32) {
    let now = pool.clock.now();
    match change(pool, event.id, move |e| Ok(e.mark_sent(mark, now))).await {
        Ok(_) => {
            tracing::info!(event = %event.plan.name, minutes = mark, "countdown mark announced");
            journal(
                pool,
                JournalKind::Mark,
                None,
                None,
                Some(f64::from(mark) * 60.0),
                format!("{mark} minutes left"),
            )
            .await;
        }
        Err(e) => tracing::error!(error = %e, "cannot record the countdown mark"),
    }
}

/// Launches what the event is short of, one run at a time.
async fn keep_pool(pool: &Pool, event: &Event, refused: &mut Option<(DateTime<Utc>, String)>) {
    let now = pool.clock.now();
    if refused
        .as_ref()
        .is_some_and(|(at, _)| (now - *at).num_seconds() < RETRY_REFUSED_SECS)
    {
        return;
    }
    if pool.provisioner.current().await.is_some() {
        return;
    }
    let listed = match pool.store.read(vms::list).await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the pool");
            return;
        }
    };
    let coming = coming_without_record(pool, event, &listed, now);
    let up = listed.iter().filter(|vm| counts_as_seat(vm)).count() + coming;
    let target = event.plan.target_vms() as usize;
    if up >= target {
        return;
    }
    let reason = if event.prewarmed() {
        LaunchReason::Replace
    } else {
        LaunchReason::Prewarm
    };
    let mut count = u32::try_from(target - up).unwrap_or(u32::MAX);
    if reason == LaunchReason::Replace {
        // A broken image would have every replacement die too: at most as many
        // replacements as the event has VMs.
        let left = event.plan.target_vms().saturating_sub(event.replaced);
        if left == 0 {
            note_refusal(
                pool,
                refused,
                now,
                "no more replacements: as many VMs as the event has were replaced already".into(),
            )
            .await;
            return;
        }
        count = count.min(left);
    }
    match launch::start(pool, &actor(event), RunAction::Launch { count }).await {
        Ok(run) => {
            *refused = None;
            let at = pool.clock.now();
            let launched = EventLaunch {
                at,
                run_id: run.id,
                count,
                reason,
            };
            if let Err(e) = change(pool, event.id, move |e| Ok(e.launched(launched))).await {
                tracing::error!(error = %e, "cannot record the event's launch");
            }
            let what = match reason {
                LaunchReason::Prewarm => "pre-warm",
                LaunchReason::Replace => "replacement",
            };
            tracing::info!(event = %event.plan.name, count, run = run.id, "{what} launch");
            journal(
                pool,
                JournalKind::Launch,
                None,
                None,
                None,
                format!("{what}: {count} VM(s), run #{}", run.id),
            )
            .await;
        }
        // Another run started meanwhile: next tick.
        Err(PoolError::Conflict(_)) => {}
        Err(e) => note_refusal(pool, refused, now, e.to_string()).await,
    }
}

/// Launched VMs whose agent has not registered yet; they count as on their way for as long
/// as a VM may take to start after the event's last launch.
fn coming_without_record(pool: &Pool, event: &Event, listed: &[Vm], now: DateTime<Utc>) -> usize {
    let Some(last) = event.launches.last() else {
        return 0;
    };
    let patience = i64::try_from(pool.config.provision.initializing_stale_seconds).unwrap_or(0);
    if (now - last.at).num_seconds() >= patience {
        return 0;
    }
    pool.identities
        .names()
        .iter()
        .filter(|name| !listed.iter().any(|vm| &vm.hostname == *name))
        .count()
}

async fn note_refusal(
    pool: &Pool,
    refused: &mut Option<(DateTime<Utc>, String)>,
    now: DateTime<Utc>,
    why: String,
) {
    let repeated = refused.as_ref().is_some_and(|(_, w)| *w == why);
    if !repeated {
        tracing::warn!(reason = %why, "the event cannot launch the VMs it needs");
        journal(
            pool,
            JournalKind::LaunchRefused,
            None,
            None,
            None,
            why.clone(),
        )
        .await;
    }
    *refused = Some((now, why));
}

/// At the end: one "destroy all" run (it rescues files first), then the event has ended.
async fn hard_stop(pool: &Pool, event: &Event) {
    let now = pool.clock.now();
    if let Some(run_id) = event.stop_run {
        let run = match pool.store.read(move |tx| runs::get(tx, run_id)).await {
            Ok(run) => run,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the hard stop's run");
                return;
            }
        };
        match run {
            Some(run) if !run.state.is_finished() => {}
            Some(run) if run.state == RunState::Interrupted => {
                // The allocator stopped during the destroy: do it again.
                let _ = change(pool, event.id, |mut e| {
                    e.stop_run = None;
                    Ok(e)
                })
                .await;
            }
            run => {
                let result = match run {
                    Some(run) if run.state == RunState::Succeeded => {
                        format!("every VM destroyed (run #{run_id})")
                    }
                    Some(run) => format!(
                        "destroy run #{run_id} ended {}; check it and destroy what is left",
                        format!("{:?}", run.state).to_lowercase()
                    ),
                    None => format!("destroy run #{run_id} is not recorded"),
                };
                finish(pool, event, Some(run_id), result).await;
            }
        }
        return;
    }
    let actor = actor(event);
    match pool
        .provisioner
        .start(RunAction::DestroyAll, &actor.user, None)
        .await
    {
        Ok(run) => {
            pool.audit_by(
                &actor,
                "destroy-all",
                format!("the event's hard stop (run #{})", run.id),
            )
            .await;
            let run_id = run.id;
            if let Err(e) = change(pool, event.id, move |mut e| {
                e.stop_run = Some(run_id);
                e.updated_at = now;
                Ok(e)
            })
            .await
            {
                tracing::error!(error = %e, "cannot record the hard stop's run");
            }
            tracing::warn!(event = %event.plan.name, run = run.id, "the event has ended: rescuing files, then destroying the pool");
            journal(
                pool,
                JournalKind::Stop,
                None,
                None,
                None,
                format!("hard stop: run #{}", run.id),
            )
            .await;
        }
        // A launch still going: the destroy follows it.
        Err(ProvisionError::Busy(_)) => {}
        Err(ProvisionError::NothingToDestroy) => {
            finish(pool, event, None, "no VMs were left to destroy".into()).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "the event's hard stop cannot start; retrying");
        }
    }
}

async fn finish(pool: &Pool, event: &Event, run_id: Option<u64>, result: String) {
    let at = pool.clock.now();
    // Nobody still waiting will be seated now; their page says the workshop has ended.
    match pool.store.write(crate::store::waitlist::clear).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            waiting = n,
            "the event has ended: the waiting list is emptied"
        ),
        Err(e) => tracing::error!(error = %e, "cannot empty the waiting list"),
    }
    journal(pool, JournalKind::Ended, None, None, None, result.clone()).await;
    let end = EventEnd {
        at,
        run_id,
        result: result.clone(),
    };
    match change(pool, event.id, move |mut e| {
        e.stop_run = None;
        e.ended = Some(end);
        e.updated_at = at;
        Ok(e)
    })
    .await
    {
        Ok(_) => tracing::info!(event = %event.plan.name, %result, "the event has ended"),
        Err(e) => tracing::error!(error = %e, "cannot record the end of the event"),
    }
}
