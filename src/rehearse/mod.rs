//! `lablink rehearse URL`: a workshop against a running allocator before the day. K
//! simulated agents register, send heartbeats and wait on `/vm_startup`, M simulated
//! participants claim at once, and the report says how fast claims were answered, how fast
//! the waiting agents were woken, what failed and how, whether any VM went to two people,
//! and whether the allocator passes for a workshop of that size. With `--die-share` and
//! `--freeze-share`, agents fail before the participants arrive (none of their VMs may be
//! handed out) and after the claims (their participants must get a new VM from the same
//! browser). Bounded in count and time.

mod agent;
mod event;
mod faults;
mod participant;
mod report;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::exit::CliError;
use agent::{Agent, Fault, Fleet};
use faults::{AdminApi, Shares};
use participant::{Browser, Claimed};
use report::Report;

const MAX_AGENTS: usize = 5_000;
const MAX_PARTICIPANTS: usize = 20_000;
/// The heartbeat interval when neither the flag nor the allocator names one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Beyond the staleness limit, how long a failed VM may take to be shown unresponsive.
const DETECTION_GRACE: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct RehearseArgs {
    /// Base URL of the allocator, e.g. http://127.0.0.1:5000.
    pub url: String,
    /// Simulated VMs (agents that register, send heartbeats and wait for a participant).
    #[arg(long, default_value_t = 40)]
    pub agents: usize,
    /// Simulated participants claiming at once (default: as many as agents; with faults,
    /// as many as leave a spare VM for each participant whose VM fails after the claims).
    #[arg(long)]
    pub participants: Option<usize>,
    /// Most claims in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// The whole rehearsal ends after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// The admin's sign-in: the simulated VMs' credentials are minted through the API.
    #[command(flatten)]
    pub login: crate::commands::remote::Login,
    /// Allow a target that is not this machine.
    #[arg(long)]
    pub i_own_this_host: bool,
    /// The workshop's join code, when `access.join_code` is set.
    #[arg(long)]
    pub join_code: Option<String>,
    /// Domain of the simulated participants' addresses (one `access.allowed_emails` admits).
    #[arg(long, default_value = "example.org")]
    pub email_domain: String,
    /// Share of the agents (0 to 0.9) that die (stop entirely) before the participants
    /// arrive, and share of the assigned VMs that die after the claims.
    #[arg(long, default_value_t = 0.0)]
    pub die_share: f64,
    /// As --die-share, for agents that freeze (SIGSTOP: a parked long-poll stays open,
    /// nothing else happens).
    #[arg(long, default_value_t = 0.0)]
    pub freeze_share: f64,
    /// Agents send a heartbeat this often (default: the interval the allocator's heartbeat
    /// answer asks for).
    #[arg(long)]
    pub heartbeat_seconds: Option<u64>,
    /// Rehearse a whole event instead, on the allocator's own VMs (`lablink demo`, or a
    /// `local`/`terraform` provider): planned to start in 5 s and end `--seconds` later; `--participants` arrive over `--arrive-over` seconds; `--leave-share` leave
    /// early, `--die-share` of the seated VMs are destroyed mid-event; then the event's
    /// report.
    #[arg(long)]
    pub event: bool,
    /// With --event: seconds over which the participants arrive.
    #[arg(long, default_value_t = 30)]
    pub arrive_over: u64,
    /// With --event: share of the participants (0 to 0.9) who leave early.
    #[arg(long, default_value_t = 0.1)]
    pub leave_share: f64,
    /// With --event: spare VMs, in percent of the seats.
    #[arg(long, default_value_t = 10)]
    pub spare_percent: u32,
}

impl RehearseArgs {
    fn shares(&self) -> Shares {
        Shares {
            die: self.die_share,
            freeze: self.freeze_share,
        }
    }

    fn participants(&self) -> usize {
        let shares = self.shares();
        self.participants.unwrap_or_else(|| {
            if shares.any() {
                shares.participants_for(self.agents)
            } else {
                self.agents
            }
        })
    }
}

