//! The workshop as an event: its plan (start, end, seats, spares, pre-warm, countdown
//! marks), where it stands at a given time, and what it has done so far. The journal's
//! entries (what happened during the event, for its report) are here too.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Longest event name.
pub const MAX_EVENT_NAME: usize = 120;
/// Most seats one event may have.
pub const MAX_SEATS: u32 = 5000;
/// Most countdown marks.
pub const MAX_MARKS: usize = 8;
/// Launches remembered per event (the newest).
pub const LAUNCHES_KEPT: usize = 100;

/// What the admin planned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPlan {
    pub name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub seats: u32,
    /// Spare VMs on top of the seats, in percent of the seats (rounded up).
    pub spare_percent: u32,
    /// VMs are launched this long before the start.
    pub prewarm_minutes: u32,
    /// Participants enter this code during the event; empty: `access.join_code`.
    pub join_code: String,
    /// Minutes before the end at which participants are warned, largest first.
    pub warn_minutes: Vec<u32>,
}

impl EventPlan {
    /// Checks a plan; the message names the field to fix.
    pub fn check(&self) -> Result<(), String> {
        check_name(&self.name)?;
        if self.ends_at <= self.starts_at {
            return Err("end: must be after start".into());
        }
        if self.ends_at - self.starts_at > Duration::days(14) {
            return Err("end: an event lasts at most 14 days".into());
        }
        check_seats(self.seats)?;
        check_spare_percent(self.spare_percent)?;
        check_prewarm_minutes(self.prewarm_minutes)?;
        check_join_code(&self.join_code)?;
        check_marks(&self.warn_minutes)
    }

    /// Seats plus spares: the VMs the event keeps running.
    pub fn target_vms(&self) -> u32 {
        self.seats + (self.seats * self.spare_percent).div_ceil(100)
    }

    pub fn prewarm_at(&self) -> DateTime<Utc> {
        self.starts_at - Duration::minutes(i64::from(self.prewarm_minutes))
    }
}

// Each field's own rule; messages begin with the field's name.

pub fn check_name(name: &str) -> Result<(), String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("name: required".into());
    }
    if name.chars().count() > MAX_EVENT_NAME {
        return Err(format!("name: at most {MAX_EVENT_NAME} characters"));
    }
    Ok(())
}

pub fn check_seats(seats: u32) -> Result<(), String> {
    if !(1..=MAX_SEATS).contains(&seats) {
        return Err(format!("seats: 1 to {MAX_SEATS}"));
    }
    Ok(())
}

pub fn check_spare_percent(percent: u32) -> Result<(), String> {
    if percent > 100 {
        return Err("spare_percent: 0 to 100".into());
    }
    Ok(())
}

pub fn check_prewarm_minutes(minutes: u32) -> Result<(), String> {
    if minutes > 24 * 60 {
        return Err("prewarm_minutes: 0 to 1440".into());
    }
    Ok(())
}

pub fn check_join_code(code: &str) -> Result<(), String> {
    if !code.is_empty() && code.trim().chars().count() < 4 {
        return Err("join_code: empty, or at least 4 characters".into());
    }
    Ok(())
}

pub fn check_marks(marks: &[u32]) -> Result<(), String> {
    if marks.len() > MAX_MARKS {
        return Err(format!("warn_minutes: at most {MAX_MARKS} marks"));
    }
    if marks.iter().any(|m| *m == 0 || *m > 24 * 60) {
        return Err("warn_minutes: each mark 1 to 1440 minutes".into());
    }
    Ok(())
}

/// Parses countdown marks such as `30,10,2` into minutes, largest first, without repeats.
pub fn parse_marks(text: &str) -> Result<Vec<u32>, String> {
    let mut marks = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let m: u32 = part
            .parse()
            .map_err(|_| format!("`{part}` is not a whole number of minutes"))?;
        marks.push(m);
    }
    marks.sort_unstable_by(|a, b| b.cmp(a));
    marks.dedup();
    Ok(marks)
}

/// Where an event stands at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventPhase {
    /// Before the pre-warm.
    Planned,
    /// VMs are being launched and started; participants may already claim.
    Warming,
    Open,
    /// Past the end: files are being rescued and the pool destroyed.
    Stopping,
    Ended,
    Cancelled,
}

impl EventPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            EventPhase::Planned => "planned",
            EventPhase::Warming => "warming",
            EventPhase::Open => "open",
            EventPhase::Stopping => "stopping",
            EventPhase::Ended => "ended",
            EventPhase::Cancelled => "cancelled",
        }
    }

    /// Whether the event keeps its pool running (pre-warm to the end).
    pub fn keeps_pool(self) -> bool {
        matches!(self, EventPhase::Warming | EventPhase::Open)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchReason {
    Prewarm,
    /// Seats that died were replaced.
    Replace,
}

/// A launch the event started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLaunch {
    pub at: DateTime<Utc>,
    pub run_id: u64,
    pub count: u32,
    pub reason: LaunchReason,
}

