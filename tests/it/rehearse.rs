//! `lablink rehearse`, run as the real binary against a real allocator.

use crate::helpers::{ADMIN_PASSWORD, TestServer, run_binary, succeeded};

/// The admin password in a file: the rehearsal mints its VMs' credentials with it.
fn password_file(password: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("password");
    std::fs::write(&path, format!("{password}\n")).expect("write password");
    let path = path.display().to_string();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_reports_and_passes_on_a_healthy_allocator() {
    // As shipped: per-VM credentials only; the rehearsal mints them as the admin.
    let s = TestServer::start_with(|c| c.access.shared_agent_token = false).await;
    let (_dir, token) = password_file(ADMIN_PASSWORD);
    let out = run_binary(
        &[
            "rehearse",
            &s.base,
            "--agents",
            "30",
            "--participants",
            "36",
            "--password-file",
            &token,
            "--seconds",
            "60",
        ],
        &[],
        90,
    )
    .await;
    let stdout = succeeded(&out);
    for line in [
        "VMs registered         30 of 30",
        "long-polls held        30 at the first claim",
        "30 assigned, 6 refused (no free VM)",
        "errors                 0",
        "double assignments     0",
        "verdict: PASS for a workshop of 30 participants",
    ] {
        assert!(stdout.contains(line), "missing `{line}`:\n{stdout}");
    }
    assert!(stdout.contains("claim latency          p50 "), "{stdout}");
    assert!(stdout.contains("claim → agent woken    p50 "), "{stdout}");
    // The allocator really handed out 30 VMs, each once.
    let pool = s
        .app
        .store
        .read(lablink::store::vms::list)
        .await
        .expect("pool");
    let assigned: Vec<_> = pool
        .iter()
        .filter_map(|vm| vm.assignment.as_ref())
        .collect();
    assert_eq!(assigned.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_frozen_agents_are_never_handed_out_and_their_participants_are_reseated() {
    // Heartbeats every second, silent for 3: a failed VM is noticed within seconds.
    let s = TestServer::start_with(|c| {
        c.access.shared_agent_token = false;
        c.server.heartbeat_seconds = 1;
    })
    .await;
    let (_dir, password) = password_file(ADMIN_PASSWORD);
    let out = run_binary(
        &[
            "rehearse",
            &s.base,
            "--agents",
            "20",
            "--die-share",
            "0.1",
            "--freeze-share",
            "0.1",
            "--password-file",
            &password,
            "--seconds",
            "40",
        ],
        &[],
        60,
    )
    .await;
    let stdout = succeeded(&out);
    // 4 of 20 fail before the claims; 12 participants (4 spares for the second wave).
    for line in [
        "20 VMs, 12 participants",
        "VMs registered         20 of 20",
        "every 1 s",
        "faults before claims   2 died, 2 froze; shown unresponsive after p50 ",
        "handed a dead VM       0",
        "12 assigned, 0 refused",
        "faults after claims    2 died, 2 froze (assigned VMs)",
        "re-seated              4 of 4; failure → new VM p50 ",
        "errors                 0",
        "double assignments     0",
        "verdict: PASS for a workshop of 12 participants",
    ] {
        assert!(stdout.contains(line), "missing `{line}`:\n{stdout}");
    }
    // The allocator's side: 12 participants seated, each on a VM whose agent is alive;
    // the 8 failed VMs marked unresponsive, none of them holding a participant.
    let pool = s
        .app
        .store
        .read(lablink::store::vms::list)
        .await
        .expect("pool");
    let seated: Vec<_> = pool.iter().filter(|vm| vm.assignment.is_some()).collect();
    assert_eq!(seated.len(), 12);
    for vm in &seated {
        assert!(vm.unresponsive_since.is_none(), "{} is dead", vm.hostname);
        assert!(s.app.liveness.is_alive(&vm.hostname), "{}", vm.hostname);
    }
    let failed = pool
        .iter()
        .filter(|vm| vm.unresponsive_since.is_some())
        .count();
    assert_eq!(failed, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_passes_the_join_code_and_the_allow_list() {
    // A fresh allocator for each run: VMs left free by one rehearsal would be handed to the
    // next one's participants while no agent of that rehearsal waits on them.
    for (extra, passes) in [
        (&[][..], false),
        (
            &["--join-code", "owl-42", "--email-domain", "lab.example.org"][..],
            true,
        ),
    ] {
        let s = TestServer::start_with(|c| {
            c.access.join_code = "owl-42".into();
            c.access.allowed_emails = "@lab.example.org".into();
        })
        .await;
        let (_dir, token) = password_file(ADMIN_PASSWORD);
        let mut args = vec![
            "rehearse",
            s.base.as_str(),
            "--agents",
            "4",
            "--password-file",
            token.as_str(),
            "--seconds",
            "30",
        ];
        args.extend_from_slice(extra);
        let out = run_binary(&args, &[], 60).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if passes {
            assert!(out.status.success(), "{stdout}");
            assert!(
                stdout.contains("verdict: PASS for a workshop of 4 participants"),
                "{stdout}"
            );
        } else {
            assert_eq!(out.status.code(), Some(1), "{stdout}");
            assert!(stdout.contains("claim: HTTP 400"), "no join code: {stdout}");
        }
    }
}

#[tokio::test]
async fn a_wrong_admin_password_stops_the_rehearsal() {
    let s = TestServer::start_with(|c| c.access.shared_agent_token = false).await;
    let (_dir, path) = password_file("not-the-password");
    let out = run_binary(
        &[
            "rehearse",
            &s.base,
            "--agents",
            "3",
            "--password-file",
            &path,
            "--seconds",
            "10",
        ],
        &[],
        30,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("wrong admin user or password"), "{stderr}");
}

#[tokio::test]
async fn other_hosts_need_the_owners_flag_and_bad_flags_are_named() {
    let out = run_binary(
        &[
            "rehearse",
            "http://192.0.2.1:5000",
            "--password-file",
            "/nonexistent",
        ],
        &[],
        10,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--i-own-this-host"));
    let out = run_binary(
        &["rehearse", "http://127.0.0.1:9", "--agents", "0"],
        &[],
        10,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--agents"));
    for (flag, value) in [("--die-share", "1.5"), ("--freeze-share", "-0.1")] {
        let arg = format!("{flag}={value}");
        let out = run_binary(&["rehearse", "http://127.0.0.1:9", &arg], &[], 10).await;
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{flag}: {value} is outside 0..=0.9")),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_rehearsal_runs_the_event_through_its_end() {
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.machine.software = "eventrehearsal".into();
        c.server.heartbeat_seconds = 1;
    })
    .await;
    let (_dir, password) = password_file(ADMIN_PASSWORD);
    let out = run_binary(
        &[
            "rehearse",
            &s.base,
            "--event",
            "--participants",
            "6",
            "--spare-percent",
            "0",
            "--arrive-over",
            "10",
            "--leave-share",
            "0",
            "--die-share",
            "0.2",
            "--seconds",
            "90",
            "--password-file",
            &password,
        ],
        &[],
        400,
    )
    .await;
    let stdout = succeeded(&out);
    for line in [
        "participants: 6",
        "never seated:            0",
        "lost their VM:           1 (VMs destroyed: 1)",
        "asked again after that:  1",
        "event ended: every VM destroyed",
        "the event's report (per seat: /admin/event/report)",
        "\"claim_to_desktop\"",
        "\"cost\"",
        "PASS",
    ] {
        assert!(stdout.contains(line), "missing `{line}`:\n{stdout}");
    }
    let event = s
        .admin_json(reqwest::Method::GET, "/api/event", None)
        .await
        .expect(200);
    assert_eq!(event["phase"], "ended");
    assert_eq!(event["replaced"], 1, "{event}");
}
