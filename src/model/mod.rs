//! The VM record, its statuses and health, and every state change as a pure function.
//!
//! Nothing here touches the store or the clock: callers pass `now` in, which keeps the
//! transitions easy to test and the store the only place that persists them. Hostnames,
//! identities, provisioning runs, schedules and the pool's counts have files of their own.

mod account;
mod admin_token;
pub mod budget;
mod counts;
mod event;
mod hostname;
mod identity;
pub mod log_errors;
mod rescue;
mod run;
mod schedule;
mod session_metrics;
mod usage;
mod waitlist;

pub use account::{
    Account, MAX_ACCOUNT_NAME_LEN, MIN_PASSWORD_LEN, Role, check_account_name, check_new_password,
};
pub use admin_token::{
    AdminToken, MAX_TOKEN_NAME_LEN, TOKEN_PREFIX, TokenScope, check_token_name, token_digest,
};
pub use counts::Counts;
pub use event::{
    Event, EventEnd, EventLaunch, EventPhase, EventPlan, JournalEntry, JournalKind, LaunchReason,
    MAX_SEATS, check_join_code, check_marks, check_name, check_prewarm_minutes, check_seats,
    check_spare_percent, parse_marks,
};
pub use hostname::{MAX_HOSTNAME_LABEL_LEN, MAX_HOSTNAME_LEN, validate_hostname};
pub use identity::Identity;
pub use rescue::{
    LEFT_OUT_ENTRY, PendingRescue, Rescue, RescueOutcome, RescueReason, upload_limit,
};
pub use run::{AuditEntry, Run, RunAction, RunProgress, RunState};
pub use schedule::{EXECUTIONS_KEPT, Execution, Schedule, ScheduleStatus};
pub use session_metrics::{SeatSeries, SeriesPoint, SeriesSummary, SessionSample};
pub use usage::{SeatUsage, UsageSample};
pub use waitlist::WaitEntry;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest value accepted in any free-text VM field (upstream used VARCHAR(1024)).
pub const MAX_FIELD_LEN: usize = 1024;

/// Lifecycle status as reported by the VM (or set by the allocator for `rebooting`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    Initializing,
    Running,
    Error,
    Rebooting,
    Unknown,
}

impl VmStatus {
    pub const ALL: [VmStatus; 5] = [
        VmStatus::Initializing,
        VmStatus::Running,
        VmStatus::Error,
        VmStatus::Rebooting,
        VmStatus::Unknown,
    ];

    pub fn parse(value: &str) -> Option<VmStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Initializing => "initializing",
            VmStatus::Running => "running",
            VmStatus::Error => "error",
            VmStatus::Rebooting => "rebooting",
            VmStatus::Unknown => "unknown",
        }
    }
}

/// Last GPU health report. Upstream accepts any string; the three known ones get names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Health {
    Healthy,
    Unhealthy,
    NotAvailable,
    Other(String),
}

impl Health {
    pub fn as_str(&self) -> &str {
        match self {
            Health::Healthy => "Healthy",
            Health::Unhealthy => "Unhealthy",
            Health::NotAvailable => "N/A",
            Health::Other(s) => s,
        }
    }
}

impl From<String> for Health {
    fn from(value: String) -> Self {
        match value.as_str() {
            "Healthy" => Health::Healthy,
            "Unhealthy" => Health::Unhealthy,
            "N/A" => Health::NotAvailable,
            _ => Health::Other(value),
        }
    }
}

impl From<Health> for String {
    fn from(value: Health) -> Self {
        value.as_str().to_owned()
    }
}

/// How a participant reaches their desktop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesktopKind {
    /// Chrome Remote Desktop: the agent registers the VM with the participant's code.
    #[default]
    Crd,
    /// In a browser tab: VNC on the VM, relayed by the allocator to noVNC.
    Browser,
}

impl DesktopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DesktopKind::Crd => "crd",
            DesktopKind::Browser => "browser",
        }
    }
}

