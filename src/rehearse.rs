//! `lablink rehearse URL`: a workshop against a running allocator before the day. K
//! simulated agents register and wait on `/vm_startup`, M simulated participants claim at
//! once, and the report says how fast claims were answered, how fast the waiting agents
//! were woken, what failed and how, whether any VM went to two people, and whether the
//! allocator passes for a workshop of that size. Bounded in count and time.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const MAX_AGENTS: usize = 5_000;
const MAX_PARTICIPANTS: usize = 20_000;
/// A claim slower than this at the 99th percentile fails the rehearsal.
const CLAIM_P99_LIMIT: Duration = Duration::from_secs(2);
/// An assigned agent woken later than this after its participant's claim fails it.
const WAKE_LIMIT: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct RehearseArgs {
    /// Base URL of the allocator, e.g. http://127.0.0.1:5000.
    pub url: String,
    /// Simulated VMs (agents that register and wait for a participant).
    #[arg(long, default_value_t = 40)]
    pub agents: usize,
    /// Simulated participants claiming at once (default: as many as agents).
    #[arg(long)]
    pub participants: Option<usize>,
    /// Most claims in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// The whole rehearsal ends after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Admin user: the simulated VMs' credentials are minted through the API.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// Read the admin password from this file (else LABLINK_ADMIN_PASSWORD).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Allow a target that is not this machine.
    #[arg(long)]
    pub i_own_this_host: bool,
    /// The workshop's join code, when `access.join_code` is set.
    #[arg(long)]
    pub join_code: Option<String>,
    /// Domain of the simulated participants' addresses (one `access.allowed_emails` admits).
    #[arg(long, default_value = "example.org")]
    pub email_domain: String,
}

#[derive(Default)]
struct Report {
    claim_latency: Vec<Duration>,
    wake_latency: Vec<Duration>,
    assigned: usize,
    refused_no_vm: usize,
    errors: BTreeMap<String, usize>,
    double_assignments: Vec<String>,
    parked_peak: usize,
    claim_phase: Duration,
    registered: usize,
}

impl Report {
    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }
}

