//! `lablink bench`: starts `lablink serve` as a child process (the same executable, so run
//! it from a release build) in a scratch data directory on loopback and prints figures:
//! start to first answer, idle RSS, `GET /api/health` requests/s, durable claims/s with
//! latency percentiles, claim→wake latency, the RSS cost of parked long-polls, and on
//! allocators of their own the heartbeat load of a large fleet (requests/s, the allocator's
//! CPU share), how soon a frozen agent is noticed, and the browser desktop relay
//! (throughput and latency against a direct VNC connection, memory and idle CPU per stream),
//! the seat wall with a room of agents sending thumbnails (CPU, memory, bandwidth), and a
//! broadcast watched by a room of participants (the broadcast VM's upload, the allocator's
//! CPU and memory, the time until every viewer sees it).
//! The run itself asserts no threshold: it measures. `--json` gives every figure as one
//! document, and `--compare` holds them against a baseline's tolerances (the gate CI runs).

mod broadcast;
mod client;
mod desktop;
mod gate;
mod heartbeat;
mod longpoll;
mod report;
mod wall;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use hyper::{Method, StatusCode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::exit::CliError;
use client::{Budget, Conn, Samples, run_load};
use report::{Context, Document, Record, Settings};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Concurrent clients for the throughput phases.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds each throughput phase runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Free VMs registered before the claim phase (the phase stops when they are gone).
    #[arg(long, default_value_t = 200_000)]
    pub pool: u64,
    /// Long-polls parked at once for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    pub parked: u64,
    /// Claims whose wake-up latency is measured.
    #[arg(long, default_value_t = 200)]
    pub wakes: u64,
    /// The lablink executable to start (default: this one).
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// VMs heartbeating in the heartbeat-load phase, each with a minted credential and a
    /// connection of its own (0 skips the phase).
    #[arg(long, default_value_t = 10_000)]
    pub heartbeat_vms: usize,
    /// Seconds between one VM's heartbeats in that phase (the allocator's default).
    #[arg(long, default_value_t = 15)]
    pub heartbeat_every: u64,
    /// Seconds the heartbeat-load phase is measured.
    #[arg(long, default_value_t = 30)]
    pub heartbeat_run: u64,
    /// Agents frozen one after another for the detection phase, on an allocator with
    /// heartbeats every second (0 skips the phase).
    #[arg(long, default_value_t = 200)]
    pub frozen: usize,
    /// Browser desktop streams held open at once for the relay's memory and idle CPU, each
    /// on a VM of its own (0 skips the desktop relay phase).
    #[arg(long, default_value_t = 200)]
    pub desktop_streams: usize,
    /// Browser seats whose simulated agents send a thumbnail every 5 s while one console
    /// watches the seat wall (0 skips the phase).
    #[arg(long, default_value_t = 200)]
    pub wall_seats: usize,
    /// Seconds the seat wall phase is measured.
    #[arg(long, default_value_t = 30)]
    pub wall_run: u64,
    /// Participants watching one seat's broadcast, each on a seat of their own with its own
    /// stream; measured for `--seconds` (0 skips the phase).
    #[arg(long, default_value_t = 30)]
    pub broadcast_viewers: usize,
    /// The short profile CI runs (well under 90 s): 3 s phases, 100,000 VMs, 5,000 parked
    /// long-polls, 50 wakes, no heartbeat, frozen-agent, desktop, seat wall or broadcast
    /// phase.
    #[arg(long, conflicts_with_all = ["seconds", "pool", "parked", "wakes", "heartbeat_vms", "frozen", "desktop_streams", "wall_seats", "broadcast_viewers"])]
    pub smoke: bool,
    /// Print one JSON document with every figure, the settings and the machine on stdout
    /// (the report's lines go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Compare the figures with a baseline file's (`bench/baseline.json`, or
    /// `bench/baseline-smoke.json` with --smoke) within the tolerances it states; exit
    /// status 1 on a regression.
    #[arg(long, value_name = "BASELINE")]
    pub compare: Option<PathBuf>,
}