/// A participant's hold on a VM. Only the validated Chrome Remote Desktop code is kept,
/// never the text the participant pasted (a browser desktop has none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub email: String,
    pub crd_code: String,
    pub pin: String,
    pub assigned_at: DateTime<Utc>,
    /// SHA-256 (hex) of the token the participant's browser got with the assignment;
    /// coming back with it proves it is them (an e-mail address alone does not).
    #[serde(default)]
    pub claim_token_sha256: Option<String>,
    /// Records written before browser desktops existed are Chrome Remote Desktop seats.
    #[serde(default)]
    pub desktop: DesktopKind,
    /// When the participant's desktop first answered (the browser stream delivered, or
    /// the agent reported its Chrome Remote Desktop host started).
    #[serde(default)]
    pub desktop_ready_at: Option<DateTime<Utc>>,
}

impl Assignment {
    /// What `/vm_startup` hands the VM: the Chrome Remote Desktop command, or nothing for
    /// a browser seat (the agent learns that from `desktop`).
    pub fn startup_command(&self) -> String {
        match self.desktop {
            DesktopKind::Crd => self.crd_command(),
            DesktopKind::Browser => String::new(),
        }
    }

    /// The command handed to the VM: the canonical Chrome Remote Desktop invocation with
    /// only the validated code in it. Upstream 0.1.2 clients parse `--code` out of this.
    pub fn crd_command(&self) -> String {
        format!(
            "DISPLAY= /opt/google/chrome-remote-desktop/start-host --code=\"{}\" \
             --redirect-url=\"https://remotedesktop.google.com/_/oauthredirect\" --name=$(hostname)",
            self.crd_code
        )
    }
}

/// One measured startup phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub terraform_apply: Phase,
    pub cloud_init: Phase,
    pub container: Phase,
}

impl Timings {
    /// Sum of the three phase durations; a phase not measured counts as zero.
    pub fn total_seconds(&self) -> f64 {
        [&self.terraform_apply, &self.cloud_init, &self.container]
            .iter()
            .filter_map(|p| p.duration_seconds)
            .sum()
    }

    pub fn any_measured(&self) -> bool {
        [&self.terraform_apply, &self.cloud_init, &self.container]
            .iter()
            .any(|p| p.duration_seconds.is_some())
    }
}

/// Startup timings a VM reports about itself (`POST /api/vm-metrics/<hostname>`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsReport {
    pub cloud_init_start: Option<DateTime<Utc>>,
    pub cloud_init_end: Option<DateTime<Utc>>,
    pub cloud_init_duration_seconds: Option<f64>,
    pub container_start: Option<DateTime<Utc>>,
    pub container_end: Option<DateTime<Utc>>,
    pub container_startup_duration_seconds: Option<f64>,
}

