//! `lablink agent`, run as the real binary against a real allocator on loopback, with a
//! fake `nvidia-smi` and a fake Chrome Remote Desktop `start-host` (tests/fixtures/bin).
//! This module holds the rig every agent test shares; the tests are in its parts.

mod as_user;
mod browser_desktop;
mod classroom;
mod command_line;
mod countdown;
mod desktop;
mod desktop_started;
mod hand;
mod instructor_console;
mod logs;
mod session_metrics;
mod setup;
mod telemetry;
mod x_display;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lablink::model::Vm;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::helpers::{TestServer, wait_for, within};

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

    /// What the fake nvidia-smi answers a query of utilisation and memory (`37, 1024`).
    fn set_gpu_use(&self, csv: &str) {
        let tmp = self.path("gpu-use.tmp");
        std::fs::write(&tmp, csv).expect("write gpu use");
        std::fs::rename(&tmp, self.path("gpu-use")).expect("rename gpu use");
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

    /// Until the fake nvidia-smi has run `n` more times: the agent's own clock, so a test
    /// that something did not happen waits for the agent to go on, not for a guessed time.
    async fn wait_gpu_probes(&self, n: usize, secs: u64) {
        let from = self.gpu_calls();
        wait_for(secs, &format!("{n} more GPU probes"), || async {
            (self.gpu_calls() >= from + n).then_some(())
        })
        .await;
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
            // Not /run/lablink: the tests run as root, many agents at once.
            .args(["--hand-socket", &p("hand.sock")])
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
            .env("FAKE_GPU_USE_FILE", p("gpu-use"))
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

/// A running agent whose VM is `ada`'s, her desktop started; the fake notify-send logs
/// the desktop's notifications to the rig's `notify.log`.
async fn seat_with_notifications(name: &str) -> (TestServer, Rig, AgentProc) {
    let rig = Rig::new(name);
    let (s, agent) = seated_agent(&rig, AgentToken::Shared, &[]).await;
    (s, rig, agent)
}

/// Which token the agent of [`seated_agent`] presents.
enum AgentToken {
    /// The allocator's shared agent token.
    Shared,
    /// The VM's own credential, minted by the admin.
    Own,
}

/// `rig`'s agent (with `extra` flags) running and its VM held by `ada`, her desktop
/// started; the fake notify-send logs the desktop's notifications to `notify.log`.
async fn seated_agent(rig: &Rig, token: AgentToken, extra: &[&str]) -> (TestServer, AgentProc) {
    let s = TestServer::start_with(|c| {
        c.server.long_poll_seconds = 2;
        c.server.heartbeat_seconds = 1;
    })
    .await;
    let credential = match token {
        AgentToken::Shared => s.token().to_owned(),
        AgentToken::Own => crate::helpers::mint_credential(&s, &rig.vm).await,
    };
    let log = rig.path("notify.log");
    let agent = rig.agent_with_env(
        &s.base,
        Token::Flag(&credential),
        Gpu::Fake,
        extra,
        &[("FAKE_NOTIFY_LOG", log.as_path())],
    );
    wait_vm(&s, &rig.vm, 15, "VM running", |vm| {
        vm.status == Some(lablink::model::VmStatus::Running)
    })
    .await;
    let claimed = s
        .claim(
            "ada@example.org",
            &crate::helpers::crd_command("4/ada-code"),
        )
        .await;
    assert_eq!(claimed.status, 200, "{}", claimed.html);
    agent
        .wait_log(10, &["desktop started; the participant can connect"], 1)
        .await;
    (s, agent)
}

/// Releases `host`'s seat as the admin and waits until its agent reset it and it is free.
async fn release_and_wait_free(s: &TestServer, host: &str) {
    let released = s
        .client
        .post(s.url(&format!("/api/vms/{host}/release")))
        .basic_auth("admin", Some(crate::helpers::ADMIN_PASSWORD))
        .send()
        .await
        .expect("release");
    assert_eq!(released.status(), 200);
    wait_vm(s, host, 30, "the VM reset and free again", |vm| {
        vm.is_available()
    })
    .await;
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

async fn wait_start_host_runs(rig: &Rig, n: usize, secs: u64) -> Vec<Vec<String>> {
    wait_for(secs, &format!("{n} start-host run(s)"), || async {
        let runs = rig.start_host_runs();
        // A run is complete once its three arguments are written (stdin is written first).
        (runs.len() >= n && runs.iter().all(|r| r.len() >= 3)).then_some(runs)
    })
    .await
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