impl BenchArgs {
    /// These arguments with `--smoke`'s sizes, when it is given.
    fn profiled(mut self) -> BenchArgs {
        if self.smoke {
            self.seconds = 3;
            self.pool = 100_000;
            self.parked = 5_000;
            self.wakes = 50;
            self.heartbeat_vms = 0;
            self.frozen = 0;
            self.desktop_streams = 0;
            self.wall_seats = 0;
            self.broadcast_viewers = 0;
        }
        self
    }
}

/// The admin password of the allocators the bench starts.
const ADMIN_PASSWORD: &str = "bench-only-password";

pub fn run(args: BenchArgs) -> Result<(), CliError> {
    let args = args.profiled();
    // A baseline that cannot serve is said before minutes of measuring, not after.
    let baseline = match &args.compare {
        Some(path) => Some(gate::load(path).map_err(|e| CliError::Usage(e).of("bench"))?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let record = Record::new(args.json);
    let context = runtime
        .block_on(bench(&args, &record))
        .map_err(|e| CliError::Failed(e).of("bench"))?;
    let settings = Settings::of(&args);
    let figures = record.into_figures();
    let comparison = match &baseline {
        Some(b) => {
            gate::compare(b, &settings, &figures).map_err(|e| CliError::Failed(e).of("bench"))?
        }
        None => Vec::new(),
    };
    let failed = gate::failures(&comparison)
        .or_else(|| baseline.as_ref().and_then(|_| gate::broken(&figures)));
    if baseline.is_some() {
        let table = gate::table(&comparison);
        if args.json {
            eprint!("\n{table}");
        } else {
            print!("\n{table}");
        }
    }
    if args.json {
        let document = Document {
            note: None,
            context,
            settings,
            figures,
            tolerances: Default::default(),
            comparison,
        };
        let text = serde_json::to_string_pretty(&document).map_err(CliError::failed)?;
        println!("{text}");
    }
    match failed {
        Some(why) => Err(CliError::Failed(why).of("bench")),
        None => Ok(()),
    }
}

struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    token: String,
}

/// Starts `lablink serve` on `dir` with the bench's settings and `env` (configuration keys
/// as `LABLINK_…`); returns it and the time to its first answer. Its warnings and errors
/// are shown, except those containing `expected` (what the phase provokes on purpose).
async fn start_server(
    exe: &Path,
    dir: &Path,
    env: &[(&str, &str)],
    expected: Option<&'static str>,
) -> Result<(Server, Duration), String> {
    let started = Instant::now();
    let mut command = Command::new(exe);
    crate::process::clean_signals(command.as_std_mut());
    // The measured server gets exactly the settings below: none of the caller's own
    // LABLINK_* variables (which `serve` would apply, or refuse when it does not know them).
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LABLINK_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("LABLINK_SERVER_LONG_POLL_SECONDS", "600")
        .env("LABLINK_ACCESS_SHARED_AGENT_TOKEN", "true")
        .env("LABLINK_ACCESS_CLAIMS_PER_EMAIL_PER_MINUTE", "0")
        .env("LABLINK_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let pid = child.id().ok_or("server exited at once")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("url=http://").nth(1) {
                return rest
                    .split('/')
                    .next()
                    .and_then(|a| a.parse::<SocketAddr>().ok());
            }
            eprintln!("server: {line}");
        }
        None
    })
    .await
    .map_err(|_| "server did not report its address within 20 s")?
    .ok_or("server exited before it was ready")?;
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let shown = line.contains("WARN") || line.contains("ERROR");
            if shown && !expected.is_some_and(|e| line.contains(e)) {
                eprintln!("server: {line}");
            }
        }
    });
    let first_answer = wait_healthy(addr).await?;
    let startup = first_answer.duration_since(started);
    let token = std::fs::read_to_string(dir.join(crate::pool::agent_token::TOKEN_FILE))
        .map_err(|e| format!("token file: {e}"))?
        .trim()
        .to_owned();
    Ok((
        Server {
            child,
            pid,
            addr,
            token,
        },
        startup,
    ))
}