impl MetricsReport {
    pub fn is_empty(&self) -> bool {
        *self == MetricsReport::default()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    pub hostname: String,
    pub status: Option<VmStatus>,
    pub health: Option<Health>,
    pub in_use: bool,
    pub assignment: Option<Assignment>,
    #[serde(default)]
    pub timings: Timings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub reboot_count: u32,
    #[serde(default)]
    pub last_reboot_time: Option<DateTime<Utc>>,
    /// A destroy of this VM is under way: it is not handed out any more.
    #[serde(default)]
    pub destroying: bool,
    /// When the status last changed (staleness is measured from here, not from creation).
    #[serde(default)]
    pub status_since: Option<DateTime<Utc>>,
    /// Since when the running VM's agent has been silent past the staleness limit: it is
    /// not handed out, and auto-reboot takes it. Cleared once the agent is heard again.
    #[serde(default)]
    pub unresponsive_since: Option<DateTime<Utc>>,
    /// The agent's last sign of life as of the last liveness change (the live figure is in
    /// memory; this one survives a restart and is what a silent VM shows).
    #[serde(default)]
    pub last_seen: Option<DateTime<Utc>>,
    /// The boot id the agent last reported in a heartbeat; a new one means the VM rebooted.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Reboots noticed through a changed boot id (whoever caused them).
    #[serde(default)]
    pub reboots_observed: u32,
    /// The seat was released: the agent must stop the desktop and move the participant's
    /// files aside before the VM is handed out again.
    #[serde(default)]
    pub reset_pending: bool,
    /// Resets asked for so far: the agent names the one it did, so a late answer about an
    /// earlier one cannot clear (or repeat) a later one.
    #[serde(default)]
    pub resets: u32,
    /// The participant's files are being rescued: the agent packs and uploads them, and
    /// the reset waits until it has (or the deadline passed).
    #[serde(default)]
    pub rescue: Option<PendingRescue>,
}

/// The limits of automatic reboots (upstream: 3 attempts, 5 min apart; initializing for
/// 15 min or rebooting for 10 min counts as failed).
#[derive(Clone, Copy, Debug)]
pub struct RebootPolicy {
    pub max_attempts: u32,
    pub cooldown: chrono::Duration,
    pub initializing_stale: chrono::Duration,
    pub rebooting_stale: chrono::Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebootDecision {
    Leave,
    Reboot(&'static str),
    /// Out of attempts and still failing: free its participant to take another VM.
    ReleaseParticipant,
    /// Running well for longer than the cooldown since its last reboot: attempts start over.
    ResetAttempts,
}

/// The reboot reason of a VM whose agent went silent.
pub const UNRESPONSIVE: &str = "agent unresponsive";

/// Why a VM could not be assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAvailable {
    NotRunning,
    AlreadyAssigned,
    Unhealthy,
    Destroying,
    Unresponsive,
    ResetPending,
}

impl Vm {
    /// A VM row as first created by a report from the VM (or a timing upsert).
    pub fn new(hostname: &str, now: DateTime<Utc>) -> Vm {
        Vm {
            hostname: hostname.to_owned(),
            status: None,
            health: None,
            in_use: false,
            assignment: None,
            timings: Timings::default(),
            created_at: now,
            updated_at: now,
            reboot_count: 0,
            last_reboot_time: None,
            destroying: false,
            status_since: None,
            unresponsive_since: None,
            last_seen: None,
            boot_id: None,
            reboots_observed: 0,
            reset_pending: false,
            resets: 0,
            rescue: None,
        }
    }

    /// The one availability rule: running, unassigned, not reporting an unhealthy GPU, its
    /// agent not silent, and the last participant's desktop reset. (The claim also asks
    /// whether the agent is alive at that moment: that lives in memory, not here.)
    pub fn availability(&self) -> Result<(), NotAvailable> {
        if self.destroying {
            Err(NotAvailable::Destroying)
        } else if self.status != Some(VmStatus::Running) {
            Err(NotAvailable::NotRunning)
        } else if self.assignment.is_some() {
            Err(NotAvailable::AlreadyAssigned)
        } else if self.health == Some(Health::Unhealthy) {
            Err(NotAvailable::Unhealthy)
        } else if self.unresponsive_since.is_some() {
            Err(NotAvailable::Unresponsive)
        } else if self.reset_pending {
            Err(NotAvailable::ResetPending)
        } else {
            Ok(())
        }
    }

    pub fn is_available(&self) -> bool {
        self.availability().is_ok()
    }

    /// Ordering key for the deterministic pick: the number after the last `-vm-`
    /// (or the trailing digits), then the name. Hosts without a number sort last.
    pub fn pick_order(hostname: &str) -> u64 {
        let digits: String = hostname
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits.parse().unwrap_or(u64::MAX)
    }

    /// Status report: the last writer wins (upstream does not enforce transitions).
    pub fn with_status(mut self, status: VmStatus, now: DateTime<Utc>) -> Vm {
        if self.status != Some(status) || self.status_since.is_none() {
            self.status_since = Some(now);
            // Only a running VM is watched for silence; a new status starts afresh.
            self.unresponsive_since = None;
        }
        self.status = Some(status);
        self.updated_at = now;
        self
    }

