//! `lablink agent`, run as the real binary against a real allocator on loopback, with a
//! fake `nvidia-smi` and a fake Chrome Remote Desktop `start-host` (tests/fixtures/bin).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lablink::model::{Health, Vm, VmStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::helpers::{
    Auth, NotifySocket, SERVE_ADMIN_PASSWORD, ServeProc, TestServer, client, crd_command,
    free_port, html_field, run_binary, wait_for, within,
};

const REDIRECT: &str = "--redirect-url=https://remotedesktop.google.com/_/oauthredirect";
/// Short hold of `/vm_startup`, so the agent's answer to 408 (ask again) is exercised.
const LONG_POLL: u64 = 2;

fn fixtures_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin")
}

/// Letters and digits only, different for every call in this and any concurrent run.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}{}x{}x{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn short_poll_server() -> TestServer {
    TestServer::start_with(|c| c.server.long_poll_seconds = LONG_POLL).await
}

/// Where the agent finds `nvidia-smi`.
#[derive(Clone, Copy)]
enum Gpu {
    /// The fake, driven by the rig's mode file.
    Fake,
    /// A PATH holding no nvidia-smi at all.
    Missing,
}

/// One VM's worth of files: the fakes' records, the agent's state and its logs.
struct Rig {
    dir: TempDir,
    vm: String,
    software: String,
    spawned: AtomicU32,
    /// The lablink executable whose agent runs.
    binary: PathBuf,
    /// The start-host the agent runs (default: the fake in tests/fixtures/bin).
    start_host: PathBuf,
}