impl Server {
    /// SIGTERM, and the wait for the exit: how long it took, and how it ended.
    async fn stop(mut self) -> Result<(Duration, std::process::ExitStatus), String> {
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .map_err(|e| e.to_string())?;
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .map_err(|_| "server did not exit within 10 s of SIGTERM")?
            .map_err(|e| e.to_string())?;
        Ok((t.elapsed(), status))
    }
}

async fn wait_healthy(addr: SocketAddr) -> Result<Instant, String> {
    for _ in 0..5000 {
        if let Ok(mut c) = Conn::open(addr).await
            && let Ok(s) = c.send(Method::GET, "/api/health", &[], Bytes::new()).await
            && s == StatusCode::OK
        {
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err("server never answered /api/health".into())
}

/// (VmRSS, VmHWM) of a process in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn status_json(host: &str, status: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"hostname\":\"{host}\",\"status\":\"{status}\"}}"
    ))
}

/// Registers `count` VMs named `{prefix}-vm-{n}` (n from 1) with `status`.
async fn register(
    server: &Server,
    prefix: &'static str,
    count: u64,
    status: &'static str,
    clients: usize,
) -> Result<(), String> {
    let auth = format!("Bearer {}", server.token);
    let s = run_load(
        server.addr,
        clients,
        Budget {
            count: Some(count),
            deadline: None,
        },
        StatusCode::CONFLICT,
        move |i| {
            (
                Method::POST,
                "/api/vm-status".into(),
                vec![
                    ("authorization", auth.clone()),
                    ("content-type", "application/json".into()),
                ],
                status_json(&format!("{prefix}-vm-{}", i + 1), status),
            )
        },
    )
    .await;
    if s.ok != count {
        return Err(format!(
            "registered {} of {count} VMs ({} errors)",
            s.ok, s.errors
        ));
    }
    Ok(())
}

fn claim_body(n: u64) -> Bytes {
    Bytes::from(format!(
        "email=participant-{n}%40example.org&crd_command=DISPLAY%3D+start-host+--code%3D%224%2F0Abench{n}%22"
    ))
}

/// Reports a load phase as a line and as figures `{key}_rps`, `_p50_ms`, `_p99_ms` and
/// `_errors`; returns its requests/s.
fn phase_figures(record: &Record, (name, key): (&str, &str), s: &mut Samples, secs: f64) -> f64 {
    let rate = (s.ok + s.refused) as f64 / secs;
    let (p50, p99) = (s.quantile_ms(0.5), s.quantile_ms(0.99));
    record.say(format_args!(
        "{name:<28} {rate:>10.0} req/s   p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   ok {}  refused {}  errors {}",
        s.ok, s.refused, s.errors
    ));
    record.figure(&format!("{key}_rps"), rate);
    record.figure(&format!("{key}_p50_ms"), p50);
    record.figure(&format!("{key}_p99_ms"), p99);
    record.figure(&format!("{key}_errors"), s.errors as f64);
    rate
}

async fn bench(args: &BenchArgs, record: &Record) -> Result<Context, String> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let exe = match &args.server {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?,
    };
    let context = Context::now(&exe).await?;
    let dir = std::env::temp_dir().join(format!("lablink-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = phases(args, &exe, &dir, record).await;
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| context)
}

