//! The fleet's heartbeats: what a pool of VMs each beating every few seconds costs the
//! allocator (requests/s, its CPU share), and how soon a frozen agent leaves the pool.
//! Each simulated VM has a credential minted by the allocator and a connection of its
//! own, kept alive between beats as the agent's HTTP client keeps it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::sync::Semaphore;

use super::client::{Budget, Conn, Samples, run_load};
use super::report::Record;
use super::{ADMIN_PASSWORD, Server, longpoll};
use crate::commands::remote::Admin;

/// The kernel's clock ticks per second for `/proc/<pid>/stat` times (USER_HZ: 100 on every
/// Linux architecture the allocator ships for).
const USER_HZ: f64 = 100.0;

/// CPU time a process has used so far (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start with the state.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|t| t.parse::<f64>().ok());
    // utime and stime are fields 14 and 15: 11 and 12 after the state (field 3).
    Some(Duration::from_secs_f64((ticks(11)? + ticks(12)?) / USER_HZ))
}

/// Share of one core `pid` used between two readings `wall` apart, in percent.
pub(super) fn cpu_share(before: Option<Duration>, after: Option<Duration>, wall: Duration) -> f64 {
    match (before, after) {
        (Some(b), Some(a)) => (a.saturating_sub(b)).as_secs_f64() / wall.as_secs_f64() * 100.0,
        _ => f64::NAN,
    }
}

/// The benchmark allocator's admin API, for minting credentials and reading the pool.
pub(super) fn admin_api(server: &Server) -> Result<Admin, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let base = format!("http://{}", server.addr);
    Ok(Admin::with_password(
        http,
        &base,
        "admin",
        ADMIN_PASSWORD.into(),
    ))
}

/// Simulated VMs named `{prefix}-vm-{n}`, with minted credentials.
struct Fleet {
    hosts: Arc<Vec<String>>,
    auth: Arc<Vec<String>>,
}

fn beat_body(host: &str, n: usize) -> Bytes {
    Bytes::from(format!(
        "{{\"hostname\":\"{host}\",\"boot_id\":\"{n:08x}-0000-4000-8000-{n:012x}\",\"disk_free_pct\":61.5}}"
    ))
}

impl Fleet {
    /// Mints the VMs' credentials, reports each running and sends its first heartbeat
    /// (which records its boot id: later beats change nothing in the store).
    async fn enroll(server: &Server, prefix: &str, count: usize) -> Result<Fleet, String> {
        let hosts: Vec<String> = (1..=count).map(|n| format!("{prefix}-vm-{n}")).collect();
        let credentials = admin_api(server)?.mint(&hosts).await?;
        let fleet = Fleet {
            hosts: Arc::new(hosts),
            auth: Arc::new(credentials.iter().map(|c| format!("Bearer {c}")).collect()),
        };
        for path in ["/api/vm-status", "/api/heartbeat"] {
            let (hosts, auth) = (fleet.hosts.clone(), fleet.auth.clone());
            let done = run_load(
                server.addr,
                64,
                Budget {
                    count: Some(count as u64),
                    deadline: None,
                },
                StatusCode::CONFLICT,
                move |i| {
                    let i = i as usize;
                    let body = if path == "/api/vm-status" {
                        super::status_json(&hosts[i], "running")
                    } else {
                        beat_body(&hosts[i], i)
                    };
                    (
                        Method::POST,
                        path.into(),
                        vec![
                            ("authorization", auth[i].clone()),
                            ("content-type", "application/json".into()),
                        ],
                        body,
                    )
                },
            )
            .await;
            if done.ok != count as u64 {
                return Err(format!(
                    "{path}: {} of {count} VMs answered ({} errors)",
                    done.ok, done.errors
                ));
            }
        }
        Ok(fleet)
    }

    /// One kept-alive connection per VM.
    async fn connect(&self, server: &Server) -> Result<Vec<Conn>, String> {
        let limit = Arc::new(Semaphore::new(256));
        let mut opening = Vec::with_capacity(self.hosts.len());
        for _ in 0..self.hosts.len() {
            let (limit, addr) = (limit.clone(), server.addr);
            opening.push(tokio::spawn(async move {
                let _slot = limit.acquire_owned().await;
                Conn::open(addr).await
            }));
        }
        let mut conns = Vec::with_capacity(opening.len());
        for o in opening {
            conns.push(
                o.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("connect: {e}"))?,
            );
        }
        Ok(conns)
    }
}