impl Rig {
    fn new(prefix: &str) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["crd", "state", "home", "empty-path"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        let rig = Rig {
            dir,
            vm: format!("{prefix}-vm-1"),
            software: unique("lablinksw"),
            spawned: AtomicU32::new(0),
            binary: PathBuf::from(env!("CARGO_BIN_EXE_lablink")),
            start_host: fixtures_bin().join("start-host"),
        };
        rig.set_gpu("healthy");
        rig
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Atomically, so nvidia-smi never reads a half-written mode.
    fn set_gpu(&self, mode: &str) {
        let tmp = self.path("gpu-mode.tmp");
        std::fs::write(&tmp, mode).expect("write gpu mode");
        std::fs::rename(&tmp, self.path("gpu-mode")).expect("rename gpu mode");
    }

    /// The exit code of the next start-host runs.
    fn set_start_host_exit(&self, code: u8) {
        let tmp = self.path("start-host-exit.tmp");
        std::fs::write(&tmp, code.to_string()).expect("write exit code");
        std::fs::rename(&tmp, self.path("start-host-exit")).expect("rename exit code");
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The argument vectors of every start-host run so far (each begins with `--code=`).
    fn start_host_runs(&self) -> Vec<Vec<String>> {
        let mut runs: Vec<Vec<String>> = Vec::new();
        for line in self.read("start-host.args").lines() {
            match runs.last_mut() {
                Some(run) if !line.starts_with("--code=") => run.push(line.to_owned()),
                _ => runs.push(vec![line.to_owned()]),
            }
        }
        runs
    }

    fn gpu_calls(&self) -> usize {
        self.read("gpu-calls").lines().count()
    }

    fn expected_argv(&self, code: &str) -> Vec<String> {
        vec![
            format!("--code={code}"),
            REDIRECT.to_owned(),
            format!("--name={}", self.vm),
        ]
    }

    /// Starts `lablink agent` for this rig's VM.
    fn agent(&self, url: &str, token: Token<'_>, gpu: Gpu, extra: &[&str]) -> AgentProc {
        self.agent_with_env(url, token, gpu, extra, &[])
    }

    fn agent_with_env(
        &self,
        url: &str,
        token: Token<'_>,
        gpu: Gpu,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> AgentProc {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed) + 1;
        let log = self.path(&format!("agent-{n}.log"));
        let out = std::fs::File::create(&log).expect("agent log file");
        let err = out.try_clone().expect("clone log file");
        let path_dir = match gpu {
            Gpu::Fake => fixtures_bin(),
            Gpu::Missing => self.path("empty-path"),
        };
        let path = match gpu {
            Gpu::Fake => format!("{}:/usr/bin:/bin", path_dir.display()),
            // Not even /usr/bin: a real nvidia-smi there would make the test depend on the host.
            Gpu::Missing => path_dir.display().to_string(),
        };
        let p = |name: &str| self.path(name).display().to_string();
        let mut cmd = Command::new(&self.binary);
        cmd.arg("agent")
            .args(["--allocator-url", url])
            .args(["--vm-name", &self.vm])
            .args(["--software", &self.software])
            .arg("--start-host")
            .arg(&self.start_host)
            .args(["--crd-config-dir", &p("crd")])
            .args(["--state-dir", &p("state")])
            .args(["--gpu-probe", "nvidia-smi"])
            .args(["--gpu-interval", "0.2", "--inuse-interval", "0.2"])
            .args(["--log-flush-ms", "200"])
            .args(extra)
            .env_clear()
            .env("PATH", path)
            .env("HOME", p("home"))
            .env("LABLINK_LOG", "debug")
            // start-host must be run with DISPLAY emptied, whatever the agent inherited.
            .env("DISPLAY", ":99")
            .env("FAKE_GPU_MODE_FILE", p("gpu-mode"))
            .env("FAKE_GPU_CALL_LOG", p("gpu-calls"))
            .env("FAKE_GPU_PID_FILE", p("gpu-pids"))
            .env("FAKE_START_HOST_LOG", p("start-host.args"))
            .env("FAKE_START_HOST_STDIN", p("start-host.stdin"))
            .env("FAKE_START_HOST_ENV", p("start-host.env"))
            .env("FAKE_START_HOST_EXIT_FILE", p("start-host-exit"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        match token {
            Token::Flag(t) => {
                // `=`: a token may begin with `-` (see a_token_beginning_with_a_hyphen_…).
                cmd.arg(format!("--token={t}"));
            }
            Token::SeparateFlag(t) => {
                cmd.args(["--token", t]);
            }
            Token::Env(t) => {
                cmd.env("API_TOKEN", t);
            }
            Token::File(t) => {
                let file = self.path("token-file");
                std::fs::write(&file, format!("{t}\n")).expect("write token file");
                cmd.env("API_TOKEN_FILE", file);
            }
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        let child = cmd.spawn().expect("spawn lablink agent");
        AgentProc {
            child,
            log,
            name: format!("agent #{n} of {}", self.vm),
        }
    }
}

#[derive(Clone, Copy)]
enum Token<'a> {
    /// `--token=T`
    Flag(&'a str),
    /// `--token T`
    SeparateFlag(&'a str),
    Env(&'a str),
    /// `API_TOKEN_FILE` naming a file that holds it (a systemd credential)
    File(&'a str),
}

/// A running agent. Its stderr goes to a file, printed when the test fails.
struct AgentProc {
    child: Child,
    log: PathBuf,
    name: String,
}

impl AgentProc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of its log containing every one of `needles`.
    fn count(&self, needles: &[&str]) -> usize {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    async fn wait_log(&self, secs: u64, needles: &[&str], at_least: usize) {
        let what = format!("{}: {at_least} log line(s) with {needles:?}", self.name);
        wait_for(secs, &what, || async {
            (self.count(needles) >= at_least).then_some(())
        })
        .await;
    }

    fn assert_alive(&mut self) {
        let status = self.child.try_wait().expect("try_wait");
        assert!(status.is_none(), "{} exited early: {status:?}", self.name);
    }

    /// SIGTERM, then its exit status within `secs`.
    async fn stop(&mut self, secs: u64) -> ExitStatus {
        let pid = self.child.id().expect("agent still has its pid");
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM the agent");
        let started = Instant::now();
        let status = within(
            secs,
            &format!("{} to stop on SIGTERM", self.name),
            self.child.wait(),
        )
        .await
        .expect("wait for the agent");
        assert!(started.elapsed() < Duration::from_secs(secs));
        status
    }

    async fn exit_within(&mut self, secs: u64) -> ExitStatus {
        within(secs, &format!("{} to exit", self.name), self.child.wait())
            .await
            .expect("wait for the agent")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- stderr of {} -----\n{}\n----- end -----",
                self.name,
                self.log()
            );
        }
    }
}

/// The stored VM once `ok` holds; on timeout the failure shows the last stored state.
async fn wait_vm(
    s: &TestServer,
    host: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&Vm) -> bool,
) -> Vm {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let vm = s.stored_vm(host).await;
        if let Some(vm) = &vm
            && ok(vm)
        {
            return vm.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {secs} s; stored: {vm:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_free_count(s: &TestServer, want: u64, secs: u64) {
    wait_for(secs, &format!("free VM count {want}"), || async {
        (s.free_count().await == want).then_some(())
    })
    .await;
}

async fn wait_start_host_runs(rig: &Rig, n: usize, secs: u64) -> Vec<Vec<String>> {
    wait_for(secs, &format!("{n} start-host run(s)"), || async {
        let runs = rig.start_host_runs();
        // A run is complete once its three arguments are written (stdin is written first).
        (runs.len() >= n && runs.iter().all(|r| r.len() >= 3)).then_some(runs)
    })
    .await
}

// --- A pass-through TCP proxy that notes what the agent asked, in order. ---

const MARKERS: [(&str, &str); 4] = [
    ("POST /vm_startup ", "poll"),
    ("\"status\":\"initializing\"", "initializing"),
    ("\"status\":\"running\"", "running"),
    ("\"status\":\"error\"", "error"),
];

/// Every marker in `bytes`, in the order they occur.
fn markers_in(bytes: &[u8]) -> Vec<&'static str> {
    let mut found: Vec<(usize, &'static str)> = Vec::new();
    for (needle, name) in MARKERS {
        let needle = needle.as_bytes();
        found.extend(
            bytes
                .windows(needle.len())
                .enumerate()
                .filter(|(_, w)| *w == needle)
                .map(|(at, _)| (at, name)),
        );
    }
    found.sort_unstable();
    found.into_iter().map(|(_, name)| name).collect()
}

struct RecordingProxy {
    base: String,
    events: Arc<Mutex<Vec<&'static str>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingProxy {
    async fn start(upstream: String) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let base = format!("http://{}", listener.local_addr().expect("proxy address"));
        let events: Arc<Mutex<Vec<&'static str>>> = Arc::default();
        let recorded = events.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (upstream, recorded) = (upstream.clone(), recorded.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut from_agent, mut to_agent) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_agent).await;
                    });
                    let (mut seen, mut noted) = (Vec::new(), 0);
                    let mut buf = [0u8; 8192];
                    loop {
                        let n = match from_agent.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        seen.extend_from_slice(&buf[..n]);
                        // Noted before the server sees it, so the order is the agent's.
                        let found = markers_in(&seen);
                        recorded
                            .lock()
                            .expect("events lock")
                            .extend_from_slice(&found[noted..]);
                        noted = found.len();
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown().await;
                    let _ = back.await;
                });
            }
        });
        RecordingProxy { base, events, task }
    }