    /// The agent has been silent since `last_seen`: a running VM is marked unresponsive
    /// (other statuses have their own staleness rules). An agent without heartbeats (the
    /// 0.1.2 client) falls silent by nature once it has its participant: no evidence then.
    pub fn gone_silent(
        mut self,
        last_seen: DateTime<Utc>,
        heartbeats: bool,
        now: DateTime<Utc>,
    ) -> Vm {
        let evidence = heartbeats || self.assignment.is_none();
        if evidence && self.status == Some(VmStatus::Running) && self.unresponsive_since.is_none() {
            self.unresponsive_since = Some(now);
            self.last_seen = Some(last_seen);
            self.updated_at = now;
        }
        self
    }

    /// The agent was heard again.
    pub fn heard_again(mut self, now: DateTime<Utc>) -> Vm {
        if self.unresponsive_since.is_some() {
            self.unresponsive_since = None;
            self.last_seen = Some(now);
            self.updated_at = now;
        }
        self
    }

    /// A heartbeat's boot id. A different one than before is a reboot, whoever did it.
    pub fn with_boot_id(mut self, boot_id: &str, now: DateTime<Utc>) -> Vm {
        match self.boot_id.as_deref() {
            Some(known) if known == boot_id => return self,
            Some(_) => {
                self.reboots_observed += 1;
                self.last_reboot_time = Some(now);
            }
            None => {}
        }
        self.boot_id = Some(boot_id.to_owned());
        self.updated_at = now;
        self
    }

    /// The participant leaves this VM (released by the admin, moved, or re-seated): their
    /// desktop must be reset before anyone else gets it.
    pub fn vacated(mut self, now: DateTime<Utc>) -> Vm {
        if self.assignment.take().is_some() {
            self.reset_pending = true;
            self.resets += 1;
            self.in_use = false;
            self.updated_at = now;
        }
        self
    }

    /// The agent is asked to rescue the participant's files (`None`: that rescue ended).
    pub fn with_rescue(mut self, rescue: Option<PendingRescue>, now: DateTime<Utc>) -> Vm {
        self.rescue = rescue;
        self.updated_at = now;
        self
    }

    /// The reset the agent is asked for: only once no rescue of the files is pending, so
    /// they are packed before the reset moves them aside.
    pub fn reset_requested(&self) -> bool {
        self.reset_pending && self.assignment.is_none() && self.rescue.is_none()
    }

    /// The agent stopped the desktop and moved the last participant's files aside, for
    /// reset number `id` (any, when it does not say).
    pub fn reset_done(mut self, id: Option<u32>, now: DateTime<Utc>) -> Vm {
        if self.reset_pending && self.assignment.is_none() && id.is_none_or(|id| id == self.resets)
        {
            self.reset_pending = false;
            self.updated_at = now;
        }
        self
    }

    /// The admin's "clear": an unhealthy GPU report is taken back (the next report
    /// decides again), and a pending reset is waived when the agent cannot do it (0.1.2
    /// clients, which send no heartbeats: `can_reset` false). An agent that can is left
    /// to do it: waived, it would never learn its participant left.
    pub fn cleared(mut self, can_reset: bool, now: DateTime<Utc>) -> Vm {
        if self.health == Some(Health::Unhealthy) {
            self.health = None;
        }
        if self.assignment.is_none() && !can_reset {
            self.reset_pending = false;
        }
        self.updated_at = now;
        self
    }

    /// Why this VM counts as failed, if it does.
    fn failure(&self, now: DateTime<Utc>, policy: &RebootPolicy) -> Option<&'static str> {
        let older_than = |t: Option<DateTime<Utc>>, limit| t.is_some_and(|t| now - t > limit);
        // Its participant's software was running at the last report: the desktop may well
        // outlive its agent; the participant decides (their page offers another seat).
        if self.unresponsive_since.is_some()
            && self.status == Some(VmStatus::Running)
            && !self.in_use
        {
            return Some(UNRESPONSIVE);
        }
        match self.status {
            Some(VmStatus::Error) => Some("status error"),
            Some(VmStatus::Initializing)
                if older_than(self.status_since, policy.initializing_stale) =>
            {
                Some("stuck initializing")
            }
            Some(VmStatus::Rebooting)
                if older_than(self.last_reboot_time, policy.rebooting_stale) =>
            {
                Some("did not come back from a reboot")
            }
            // A participant at work keeps their VM even with a failing GPU.
            Some(VmStatus::Running | VmStatus::Initializing | VmStatus::Unknown) | None
                if self.health == Some(Health::Unhealthy) && !self.in_use =>
            {
                Some("GPU unhealthy")
            }
            _ => None,
        }
    }