/// Sends VM `n`'s heartbeat on its connection; true when answered 2xx.
async fn beat(conn: &mut Conn, fleet: &Fleet, n: usize) -> Result<bool, String> {
    let status = conn
        .send(
            Method::POST,
            "/api/heartbeat",
            &[
                ("authorization", fleet.auth[n].as_str()),
                ("content-type", "application/json"),
            ],
            beat_body(&fleet.hosts[n], n),
        )
        .await?;
    Ok(status.is_success())
}

/// `vms` VMs each beating every `every`, in even steps over the interval, for `run`:
/// requests/s achieved, latency, and the allocator's CPU share meanwhile.
pub async fn load(
    server: &Server,
    vms: usize,
    every: Duration,
    run: Duration,
    record: &Record,
) -> Result<(), String> {
    let fleet = Arc::new(Fleet::enroll(server, "beat", vms).await?);
    let conns = fleet.connect(server).await?;
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    let end = start + run;
    let mut tasks = Vec::with_capacity(vms);
    for (n, mut conn) in conns.into_iter().enumerate() {
        let (fleet, addr) = (fleet.clone(), server.addr);
        let mut slot = start + every.mul_f64(n as f64 / vms as f64);
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            while slot < end {
                tokio::time::sleep_until(slot).await;
                let sent = Instant::now();
                match beat(&mut conn, &fleet, n).await {
                    Ok(true) => {
                        samples.ok += 1;
                        samples.record(sent);
                    }
                    Ok(false) => samples.errors += 1,
                    Err(_) => {
                        samples.errors += 1;
                        if let Ok(c) = Conn::open(addr).await {
                            conn = c;
                        }
                    }
                }
                slot += every;
            }
            (samples, conn)
        }));
    }
    tokio::time::sleep_until(start).await;
    let (cpu_before, own_before, t) = (
        cpu_time(server.pid),
        cpu_time(std::process::id()),
        Instant::now(),
    );
    let mut all = Samples::default();
    let mut conns = Vec::with_capacity(vms);
    for task in tasks {
        if let Ok((samples, conn)) = task.await {
            all.merge(samples);
            conns.push(conn);
        }
    }
    let wall = t.elapsed();
    let server_cpu = cpu_share(cpu_before, cpu_time(server.pid), wall);
    let own_cpu = cpu_share(own_before, cpu_time(std::process::id()), wall);
    let (rss, _) = super::rss_mib(server.pid);
    drop(conns);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rate = (all.ok + all.errors) as f64 / wall.as_secs_f64();
    let (p50, p99) = (all.quantile_ms(0.5), all.quantile_ms(0.99));
    record.say(format_args!(
        "{:<28} {rate:>10.0} req/s   p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   ok {}  errors {}   ({vms} VMs, one every {} s, offered {:.0} req/s, {:.0} s)",
        "POST /api/heartbeat",
        all.ok,
        all.errors,
        every.as_secs_f64(),
        vms as f64 / every.as_secs_f64(),
        wall.as_secs_f64(),
    ));
    record.say(format_args!(
        "{:<28} {:>10.1} % of one core   (load generator {own_cpu:.1} %, {cores} cores; RSS {rss:.1} MiB with {vms} connections)",
        "allocator CPU, heartbeats", server_cpu
    ));
    record.figure("heartbeat_rps", rate);
    record.figure("heartbeat_p50_ms", p50);
    record.figure("heartbeat_p99_ms", p99);
    record.figure("heartbeat_errors", all.errors as f64);
    record.figure("heartbeat_cpu_pct", server_cpu);
    record.figure("heartbeat_rss_mib", rss);
    Ok(())
}