/// A FAIL verdict, printed in the report, exits 1.
pub fn run(args: RehearseArgs) -> Result<(), CliError> {
    let problems = check_args(&args);
    if !problems.is_empty() {
        return Err(CliError::Usage(problems.join("\n")).of("rehearse"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = if args.event {
        runtime.block_on(async {
            let base = args.url.trim_end_matches('/').to_owned();
            // The waitlist's answer is a redirect carrying the claim cookie: not followed.
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?;
            event::rehearse(args, http, base).await
        })
    } else {
        runtime.block_on(rehearse(args))
    };
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(CliError::Reported(1)),
        Err(e) => Err(CliError::Failed(format!("rehearse: {e}"))),
    }
}

fn check_args(args: &RehearseArgs) -> Vec<String> {
    if args.event {
        return check_event_args(args);
    }
    let mut problems = Vec::new();
    if !(1..=MAX_AGENTS).contains(&args.agents) {
        problems.push(format!("--agents: 1..={MAX_AGENTS}"));
    }
    let shares = args.shares();
    let share_problems = faults::check_shares(&shares);
    if share_problems.is_empty() && shares.any() && (1..=MAX_AGENTS).contains(&args.agents) {
        if shares.live_at_arrival(args.agents) == 0 {
            problems.push(format!(
                "--agents: {} leave no live VM once these faults hit",
                args.agents
            ));
        } else if args.participants.is_none() && shares.participants_for(args.agents) == 0 {
            problems.push(format!(
                "--agents: {} leave no spare VM for the participants whose VM fails; give more",
                args.agents
            ));
        }
    }
    // Without valid shares the default participant count means nothing yet.
    let sized = share_problems.is_empty() || args.participants.is_some();
    problems.extend(share_problems);
    if sized && !(1..=MAX_PARTICIPANTS).contains(&args.participants()) {
        problems.push(format!("--participants: 1..={MAX_PARTICIPANTS}"));
    }
    if !(1..=1_000).contains(&args.concurrency) {
        problems.push("--concurrency: 1..=1000".into());
    }
    if !(5..=3_600).contains(&args.seconds) {
        problems.push("--seconds: 5..=3600".into());
    }
    if args
        .heartbeat_seconds
        .is_some_and(|s| !(1..=300).contains(&s))
    {
        problems.push(
            "--heartbeat-seconds: 1..=300, as the allocator's server.heartbeat_seconds".into(),
        );
    }
    if !email_address::EmailAddress::is_valid(&format!("x@{}", args.email_domain)) {
        problems.push(format!(
            "--email-domain: `{}` is not a mail domain",
            args.email_domain
        ));
    }
    problems.extend(check_target(args));
    problems
}

/// With --event: the flags of an event rehearsal (and the target, as always).
fn check_event_args(args: &RehearseArgs) -> Vec<String> {
    let mut problems = Vec::new();
    let participants = args.participants.unwrap_or(args.agents);
    if !(1..=crate::model::MAX_SEATS as usize).contains(&participants) {
        problems.push(format!("--participants: 1..={}", crate::model::MAX_SEATS));
    }
    if !(90..=86_400).contains(&args.seconds) {
        problems.push("--seconds: 90..=86400 with --event (the event's length)".into());
    }
    if args.arrive_over >= args.seconds {
        problems.push("--arrive-over: shorter than --seconds".into());
    }
    for (flag, share) in [
        ("--leave-share", args.leave_share),
        ("--die-share", args.die_share),
    ] {
        if !(0.0..=0.9).contains(&share) {
            problems.push(format!("{flag}: 0 to 0.9"));
        }
    }
    if args.freeze_share > 0.0 {
        problems.push("--freeze-share: not with --event (its VMs are real agents)".into());
    }
    if args.spare_percent > 100 {
        problems.push("--spare-percent: 0 to 100".into());
    }
    problems.extend(check_target(args));
    problems
}

/// The URL: http(s), and this machine unless --i-own-this-host.
fn check_target(args: &RehearseArgs) -> Vec<String> {
    let mut problems = Vec::new();
    match reqwest::Url::parse(&args.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if !args.i_own_this_host && !is_loopback(&url) {
                problems.push(format!(
                    "{}: not this machine; a rehearsal is a load test, so pass --i-own-this-host \
                     only for an allocator you run",
                    args.url
                ));
            }
        }
        _ => problems.push(format!("{}: not an http:// or https:// URL", args.url)),
    }
    problems
}

/// Loopback by address or by the name `localhost`; other names need --i-own-this-host
/// (resolving them here could be steered by DNS).
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Credentials for the simulated VMs, minted by the allocator (the admin's API).
async fn mint_credentials(
    admin: &AdminApi,
    hosts: &[String],
) -> Result<HashMap<String, String>, String> {
    let minted = admin
        .mint(hosts)
        .await
        .map_err(|e| format!("the simulated VMs' credentials: {e}"))?;
    Ok(hosts.iter().cloned().zip(minted).collect())
}

/// Hosts in the order a claim picks them.
fn in_pick_order(mut hosts: Vec<String>) -> Vec<String> {
    hosts.sort_by_cached_key(|h| (crate::model::Vm::pick_order(h), h.clone()));
    hosts
}

/// Who was given which VM, with which code, when.
#[derive(Default)]
struct Ledger {
    /// hostname → the codes of every participant it was answered to.
    assigned_to: HashMap<String, Vec<String>>,
    /// hostname → (code, when the claim was sent) of its latest assignment.
    claimed_at: HashMap<String, (String, Instant)>,
    /// hostname → when its agent was made to fail.
    failed_at: HashMap<String, Instant>,
}

impl Ledger {
    /// A claim answered with `host`: recorded, and judged against the failures so far.
    fn assigned(&mut self, report: &mut Report, email: &str, host: &str, claimed: &Claimed) {
        self.assigned_to
            .entry(host.to_owned())
            .or_default()
            .push(claimed.code.clone());
        self.claimed_at
            .insert(host.to_owned(), (claimed.code.clone(), claimed.sent));
        if let (Some(failed), Some(f)) = (self.failed_at.get(host), report.faults.as_mut())
            && *failed < claimed.sent
        {
            f.dead_handed_out.push(format!(
                "{email} was given {host}, whose agent had failed {:.1} s before the claim",
                claimed.sent.duration_since(*failed).as_secs_f64()
            ));
        }
    }
}

/// Makes each of `victims` fail now; returns when.
fn strike(
    victims: &[(String, Fault)],
    controls: &HashMap<String, watch::Sender<Fault>>,
    ledger: &mut Ledger,
) -> HashMap<String, Instant> {
    let mut struck = HashMap::new();
    for (host, fault) in victims {
        if let Some(control) = controls.get(host) {
            let _ = control.send(*fault);
            let at = Instant::now();
            ledger.failed_at.insert(host.clone(), at);
            struck.insert(host.clone(), at);
        }
    }
    struck
}

fn count(victims: &[(String, Fault)], kind: Fault) -> usize {
    victims.iter().filter(|(_, f)| *f == kind).count()
}

async fn rehearse(args: RehearseArgs) -> Result<bool, String> {
    let participants = args.participants();
    let shares = args.shares();
    let base = args.url.trim_end_matches('/').to_owned();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(args.agents))
        .timeout(Duration::from_secs(args.seconds))
        .build()
        .map_err(|e| e.to_string())?;
    let run = format!("{:x}", rand::random::<u32>());
    let mut report = Report {
        agents: args.agents,
        participants,
        ..Report::default()
    };

    let health = http
        .get(format!("{base}/health"))
        .send()
        .await
        .map_err(|e| format!("{base} does not answer: {e}"))?;
    if !health.status().is_success() {
        return Err(format!("{base}/health answered {}", health.status()));
    }
    let admin = AdminApi::new(&http, &base, &args.login)?;

    // Agents: minted credentials, registered as running, heartbeating, waiting.
    let hosts: Vec<String> = (1..=args.agents)
        .map(|n| format!("rehearsal-{run}-vm-{n}"))
        .collect();
    if shares.any() {
        let (_, stale) = admin.unresponsive().await?;
        let needed = 2 * (stale + DETECTION_GRACE)
            + args.heartbeat_seconds.map_or(stale, Duration::from_secs);
        if deadline.saturating_duration_since(Instant::now()) < needed {
            return Err(format!(
                "--seconds {}: too short for faults; the allocator shows a silent VM unresponsive \
                 after {} s and the rehearsal waits for that twice: give --seconds {} or more",
                args.seconds,
                stale.as_secs(),
                needed.as_secs() + 5
            ));
        }
        report.faults = Some(report::Faults {
            stale_after: stale,
            ..Default::default()
        });
    }
    let mut credentials = mint_credentials(&admin, &hosts).await?;
    // The first VM alone: its heartbeat answer says how often the allocator wants them.
    let first = Arc::new(Agent::new(
        hosts[0].clone(),
        credentials.remove(&hosts[0]).unwrap_or_default(),
    ));
    let asked = first
        .register(&http, &base)
        .await
        .map_err(|e| format!("the first simulated VM: {e}"))?
        .map(Duration::from_secs);
    report.registered = 1;
    let every = args
        .heartbeat_seconds
        .map(Duration::from_secs)
        .or(asked)
        .unwrap_or(DEFAULT_HEARTBEAT);
    report.heartbeat_every = every;
    report.heartbeat_asked = asked.filter(|a| *a != every);
    let fleet = Arc::new(Fleet {
        http: http.clone(),
        base: base.clone(),
        deadline,
        every,
        wakes: Arc::default(),
        parked: Default::default(),
        heartbeats: Default::default(),
        errors: Default::default(),
    });
    let mut controls = HashMap::new();
    let mut agents = JoinSet::new();
    let (registered_tx, mut registered) = mpsc::unbounded_channel();
    for host in &hosts {
        let (control, fault) = watch::channel(Fault::None);
        controls.insert(host.clone(), control);
        let fleet = fleet.clone();
        if host == &hosts[0] {
            agents.spawn(first.clone().live(fleet, fault));
            continue;
        }
        let agent = Arc::new(Agent::new(
            host.clone(),
            credentials.remove(host).unwrap_or_default(),
        ));
        let done = registered_tx.clone();
        agents.spawn(async move {
            let result = agent.register(&fleet.http, &fleet.base).await;
            let ok = result.is_ok();
            let _ = done.send(result.map(|_| agent.host.clone()));
            drop(done);
            if ok {
                agent.live(fleet, fault).await;
            }
        });
    }
    drop(registered_tx);
    let mut pool = vec![hosts[0].clone()];
    while let Some(result) = registered.recv().await {
        match result {
            Ok(host) => {
                report.registered += 1;
                pool.push(host);
            }
            Err(kind) => report.error(kind),
        }
    }
    let pool = in_pick_order(pool);
    // Let the long-polls park before anything else happens.
    report.parked_peak = fleet
        .settle(report.registered, Duration::from_secs(5))
        .await;

    // First wave: agents fail while everyone waits; the pool must leave them out.
    let mut ledger = Ledger::default();
    let pool_poll = (Duration::from_micros(100) * pool.len() as u32)
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    if let Some(f) = report.faults.as_mut() {
        // One heartbeat interval first: the agents beat out of step, as booted VMs do.
        tokio::time::sleep(every).await;
        let victims = shares.victims(&pool);
        f.died_before = count(&victims, Fault::Die);
        f.froze_before = count(&victims, Fault::Freeze);
        let struck = strike(&victims, &controls, &mut ledger);
        let until = (Instant::now() + f.stale_after + DETECTION_GRACE).min(deadline);
        match admin.until_marked(&struck, pool_poll, until).await {
            Ok(seen) => {
                f.detected = seen.values().copied().collect();
                f.undetected = in_pick_order(
                    struck
                        .keys()
                        .filter(|h| !seen.contains_key(*h))
                        .cloned()
                        .collect(),
                );
            }
            Err(e) => {
                f.undetected = in_pick_order(struck.into_keys().collect());
                report.error(format!("reading the pool: {e}"));
            }
        }
    }

    if let Some(f) = &report.faults {
        let live = report.registered - f.died_before - f.froze_before;
        report.parked_peak = fleet.settle(live, Duration::from_secs(5)).await;
    }

    // Participants: all at once, `concurrency` in flight, each in a browser of its own.
    let claims_started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut claims = JoinSet::new();
    for n in 1..=participants {
        let (http, base, limit) = (http.clone(), base.clone(), limit.clone());
        let browser = Browser {
            email: format!("rehearsal-{run}-{n}@{}", args.email_domain),
            join_code: args.join_code.clone().unwrap_or_default(),
            cookie: None,
        };
        let code = format!("4/0Rehearsal{run}x{n}");
        claims.spawn(async move {
            let _slot = limit.acquire_owned().await;
            let claimed = browser.claim(&http, &base, code).await;
            (browser, claimed)
        });
    }
    let mut seats: HashMap<String, Browser> = HashMap::new();
    while let Some(done) = claims.join_next().await {
        let (mut browser, claimed) = done.map_err(|e| e.to_string())?;
        report
            .claim_latency
            .push(claimed.answered.duration_since(claimed.sent));
        match &claimed.outcome {
            Ok(a) if a.status == 200 && a.host.is_some() => {
                report.assigned += 1;
                let host = a.host.clone().unwrap_or_default();
                browser.cookie = a.cookie.clone();
                ledger.assigned(&mut report, &browser.email, &host, &claimed);
                seats.insert(host, browser);
            }
            Ok(a) if a.status == 503 => report.refused_no_vm += 1,
            Ok(a) => report.error(format!("claim: HTTP {}", a.status)),
            Err(kind) => report.error(format!("claim: {kind}")),
        }
    }
    report.claim_phase = claims_started.elapsed();

    // Second wave: assigned VMs fail once their agents have their participant; those
    // participants take a new seat.
    if report.faults.is_some() {
        let until = (Instant::now() + report::WAKE_LIMIT).min(deadline);
        fleet.until_woken(ledger.claimed_at.len(), until).await;
        second_wave(
            &mut report,
            &mut ledger,
            &shares,
            &controls,
            &seats,
            &fleet,
            &run,
        )
        .await;
    }

    // Every assigned agent should have been woken; give stragglers until the deadline.
    fleet.until_woken(ledger.claimed_at.len(), deadline).await;
    agents.abort_all();
    let woken = fleet.wakes.lock().map(|w| w.clone()).unwrap_or_default();
    for (host, codes) in &ledger.assigned_to {
        if codes.len() > 1 {
            report
                .double_assignments
                .push(format!("{host} went to {} participants", codes.len()));
        }
    }
    for (host, (code, sent)) in &ledger.claimed_at {
        match woken.get(host) {
            Some((given, at)) if given == code => {
                report.wake_latency.push(at.duration_since(*sent))
            }
            Some(_) => report
                .double_assignments
                .push(format!("{host} was woken with another participant's code")),
            None => report.error("agent never woken after its claim"),
        }
    }
    for host in woken.keys().filter(|h| !ledger.claimed_at.contains_key(*h)) {
        report
            .double_assignments
            .push(format!("{host} was woken without a successful claim"));
    }
    report.heartbeats = fleet.heartbeats.load(std::sync::atomic::Ordering::Relaxed);
    if let Ok(errors) = fleet.errors.lock() {
        for (kind, n) in errors.iter() {
            *report.errors.entry(kind.clone()).or_default() += n;
        }
    }
    Ok(report::print(&mut report, &base))
}

/// Fails a share of the assigned VMs; each of their participants follows the seat page
/// until it says so and asks for a new VM from the same browser with a fresh code.
async fn second_wave(
    report: &mut Report,
    ledger: &mut Ledger,
    shares: &Shares,
    controls: &HashMap<String, watch::Sender<Fault>>,
    seats: &HashMap<String, Browser>,
    fleet: &Fleet,
    run: &str,
) {
    let assigned = in_pick_order(seats.keys().cloned().collect());
    let victims = shares.victims(&assigned);
    let struck = strike(&victims, controls, ledger);
    let mut reseats = JoinSet::new();
    for (n, (old, failed)) in struck.into_iter().enumerate() {
        let Some(browser) = seats.get(&old).cloned() else {
            continue;
        };
        let (http, base, deadline) = (fleet.http.clone(), fleet.base.clone(), fleet.deadline);
        let code = format!("4/0Rehearsal{run}again{n}");
        reseats.spawn(async move {
            let (tries, result) = browser.reseat(&http, &base, &old, code, deadline).await;
            (browser, old, failed, tries, result)
        });
    }
    let mut reseated = Vec::new();
    let mut not_reseated = Vec::new();
    while let Some(done) = reseats.join_next().await {
        let Ok((browser, old, failed, tries, result)) = done else {
            report.error("a re-seating participant's task failed");
            continue;
        };
        match (result, tries.last()) {
            (Ok(()), Some(last)) => {
                if let Ok(a) = &last.outcome
                    && let Some(host) = &a.host
                {
                    ledger.assigned(report, &browser.email, host, last);
                }
                reseated.push(last.answered.saturating_duration_since(failed));
            }
            (result, _) => not_reseated.push(format!(
                "{} (on {old}): {}",
                browser.email,
                result.err().unwrap_or_else(|| "no answer".into())
            )),
        }
    }
    if let Some(f) = report.faults.as_mut() {
        f.died_after = count(&victims, Fault::Die);
        f.froze_after = count(&victims, Fault::Freeze);
        f.reseat = reseated;
        f.not_reseated = not_reseated;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str, own: bool) -> RehearseArgs {
        RehearseArgs {
            url: url.into(),
            agents: 10,
            participants: None,
            concurrency: 10,
            seconds: 30,
            login: crate::commands::remote::Login {
                user: "admin".into(),
                password_file: None,
            },
            i_own_this_host: own,
            join_code: None,
            email_domain: "example.org".into(),
            die_share: 0.0,
            freeze_share: 0.0,
            heartbeat_seconds: None,
            event: false,
            arrive_over: 30,
            leave_share: 0.1,
            spare_percent: 10,
        }
    }

    #[test]
    fn only_this_machine_without_the_flag() {
        for ok in [
            "http://127.0.0.1:5000",
            "http://[::1]:5000/",
            "http://localhost:5000",
        ] {
            assert!(check_args(&args(ok, false)).is_empty(), "{ok}");
        }
        for far in ["http://192.0.2.1:5000", "https://lablink.example.org"] {
            let problems = check_args(&args(far, false));
            assert!(problems[0].contains("--i-own-this-host"), "{problems:?}");
            assert!(check_args(&args(far, true)).is_empty());
        }
        assert!(!check_args(&args("ftp://127.0.0.1", false)).is_empty());
        let none = RehearseArgs {
            participants: Some(0),
            ..args("http://127.0.0.1:5000", false)
        };
        assert!(!check_args(&none).is_empty());
    }

    #[test]
    fn fault_flags_are_checked_and_size_the_workshop() {
        let local = || args("http://127.0.0.1:5000", false);
        let faulty = RehearseArgs {
            agents: 20,
            die_share: 0.1,
            freeze_share: 0.1,
            ..local()
        };
        assert!(check_args(&faulty).is_empty());
        assert_eq!(faulty.participants(), 12, "spares kept for the second wave");
        assert_eq!(local().participants(), 10, "without faults: one per agent");
        let over = RehearseArgs {
            die_share: 0.95,
            ..local()
        };
        assert!(check_args(&over)[0].starts_with("--die-share"));
        let tiny = RehearseArgs {
            agents: 2,
            die_share: 0.5,
            freeze_share: 0.4,
            ..local()
        };
        assert!(
            check_args(&tiny)[0].starts_with("--agents"),
            "{:?}",
            check_args(&tiny)
        );
        let beat = RehearseArgs {
            heartbeat_seconds: Some(0),
            ..local()
        };
        assert!(check_args(&beat)[0].starts_with("--heartbeat-seconds"));
    }
}
