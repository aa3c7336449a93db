//! The post-event report: what an event's journal, its rescues and the VMs still there say
//! about how the workshop went (seats, claims, time to desktop, failures, the waiting list,
//! launches, how it ended, and one row per seat). Also the two journal writers that need a
//! store change first: a participant's desktop answering, once per assignment, and a VM
//! failing, once per transition.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Pool, PoolError};
use crate::model::budget::CostFigures;
use crate::model::{
    DesktopKind, Event, EventPhase, JournalEntry, JournalKind, LaunchReason, Rescue, SeatUsage, Vm,
};

use crate::store::{events, vms};

/// `VmFailed` details: the three ways a VM fails.
pub const FAILED_STATUS_ERROR: &str = "status error";
pub const FAILED_GPU_UNHEALTHY: &str = "GPU unhealthy";
pub const FAILED_UNRESPONSIVE: &str = "agent unresponsive";
/// `Rebooted` details: seen through a new boot id, or done by auto-reboot.
pub const REBOOT_SEEN: &str = "new boot id";
pub const REBOOT_AUTO: &str = "auto-reboot";

/// The desktop of `host`'s participant answered (a browser stream was delivered, or the
/// agent started the Chrome Remote Desktop host). Recorded on the assignment and in the
/// event's journal the first time per assignment; the seconds since the claim come back
/// then, `None` on a repeat or when the seat is of the other kind or free.
pub async fn desktop_ready(
    pool: &Pool,
    host: &str,
    kind: DesktopKind,
) -> Result<Option<f64>, PoolError> {
    let (h, now) = (host.to_owned(), pool.clock.now());
    let recorded = pool
        .store
        .write(move |tx| {
            let mut first = None;
            let vm = vms::update(tx, &h, |vm| {
                let (vm, seconds) = vm.desktop_ready(kind, now);
                first = seconds;
                vm
            })?;
            Ok(vm.map(|vm| (vm, first)))
        })
        .await
        .map_err(PoolError::store("Failed to record the desktop start."))?;
    let Some((vm, seconds)) = recorded else {
        return Err(PoolError::VmNotFound);
    };
    if let (Some(s), Some(a)) = (seconds, &vm.assignment) {
        super::event::journal(
            pool,
            JournalKind::DesktopReady,
            Some(host),
            Some(&a.email),
            Some(s),
            kind.as_str().to_owned(),
        )
        .await;
    }
    Ok(seconds)
}

/// Journals `host` failing (`why`: one of the `FAILED_*` details) for its participant, if
/// it has one. Callers check it is a transition, not a repeated report.
pub async fn vm_failed(pool: &Pool, vm: &Vm, why: &str) {
    let email = vm.assignment.as_ref().map(|a| a.email.as_str());
    super::event::journal(
        pool,
        JournalKind::VmFailed,
        Some(&vm.hostname),
        email,
        None,
        why.to_owned(),
    )
    .await;
}

/// Journals a reboot of `host` (`how`: `REBOOT_SEEN`, or `REBOOT_AUTO` with the reason).
pub async fn rebooted(pool: &Pool, host: &str, how: String) {
    super::event::journal(pool, JournalKind::Rebooted, Some(host), None, None, how).await;
}

/// How a set of durations spreads (nearest-rank percentiles, in seconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    pub n: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub max: Option<f64>,
}