async fn phases(args: &BenchArgs, exe: &Path, dir: &Path, record: &Record) -> Result<(), String> {
    record.say(format_args!(
        "lablink bench: {} clients, {} s phases, server {}",
        args.clients,
        args.seconds,
        exe.display()
    ));
    // A claim picks only VMs whose agent was heard within the staleness limit. The claim
    // pool's agents were heard when they registered; 20 heartbeat intervals (300 s) cover
    // registering and claiming all of them.
    let env = [("LABLINK_SERVER_STALE_AFTER_HEARTBEATS", "20")];
    let (server, startup) = start_server(exe, &dir.join("main"), &env, None).await?;
    let start_ms = startup.as_secs_f64() * 1000.0;
    record.say(format_args!(
        "{:<28} {start_ms:>10.1} ms",
        "start to first answer"
    ));
    record.figure("start_ms", start_ms);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mib(server.pid).0;
    record.say(format_args!("{:<28} {idle:>10.1} MiB", "idle RSS"));
    record.figure("idle_rss_mib", idle);

    let phase = Duration::from_secs(args.seconds);
    let t = Instant::now();
    let mut health = run_load(
        server.addr,
        args.clients,
        Budget {
            count: None,
            deadline: Some(Instant::now() + phase),
        },
        StatusCode::SERVICE_UNAVAILABLE,
        |_| (Method::GET, "/api/health".into(), vec![], Bytes::new()),
    )
    .await;
    let health_rate = phase_figures(
        record,
        ("GET /api/health", "health"),
        &mut health,
        t.elapsed().as_secs_f64(),
    );

    wake_latency(&server, args, record).await?;
    parked_cost(&server, args, record).await?;

    let t = Instant::now();
    register(&server, "pool", args.pool, "running", args.clients).await?;
    let reg_secs = t.elapsed().as_secs_f64();
    record.say(format_args!(
        "{:<28} {:>10.0} req/s   ({} VMs in {:.1} s)",
        "register VMs (status POST)",
        args.pool as f64 / reg_secs,
        args.pool,
        reg_secs
    ));
    record.figure("register_rps", args.pool as f64 / reg_secs);

    let t = Instant::now();
    let mut claims = run_load(
        server.addr,
        args.clients,
        Budget {
            count: Some(args.pool),
            deadline: Some(Instant::now() + phase),
        },
        StatusCode::SERVICE_UNAVAILABLE,
        |n| {
            (
                Method::POST,
                "/api/request_vm".into(),
                vec![("content-type", "application/x-www-form-urlencoded".into())],
                claim_body(n),
            )
        },
    )
    .await;
    let secs = t.elapsed().as_secs_f64();
    phase_figures(record, ("POST /api/request_vm", "claim"), &mut claims, secs);
    let durable = claims.ok as f64 / secs;
    record.say(format_args!(
        "{:<28} {durable:>10.0} claims/s durable   = {:.3} × health req/s",
        "claims",
        durable / health_rate
    ));
    record.figure("claims_durable_per_s", durable);
    record.figure("claims_per_health", durable / health_rate);

    let (rss, hwm) = rss_mib(server.pid);
    record.say(format_args!(
        "{:<28} {rss:>10.1} MiB   (peak {hwm:.1} MiB)",
        "RSS after load"
    ));
    record.figure("rss_after_load_mib", rss);
    record.figure("rss_peak_mib", hwm);

    let (took, status) = server.stop().await?;
    let took_ms = took.as_secs_f64() * 1000.0;
    record.say(format_args!(
        "{:<28} {took_ms:>10.1} ms   ({status})",
        "SIGTERM to exit"
    ));
    record.figure("sigterm_exit_ms", took_ms);

    if args.heartbeat_vms > 0 {
        let every = args.heartbeat_every.to_string();
        let env = [("LABLINK_SERVER_HEARTBEAT_SECONDS", every.as_str())];
        let (server, _) = start_server(exe, &dir.join("heartbeats"), &env, None).await?;
        heartbeat::load(
            &server,
            args.heartbeat_vms,
            Duration::from_secs(args.heartbeat_every),
            Duration::from_secs(args.heartbeat_run),
            record,
        )
        .await?;
        server.stop().await?;
    }
    if args.frozen > 0 {
        let env = [
            ("LABLINK_SERVER_HEARTBEAT_SECONDS", "1"),
            ("LABLINK_SERVER_STALE_AFTER_HEARTBEATS", "3"),
        ];
        let (server, _) = start_server(
            exe,
            &dir.join("detection"),
            &env,
            Some("agent unresponsive"),
        )
        .await?;
        heartbeat::detection(&server, args.frozen, record).await?;
        server.stop().await?;
    }
    if args.desktop_streams > 0 {
        let env = [
            ("LABLINK_DESKTOP_MODE", "browser"),
            ("LABLINK_SERVER_STALE_AFTER_HEARTBEATS", "20"),
        ];
        let (server, _) = start_server(exe, &dir.join("desktop"), &env, None).await?;
        desktop::relay(&server, args.desktop_streams, phase, record).await?;
        server.stop().await?;
    }
    if args.wall_seats > 0 {
        let env = [
            ("LABLINK_DESKTOP_MODE", "browser"),
            ("LABLINK_SERVER_STALE_AFTER_HEARTBEATS", "20"),
        ];
        let (server, _) = start_server(exe, &dir.join("wall"), &env, None).await?;
        let run = Duration::from_secs(args.wall_run);
        wall::load(&server, args.wall_seats, run, record).await?;
        server.stop().await?;
    }
    if args.broadcast_viewers > 0 {
        let env = [
            ("LABLINK_DESKTOP_MODE", "browser"),
            ("LABLINK_SERVER_STALE_AFTER_HEARTBEATS", "20"),
        ];
        let (server, _) = start_server(exe, &dir.join("broadcast"), &env, None).await?;
        broadcast::load(&server, args.broadcast_viewers, phase, record).await?;
        server.stop().await?;
    }
    Ok(())
}