    fn events(&self) -> Vec<&'static str> {
        self.events.lock().expect("events lock").clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// --- The tests ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_registers_waits_and_starts_the_desktop_once() {
    let s = short_poll_server().await;
    let rig = Rig::new("flow");
    let proxy = RecordingProxy::start(s.addr().to_owned()).await;
    let mut agent = rig.agent(&proxy.base, Token::Flag(s.token()), Gpu::Fake, &[]);
    within(45, "full flow", async {
        let vm = wait_vm(&s, &rig.vm, 15, "VM running", |vm| {
            vm.status == Some(VmStatus::Running)
        })
        .await;
        assert!(vm.assignment.is_none());
        // Running means waiting: the agent's poll is parked right after.
        wait_for(5, "the agent's poll parks", || async {
            (s.app.waiters.parked() == 1).then_some(())
        })
        .await;
        // It asks again after the allocator's 408 (hold time LONG_POLL s).
        wait_for(
            LONG_POLL * 3 + 5,
            "a second /vm_startup after 408",
            || async {
                (proxy.events().iter().filter(|e| **e == "poll").count() >= 2).then_some(())
            },
        )
        .await;
        let events = proxy.events();
        let statuses: Vec<_> = events.iter().filter(|e| **e != "poll").collect();
        assert_eq!(
            statuses,
            [&"initializing", &"running"],
            "events: {events:?}"
        );
        let running_at = events.iter().position(|e| *e == "running");
        let first_poll = events.iter().position(|e| *e == "poll");
        assert!(
            first_poll > running_at,
            "polled before reporting running: {events:?}"
        );
        wait_vm(&s, &rig.vm, 10, "GPU healthy", |vm| {
            vm.health == Some(Health::Healthy)
        })
        .await;
        assert_eq!(s.free_count().await, 1);
        assert!(
            rig.start_host_runs().is_empty(),
            "start-host ran before any claim"
        );

        let claimed = s
            .claim("ada@example.org", &crd_command("4/0AbcTest-123"))
            .await;
        assert_eq!(claimed.status, 200, "{}", claimed.html);
        assert_eq!(claimed.hostname(), rig.vm);
        let pin = claimed.pin();

        let runs = wait_start_host_runs(&rig, 1, 10).await;
        assert_eq!(runs, vec![rig.expected_argv("4/0AbcTest-123")]);
        assert_eq!(rig.read("start-host.stdin"), format!("{pin}\n{pin}\n"));
        assert_eq!(rig.read("start-host.env"), "DISPLAY=[]\n");
        agent
            .wait_log(10, &["desktop started; the participant can connect"], 1)
            .await;

        let vm = wait_vm(&s, &rig.vm, 10, "container timings reported", |vm| {
            vm.timings.container.duration_seconds.is_some()
        })
        .await;
        let took = vm.timings.container.duration_seconds.unwrap_or(-1.0);
        assert!((0.0..60.0).contains(&took), "container duration {took}");
        assert_eq!(vm.status, Some(VmStatus::Running));
        let a = vm.assignment.expect("assignment");
        assert_eq!(a.crd_code, "4/0AbcTest-123");
        assert_eq!(a.pin, pin);

        // The agent stays (telemetry goes on) and never runs start-host again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        agent.assert_alive();
        assert_eq!(rig.start_host_runs().len(), 1, "start-host ran again");
        assert_eq!(
            rig.read("start-host.stdin"),
            format!("{pin}\n{pin}\n"),
            "start-host ran again"
        );
    })
    .await;
    let status = agent.stop(5).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_host_is_an_error_and_a_fresh_code_recovers() {
    let s = short_poll_server().await;
    let rig = Rig::new("retry");
    rig.set_start_host_exit(1);
    let mut agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Fake, &[]);
    within(50, "failure and recovery", async {
        wait_vm(&s, &rig.vm, 15, "VM running and healthy", |vm| {
            vm.status == Some(VmStatus::Running) && vm.health == Some(Health::Healthy)
        })
        .await;
        let first = s
            .claim("grace@example.org", &crd_command("4/0AbcFail-111"))
            .await;
        assert_eq!(first.status, 200, "{}", first.html);
        let pin = first.pin();

        let vm = wait_vm(
            &s,
            &rig.vm,
            10,
            "status error after start-host failed",
            |vm| vm.status == Some(VmStatus::Error),
        )
        .await;
        assert_eq!(
            vm.assignment.map(|a| a.crd_code).as_deref(),
            Some("4/0AbcFail-111")
        );
        assert_eq!(
            rig.start_host_runs(),
            vec![rig.expected_argv("4/0AbcFail-111")]
        );
        agent.wait_log(5, &["desktop did not start"], 1).await;

        // The participant copies a fresh command (codes are single-use); it works now.
        rig.set_start_host_exit(0);
        let again = s
            .claim_again("grace@example.org", &crd_command("4/0AbcFresh-222"), &first)
            .await;
        assert_eq!(again.status, 200, "{}", again.html);
        assert_eq!(again.hostname(), rig.vm);
        assert_eq!(again.pin(), pin, "the PIN stays with a rotated code");

        // The agent looks for a fresh code every 15 s after a failure.
        let runs = wait_start_host_runs(&rig, 2, 30).await;
        assert_eq!(
            runs,
            vec![
                rig.expected_argv("4/0AbcFail-111"),
                rig.expected_argv("4/0AbcFresh-222"),
            ]
        );
        assert_eq!(
            rig.read("start-host.stdin"),
            format!("{pin}\n{pin}\n{pin}\n{pin}\n")
        );
        agent
            .wait_log(10, &["desktop started; the participant can connect"], 1)
            .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        agent.assert_alive();
        assert_eq!(rig.start_host_runs().len(), 2, "start-host ran again");

        // Once the desktop is up, the VM should no longer show the earlier failure.
        wait_vm(
            &s,
            &rig.vm,
            5,
            "status back to running after the desktop started on the second code",
            |vm| vm.status == Some(VmStatus::Running),
        )
        .await;
    })
    .await;
    let status = agent.stop(5).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_health_is_reported_on_change_with_a_way_back() {
    let s = short_poll_server().await;
    let rig = Rig::new("gpu");
    let mut agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Fake, &[]);
    let reported = ["GPU health reported"];
    within(40, "healthy, failing, healthy", async {
        wait_vm(&s, &rig.vm, 15, "healthy and running", |vm| {
            vm.health == Some(Health::Healthy) && vm.status == Some(VmStatus::Running)
        })
        .await;
        wait_free_count(&s, 1, 5).await;
        agent.wait_log(5, &reported, 1).await;

        rig.set_gpu("failing");
        wait_vm(&s, &rig.vm, 10, "unhealthy", |vm| {
            vm.health == Some(Health::Unhealthy)
        })
        .await;
        wait_free_count(&s, 0, 5).await;
        agent.wait_log(5, &reported, 2).await;
        // Still failing for several probes: nothing more is reported.
        let calls = rig.gpu_calls();
        wait_for(10, "more probes while failing", || async {
            (rig.gpu_calls() >= calls + 4).then_some(())
        })
        .await;
        assert_eq!(agent.count(&reported), 2, "reported again without a change");

        rig.set_gpu("healthy");
        wait_vm(&s, &rig.vm, 10, "healthy again", |vm| {
            vm.health == Some(Health::Healthy)
        })
        .await;
        wait_free_count(&s, 1, 5).await;
        agent.wait_log(5, &reported, 3).await;
        let calls = rig.gpu_calls();
        wait_for(10, "more probes while healthy", || async {
            (rig.gpu_calls() >= calls + 5).then_some(())
        })
        .await;

        let log = agent.log();
        let values: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("GPU health reported"))
            .map(|l| {
                l.split("gpu=")
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                    .unwrap_or("?")
            })
            .collect();
        assert_eq!(values, ["Healthy", "Unhealthy", "Healthy"]);
    })
    .await;
    agent.assert_alive();
    let status = agent.stop(5).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// `/proc/<pid>` is gone or a zombie.
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_nvidia_smi_is_unhealthy() {
    let s = short_poll_server().await;
    let rig = Rig::new("gpuhang");
    rig.set_gpu("hang");
    let mut agent = rig.agent(
        &s.base,
        Token::Flag(s.token()),
        Gpu::Fake,
        &["--gpu-timeout", "1"],
    );
    within(30, "hanging nvidia-smi", async {
        // Running is announced only after the first GPU report.
        wait_vm(&s, &rig.vm, 10, "unhealthy and running", |vm| {
            vm.health == Some(Health::Unhealthy) && vm.status == Some(VmStatus::Running)
        })
        .await;
        assert_eq!(s.free_count().await, 0);
        // Hangs again and again; reported once.
        wait_for(15, "a third hanging probe", || async {
            (rig.gpu_calls() >= 3).then_some(())
        })
        .await;
        assert_eq!(agent.count(&["GPU health reported", "gpu=Unhealthy"]), 1);
        assert_eq!(agent.count(&["GPU health reported"]), 1);
    })
    .await;
    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    // No hung nvidia-smi outlives its probe.
    let pids: Vec<i32> = rig
        .read("gpu-pids")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(!pids.is_empty());
    wait_for(5, "every nvidia-smi gone", || async {
        pids.iter().all(|p| process_gone(*p)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_nvidia_smi_is_reported_once_as_not_available() {
    let s = short_poll_server().await;
    let rig = Rig::new("gpunone");
    let mut agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Missing, &[]);
    within(20, "missing nvidia-smi", async {
        let vm = wait_vm(&s, &rig.vm, 10, "N/A", |vm| {
            vm.health == Some(Health::NotAvailable)
        })
        .await;
        assert_eq!(vm.health.as_ref().map(Health::as_str), Some("N/A"));
        agent.wait_log(5, &["no GPU tooling found"], 1).await;
        wait_vm(&s, &rig.vm, 10, "running", |vm| {
            vm.status == Some(VmStatus::Running)
        })
        .await;
        // N/A does not keep a VM from being handed out.
        wait_free_count(&s, 1, 5).await;
        // Several intervals later: still exactly one report.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(agent.count(&["GPU health reported"]), 1);
        assert_eq!(agent.count(&["GPU health reported", "gpu=N/A"]), 1);
    })
    .await;
    agent.assert_alive();
    let status = agent.stop(5).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// Starts `exe`, retrying while another thread's fork still holds the fresh copy open
/// for writing (ETXTBSY).
async fn spawn_copied(exe: &Path) -> Child {
    for _ in 0..100 {
        match Command::new(exe)
            .arg("60")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Err(e) if e.raw_os_error() == Some(26) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.expect("spawn the dummy program"),
        }
    }
    panic!("{} stayed busy (ETXTBSY)", exe.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_use_follows_the_software_process() {
    let s = short_poll_server().await;
    let rig = Rig::new("inuse");
    let mut agent = rig.agent(&s.base, Token::Env(s.token()), Gpu::Fake, &[]);
    let reported = "in-use status reported";
    within(30, "in-use", async {
        // The initial "not in use" is reported too.
        agent.wait_log(10, &[reported, "in_use=false"], 1).await;
        let vm = wait_vm(&s, &rig.vm, 5, "VM exists", |_| true).await;
        assert!(!vm.in_use);
        assert_eq!(agent.count(&[reported]), 1);

        let exe = rig.path(&format!("{}-gui", rig.software));
        std::fs::copy("/bin/sleep", &exe).expect("copy /bin/sleep");
        let mut dummy = spawn_copied(&exe).await;
        wait_vm(&s, &rig.vm, 10, "in use", |vm| vm.in_use).await;
        agent.wait_log(5, &[reported, "in_use=true"], 1).await;

        dummy.kill().await.expect("kill the dummy");
        wait_vm(&s, &rig.vm, 10, "not in use again", |vm| !vm.in_use).await;
        agent.wait_log(5, &[reported, "in_use=false"], 2).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(agent.count(&[reported]), 3, "reported without a change");
    })
    .await;
    let status = agent.stop(5).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test]
async fn agent_is_ready_for_systemd_once_registered_with_a_token_file() {
    let s = short_poll_server().await;
    let rig = Rig::new("notify");
    let mut notify = NotifySocket::bind(rig.dir.path());
    let socket = notify.path.clone();
    let mut agent = rig.agent_with_env(
        &s.base,
        Token::File(s.token()),
        Gpu::Fake,
        &[],
        &[("NOTIFY_SOCKET", &socket)],
    );
    let ready = notify.expect_line("READY=1", 20).await;
    assert!(
        ready.contains(&format!("STATUS=registered with {} as {}", s.base, rig.vm)),
        "{ready}"
    );
    // Ready is sent only after the allocator has the VM.
    assert!(
        s.stored_vm(&rig.vm).await.is_some(),
        "READY before registration"
    );
    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    notify.expect_line("STOPPING=1", 5).await;
}

/// A git repository with one commit, for the agent to clone as the workshop's tutorial.
fn tutorial_repository(dir: &Path) -> PathBuf {
    let repo = dir.join("sleap-tutorial-data");
    std::fs::create_dir_all(&repo).expect("mkdir repo");
    std::fs::write(repo.join("README.md"), "tutorial\n").expect("write");
    for args in [
        &["init", "--quiet"][..],
        &["add", "README.md"],
        &[
            "-c",
            "user.name=Lab",
            "-c",
            "user.email=lab@example.org",
            "commit",
            "--quiet",
            "-m",
            "tutorial",
        ],
    ] {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    }
    repo
}

/// A startup script that fails the first `failures` times it runs, counting its runs.
fn flaky_script(rig: &Rig, failures: u32) -> PathBuf {
    let script = rig.path("custom-startup.sh");
    let runs = rig.path("startup-runs");
    std::fs::write(
        &script,
        format!(
            "echo run >> '{runs}'\nn=$(wc -l < '{runs}')\necho \"installing, attempt $n\"\n\
             if [ \"$n\" -le {failures} ]; then echo 'mirror unreachable' >&2; exit 7; fi\n",
            runs = runs.display()
        ),
    )
    .expect("write script");
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_is_cloned_and_a_flaky_startup_script_retried_before_running() {
    let s = short_poll_server().await;
    let rig = Rig::new("setup");
    let repo = tutorial_repository(rig.dir.path());
    let script = flaky_script(&rig, 1);
    let desktop = rig.path("Desktop");
    let (repo, script, desktop) = (
        repo.display().to_string(),
        script.display().to_string(),
        desktop.display().to_string(),
    );
    let mut agent = rig.agent(
        &s.base,
        Token::Env(s.token()),
        Gpu::Fake,
        &[
            "--tutorial-repo",
            &repo,
            "--desktop-dir",
            &desktop,
            "--startup-script",
            &script,
            "--startup-max-delay",
            "0.1",
        ],
    );
    wait_vm(&s, &rig.vm, 30, "VM running", |vm| {
        vm.status == Some(VmStatus::Running)
    })
    .await;
    assert_eq!(
        rig.read("startup-runs").lines().count(),
        2,
        "one failure, one success"
    );
    assert_eq!(
        std::fs::read_to_string(rig.path("Desktop/sleap-tutorial-data/README.md")).expect("clone"),
        "tutorial\n"
    );
    let log = agent.log();
    assert!(log.contains("custom startup script failed"), "{log}");
    assert!(
        log.contains("mirror unreachable"),
        "the script's output is logged: {log}"
    );
    assert!(log.contains("custom startup script succeeded"), "{log}");
    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_script_that_never_succeeds_stops_the_vm_only_when_asked() {
    let s = short_poll_server().await;

    let rig = Rig::new("setupfail");
    let script = flaky_script(&rig, 99).display().to_string();
    let mut agent = rig.agent(
        &s.base,
        Token::Env(s.token()),
        Gpu::Fake,
        &[
            "--startup-script",
            &script,
            "--startup-attempts",
            "2",
            "--startup-max-delay",
            "0.1",
            "--startup-on-error",
            "fail",
        ],
    );
    let status = agent.exit_within(30).await;
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    let vm = s.stored_vm(&rig.vm).await.expect("registered");
    assert_eq!(vm.status, Some(VmStatus::Error));
    assert_eq!(rig.read("startup-runs").lines().count(), 2);
    let log = agent.log();
    assert!(
        log.contains(
            "ERROR: custom startup script failed after 2 attempts: exited with exit status: 7"
        ),
        "{log}"
    );

    // `continue` (the default): the VM is offered anyway, the error stays in the log.
    let rig = Rig::new("setupgo");
    let script = flaky_script(&rig, 99).display().to_string();
    let mut agent = rig.agent(
        &s.base,
        Token::Env(s.token()),
        Gpu::Fake,
        &[
            "--startup-script",
            &script,
            "--startup-attempts",
            "2",
            "--startup-max-delay",
            "0.1",
        ],
    );
    wait_vm(&s, &rig.vm, 30, "VM running", |vm| {
        vm.status == Some(VmStatus::Running)
    })
    .await;
    assert!(
        agent
            .log()
            .contains("ERROR: custom startup script failed after 2 attempts")
    );
    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0));
}

/// A program that writes who ran it, its environment and its input to `dir/<name>.*`.
fn recorder(rig: &Rig, name: &str, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = rig.path(name);
    let out = dir.join(name).display().to_string();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncat >'{out}.stdin'\nid -u >'{out}.uid'\nid -G >'{out}.groups'\n\
             env >'{out}.env'\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >'{out}.args'\n"
        ),
    )
    .expect("write recorder");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, to switch to the nobody account (.ci/run runs as root)"]
async fn the_desktop_runs_as_the_desktop_user_without_the_agent_credential() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "switching the desktop to another account needs root"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("look up nobody")
        .expect("a `nobody` account");
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw()))
            .expect("chown to nobody");
    };
    let s = short_poll_server().await;
    let mut rig = Rig::new("asuser");
    // The desktop user reaches its programs and writes its records in a folder of its own.
    std::fs::set_permissions(rig.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod rig");
    let records = rig.path("records");
    std::fs::create_dir(&records).expect("mkdir records");
    chown(&records);
    rig.start_host = recorder(&rig, "start-host", &records);
    let script = recorder(&rig, "startup", &records);
    let repo = tutorial_repository(&records);
    for entry in std::fs::read_dir(&records).expect("records") {
        let path = entry.expect("entry").path();
        let status = std::process::Command::new("chown")
            .args(["-R", &format!("{}:{}", nobody.uid, nobody.gid)])
            .arg(&path)
            .status()
            .expect("chown -R");
        assert!(status.success());
    }
    // Git creates the missing desktop folder as the desktop user.
    let desktop = records.join("Desktop");
    let token = s.token().to_owned();
    let (script, repo, desktop_arg) = (
        script.display().to_string(),
        repo.display().to_string(),
        desktop.display().to_string(),
    );
    let mut agent = rig.agent(
        &s.base,
        Token::Env(&token),
        Gpu::Fake,
        &[
            "--desktop-user",
            "nobody",
            "--startup-script",
            &script,
            "--tutorial-repo",
            &repo,
            "--desktop-dir",
            &desktop_arg,
        ],
    );
    let read = |name: &str| std::fs::read_to_string(records.join(name)).unwrap_or_default();
    within(60, "desktop as nobody", async {
        wait_vm(&s, &rig.vm, 30, "VM running", |vm| {
            vm.status == Some(VmStatus::Running)
        })
        .await;
        let claimed = s
            .claim("ada@example.org", &crd_command("4/0AbcAsUser-1"))
            .await;
        assert_eq!(claimed.status, 200, "{}", claimed.html);
        let pin = claimed.pin();
        wait_for(15, "start-host ran", || async {
            (read("start-host.args").lines().count() == 3).then_some(())
        })
        .await;
        assert_eq!(
            read("start-host.args").lines().collect::<Vec<_>>(),
            rig.expected_argv("4/0AbcAsUser-1")
        );
        assert_eq!(read("start-host.stdin"), format!("{pin}\n{pin}\n"));
    })
    .await;

    let groups =
        nix::unistd::getgrouplist(&std::ffi::CString::new("nobody").expect("name"), nobody.gid)
            .expect("nobody's groups");
    let mut groups: Vec<String> = groups.iter().map(ToString::to_string).collect();
    groups.sort();
    groups.dedup();
    for program in ["start-host", "startup"] {
        assert_eq!(
            read(&format!("{program}.uid")).trim(),
            nobody.uid.to_string(),
            "{program}"
        );
        let mut ran_with: Vec<String> = read(&format!("{program}.groups"))
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        ran_with.sort();
        ran_with.dedup();
        assert_eq!(ran_with, groups, "{program}: groups (root's must be gone)");
        let env = read(&format!("{program}.env"));
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        assert_eq!(var("USER").as_deref(), Some("nobody"), "{program}: {env}");
        assert_eq!(
            var("LOGNAME").as_deref(),
            Some("nobody"),
            "{program}: {env}"
        );
        assert_eq!(
            var("HOME").map(PathBuf::from),
            Some(nobody.dir.clone()),
            "{program}: {env}"
        );
        assert_eq!(
            var("XDG_RUNTIME_DIR").map(PathBuf::from),
            Some(PathBuf::from(format!("/run/user/{}", nobody.uid))),
            "{program}: {env}"
        );
        assert!(
            !env.contains(&token),
            "{program}: the token is in its environment: {env}"
        );
        for name in [
            "API_TOKEN",
            "API_TOKEN_FILE",
            "LABLINK_LOG",
            "FAKE_GPU_MODE_FILE",
        ] {
            assert!(var(name).is_none(), "{program}: {name} passed on: {env}");
        }
        assert!(var("PATH").is_some(), "{program}: {env}");
    }
    let env = read("start-host.env");
    assert!(
        env.lines().any(|l| l == "DISPLAY="),
        "DISPLAY emptied: {env}"
    );
    let runtime = std::fs::metadata(format!("/run/user/{}", nobody.uid)).expect("runtime dir");
    assert_eq!(
        runtime.uid(),
        nobody.uid.as_raw(),
        "the runtime dir is nobody's"
    );
    let clone = std::fs::metadata(desktop.join("sleap-tutorial-data/README.md"))
        .expect("the tutorial was cloned");
    assert_eq!(clone.uid(), nobody.uid.as_raw(), "cloned as nobody");
    assert_eq!(
        std::fs::metadata(&desktop).expect("desktop").uid(),
        nobody.uid.as_raw(),
        "the desktop folder is nobody's"
    );

    // Nor can the desktop user read the agent's environment.
    let pid = agent.child.id().expect("agent pid");
    let peek = std::process::Command::new("cat")
        .arg(format!("/proc/{pid}/environ"))
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .expect("cat as nobody");
    assert!(
        !peek.status.success(),
        "nobody read the agent's environment"
    );
    assert!(!String::from_utf8_lossy(&peek.stdout).contains(&token));

    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assignment_arrives_after_the_allocator_was_killed_mid_poll() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let rig = Rig::new("killed");
    let serve_log = rig.path("serve.log");
    let mut server = within(
        40,
        "first allocator",
        ServeProc::start(data.path(), port, serve_log.clone()),
    )
    .await;
    // As shipped: the VM runs on its own credential, minted by the admin.
    let minted = run_binary(
        &["token", "--url", &base, "--vm", &rig.vm],
        &[("LABLINK_ADMIN_PASSWORD", SERVE_ADMIN_PASSWORD)],
        20,
    )
    .await;
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8_lossy(&minted.stdout).trim().to_owned();
    let mut agent = rig.agent(&base, Token::Flag(&token), Gpu::Fake, &[]);
    let http = client();
    let status_of = |host: String| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let r = http
                .get(format!("{base}/api/vm-status/{host}"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            let body: Value = r.json().await.ok()?;
            body["status"].as_str().map(str::to_owned)
        }
    };
    within(40, "VM running", async {
        wait_for(20, "VM running", || async {
            (status_of(rig.vm.clone()).await.as_deref() == Some("running")).then_some(())
        })
        .await;
        // Parked in its long-poll (30 s) now.
        tokio::time::sleep(Duration::from_millis(700)).await;
    })
    .await;

    server.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut server = within(
        40,
        "restarted allocator",
        ServeProc::start(data.path(), port, serve_log),
    )
    .await;
    within(40, "assignment after the restart", async {
        // The restarted allocator hands the VM out once its agent is heard again (it asks
        // again after its backoff): until then the participant is told no VM is free.
        let (status, html) = wait_for(30, "the VM is handed out again", || async {
            let response = http
                .post(format!("{base}/api/request_vm"))
                .form(&[
                    ("email", "lin@example.org"),
                    ("crd_command", crd_command("4/0AbcAfterKill-9").as_str()),
                ])
                .send()
                .await
                .expect("POST /api/request_vm");
            let status = response.status();
            let html = response.text().await.expect("page");
            (status != 503).then_some((status, html))
        })
        .await;
        assert_eq!(status, 200, "{html}");
        assert_eq!(
            html_field(&html, "hostname").as_deref(),
            Some(rig.vm.as_str())
        );
        let pin = html_field(&html, "pin").expect("pin in the page");
        let claimed = Instant::now();
        let runs = wait_start_host_runs(&rig, 1, 30).await;
        assert_eq!(runs, vec![rig.expected_argv("4/0AbcAfterKill-9")]);
        assert_eq!(rig.read("start-host.stdin"), format!("{pin}\n{pin}\n"));
        assert!(
            claimed.elapsed() < Duration::from_secs(20),
            "start-host only {:?} after the claim",
            claimed.elapsed()
        );
        // The poll that was cut off was noticed and retried.
        assert!(
            agent.count(&["waiting for an assignment failed"]) >= 1,
            "the interrupted poll left no trace"
        );
    })
    .await;
    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_agent_with_exit_3() {
    let s = short_poll_server().await;
    let rig = Rig::new("badtoken");
    let mut agent = rig.agent(&s.base, Token::Env("not-the-token"), Gpu::Fake, &[]);
    let started = Instant::now();
    let status = agent.exit_within(10).await;
    assert_eq!(status.code(), Some(3), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = agent.log();
    assert!(log.contains("401"), "{log}");
    assert!(log.contains("API_TOKEN"), "{log}");
    assert!(
        s.stored_vm(&rig.vm).await.is_none(),
        "a refused agent registered"
    );
}

/// The allocator's tokens are URL-safe base64, so one in 64 begins with `-`; the usual
/// `--token "$(lablink token)"` must still pass it as the token's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_beginning_with_a_hyphen_is_taken_as_the_token() {
    let s = short_poll_server().await;
    let rig = Rig::new("hyphentoken");
    let mut agent = rig.agent(&s.base, Token::SeparateFlag("-zWrongToken"), Gpu::Fake, &[]);
    let status = agent.exit_within(10).await;
    // Refused by the allocator (3), not rejected by the command line (2).
    assert_eq!(status.code(), Some(3), "exit status {status}");
    assert!(agent.log().contains("401"), "{}", agent.log());
}

#[tokio::test]
async fn a_missing_allocator_url_is_a_configuration_error() {
    let out = run_binary(
        &["agent", "--vm-name", "cfg-vm-1", "--gpu-probe", "none"],
        &[("PATH", "/usr/bin:/bin")],
        10,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("--allocator-url"), "{stderr}");
}

#[tokio::test]
async fn an_unknown_or_root_desktop_user_is_a_configuration_error() {
    for (user, expected) in [
        ("no-such-desktop-user", "no such account"),
        ("root", "the desktop must not run as root"),
    ] {
        let out = run_binary(
            &[
                "agent",
                "--allocator-url",
                "http://127.0.0.1:9",
                "--vm-name",
                "cfg-vm-1",
                "--desktop-user",
                user,
            ],
            &[("PATH", "/usr/bin:/bin")],
            10,
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{user}: {stderr}");
        assert!(
            stderr.contains(&format!("--desktop-user {user}: {expected}")),
            "{stderr}"
        );
    }
}

/// The non-empty lines of one kind of shipped log.
async fn shipped(s: &TestServer, vm: &str, key: &str) -> Vec<String> {
    let answer = s.agent_get(&format!("/api/vm-logs/{vm}")).await;
    if answer.status == 404 {
        return Vec::new(); // the agent has not registered the VM yet
    }
    answer.expect(200)[key]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn append(path: &Path, lines: &[&str]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log file");
    for line in lines {
        writeln!(f, "{line}").expect("append");
    }
    f.sync_all().expect("sync");
}

/// Both logs once they hold exactly `cloud` and `container` (ANSI stripped), with no
/// duplicates appearing a moment later either.
async fn expect_shipped(s: &TestServer, vm: &str, cloud: &[&str], container: &[&str]) {
    let want = |l: &[&str]| l.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let (cloud, container) = (want(cloud), want(container));
    let last = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let seen = last.clone();
    let done = tokio::time::timeout(
        Duration::from_secs(25),
        wait_for(25, "shipped logs", || async {
            let got = (
                shipped(s, vm, "cloud_init_logs").await,
                shipped(s, vm, "docker_logs").await,
            );
            let complete = got.0.len() >= cloud.len() && got.1.len() >= container.len();
            *seen.lock().expect("lock") = got;
            complete.then_some(())
        }),
    )
    .await;
    let got = last.lock().expect("lock").clone();
    assert!(
        done.is_ok(),
        "logs incomplete:\ncloud-init {:?}\ncontainer {:?}",
        got.0,
        got.1
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = (
        shipped(s, vm, "cloud_init_logs").await,
        shipped(s, vm, "docker_logs").await,
    );
    assert_eq!(got.0, cloud, "cloud-init log");
    assert_eq!(got.1, container, "container log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_shipped_once_across_allocator_and_agent_restarts() {
    let s = short_poll_server().await;
    let rig = Rig::new("logs");
    let (cloud_file, container_file) = (rig.path("cloud-init.log"), rig.path("container.log"));
    append(
        &cloud_file,
        &["ci 1 boot", "\u{1b}[32mci 2 green\u{1b}[0m ok", "ci 3"],
    );
    append(
        &container_file,
        &["\u{1b}[1;31mctr 1 red\u{1b}[0m", "ctr 2"],
    );
    let cloud_arg = cloud_file.display().to_string();
    let container_arg = container_file.display().to_string();
    let args = [
        "--log-file",
        cloud_arg.as_str(),
        "--container-log-file",
        container_arg.as_str(),
    ];
    let mut agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Fake, &args);
    let mut cloud = vec!["ci 1 boot", "ci 2 green ok", "ci 3"];
    let mut container = vec!["ctr 1 red", "ctr 2"];
    let s = within(55, "logs across restarts", async {
        expect_shipped(&s, &rig.vm, &cloud, &container).await;

        // The allocator goes away; lines written meanwhile wait in the file.
        let mut s = s;
        s.stop().await;
        append(&cloud_file, &["ci 4 while down", "\u{1b}[33mci 5\u{1b}[0m"]);
        append(&container_file, &["ctr 3 while down"]);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let s = s
            .restart_on_same_port(|c| c.server.long_poll_seconds = LONG_POLL)
            .await;
        cloud.extend(["ci 4 while down", "ci 5"]);
        container.push("ctr 3 while down");
        expect_shipped(&s, &rig.vm, &cloud, &container).await;
        assert!(
            agent.count(&["log batch: not delivered"]) >= 1,
            "the outage was not noticed: the test did not exercise it"
        );

        // More lines, shipped; then some written just before the agent stops, and some
        // while it is stopped: the restarted agent resumes where it was.
        append(&cloud_file, &["ci 6"]);
        append(&container_file, &["ctr 4"]);
        cloud.push("ci 6");
        container.push("ctr 4");
        expect_shipped(&s, &rig.vm, &cloud, &container).await;
        append(&cloud_file, &["ci 7 before stop"]);
        let status = agent.stop(10).await;
        assert_eq!(status.code(), Some(0), "exit status {status}");
        append(&cloud_file, &["ci 8 while stopped"]);
        append(&container_file, &["ctr 5 while stopped"]);
        cloud.extend(["ci 7 before stop", "ci 8 while stopped"]);
        container.push("ctr 5 while stopped");
        agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Fake, &args);
        expect_shipped(&s, &rig.vm, &cloud, &container).await;
        s
    })
    .await;
    let body = s
        .get(&format!("/api/vm-logs/{}", rig.vm), Auth::admin())
        .await
        .expect(200);
    assert!(!body.to_string().contains("\\u001b"), "ANSI left: {body}");
    agent.assert_alive();
    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test]
async fn help_documents_every_flag_and_upstream_variable() {
    let out = run_binary(
        &["agent", "--help"],
        &[("API_TOKEN", "sekrit-token-value")],
        10,
    )
    .await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{help}");
    for flag in [
        "--allocator-url",
        "--allocator-host",
        "--token",
        "--vm-name",
        "--software",
        "--start-host",
        "--crd-daemon",
        "--crd-config-dir",
        "--desktop-timeout",
        "--gpu-probe",
        "--gpu-interval",
        "--inuse-interval",
        "--gpu-timeout",
        "--log-file",
        "--container-log-file",
        "--log-group",
        "--log-flush-ms",
        "--state-dir",
        "--boot-started-at",
        "--log-format",
        "--desktop-user",
    ] {
        let documented = help.lines().any(|l| {
            l.trim_start().starts_with(flag)
                && l[l.find(flag).unwrap_or(0) + flag.len()..].starts_with([' ', '='])
        });
        assert!(documented, "{flag} missing from:\n{help}");
    }
    for var in ["ALLOCATOR_URL", "API_TOKEN", "VM_NAME", "SUBJECT_SOFTWARE"] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} missing from:\n{help}"
        );
    }
    assert!(!help.contains("sekrit-token-value"), "token shown: {help}");
}

/// The static release build, where `.ci/run` builds it: `<target dir>/x86_64-unknown-linux-musl/release/lablink`.
fn musl_binary() -> Option<PathBuf> {
    let debug_exe = PathBuf::from(env!("CARGO_BIN_EXE_lablink"));
    let target_dir = debug_exe.parent()?.parent()?;
    let musl = target_dir.join("x86_64-unknown-linux-musl/release/lablink");
    musl.is_file().then_some(musl)
}

/// The static musl build's agent path (nvidia-smi through tokio::process, rustls): register,
/// report GPU health, wait, and start the desktop with the right code and PIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_static_musl_build_runs_the_agent_flow() {
    let Some(binary) = musl_binary() else {
        assert!(
            std::env::var_os("LABLINK_REQUIRE_MUSL").is_none(),
            "LABLINK_REQUIRE_MUSL is set but the musl release build is missing; \
             run `cargo build --release --target x86_64-unknown-linux-musl`"
        );
        eprintln!(
            "skipped: no musl release build (cargo build --release --target x86_64-unknown-linux-musl)"
        );
        return;
    };
    let s = short_poll_server().await;
    let mut rig = Rig::new("musl");
    rig.binary = binary;
    let mut agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Fake, &[]);
    within(45, "musl agent flow", async {
        wait_vm(&s, &rig.vm, 15, "VM running and healthy", |vm| {
            vm.status == Some(VmStatus::Running) && vm.health == Some(Health::Healthy)
        })
        .await;
        let claimed = s
            .claim("musl@example.org", &crd_command("4/0AMuslBuild"))
            .await;
        assert_eq!(claimed.hostname(), rig.vm);
        let pin = claimed.pin();
        let runs = wait_start_host_runs(&rig, 1, 10).await;
        assert_eq!(runs, vec![rig.expected_argv("4/0AMuslBuild")]);
        assert_eq!(rig.read("start-host.stdin"), format!("{pin}\n{pin}\n"));
    })
    .await;
    let status = agent.stop(5).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// The instructor releases a seat: the agent stops the desktop, removes the host's