    /// What the auto-reboot service should do with this VM now.
    pub fn reboot_decision(&self, now: DateTime<Utc>, policy: &RebootPolicy) -> RebootDecision {
        if self.destroying {
            return RebootDecision::Leave;
        }
        let Some(reason) = self.failure(now, policy) else {
            let older_than =
                |t: Option<DateTime<Utc>>| t.is_some_and(|t| now - t > policy.cooldown);
            let settled = self.status == Some(VmStatus::Running)
                && older_than(self.status_since)
                && older_than(self.last_reboot_time);
            return if self.reboot_count > 0 && settled {
                RebootDecision::ResetAttempts
            } else {
                RebootDecision::Leave
            };
        };
        if self.reboot_count >= policy.max_attempts {
            return if self.assignment.is_some() {
                RebootDecision::ReleaseParticipant
            } else {
                RebootDecision::Leave
            };
        }
        if self
            .last_reboot_time
            .is_some_and(|t| now - t < policy.cooldown)
        {
            return RebootDecision::Leave;
        }
        RebootDecision::Reboot(reason)
    }

    /// A reboot was started.
    pub fn rebooted(mut self, now: DateTime<Utc>) -> Vm {
        self = self.with_status(VmStatus::Rebooting, now);
        self.reboot_count += 1;
        self.last_reboot_time = Some(now);
        self
    }

    /// The participant's desktop (of `kind`) answered: recorded once per assignment. The
    /// seconds since the claim come back the first time only.
    pub fn desktop_ready(mut self, kind: DesktopKind, now: DateTime<Utc>) -> (Vm, Option<f64>) {
        let Some(a) = self.assignment.as_mut() else {
            return (self, None);
        };
        if a.desktop != kind || a.desktop_ready_at.is_some() {
            return (self, None);
        }
        a.desktop_ready_at = Some(now);
        let seconds = (now - a.assigned_at).num_milliseconds().max(0) as f64 / 1000.0;
        self.updated_at = now;
        (self, Some(seconds))
    }

    pub fn with_health(mut self, health: Health, now: DateTime<Utc>) -> Vm {
        self.health = Some(health);
        self.updated_at = now;
        self
    }

    /// Marks (or unmarks) the VM as being destroyed.
    pub fn with_destroying(mut self, destroying: bool, now: DateTime<Utc>) -> Vm {
        self.destroying = destroying;
        self.updated_at = now;
        self
    }

    pub fn with_in_use(mut self, in_use: bool, now: DateTime<Utc>) -> Vm {
        self.in_use = in_use;
        self.updated_at = now;
        self
    }

    /// Hands the VM to a participant. Refused unless the VM is available.
    pub fn assign(mut self, assignment: Assignment) -> Result<Vm, NotAvailable> {
        self.availability()?;
        self.updated_at = assignment.assigned_at;
        self.in_use = false;
        self.assignment = Some(assignment);
        Ok(self)
    }

    /// The participant came back with a fresh Chrome Remote Desktop code for the VM they
    /// already hold (codes are single-use); the PIN stays the same.
    pub fn with_rotated_code(mut self, crd_code: &str, now: DateTime<Utc>) -> Vm {
        if let Some(a) = self.assignment.as_mut() {
            a.crd_code = crd_code.to_owned();
            self.updated_at = now;
        }
        self
    }