/// Parks a long-poll on each of `wakes` VMs, then claims them one at a time and measures
/// from sending the claim to the agent's socket receiving its assignment.
async fn wake_latency(server: &Server, args: &BenchArgs, record: &Record) -> Result<(), String> {
    register(server, "wake", args.wakes, "running", 8).await?;
    let mut pollers = Vec::new();
    for n in 1..=args.wakes {
        let stream = longpoll::park(server.addr, &server.token, &format!("wake-vm-{n}"))
            .await
            .map_err(|e| format!("park: {e}"))?;
        pollers.push(tokio::spawn(longpoll::answer(stream)));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conn = Conn::open(server.addr).await.map_err(|e| e.to_string())?;
    let mut sent = Vec::new();
    for n in 0..args.wakes {
        sent.push(Instant::now());
        let status = conn
            .send(
                Method::POST,
                "/api/request_vm",
                &[("content-type", "application/x-www-form-urlencoded")],
                claim_body(u64::MAX - n),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(format!("wake claim answered {status}"));
        }
    }
    let mut samples = Samples::default();
    // The pick order is the VM number, so claim n went to wake-vm-(n+1).
    for (poller, sent_at) in pollers.into_iter().zip(sent) {
        match tokio::time::timeout(Duration::from_secs(10), poller).await {
            Ok(Ok(Ok((200, at)))) => {
                samples.ok += 1;
                samples
                    .micros
                    .push(at.saturating_duration_since(sent_at).as_micros() as u32);
            }
            _ => samples.errors += 1,
        }
    }
    let (p50, p99) = (samples.quantile_ms(0.5), samples.quantile_ms(0.99));
    record.say(format_args!(
        "{:<28} p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   woken {} of {}",
        "claim → agent wake", samples.ok, args.wakes
    ));
    record.figure("wake_p50_ms", p50);
    record.figure("wake_p99_ms", p99);
    record.figure("wake_missed", (args.wakes - samples.ok) as f64);
    Ok(())
}

/// Parks `parked` long-polls at once and reports the server's RSS growth per request.
async fn parked_cost(server: &Server, args: &BenchArgs, record: &Record) -> Result<(), String> {
    register(server, "park", args.parked, "initializing", args.clients).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_mib(server.pid).0;
    let mut streams = Vec::with_capacity(args.parked as usize);
    let mut failed = 0u64;
    for n in 1..=args.parked {
        match longpoll::park(server.addr, &server.token, &format!("park-vm-{n}")).await {
            Ok(s) => streams.push(s),
            Err(_) => failed += 1,
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_mib(server.pid).0;
    let mut still_parked = 0u64;
    let mut buf = [0u8; 1];
    for s in &streams {
        if matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            still_parked += 1;
        }
    }
    // Per long-poll really parked: one the server answered at once costs it nothing.
    let per = (after - before) * 1024.0 / still_parked.max(1) as f64;
    record.say(format_args!(
        "{:<28} {:>10} parked   RSS {before:.1} → {after:.1} MiB   {per:.1} KiB each   (failed to park {failed})",
        "parked long-polls", still_parked
    ));
    record.figure("parked_rss_before_mib", before);
    record.figure("parked_rss_after_mib", after);
    record.figure("parked_longpoll_kib", per);
    record.figure("parked_not_parked", (args.parked - still_parked) as f64);
    drop(streams);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}