pub fn run(args: RehearseArgs) -> ExitCode {
    let participants = args.participants.unwrap_or(args.agents);
    let problems = check_args(&args, participants);
    if !problems.is_empty() {
        for p in problems {
            eprintln!("lablink rehearse: {p}");
        }
        return ExitCode::from(crate::commands::EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return crate::commands::fail(e),
    };
    match runtime.block_on(rehearse(args, participants)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => crate::commands::fail(format!("rehearse: {e}")),
    }
}

fn check_args(args: &RehearseArgs, participants: usize) -> Vec<String> {
    let mut problems = Vec::new();
    if !(1..=MAX_AGENTS).contains(&args.agents) {
        problems.push(format!("--agents: 1..={MAX_AGENTS}"));
    }
    if !(1..=MAX_PARTICIPANTS).contains(&participants) {
        problems.push(format!("--participants: 1..={MAX_PARTICIPANTS}"));
    }
    if !(1..=1_000).contains(&args.concurrency) {
        problems.push("--concurrency: 1..=1000".into());
    }
    if !(5..=3_600).contains(&args.seconds) {
        problems.push("--seconds: 5..=3600".into());
    }
    if !email_address::EmailAddress::is_valid(&format!("x@{}", args.email_domain)) {
        problems.push(format!(
            "--email-domain: `{}` is not a mail domain",
            args.email_domain
        ));
    }
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
    args: &RehearseArgs,
    hosts: &[String],
) -> Result<HashMap<String, String>, String> {
    let login = crate::commands::remote::Login {
        user: args.user.clone(),
        password_file: args.password_file.clone(),
    };
    let admin = crate::commands::remote::Admin::new(&args.url, &login)?;
    let answer = admin
        .post("/api/vm-credentials", &json!({ "hostnames": hosts }))
        .await
        .map_err(|e| format!("minting the simulated VMs' credentials: {e}"))?;
    let credentials: HashMap<String, String> = answer["credentials"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(h, c)| c.as_str().map(|c| (h.clone(), c.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if credentials.len() != hosts.len() {
        return Err(format!(
            "the allocator minted {} of {} credentials",
            credentials.len(),
            hosts.len()
        ));
    }
    Ok(credentials)
}

fn quantile(samples: &mut [Duration], q: f64) -> Option<Duration> {
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

fn command_for(code: &str) -> String {
    format!(
        "DISPLAY= /opt/google/chrome-remote-desktop/start-host --code=\"{code}\" \
         --redirect-url=\"https://remotedesktop.google.com/_/oauthredirect\" --name=$(hostname)"
    )
}

/// The text of the element with `id` in an answer page (`<dd id="hostname">vm</dd>`).
fn element_text(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\">");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('<')?;
    Some(html[start..start + end].trim().to_owned())
}

/// What the waiting agents saw: hostname → (code they were given, when).
type Wakes = Arc<Mutex<HashMap<String, (String, Instant)>>>;

async fn rehearse(args: RehearseArgs, participants: usize) -> Result<bool, String> {
    let base = args.url.trim_end_matches('/').to_owned();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(args.agents))
        .timeout(Duration::from_secs(args.seconds))
        .build()
        .map_err(|e| e.to_string())?;
    let run = format!("{:x}", rand::random::<u32>());
    let mut report = Report::default();

    let health = http
        .get(format!("{base}/health"))
        .send()
        .await
        .map_err(|e| format!("{base} does not answer: {e}"))?;
    if !health.status().is_success() {
        return Err(format!("{base}/health answered {}", health.status()));
    }

    // Agents: register as running, then wait for a participant.
    let hosts: Vec<String> = (1..=args.agents)
        .map(|n| format!("rehearsal-{run}-vm-{n}"))
        .collect();
    let credentials = mint_credentials(&args, &hosts).await?;
    let mut registering = JoinSet::new();
    for host in hosts.clone() {
        let (http, base) = (http.clone(), base.clone());
        let credential = credentials[&host].clone();
        registering.spawn(async move {
            let answer = http
                .post(format!("{base}/api/vm-status"))
                .bearer_auth(&credential)
                .json(&json!({"hostname": host, "status": "running"}))
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("registration: HTTP {}", r.status().as_u16())),
                Err(e) => Err(format!("registration: {}", kind_of(&e))),
            }
        });
    }
    while let Some(done) = registering.join_next().await {
        match done.map_err(|e| e.to_string())? {
            Ok(()) => report.registered += 1,
            Err(kind) => report.error(kind),
        }
    }

    let wakes: Wakes = Arc::default();
    let parked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut agents = JoinSet::new();
    for host in hosts.iter().cloned() {
        let (http, base) = (http.clone(), base.clone());
        let credential = credentials[&host].clone();
        let (wakes, parked) = (wakes.clone(), parked.clone());
        agents.spawn(wait_for_participant(
            http, base, host, credential, wakes, parked, deadline,
        ));
    }
    // Let the long-polls park before the participants arrive.
    let settle = Instant::now() + Duration::from_secs(5);
    while parked.load(std::sync::atomic::Ordering::Relaxed) < report.registered
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.parked_peak = parked.load(std::sync::atomic::Ordering::Relaxed);

    // Participants: all at once, `concurrency` in flight.
    let claims_started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut claims = JoinSet::new();
    for n in 1..=participants {
        let (http, base, limit) = (http.clone(), base.clone(), limit.clone());
        let email = format!("rehearsal-{run}-{n}@{}", args.email_domain);
        let join_code = args.join_code.clone().unwrap_or_default();
        let code = format!("4/0Rehearsal{run}x{n}");
        claims.spawn(async move {
            let _slot = limit.acquire_owned().await;
            let sent = Instant::now();
            let answer = http
                .post(format!("{base}/api/request_vm"))
                .form(&[
                    ("email", email.as_str()),
                    ("crd_command", &command_for(&code)),
                    ("join_code", &join_code),
                ])
                .send()
                .await;
            let outcome = match answer {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let page = r.text().await.unwrap_or_default();
                    Ok((status, element_text(&page, "hostname")))
                }
                Err(e) => Err(kind_of(&e)),
            };
            (code, sent, sent.elapsed(), outcome)
        });
    }
    let mut assigned_to: HashMap<String, Vec<String>> = HashMap::new();
    let mut claimed_at: HashMap<String, (String, Instant)> = HashMap::new();
    while let Some(done) = claims.join_next().await {
        let (code, sent, latency, outcome) = done.map_err(|e| e.to_string())?;
        report.claim_latency.push(latency);
        match outcome {
            Ok((200, Some(host))) => {
                report.assigned += 1;
                assigned_to
                    .entry(host.clone())
                    .or_default()
                    .push(code.clone());
                claimed_at.insert(host, (code, sent));
            }
            Ok((503, _)) => report.refused_no_vm += 1,
            Ok((status, _)) => report.error(format!("claim: HTTP {status}")),
            Err(kind) => report.error(format!("claim: {kind}")),
        }
    }
    report.claim_phase = claims_started.elapsed();

    // Every assigned agent should have been woken; give stragglers until the deadline.
    let wanted = claimed_at.len();
    while wakes.lock().map(|w| w.len()).unwrap_or(0) < wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agents.abort_all();
    let woken = wakes.lock().map(|w| w.clone()).unwrap_or_default();
    for (host, codes) in &assigned_to {
        if codes.len() > 1 {
            report
                .double_assignments
                .push(format!("{host} went to {} participants", codes.len()));
        }
    }
    for (host, (code, sent)) in &claimed_at {
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
    for host in woken.keys().filter(|h| !claimed_at.contains_key(*h)) {
        report
            .double_assignments
            .push(format!("{host} was woken without a successful claim"));
    }
    Ok(print_report(&mut report, args.agents, participants, &base))
}

/// One simulated agent: long-polls until it is given a participant (or the deadline).
async fn wait_for_participant(
    http: reqwest::Client,
    base: String,
    host: String,
    credential: String,
    wakes: Wakes,
    parked: Arc<std::sync::atomic::AtomicUsize>,
    deadline: Instant,
) {
    while Instant::now() < deadline {
        parked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = http
            .post(format!("{base}/vm_startup"))
            .bearer_auth(&credential)
            .json(&json!({"hostname": host}))
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .send()
            .await;
        parked.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let at = Instant::now();
        match answer {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await.unwrap_or_default();
                let code = body["command"]
                    .as_str()
                    .and_then(|c| crate::crd::extract_code(c).ok())
                    .unwrap_or_default();
                if let Ok(mut w) = wakes.lock() {
                    w.insert(host, (code, at));
                }
                return;
            }
            // 408: the hold time ended; ask again, as a real agent does.
            Ok(r) if r.status().as_u16() == 408 => continue,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn kind_of(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "transport error".into()
    }
}

fn print_report(r: &mut Report, agents: usize, participants: usize, base: &str) -> bool {
    let expected = agents.min(participants);
    let claims_per_s = participants as f64 / r.claim_phase.as_secs_f64().max(1e-6);
    let p50 = quantile(&mut r.claim_latency, 0.5);
    let p99 = quantile(&mut r.claim_latency, 0.99);
    let w50 = quantile(&mut r.wake_latency, 0.5);
    let w99 = quantile(&mut r.wake_latency, 0.99);
    println!("LabLink rehearsal against {base}: {agents} VMs, {participants} participants");
    println!("  VMs registered         {} of {agents}", r.registered);
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
    let error_total: usize = r.errors.values().sum();
    println!("  errors                 {error_total}");
    for (kind, n) in &r.errors {
        println!("    {n:>6}  {kind}");
    }
    println!("  double assignments     {}", r.double_assignments.len());
    for d in &r.double_assignments {
        println!("    {d}");
    }
    let mut failures = Vec::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_without_the_flag() {
        let args = |url: &str, own: bool| RehearseArgs {
            url: url.into(),
            agents: 10,
            participants: None,
            concurrency: 10,
            seconds: 30,
            user: "admin".into(),
            password_file: None,
            i_own_this_host: own,
            join_code: None,
            email_domain: "example.org".into(),
        };
        for ok in [
            "http://127.0.0.1:5000",
            "http://[::1]:5000/",
            "http://localhost:5000",
        ] {
            assert!(check_args(&args(ok, false), 10).is_empty(), "{ok}");
        }
        for far in ["http://192.0.2.1:5000", "https://lablink.example.org"] {
            let problems = check_args(&args(far, false), 10);
            assert!(problems[0].contains("--i-own-this-host"), "{problems:?}");
            assert!(check_args(&args(far, true), 10).is_empty());
        }
        assert!(!check_args(&args("ftp://127.0.0.1", false), 10).is_empty());
        assert!(!check_args(&args("http://127.0.0.1:5000", false), 0).is_empty());
    }

    #[test]
    fn answer_pages_are_read_by_element_id() {
        let page = r#"<dl><dt>Assigned hostname</dt><dd id="hostname">vm-7</dd></dl>"#;
        assert_eq!(element_text(page, "hostname").as_deref(), Some("vm-7"));
        assert_eq!(element_text(page, "pin"), None);
    }
}
