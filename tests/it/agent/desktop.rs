//! The desktop: a claim starts it once with the right code and PIN, a failure is reported
//! and recovered from, a released seat is reset, and the static musl build does the same.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lablink::model::{Health, VmStatus};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{
    Gpu, LONG_POLL, Rig, Token, fixtures_bin, short_poll_server, wait_start_host_runs, wait_vm,
};
use crate::helpers::{
    SERVE_ADMIN_PASSWORD, ServeProc, TestServer, client, crd_command, free_port, html_field,
    run_binary, wait_for, within,
};

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
        rig.wait_gpu_probes(5, 10).await;
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
        rig.wait_gpu_probes(5, 10).await;
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
        &[("LABLINK_APP_ADMIN_PASSWORD", SERVE_ADMIN_PASSWORD)],
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
        wait_for(10, "the agent's poll parks", || async {
            let metrics = http.get(format!("{base}/metrics")).send().await.ok()?;
            let text = metrics.text().await.ok()?;
            text.lines()
                .any(|l| l == "lablink_long_polls_parked 1")
                .then_some(())
        })
        .await;
    })
    .await;

    server.kill().await;
    // The agent notices the cut poll before the allocator is back.
    agent
        .wait_log(10, &["waiting for an assignment failed"], 1)
        .await;
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

/// The static release build, where `.ci/run` builds it (scripts/dist.sh):
/// `<target dir>/x86_64-unknown-linux-musl/release/lablink`.
fn musl_binary() -> PathBuf {
    let debug_exe = PathBuf::from(env!("CARGO_BIN_EXE_lablink"));
    let target_dir = debug_exe
        .parent()
        .and_then(|profile| profile.parent())
        .expect("the target directory");
    let musl = target_dir.join("x86_64-unknown-linux-musl/release/lablink");
    assert!(
        musl.is_file(),
        "{} is missing: run `cargo build --release --target x86_64-unknown-linux-musl` \
         (.ci/run builds it with scripts/dist.sh)",
        musl.display()
    );
    musl
}

/// The static musl build's agent path (nvidia-smi through tokio::process, rustls): register,
/// report GPU health, wait, and start the desktop with the right code and PIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the static musl release build (.ci/run builds it with scripts/dist.sh)"]
async fn the_static_musl_build_runs_the_agent_flow() {
    let binary = musl_binary();
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

        super::release_and_wait_free(&s, &rig.vm).await;
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