/// `count` agents beat every second (the allocator's `heartbeat_seconds` is 1, stale after
/// 3), each also parked on `/vm_startup`; then they freeze one after another, spread over
/// a few seconds, their parked requests left open. Reports from each freeze to `GET
/// /api/vms` showing the VM unresponsive.
pub async fn detection(server: &Server, count: usize, record: &Record) -> Result<(), String> {
    const EVERY: Duration = Duration::from_secs(1);
    const SPREAD: Duration = Duration::from_secs(4);
    let fleet = Arc::new(Fleet::enroll(server, "frozen", count).await?);
    let conns = fleet.connect(server).await?;
    let mut polls = Vec::with_capacity(count);
    for n in 0..count {
        let credential = fleet.auth[n].trim_start_matches("Bearer ");
        polls.push(
            longpoll::park(server.addr, credential, &fleet.hosts[n])
                .await
                .map_err(|e| format!("park: {e}"))?,
        );
    }
    // Two intervals of beating out of step, then VM n freezes at start + n/count of SPREAD.
    let start = tokio::time::Instant::now() + 2 * EVERY;
    let mut tasks = Vec::with_capacity(count);
    for (n, mut conn) in conns.into_iter().enumerate() {
        let fleet = fleet.clone();
        let freeze = start + SPREAD.mul_f64(n as f64 / count as f64);
        let mut slot = tokio::time::Instant::now() + EVERY.mul_f64(rand::random::<f64>());
        tasks.push(tokio::spawn(async move {
            let mut last = None;
            while slot < freeze {
                tokio::time::sleep_until(slot).await;
                if let Ok(true) = beat(&mut conn, &fleet, n).await {
                    last = Some(Instant::now());
                }
                slot += EVERY;
            }
            tokio::time::sleep_until(freeze).await;
            (freeze.into_std(), last, conn)
        }));
    }
    let admin = admin_api(server)?;
    let give_up = Instant::now() + 2 * EVERY + SPREAD + Duration::from_secs(15);
    let hosts: std::collections::HashMap<&str, usize> = fleet
        .hosts
        .iter()
        .enumerate()
        .map(|(n, h)| (h.as_str(), n))
        .collect();
    let mut seen: Vec<Option<Instant>> = vec![None; count];
    while seen.iter().any(Option::is_none) && Instant::now() < give_up {
        for host in admin.unresponsive().await?.0 {
            if let Some(&n) = hosts.get(host.as_str()) {
                seen[n].get_or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut from_freeze = Samples::default();
    let mut from_beat = Samples::default();
    let mut early = 0;
    let mut kept = Vec::with_capacity(count);
    for (n, task) in tasks.into_iter().enumerate() {
        let (frozen_at, last, conn) = task.await.map_err(|e| e.to_string())?;
        kept.push(conn);
        match seen[n] {
            Some(at) if at >= frozen_at => {
                from_freeze.ok += 1;
                from_freeze.micros.push(micros(at - frozen_at));
                if let Some(last) = last {
                    from_beat
                        .micros
                        .push(micros(at.saturating_duration_since(last)));
                }
            }
            Some(_) => early += 1,
            None => from_freeze.errors += 1,
        }
    }
    drop((kept, polls));
    let freeze = (
        from_freeze.quantile_ms(0.5) / 1000.0,
        from_freeze.quantile_ms(0.99) / 1000.0,
    );
    let beat = (
        from_beat.quantile_ms(0.5) / 1000.0,
        from_beat.quantile_ms(0.99) / 1000.0,
    );
    record.say(format_args!(
        "{:<28} p50 {:>5.2} s   p99 {:>5.2} s   from its last heartbeat p50 {:.2} s  p99 {:.2} s   ({} of {count} seen; {} before freezing; heartbeat 1 s, stale after 3)",
        "frozen agent → unresponsive",
        freeze.0,
        freeze.1,
        beat.0,
        beat.1,
        from_freeze.ok,
        early,
    ));
    record.figure("frozen_from_freeze_p50_s", freeze.0);
    record.figure("frozen_from_freeze_p99_s", freeze.1);
    record.figure("frozen_from_beat_p50_s", beat.0);
    record.figure("frozen_from_beat_p99_s", beat.1);
    record.figure("frozen_unseen", from_freeze.errors as f64);
    record.figure("frozen_early", early as f64);
    Ok(())
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_from_proc() {
        let t = cpu_time(std::process::id());
        assert!(t.is_some(), "this process has a /proc/self/stat");
        assert!(cpu_time(u32::MAX).is_none());
        let share = cpu_share(
            Some(Duration::from_secs(1)),
            Some(Duration::from_millis(1500)),
            Duration::from_secs(2),
        );
        assert!((share - 25.0).abs() < 1e-9);
    }
}