    /// Applies the fields present in a metrics report. An empty report changes nothing.
    pub fn with_metrics(mut self, report: &MetricsReport, now: DateTime<Utc>) -> Vm {
        if report.is_empty() {
            return self;
        }
        let ci = &mut self.timings.cloud_init;
        ci.start = report.cloud_init_start.or(ci.start);
        ci.end = report.cloud_init_end.or(ci.end);
        ci.duration_seconds = report.cloud_init_duration_seconds.or(ci.duration_seconds);
        let c = &mut self.timings.container;
        c.start = report.container_start.or(c.start);
        c.end = report.container_end.or(c.end);
        c.duration_seconds = report
            .container_startup_duration_seconds
            .or(c.duration_seconds);
        self.updated_at = now;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A fixed instant plus `secs`: the clock of every model test.
    pub(super) fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .expect("valid time")
    }

    fn assignment(email: &str) -> Assignment {
        Assignment {
            email: email.into(),
            crd_code: "4/0Abc".into(),
            pin: "123987".into(),
            assigned_at: t(10),
            claim_token_sha256: None,
            desktop: DesktopKind::Crd,
            desktop_ready_at: None,
        }
    }

    #[test]
    fn a_new_vm_has_no_status_and_is_not_available() {
        let vm = Vm::new("sleap-vm-1", t(0));
        assert_eq!(vm.status, None);
        assert_eq!(vm.availability(), Err(NotAvailable::NotRunning));
    }