/// How the hard stop went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnd {
    pub at: DateTime<Utc>,
    /// The destroy run; `None` when there was nothing to destroy.
    pub run_id: Option<u64>,
    pub result: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub plan: EventPlan,
    /// Defined by the `event` section of the configuration file (not editable online).
    pub from_config: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub launches: Vec<EventLaunch>,
    /// When the pre-warm launch started (kept apart from `launches`, which is trimmed).
    #[serde(default)]
    pub prewarm_started: Option<DateTime<Utc>>,
    /// Replacement VMs launched so far (bounded: a broken image must not launch forever).
    #[serde(default)]
    pub replaced: u32,
    /// Countdown marks already announced.
    #[serde(default)]
    pub marks_sent: Vec<u32>,
    /// The destroy run of the hard stop, while it runs.
    #[serde(default)]
    pub stop_run: Option<u64>,
    #[serde(default)]
    pub ended: Option<EventEnd>,
    #[serde(default)]
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl Event {
    pub fn new(id: u64, plan: EventPlan, from_config: bool, by: &str, now: DateTime<Utc>) -> Event {
        Event {
            id,
            plan,
            from_config,
            created_by: by.to_owned(),
            created_at: now,
            updated_at: now,
            launches: Vec::new(),
            prewarm_started: None,
            replaced: 0,
            marks_sent: Vec::new(),
            stop_run: None,
            ended: None,
            cancelled_at: None,
        }
    }

    pub fn phase(&self, now: DateTime<Utc>) -> EventPhase {
        if self.cancelled_at.is_some() {
            EventPhase::Cancelled
        } else if self.ended.is_some() {
            EventPhase::Ended
        } else if now >= self.plan.ends_at {
            EventPhase::Stopping
        } else if now >= self.plan.starts_at {
            EventPhase::Open
        } else if now >= self.plan.prewarm_at() {
            EventPhase::Warming
        } else {
            EventPhase::Planned
        }
    }

    /// Seconds to the end (never negative).
    pub fn seconds_left(&self, now: DateTime<Utc>) -> i64 {
        (self.plan.ends_at - now).num_seconds().max(0)
    }

    /// The countdown mark to announce now, if one is due: the smallest passed mark not
    /// announced yet (after a gap, e.g. the allocator was down, only the latest counts).
    pub fn due_mark(&self, now: DateTime<Utc>) -> Option<u32> {
        if !matches!(self.phase(now), EventPhase::Warming | EventPhase::Open) {
            return None;
        }
        let passed = |m: &u32| now >= self.plan.ends_at - Duration::minutes(i64::from(*m));
        let latest = self
            .plan
            .warn_minutes
            .iter()
            .copied()
            .filter(passed)
            .min()?;
        (!self.marks_sent.contains(&latest)).then_some(latest)
    }

    /// Records `mark` and every larger one as announced.
    pub fn mark_sent(mut self, mark: u32, now: DateTime<Utc>) -> Event {
        for m in self
            .plan
            .warn_minutes
            .iter()
            .copied()
            .filter(|m| *m >= mark)
        {
            if !self.marks_sent.contains(&m) {
                self.marks_sent.push(m);
            }
        }
        self.updated_at = now;
        self
    }

    /// The latest announced mark that still lies ahead of the end (what the banner says).
    pub fn current_mark(&self, now: DateTime<Utc>) -> Option<u32> {
        if self.phase(now) != EventPhase::Open && self.phase(now) != EventPhase::Warming {
            return None;
        }
        self.marks_sent.iter().copied().min()
    }

    pub fn launched(mut self, launch: EventLaunch) -> Event {
        match launch.reason {
            LaunchReason::Replace => self.replaced += launch.count,
            LaunchReason::Prewarm => {
                self.prewarm_started.get_or_insert(launch.at);
            }
        }
        self.updated_at = launch.at;
        self.launches.push(launch);
        if self.launches.len() > LAUNCHES_KEPT {
            let extra = self.launches.len() - LAUNCHES_KEPT;
            self.launches.drain(..extra);
        }
        self
    }

    /// Whether the pre-warm launch has been started.
    pub fn prewarmed(&self) -> bool {
        self.prewarm_started.is_some()
    }

    /// A new plan from the admin. A later end makes the marks past it count again.
    pub fn replanned(mut self, plan: EventPlan, now: DateTime<Utc>) -> Event {
        if plan.ends_at != self.plan.ends_at || plan.warn_minutes != self.plan.warn_minutes {
            let ends = plan.ends_at;
            self.marks_sent
                .retain(|m| now >= ends - Duration::minutes(i64::from(*m)));
        }
        self.plan = plan;
        self.updated_at = now;
        self
    }
}

