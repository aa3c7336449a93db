//! What a rehearsal found, and its verdict.

use std::collections::BTreeMap;
use std::time::Duration;

/// A claim slower than this at the 99th percentile fails the rehearsal.
const CLAIM_P99_LIMIT: Duration = Duration::from_secs(2);
/// An assigned agent woken later than this after its participant's claim fails it.
pub const WAKE_LIMIT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Report {
    pub agents: usize,
    pub participants: usize,
    pub claim_latency: Vec<Duration>,
    pub wake_latency: Vec<Duration>,
    pub assigned: usize,
    pub refused_no_vm: usize,
    pub errors: BTreeMap<String, usize>,
    pub double_assignments: Vec<String>,
    pub parked_peak: usize,
    pub claim_phase: Duration,
    pub registered: usize,
    pub heartbeats: u64,
    pub heartbeat_every: Duration,
    /// The allocator's own interval, when the agents were told to beat at another one.
    pub heartbeat_asked: Option<Duration>,
    pub faults: Option<Faults>,
}

/// What the faults did, when any were asked for.
#[derive(Default)]
pub struct Faults {
    pub stale_after: Duration,
    /// Before the participants arrived.
    pub died_before: usize,
    pub froze_before: usize,
    /// From each failure to `GET /api/vms` showing it unresponsive.
    pub detected: Vec<Duration>,
    pub undetected: Vec<String>,
    /// After the claims, among the assigned VMs.
    pub died_after: usize,
    pub froze_after: usize,
    /// From each failure to its participant's re-seat answer.
    pub reseat: Vec<Duration>,
    pub not_reseated: Vec<String>,
    /// Claims answered with a VM whose agent had already died or frozen.
    pub dead_handed_out: Vec<String>,
}

impl Report {
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Participants who should have been given a VM at the claims.
    fn expected(&self) -> usize {
        let failed = self
            .faults
            .as_ref()
            .map_or(0, |f| f.died_before + f.froze_before);
        self.agents.saturating_sub(failed).min(self.participants)
    }
}

pub fn quantile(samples: &mut [Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    Some(samples[i])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "—".into(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0),
    )
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn print_faults(f: &mut Faults, failures: &mut Vec<String>) {
    let d50 = quantile(&mut f.detected, 0.5);
    let d99 = quantile(&mut f.detected, 0.99);
    println!(
        "  faults before claims   {} died, {} froze; shown unresponsive after p50 {}   p99 {}   (limit {} s)",
        f.died_before,
        f.froze_before,
        secs(d50),
        secs(d99),
        f.stale_after.as_secs()
    );
    for host in &f.undetected {
        println!("    {host} never shown unresponsive");
    }
    println!("  handed a dead VM       {}", f.dead_handed_out.len());
    for d in &f.dead_handed_out {
        println!("    {d}");
    }
    let r50 = quantile(&mut f.reseat, 0.5);
    let r99 = quantile(&mut f.reseat, 0.99);
    let failed_after = f.died_after + f.froze_after;
    println!(
        "  faults after claims    {} died, {} froze (assigned VMs)",
        f.died_after, f.froze_after
    );
    println!(
        "  re-seated              {} of {failed_after}; failure → new VM p50 {}   p99 {}",
        f.reseat.len(),
        secs(r50),
        secs(r99)
    );
    for n in &f.not_reseated {
        println!("    {n}");
    }
    if !f.undetected.is_empty() {
        failures.push(format!(
            "{} failed VMs never shown unresponsive",
            f.undetected.len()
        ));
    }
    if !f.dead_handed_out.is_empty() {
        failures.push(format!(
            "{} participants handed a dead VM",
            f.dead_handed_out.len()
        ));
    }
    if f.reseat.len() < failed_after {
        failures.push(format!(
            "{} of {failed_after} participants whose VM failed were not re-seated",
            failed_after - f.reseat.len()
        ));
    }
}

/// Prints the report; true for PASS.
pub fn print(r: &mut Report, base: &str) -> bool {
    let (agents, participants) = (r.agents, r.participants);
    let expected = r.expected();
    let claims_per_s = participants as f64 / r.claim_phase.as_secs_f64().max(1e-6);
    let p50 = quantile(&mut r.claim_latency, 0.5);
    let p99 = quantile(&mut r.claim_latency, 0.99);
    let w50 = quantile(&mut r.wake_latency, 0.5);
    let w99 = quantile(&mut r.wake_latency, 0.99);
    println!("LabLink rehearsal against {base}: {agents} VMs, {participants} participants");
    println!("  VMs registered         {} of {agents}", r.registered);
    println!(
        "  heartbeats             {} sent, every {} s{}",
        r.heartbeats,
        r.heartbeat_every.as_secs(),
        r.heartbeat_asked.map_or(String::new(), |a| format!(
            " (the allocator asks every {} s)",
            a.as_secs()
        ))
    );
    println!(
        "  long-polls held        {} at the first claim",
        r.parked_peak
    );
    println!(
        "  claims                 {} assigned, {} refused (no free VM), {:.0} claims/s over {:.2} s",
        r.assigned,
        r.refused_no_vm,
        claims_per_s,
        r.claim_phase.as_secs_f64()
    );
    println!("  claim latency          p50 {}   p99 {}", ms(p50), ms(p99));
    println!("  claim → agent woken    p50 {}   p99 {}", ms(w50), ms(w99));
    let mut failures = Vec::new();
    if let Some(f) = &mut r.faults {
        print_faults(f, &mut failures);
    }
    let error_total: usize = r.errors.values().sum();
    println!("  errors                 {error_total}");
    for (kind, n) in &r.errors {
        println!("    {n:>6}  {kind}");
    }
    println!("  double assignments     {}", r.double_assignments.len());
    for d in &r.double_assignments {
        println!("    {d}");
    }
    if r.registered < agents {
        failures.push(format!("only {} of {agents} VMs registered", r.registered));
    }
    if r.assigned < expected {
        failures.push(format!(
            "{} of {expected} participants got a VM",
            r.assigned
        ));
    }
    if error_total > 0 {
        failures.push(format!("{error_total} errors"));
    }
    if !r.double_assignments.is_empty() {
        failures.push("a VM went to more than one participant".into());
    }
    if p99.is_some_and(|p| p > CLAIM_P99_LIMIT) {
        failures.push(format!("p99 claim latency over {CLAIM_P99_LIMIT:?}"));
    }
    if w99.is_some_and(|w| w > WAKE_LIMIT) {
        failures.push(format!("p99 wake-up over {WAKE_LIMIT:?}"));
    }
    if failures.is_empty() {
        println!("verdict: PASS for a workshop of {expected} participants");
        true
    } else {
        println!(
            "verdict: FAIL for a workshop of {expected} participants: {}",
            failures.join("; ")
        );
        false
    }
}