    #[test]
    fn status_parse_accepts_exactly_the_five_values() {
        for s in VmStatus::ALL {
            assert_eq!(VmStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(VmStatus::parse("Running"), None);
        assert_eq!(VmStatus::parse("ready"), None);
        assert_eq!(VmStatus::parse(""), None);
    }

    #[test]
    fn running_unassigned_vm_is_available_until_assigned() {
        let vm = Vm::new("vm-1", t(0)).with_status(VmStatus::Running, t(1));
        assert!(vm.is_available());
        let vm = vm.assign(assignment("a@example.org")).expect("available");
        assert_eq!(vm.availability(), Err(NotAvailable::AlreadyAssigned));
        assert_eq!(vm.updated_at, t(10));
        assert!(!vm.in_use);
    }

    #[test]
    fn assigning_an_unavailable_vm_is_refused_and_changes_nothing() {
        let vm = Vm::new("vm-1", t(0)).with_status(VmStatus::Initializing, t(1));
        assert_eq!(
            vm.clone().assign(assignment("a@example.org")),
            Err(NotAvailable::NotRunning)
        );
        let taken = vm
            .with_status(VmStatus::Running, t(2))
            .assign(assignment("a@example.org"))
            .expect("available");
        assert_eq!(
            taken.assign(assignment("b@example.org")),
            Err(NotAvailable::AlreadyAssigned)
        );
    }

    #[test]
    fn unhealthy_gpu_makes_a_running_vm_unavailable_and_recovery_restores_it() {
        let vm = Vm::new("vm-1", t(0))
            .with_status(VmStatus::Running, t(1))
            .with_health(Health::Unhealthy, t(2));
        assert_eq!(vm.availability(), Err(NotAvailable::Unhealthy));
        let vm = vm.with_health(Health::Healthy, t(3));
        assert!(vm.is_available());
        let vm = vm.with_health(Health::NotAvailable, t(4));
        assert!(vm.is_available(), "N/A (no GPU tooling) does not block");
    }

    #[test]
    fn a_vm_being_destroyed_is_not_available() {
        let vm = Vm::new("vm-1", t(0)).with_status(VmStatus::Running, t(1));
        let vm = vm.with_destroying(true, t(2));
        assert_eq!(vm.availability(), Err(NotAvailable::Destroying));
        assert!(vm.with_destroying(false, t(3)).is_available());
    }

    fn policy() -> RebootPolicy {
        RebootPolicy {
            max_attempts: 3,
            cooldown: chrono::Duration::seconds(300),
            initializing_stale: chrono::Duration::seconds(900),
            rebooting_stale: chrono::Duration::seconds(600),
        }
    }

    #[test]
    fn failed_vms_are_rebooted_within_the_limits() {
        let p = policy();
        let healthy = Vm::new("vm-1", t(0)).with_status(VmStatus::Running, t(1));
        assert_eq!(
            healthy.reboot_decision(t(10_000), &p),
            RebootDecision::Leave
        );
        let failed = healthy.clone().with_status(VmStatus::Error, t(2));
        assert_eq!(
            failed.reboot_decision(t(3), &p),
            RebootDecision::Reboot("status error")
        );
        let rebooting = failed.rebooted(t(3));
        assert_eq!(rebooting.reboot_count, 1);
        // Back to initializing after the reboot: stale only 15 min after that status began.
        let init = rebooting.with_status(VmStatus::Initializing, t(100));
        assert_eq!(init.reboot_decision(t(900), &p), RebootDecision::Leave);
        assert_eq!(
            init.reboot_decision(t(1_001), &p),
            RebootDecision::Reboot("stuck initializing")
        );
        // Cooldown: not again within 5 min of the last reboot.
        let again = init.clone().with_status(VmStatus::Error, t(200));
        assert_eq!(again.reboot_decision(t(250), &p), RebootDecision::Leave);
        assert_eq!(
            again.reboot_decision(t(400), &p),
            RebootDecision::Reboot("status error")
        );
    }

    #[test]
    fn a_silent_agent_is_rebooted_unless_its_participant_is_at_work() {
        let p = policy();
        let vm = Vm::new("vm-1", t(0))
            .with_status(VmStatus::Running, t(1))
            .gone_silent(t(1), true, t(50));
        assert_eq!(vm.availability(), Err(NotAvailable::Unresponsive));
        assert_eq!(
            vm.reboot_decision(t(51), &p),
            RebootDecision::Reboot(UNRESPONSIVE)
        );
        let busy = vm.clone().with_in_use(true, t(52));
        assert_eq!(busy.reboot_decision(t(53), &p), RebootDecision::Leave);
        let back = vm.heard_again(t(60));
        assert!(back.is_available());
        // A 0.1.2 client holding a participant: silence is no evidence.
        let legacy = Vm::new("vm-2", t(0))
            .with_status(VmStatus::Running, t(1))
            .assign(assignment("a@example.org"))
            .expect("available")
            .gone_silent(t(1), false, t(50));
        assert_eq!(legacy.unresponsive_since, None);
    }

    #[test]
    fn a_released_seat_waits_for_its_numbered_reset() {
        let vm = Vm::new("vm-1", t(0))
            .with_status(VmStatus::Running, t(1))
            .assign(assignment("a@example.org"))
            .expect("available")
            .vacated(t(20));
        assert_eq!(vm.availability(), Err(NotAvailable::ResetPending));
        assert_eq!(vm.resets, 1);
        assert_eq!(
            vm.clone().reset_done(Some(0), t(21)),
            vm.clone(),
            "an older reset"
        );
        assert!(vm.clone().reset_done(Some(1), t(21)).is_available());
        assert!(
            !vm.clone().cleared(true, t(22)).is_available(),
            "its agent can reset"
        );
        assert!(
            vm.cleared(false, t(22)).is_available(),
            "a 0.1.2 client cannot"
        );
    }

    #[test]
    fn attempts_start_over_after_a_good_spell() {
        let p = policy();
        let vm = Vm::new("vm-1", t(0))
            .with_status(VmStatus::Error, t(1))
            .rebooted(t(2))
            .with_status(VmStatus::Running, t(100));
        assert_eq!(vm.reboot_decision(t(200), &p), RebootDecision::Leave);
        assert_eq!(
            vm.reboot_decision(t(500), &p),
            RebootDecision::ResetAttempts
        );
    }

    #[test]
    fn a_vm_out_of_attempts_releases_its_participant() {
        let p = policy();
        let mut vm = Vm::new("vm-1", t(0)).with_status(VmStatus::Running, t(1));
        vm = vm.assign(assignment("a@example.org")).expect("available");
        for i in 0..3 {
            vm = vm
                .with_status(VmStatus::Error, t(1000 * i + 10))
                .rebooted(t(1000 * i + 11));
        }
        let vm = vm.with_status(VmStatus::Error, t(5000));
        assert_eq!(
            vm.reboot_decision(t(9000), &p),
            RebootDecision::ReleaseParticipant
        );
        let mut unassigned = vm.clone();
        unassigned.assignment = None;
        assert_eq!(
            unassigned.reboot_decision(t(9000), &p),
            RebootDecision::Leave
        );
    }

    #[test]
    fn an_unhealthy_gpu_in_use_is_left_alone() {
        let p = policy();
        let vm = Vm::new("vm-1", t(0))
            .with_status(VmStatus::Running, t(1))
            .with_health(Health::Unhealthy, t(2));
        assert_eq!(
            vm.reboot_decision(t(3), &p),
            RebootDecision::Reboot("GPU unhealthy")
        );
        let busy = vm.with_in_use(true, t(4));
        assert_eq!(busy.reboot_decision(t(5), &p), RebootDecision::Leave);
        let stale_reboot = Vm::new("vm-2", t(0)).rebooted(t(0));
        assert_eq!(
            stale_reboot.reboot_decision(t(601), &p),
            RebootDecision::Reboot("did not come back from a reboot")
        );
    }

    #[test]
    fn health_round_trips_through_its_string_form() {
        for s in ["Healthy", "Unhealthy", "N/A", "Degraded"] {
            let h = Health::from(s.to_owned());
            assert_eq!(h.as_str(), s);
            let json = serde_json::to_string(&h).expect("encode");
            assert_eq!(json, format!("\"{s}\""));
        }
    }

    #[test]
    fn status_changes_keep_the_assignment() {
        let vm = Vm::new("vm-1", t(0))
            .with_status(VmStatus::Running, t(1))
            .assign(assignment("a@example.org"))
            .expect("available")
            .with_status(VmStatus::Rebooting, t(20));
        assert!(vm.assignment.is_some());
        assert_eq!(vm.status, Some(VmStatus::Rebooting));
    }

    #[test]
    fn rotating_the_code_keeps_the_pin() {
        let vm = Vm::new("vm-1", t(0))
            .with_status(VmStatus::Running, t(1))
            .assign(assignment("a@example.org"))
            .expect("available")
            .with_rotated_code("4/0New", t(30));
        let a = vm.assignment.expect("assigned");
        assert_eq!(a.crd_code, "4/0New");
        assert_eq!(a.pin, "123987");
    }

    #[test]
    fn crd_command_contains_only_the_code() {
        let cmd = assignment("a@example.org").crd_command();
        assert!(cmd.contains("--code=\"4/0Abc\""));
        assert!(cmd.starts_with("DISPLAY= /opt/google/chrome-remote-desktop/start-host"));
    }

    #[test]
    fn pick_order_uses_the_trailing_number() {
        assert_eq!(Vm::pick_order("sleap-lablink-client-prod-vm-12"), 12);
        assert_eq!(Vm::pick_order("vm-2"), 2);
        assert_eq!(Vm::pick_order("workstation"), u64::MAX);
        assert!(Vm::pick_order("vm-2") < Vm::pick_order("vm-10"));
    }

    #[test]
    fn metrics_merge_and_total() {
        let vm = Vm::new("vm-1", t(0));
        let vm = vm.with_metrics(
            &MetricsReport {
                cloud_init_duration_seconds: Some(60.0),
                cloud_init_start: Some(t(0)),
                ..Default::default()
            },
            t(60),
        );
        let vm = vm.with_metrics(
            &MetricsReport {
                container_startup_duration_seconds: Some(30.5),
                ..Default::default()
            },
            t(90),
        );
        assert_eq!(vm.timings.cloud_init.start, Some(t(0)));
        assert_eq!(vm.timings.total_seconds(), 90.5);
        let unchanged = vm.clone().with_metrics(&MetricsReport::default(), t(100));
        assert_eq!(unchanged, vm);
    }
}