/// What the journal records: what happened during an event, for its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalKind {
    /// VMs launched (pre-warm or replacement); `detail` says which.
    Launch,
    /// A launch the event wanted was refused (budget, provider, busy for too long).
    LaunchRefused,
    /// A countdown mark was announced; `seconds` = minutes left × 60.
    Mark,
    /// A participant got a seat; `host`, `email`.
    Claimed,
    /// Their desktop answered; `seconds` since the claim.
    DesktopReady,
    /// A participant was given another VM because theirs stopped responding.
    Reseated,
    /// The instructor moved a participant.
    Moved,
    /// A seat was taken back by the instructor or automatically.
    Released,
    /// A seat was released because it was idle.
    Reclaimed,
    /// A participant waited in the queue; `seconds` waited.
    Seated,
    /// A VM failed (error, unhealthy GPU, agent unresponsive).
    VmFailed,
    Rebooted,
    /// The hard stop began.
    Stop,
    /// The event ended; `detail` is the result.
    Ended,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub at: DateTime<Utc>,
    pub kind: JournalKind,
    pub host: Option<String>,
    pub email: Option<String>,
    pub seconds: Option<f64>,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::t;

    fn plan() -> EventPlan {
        EventPlan {
            name: "SLEAP course".into(),
            starts_at: t(3600),
            ends_at: t(3600 + 8 * 3600),
            seats: 40,
            spare_percent: 10,
            prewarm_minutes: 60,
            join_code: String::new(),
            warn_minutes: vec![30, 10, 2],
        }
    }

    #[test]
    fn spares_round_up_and_prewarm_comes_first() {
        let p = plan();
        assert_eq!(p.target_vms(), 44);
        assert_eq!(EventPlan { seats: 3, ..plan() }.target_vms(), 4);
        assert_eq!(p.prewarm_at(), t(0));
        let e = Event::new(1, p, false, "admin", t(0));
        assert_eq!(e.phase(t(-1)), EventPhase::Planned);
        assert_eq!(e.phase(t(0)), EventPhase::Warming);
        assert_eq!(e.phase(t(3600)), EventPhase::Open);
        assert_eq!(e.phase(t(3600 + 8 * 3600)), EventPhase::Stopping);
    }

    #[test]
    fn plans_are_checked_field_by_field() {
        let bad = |f: &dyn Fn(&mut EventPlan), field: &str| {
            let mut p = plan();
            f(&mut p);
            let e = p.check().expect_err(field);
            assert!(e.starts_with(field), "{e}");
        };
        assert!(plan().check().is_ok());
        bad(&|p| p.name = " ".into(), "name");
        bad(&|p| p.ends_at = p.starts_at, "end");
        bad(&|p| p.seats = 0, "seats");
        bad(&|p| p.spare_percent = 101, "spare_percent");
        bad(&|p| p.join_code = "abc".into(), "join_code");
        bad(&|p| p.warn_minutes = vec![0], "warn_minutes");
        assert_eq!(parse_marks("2, 30,10,10").expect("marks"), vec![30, 10, 2]);
        assert!(parse_marks("ten").is_err());
    }

    #[test]
    fn each_mark_is_announced_once_and_a_gap_announces_only_the_latest() {
        let end = t(3600 + 8 * 3600);
        let e = Event::new(1, plan(), false, "admin", t(0));
        assert_eq!(e.due_mark(end - Duration::minutes(31)), None);
        let at30 = end - Duration::minutes(30);
        assert_eq!(e.due_mark(at30), Some(30));
        let e = e.mark_sent(30, at30);
        assert_eq!(e.due_mark(at30), None);
        assert_eq!(e.current_mark(at30), Some(30));
        // Down from 29 to 3 minutes before the end: only "2" is left when it passes.
        let late = end - Duration::minutes(1);
        assert_eq!(e.due_mark(late), Some(2));
        let e = e.mark_sent(2, late);
        assert_eq!(e.marks_sent.len(), 3);
        assert_eq!(e.due_mark(late), None);
        assert_eq!(e.due_mark(end), None, "stopping: no more marks");
    }

    #[test]
    fn the_prewarm_is_remembered_past_the_trimmed_launches() {
        let launch = |reason| EventLaunch {
            at: t(10),
            run_id: 1,
            count: 1,
            reason,
        };
        let mut e =
            Event::new(1, plan(), false, "admin", t(0)).launched(launch(LaunchReason::Prewarm));
        for _ in 0..LAUNCHES_KEPT + 5 {
            e = e.launched(launch(LaunchReason::Replace));
        }
        assert_eq!(e.launches.len(), LAUNCHES_KEPT);
        assert!(e.prewarmed());
        assert_eq!(e.replaced as usize, LAUNCHES_KEPT + 5);
    }

    #[test]
    fn a_later_end_brings_the_countdown_back() {
        let end = t(3600 + 8 * 3600);
        let at10 = end - Duration::minutes(10);
        let e = Event::new(1, plan(), false, "admin", t(0))
            .mark_sent(30, at10)
            .mark_sent(10, at10);
        let mut later = plan();
        later.ends_at = end + Duration::hours(1);
        let e = e.replanned(later, at10);
        assert!(e.marks_sent.is_empty());
        assert_eq!(e.due_mark(at10), None);
    }
}