/// registration, moves the participant's files aside, and the VM is offered again; the
/// next participant's code registers it afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_seat_is_reset_before_the_next_participant() {
    let s = TestServer::start_with(|c| {
        c.server.long_poll_seconds = LONG_POLL;
        c.server.heartbeat_seconds = 1;
    })
    .await;
    let rig = Rig::new("reset");
    let desktop = rig.path("home/Desktop");
    let daemon = fixtures_bin().join("crd-daemon");
    let (desktop_arg, daemon_arg) = (desktop.display().to_string(), daemon.display().to_string());
    let mut agent = rig.agent_with_env(
        &s.base,
        Token::Env(s.token()),
        Gpu::Fake,
        &["--desktop-dir", &desktop_arg, "--crd-daemon", &daemon_arg],
        &[("FAKE_CRD_DAEMON_LOG", &rig.path("daemon.args"))],
    );
    within(60, "reset flow", async {
        wait_vm(&s, &rig.vm, 30, "VM running", |vm| vm.is_available()).await;
        let first = s
            .claim("ada@example.org", &crd_command("4/0AFirstSeat"))
            .await;
        assert_eq!(first.hostname(), rig.vm);
        wait_for(20, "the desktop started", || async {
            (rig.start_host_runs().len() == 1).then_some(())
        })
        .await;
        // The participant's work, and the registration start-host would have written.
        std::fs::create_dir_all(desktop.join("project")).expect("mkdir");
        std::fs::write(desktop.join("project/labels.slp"), "ada's work").expect("write");
        std::fs::write(rig.path("crd/host#abc.json"), "{}").expect("registration");

        let released = s
            .client
            .post(s.url(&format!("/api/vms/{}/release", rig.vm)))
            .basic_auth("admin", Some(crate::helpers::ADMIN_PASSWORD))
            .send()
            .await
            .expect("release");
        assert_eq!(released.status(), 200);
        wait_vm(&s, &rig.vm, 30, "the VM reset and free again", |vm| {
            vm.is_available()
        })
        .await;
        assert!(
            rig.read("daemon.args").lines().any(|l| l == "--stop"),
            "the desktop was stopped"
        );
        assert!(
            !rig.path("crd/host#abc.json").exists(),
            "the registration was removed"
        );
        let kept: Vec<_> = std::fs::read_dir(rig.path("home/lablink-previous"))
            .expect("files moved aside")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(
            std::fs::read_to_string(kept[0].join("project/labels.slp")).expect("kept"),
            "ada's work"
        );
        assert!(
            std::fs::read_dir(&desktop)
                .expect("desktop")
                .next()
                .is_none()
        );

        // The next participant's code registers the VM again (start-host, not the daemon).
        let second = s
            .claim("lin@example.org", &crd_command("4/0ASecondSeat"))
            .await;
        assert_eq!(second.hostname(), rig.vm);
        wait_for(20, "start-host for the second participant", || async {
            (rig.start_host_runs().len() == 2).then_some(())
        })
        .await;
        assert_eq!(
            rig.start_host_runs()[1],
            rig.expected_argv("4/0ASecondSeat")
        );
    })
    .await;
    assert_eq!(agent.stop(10).await.code(), Some(0));
}
