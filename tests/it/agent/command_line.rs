//! Starting the agent: its credential (flag, environment, file), readiness for systemd,
//! configuration errors and `--help`.

use std::time::{Duration, Instant};

use super::{Gpu, Rig, Token, short_poll_server};
use crate::helpers::{NotifySocket, run_binary};

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