impl Spread {
    pub fn of(mut values: Vec<f64>) -> Spread {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let rank = |p: usize| {
            let n = values.len();
            (n > 0).then(|| values[(p * n).div_ceil(100).clamp(1, n) - 1])
        };
        Spread {
            n: values.len(),
            p50: rank(50),
            p90: rank(90),
            max: values.last().copied(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportEvent {
    pub id: u64,
    pub name: String,
    pub phase: EventPhase,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub prewarm_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SeatFigures {
    pub planned: u32,
    /// Distinct e-mail addresses that had a seat.
    pub used: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Failures {
    pub count: usize,
    /// `FAILED_*` detail → count.
    pub by_kind: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WaitlistFigures {
    pub seated: usize,
    /// Seconds each seated participant waited.
    pub wait: Spread,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Launches {
    /// VMs launched by the pre-warm.
    pub prewarm: u32,
    /// VMs launched to replace dead ones.
    pub replacements: u32,
    /// Launches the event wanted and was refused.
    pub refused: usize,
}

/// How the event ended (or where it stands, if it has not).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ending {
    /// The event's phase when the report was made: `ended`, `cancelled`, or still going.
    pub phase: EventPhase,
    pub at: Option<DateTime<Utc>>,
    /// The hard stop's result.
    pub result: Option<String>,
    /// The hard stop's destroy run.
    pub run_id: Option<u64>,
}

/// One participant's seat over the event.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SeatRow {
    pub email: String,
    /// Every VM they sat at, in order.
    pub vms: Vec<String>,
    /// Their first claim.
    pub claimed_at: Option<DateTime<Utc>>,
    /// Seconds from their first claim to their desktop answering.
    pub desktop_after_seconds: Option<f64>,
    /// Seconds they waited in the waiting list.
    pub waited_seconds: Option<f64>,
    pub released: usize,
    pub moved: usize,
    pub reseated: usize,
    pub reclaimed: usize,
    /// Failures of the VM they sat at, while they sat there.
    pub failures: usize,
    /// The outcome of the latest rescue of their files.
    pub rescue: Option<String>,
    /// The VM they hold now (`None`: released, or the VM is gone).
    pub holds_now: Option<String>,
    /// GPU utilisation (percent) over their seats' heartbeats: the mean and the peak;
    /// `None` when no heartbeat carried GPU figures.
    pub gpu_util_avg: Option<f64>,
    pub gpu_util_max: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub event: ReportEvent,
    pub generated_at: DateTime<Utc>,
    pub seats: SeatFigures,
    pub claims: usize,
    /// Claim to desktop, in seconds.
    pub claim_to_desktop: Spread,
    pub failures: Failures,
    pub reboots: usize,
    pub reseats: usize,
    pub moves: usize,
    pub releases: usize,
    pub waitlist: WaitlistFigures,
    /// Seats released because they were idle.
    pub idle_reclaims: usize,
    /// Rescues in the event's time window, by outcome.
    pub rescues: BTreeMap<String, usize>,
    pub launches: Launches,
    /// Countdown marks announced, in minutes, largest first.
    pub marks_announced: Vec<u32>,
    pub ending: Ending,
    /// VMs still in the pool when the report was made.
    pub vms_left: usize,
    /// Journal entries the report was made from.
    pub journal_entries: usize,
    /// What the event cost (USD): spent, and projected to its end while it runs.
    pub cost: Option<Cost>,
    pub per_seat: Vec<SeatRow>,
}

/// The event's cost as the report shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cost {
    pub currency: &'static str,
    pub machine_type: String,
    /// `None`: no price is known for the type.
    pub price_per_hour: Option<f64>,
    pub spent: f64,
    pub projected: Option<f64>,
    pub cap: Option<f64>,
}

impl From<CostFigures> for Cost {
    fn from(c: CostFigures) -> Cost {
        Cost {
            currency: c.currency,
            machine_type: c.machine_type,
            price_per_hour: c.price_per_hour,
            spent: c.spent,
            projected: c.projected,
            cap: c.cap,
        }
    }
}

/// Adds each seat's GPU use (from the per-seat usage of `usage`) to its row.
pub fn with_gpu_use(mut report: Report, usage: &[SeatUsage]) -> Report {
    for row in &mut report.per_seat {
        let mine: Vec<&SeatUsage> = usage.iter().filter(|u| u.email == row.email).collect();
        let samples: u64 = mine.iter().map(|u| u.gpu_samples).sum();
        if samples > 0 {
            let sum: f64 = mine.iter().map(|u| u.gpu_util_sum).sum();
            row.gpu_util_avg = Some(sum / samples as f64);
            row.gpu_util_max = mine
                .iter()
                .filter(|u| u.gpu_samples > 0)
                .map(|u| u.gpu_util_max)
                .reduce(f64::max);
        }
    }
    report
}

/// The report of event `id` (`None`: the current one). `NotFound` without such an event.
pub async fn report(pool: &Pool, id: Option<u64>) -> Result<Report, PoolError> {
    const FAILED: &str = "Failed to read the event's journal.";
    let read = pool
        .store
        .read(move |tx| {
            let event = match id {
                Some(id) => events::get(tx, id)?,
                None => events::current(tx)?,
            };
            let Some(event) = event else {
                return Ok(None);
            };
            let journal = events::journal_of(tx, event.id)?;
            Ok(Some((event, journal, vms::list(tx)?)))
        })
        .await
        .map_err(PoolError::store(FAILED))?;
    let Some((event, journal, listed)) = read else {
        return Err(PoolError::NotFound(match id {
            Some(id) => format!("No event #{id}."),
            None => "No event has been planned.".into(),
        }));
    };
    let rescues = pool.rescues.list().await?;
    let now = pool.clock.now();
    let until = event.ended.as_ref().map_or(now, |e| e.at);
    let usage = super::usage::for_event(pool, event.plan.prewarm_at(), until).await?;
    let cost = super::budget::figures_of_event(pool, &event).await?;
    let mut report = compute(&event, &journal, &rescues, &listed, now);
    report.cost = Some(cost.into());
    Ok(with_gpu_use(report, &usage))
}

/// When the event's rescues may have been asked for: from its pre-warm to its end.
fn window(event: &Event, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let to = match (&event.ended, event.cancelled_at) {
        (Some(end), _) => end.at,
        (None, Some(at)) => at,
        (None, None) => event.plan.ends_at.max(now),
    };
    (event.plan.prewarm_at(), to)
}

/// The report from what the store holds (pure, for the tests).
pub fn compute(
    event: &Event,
    journal: &[JournalEntry],
    rescues: &[Rescue],
    listed: &[Vm],
    now: DateTime<Utc>,
) -> Report {
    let count = |kind: JournalKind| journal.iter().filter(|e| e.kind == kind).count();
    let mut seats: Vec<SeatRow> = Vec::new();
    let mut failures = Failures::default();
    let mut ready = Vec::new();
    let mut waits = Vec::new();
    // Hosts rebooted by auto-reboot whose new boot id has not been seen yet: that sighting
    // is the same reboot.
    let mut auto_rebooted: Vec<&str> = Vec::new();
    let mut reboots = 0;
    for entry in journal {
        let row = entry.email.as_deref().map(|email| {
            let at = match seats.iter().position(|r| r.email == email) {
                Some(at) => at,
                None => {
                    seats.push(SeatRow {
                        email: email.to_owned(),
                        ..SeatRow::default()
                    });
                    seats.len() - 1
                }
            };
            &mut seats[at]
        });
        let host = entry.host.as_deref().unwrap_or_default();
        match (entry.kind, row) {
            (JournalKind::Claimed | JournalKind::Reseated | JournalKind::Moved, Some(row)) => {
                if row.claimed_at.is_none() {
                    row.claimed_at = Some(entry.at);
                }
                if !host.is_empty() && row.vms.last().map(String::as_str) != Some(host) {
                    row.vms.push(host.to_owned());
                }
                match entry.kind {
                    JournalKind::Reseated => row.reseated += 1,
                    JournalKind::Moved => row.moved += 1,
                    _ => {}
                }
            }
            (JournalKind::DesktopReady, row) => {
                if let Some(s) = entry.seconds {
                    ready.push(s);
                    if let Some(row) = row
                        && row.desktop_after_seconds.is_none()
                    {
                        row.desktop_after_seconds = Some(s);
                    }
                }
            }
            (JournalKind::Seated, row) => {
                if let Some(s) = entry.seconds {
                    waits.push(s);
                    if let Some(row) = row {
                        row.waited_seconds = Some(s);
                    }
                }
            }
            (JournalKind::Released, Some(row)) => row.released += 1,
            (JournalKind::Reclaimed, Some(row)) => row.reclaimed += 1,
            (JournalKind::VmFailed, row) => {
                failures.count += 1;
                *failures.by_kind.entry(entry.detail.clone()).or_default() += 1;
                if let Some(row) = row {
                    row.failures += 1;
                }
            }
            (JournalKind::Rebooted, _) => {
                let seen_after_auto = entry.detail == REBOOT_SEEN && auto_rebooted.contains(&host);
                if seen_after_auto {
                    auto_rebooted.retain(|h| *h != host);
                } else {
                    reboots += 1;
                    if entry.detail.starts_with(REBOOT_AUTO) {
                        auto_rebooted.push(host);
                    }
                }
            }
            _ => {}
        }
    }

    let (from, to) = window(event, now);
    let in_window: Vec<&Rescue> = rescues
        .iter()
        .filter(|r| r.requested_at >= from && r.requested_at <= to)
        .collect();
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    for r in &in_window {
        *by_outcome.entry(r.outcome.as_str().to_owned()).or_default() += 1;
    }
    for row in &mut seats {
        row.rescue = in_window
            .iter()
            .filter(|r| r.email == row.email)
            .max_by_key(|r| (r.requested_at, r.id))
            .map(|r| r.outcome.as_str().to_owned());
        row.holds_now = listed
            .iter()
            .find(|vm| vm.assignment.as_ref().is_some_and(|a| a.email == row.email))
            .map(|vm| vm.hostname.clone());
    }

    let launched = |reason: LaunchReason| {
        event
            .launches
            .iter()
            .filter(|l| l.reason == reason)
            .map(|l| l.count)
            .sum()
    };
    let mut marks = event.marks_sent.clone();
    marks.sort_unstable_by(|a, b| b.cmp(a));
    Report {
        event: ReportEvent {
            id: event.id,
            name: event.plan.name.clone(),
            phase: event.phase(now),
            starts_at: event.plan.starts_at,
            ends_at: event.plan.ends_at,
            prewarm_at: event.plan.prewarm_at(),
        },
        generated_at: now,
        seats: SeatFigures {
            planned: event.plan.seats,
            used: seats.iter().filter(|r| !r.vms.is_empty()).count(),
        },
        claims: count(JournalKind::Claimed),
        claim_to_desktop: Spread::of(ready),
        failures,
        reboots,
        reseats: count(JournalKind::Reseated),
        moves: count(JournalKind::Moved),
        releases: count(JournalKind::Released),
        waitlist: WaitlistFigures {
            seated: waits.len(),
            wait: Spread::of(waits),
        },
        idle_reclaims: count(JournalKind::Reclaimed),
        rescues: by_outcome,
        launches: Launches {
            prewarm: launched(LaunchReason::Prewarm),
            replacements: launched(LaunchReason::Replace),
            refused: count(JournalKind::LaunchRefused),
        },
        marks_announced: marks,
        ending: Ending {
            phase: event.phase(now),
            at: event.ended.as_ref().map(|e| e.at).or(event.cancelled_at),
            result: event.ended.as_ref().map(|e| e.result.clone()),
            run_id: event
                .ended
                .as_ref()
                .and_then(|e| e.run_id)
                .or(event.stop_run),
        },
        vms_left: listed.len(),
        journal_entries: journal.len(),
        cost: None,
        per_seat: seats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .expect("valid time")
    }
    use crate::model::{EventEnd, EventPlan, RescueOutcome, RescueReason};

    fn event() -> Event {
        let plan = EventPlan {
            name: "Course".into(),
            starts_at: t(3600),
            ends_at: t(7200),
            seats: 3,
            spare_percent: 0,
            prewarm_minutes: 60,
            join_code: String::new(),
            warn_minutes: vec![30, 10],
        };
        Event::new(1, plan, false, "admin", t(0))
    }

    fn entry(
        at: i64,
        kind: JournalKind,
        host: &str,
        email: &str,
        seconds: Option<f64>,
        detail: &str,
    ) -> JournalEntry {
        JournalEntry {
            at: t(at),
            kind,
            host: (!host.is_empty()).then(|| host.to_owned()),
            email: (!email.is_empty()).then(|| email.to_owned()),
            seconds,
            detail: detail.to_owned(),
        }
    }

    #[test]
    fn gpu_use_per_seat_is_weighted_by_samples_over_every_vm_of_the_participant() {
        let journal = vec![
            entry(3600, JournalKind::Claimed, "vm-1", "ada@x.org", None, ""),
            entry(3700, JournalKind::Claimed, "vm-2", "bob@x.org", None, ""),
        ];
        let report = compute(&event(), &journal, &[], &[], t(4000));
        let usage = |host: &str, email: &str, samples: u64, sum: f64, max: f64| SeatUsage {
            gpu_samples: samples,
            gpu_util_sum: sum,
            gpu_util_max: max,
            ..SeatUsage::new(email, host, t(3600), t(3600))
        };
        let report = with_gpu_use(
            report,
            &[
                usage("vm-1", "ada@x.org", 3, 30.0, 20.0),
                usage("vm-3", "ada@x.org", 1, 50.0, 50.0),
                usage("vm-2", "bob@x.org", 0, 0.0, 0.0),
            ],
        );
        let row = |email: &str| {
            report
                .per_seat
                .iter()
                .find(|r| r.email == email)
                .expect(email)
        };
        assert_eq!(row("ada@x.org").gpu_util_avg, Some(20.0));
        assert_eq!(row("ada@x.org").gpu_util_max, Some(50.0));
        assert_eq!(
            row("bob@x.org").gpu_util_avg,
            None,
            "no GPU figures: unknown, not 0"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Spread::of((1..=10).map(f64::from).collect());
        assert_eq!(
            (s.n, s.p50, s.p90, s.max),
            (10, Some(5.0), Some(9.0), Some(10.0))
        );
        let one = Spread::of(vec![7.5]);
        assert_eq!(
            (one.p50, one.p90, one.max),
            (Some(7.5), Some(7.5), Some(7.5))
        );
        assert_eq!(Spread::of(Vec::new()), Spread::default());
    }

    #[test]
    fn the_journal_makes_the_figures_and_the_rows() {
        use JournalKind as K;
        let journal = vec![
            entry(3600, K::Claimed, "vm-1", "ada@x.org", None, ""),
            entry(
                3610,
                K::DesktopReady,
                "vm-1",
                "ada@x.org",
                Some(10.0),
                "crd",
            ),
            entry(3620, K::Claimed, "vm-2", "bob@x.org", None, ""),
            entry(
                3650,
                K::VmFailed,
                "vm-2",
                "bob@x.org",
                None,
                FAILED_STATUS_ERROR,
            ),
            entry(3660, K::Reseated, "vm-3", "bob@x.org", None, "from vm-2"),
            entry(
                3700,
                K::Rebooted,
                "vm-2",
                "",
                None,
                "auto-reboot: status error",
            ),
            entry(3760, K::Rebooted, "vm-2", "", None, REBOOT_SEEN),
            entry(3800, K::Rebooted, "vm-1", "", None, REBOOT_SEEN),
            entry(3900, K::Seated, "vm-4", "cy@x.org", Some(40.0), ""),
            entry(
                3900,
                K::Claimed,
                "vm-4",
                "cy@x.org",
                None,
                "from the waitlist",
            ),
            entry(4000, K::Released, "vm-1", "ada@x.org", None, "by admin"),
            entry(4100, K::Reclaimed, "vm-4", "cy@x.org", None, ""),
        ];
        let mut e = event().mark_sent(30, t(5400));
        e.ended = Some(EventEnd {
            at: t(7300),
            run_id: Some(9),
            result: "done".into(),
        });
        let rescue = |id: u64, email: &str, at: i64, outcome: RescueOutcome| Rescue {
            id,
            hostname: "vm-1".into(),
            email: email.into(),
            claim_token_sha256: None,
            reason: RescueReason::Release,
            requested_at: t(at),
            deadline: t(at + 60),
            outcome,
            finished_at: None,
            expires_at: t(at + 86400),
            expired: false,
        };
        let rescues = vec![
            rescue(1, "ada@x.org", 4000, RescueOutcome::Empty),
            rescue(2, "ada@x.org", -10, RescueOutcome::TimedOut),
        ];
        let r = compute(&e, &journal, &rescues, &[], t(8000));
        assert_eq!(
            r.seats,
            SeatFigures {
                planned: 3,
                used: 3
            }
        );
        assert_eq!(r.claims, 3);
        assert_eq!(r.claim_to_desktop.n, 1);
        assert_eq!(r.failures.by_kind[FAILED_STATUS_ERROR], 1);
        assert_eq!(
            r.reboots, 2,
            "the auto-reboot and its new boot id are one reboot"
        );
        assert_eq!((r.reseats, r.releases, r.idle_reclaims), (1, 1, 1));
        assert_eq!(r.waitlist.wait.max, Some(40.0));
        assert_eq!(r.rescues, BTreeMap::from([("empty".to_owned(), 1)]));
        assert_eq!(r.marks_announced, vec![30]);
        assert_eq!(r.ending.phase, EventPhase::Ended);
        assert_eq!(r.ending.run_id, Some(9));
        let bob = &r.per_seat[1];
        assert_eq!(bob.vms, vec!["vm-2", "vm-3"]);
        assert_eq!((bob.failures, bob.reseated), (1, 1));
        assert_eq!(r.per_seat[0].rescue.as_deref(), Some("empty"));
        assert_eq!(r.per_seat[2].waited_seconds, Some(40.0));
    }
}
