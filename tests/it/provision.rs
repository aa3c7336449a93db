//! Provisioning: launch and destroy through the admin API, runs and their output, the
//! manual and local providers.

use crate::helpers::{ADMIN_USER, Auth, TestServer, crd_command, started_pids, wait_for, within};

#[tokio::test]
async fn launch_input_and_access_are_checked() {
    let s = TestServer::start().await;
    within(30, "test", async {
        for (value, message) in [
            ("", "Number of VMs is required."),
            (
                "abc",
                "Invalid number of VMs. Please enter a valid integer.",
            ),
            ("0", "Number of VMs must be greater than 0."),
            ("-2", "Number of VMs must be greater than 0."),
            ("501", "At most 500 VMs can be launched at once."),
        ] {
            s.admin_form("/api/launch", &[("num_vms", value)], &[])
                .await
                .expect_error(400, message);
        }
        // The manual provider launches nothing and says what to do instead.
        let a = s.admin_form("/api/launch", &[("num_vms", "2")], &[]).await;
        let err = a.expect(400);
        assert!(
            err["error"]
                .as_str()
                .expect("text")
                .contains("lablink agent"),
            "{err}"
        );

        let anonymous = s
            .client
            .post(s.url("/api/launch"))
            .form(&[("num_vms", "1")])
            .send()
            .await
            .expect("POST");
        assert_eq!(anonymous.status(), 401);
        // A browser sending the admin's cached credentials from another site is refused.
        for header in [
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ] {
            s.admin_form("/destroy", &[], &[header])
                .await
                .expect_error(403, "Cross-site requests are not accepted here.");
        }
        // Nothing to destroy yet.
        s.admin_form("/destroy", &[], &[]).await.expect(404);
        s.admin_form("/api/vms/vm-9/destroy", &[], &[])
            .await
            .expect_error(404, "VM not found.");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_destroy_forgets_vms_and_ends_their_long_polls() {
    let s = TestServer::start_with(|c| c.server.long_poll_seconds = 30).await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        s.register_running("vm-2").await;
        let poll = s.spawn_poll("vm-2");
        crate::helpers::wait_until(5, "the poll parks", || s.app.waiters.parked() == 1).await;

        let one = s
            .admin_form("/api/vms/vm-1/destroy", &[], &[])
            .await
            .expect(202);
        let (run, lines) = s
            .finished_run(one["run_id"].as_u64().expect("id"), 30)
            .await;
        assert_eq!(run["state"], "succeeded");
        assert_eq!(run["action"], "destroy_vm");
        assert_eq!(run["requested_by"], ADMIN_USER);
        assert!(
            lines.iter().any(|l| l.contains("forgetting vm-1")),
            "{lines:?}"
        );
        assert!(s.stored_vm("vm-1").await.is_none());
        assert!(s.stored_vm("vm-2").await.is_some());
        // A report still in flight from the destroyed VM does not bring it back.
        let late = s
            .agent_post(
                "/api/vm-status",
                &serde_json::json!({"hostname": "vm-1", "status": "running"}),
            )
            .await;
        assert_eq!(late.status, 410, "{}", late.text);
        assert!(s.stored_vm("vm-1").await.is_none());

        let all = s.admin_form("/destroy", &[], &[]).await.expect(202);
        let (run, _) = s
            .finished_run(all["run_id"].as_u64().expect("id"), 30)
            .await;
        assert_eq!(run["state"], "succeeded");
        s.get("/api/vm-status", Auth::admin())
            .await
            .expect_error(404, "No VMs found.");
        let (answer, _) = within(5, "the parked poll ends", poll).await.expect("task");
        answer.expect_error(404, "VM not found.");

        let list = s.get("/api/runs", Auth::admin()).await.expect(200);
        assert_eq!(list["runs"].as_array().expect("runs").len(), 2);
    })
    .await;
}

/// The pids the local provider reported starting.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_provider_runs_the_whole_flow() {
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.machine.software = "lablinkprov".into();
    })
    .await;
    within(60, "test", async {
        let launched = s
            .admin_form("/api/launch", &[("num_vms", "3")], &[])
            .await
            .expect(202);
        let (run, lines) = s
            .finished_run(launched["run_id"].as_u64().expect("id"), 30)
            .await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        let pids = started_pids(&lines);
        assert_eq!(pids.len(), 3, "{lines:?}");
        assert!(
            !lines.iter().any(|l| l.contains(s.token())),
            "the token leaked into run output"
        );

        // The agents register themselves and turn running.
        wait_for(30, "three VMs running", || async {
            (s.free_count().await == 3).then_some(())
        })
        .await;
        let claimed = s
            .claim("ada@example.org", &crd_command("4/0ALocalFlow"))
            .await;
        let host = claimed.hostname();
        assert_eq!(host, "lablinkprov-lablink-local-vm-1");
        wait_for(30, "the simulated desktop starts", || async {
            let logs = s
                .agent_get(&format!("/api/vm-logs/{host}"))
                .await
                .expect(200);
            logs["docker_logs"]
                .as_str()
                .is_some_and(|l| l.contains("simulated desktop started"))
                .then_some(())
        })
        .await;

        // A second launch numbers on from the existing VMs.
        let more = s
            .admin_form("/api/launch", &[("num_vms", "1")], &[])
            .await
            .expect(202);
        let (_, more_lines) = s
            .finished_run(more["run_id"].as_u64().expect("id"), 30)
            .await;
        assert!(
            more_lines
                .iter()
                .any(|l| l.contains("lablinkprov-lablink-local-vm-4")),
            "{more_lines:?}"
        );

        let destroyed = s.admin_form("/destroy", &[], &[]).await.expect(202);
        let (run, lines) = s
            .finished_run(destroyed["run_id"].as_u64().expect("id"), 30)
            .await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        assert_eq!(s.free_count().await, 0);
        s.get("/api/vm-status", Auth::admin())
            .await
            .expect_error(404, "No VMs found.");
        for pid in pids.into_iter().chain(started_pids(&more_lines)) {
            wait_for(10, "agent process gone", || async {
                (!alive(pid)).then_some(())
            })
            .await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_local_vms_are_rebooted_then_given_up_on() {
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.machine.software = "lablinkreboot".into();
        c.provision.reboot_check_seconds = 1;
        // Long enough that the second failure comes within it (no fresh attempts).
        c.provision.reboot_cooldown_seconds = 60;
        c.provision.reboot_max_attempts = 1;
    })
    .await;
    within(60, "test", async {
        let launched = s
            .admin_form("/api/launch", &[("num_vms", "1")], &[])
            .await
            .expect(202);
        s.finished_run(launched["run_id"].as_u64().expect("id"), 30)
            .await;
        wait_for(30, "the VM runs", || async {
            (s.free_count().await == 1).then_some(())
        })
        .await;
        let host = "lablinkreboot-lablink-local-vm-1";
        let claimed = s.claim("ada@example.org", &crd_command("4/0AReboot")).await;
        assert_eq!(claimed.hostname(), host);

        // The VM fails: it is rebooted (its agent restarted) and comes back running.
        s.report_status(host, "error").await;
        let vm = wait_for(30, "rebooted and running again", || async {
            let vm = s.stored_vm(host).await?;
            (vm.reboot_count == 1 && vm.status == Some(lablink::model::VmStatus::Running))
                .then_some(vm)
        })
        .await;
        assert!(vm.last_reboot_time.is_some());
        assert!(
            vm.assignment.is_some(),
            "a reboot keeps the participant's slot"
        );

        // It fails again with no attempts left: its participant is freed.
        s.report_status(host, "error").await;
        wait_for(30, "the participant is released", || async {
            let vm = s.stored_vm(host).await?;
            vm.assignment.is_none().then_some(())
        })
        .await;
        let vm = s.stored_vm(host).await.expect("vm");
        assert_eq!(vm.reboot_count, 1, "the count is kept for the record");
    })
    .await;
}

/// The `SigIgn` and `SigBlk` masks of a `/proc/<pid>/status` text.
fn signal_masks(status: &str) -> (u64, u64) {
    let mask = |name: &str| {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"));
        u64::from_str_radix(line[name.len()..].trim(), 16).expect("a hex mask")
    };
    (mask("SigIgn:"), mask("SigBlk:"))
}

#[tokio::test]
async fn programs_the_allocator_starts_handle_signals_by_default() {
    use std::os::unix::fs::PermissionsExt;
    // SIGHUP, SIGINT, SIGQUIT and SIGTERM: bits 0, 1, 2 and 14.
    const SIGNALS: u64 = 0b111 | 1 << 14;
    // The allocator handles SIGINT and SIGTERM itself; SIGHUP and SIGQUIT stay ignored.
    const STILL_IGNORED: u64 = 0b101;
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("agent-signals");
    let agent = dir.path().join("fake-agent");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\nexec cat /proc/self/status > {}\n",
            report.display()
        ),
    )
    .expect("write the fake agent");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = crate::helpers::free_port();
    // Started by a shell that ignores them, as `trap '' INT` or `nohup` leave a program.
    let mut serve = tokio::process::Command::new("bash")
        .arg("-c")
        .arg("trap '' HUP INT QUIT TERM; exec \"$0\" serve --data-dir \"$1\" --listen \"$2\"")
        .arg(env!("CARGO_BIN_EXE_lablink"))
        .arg(dir.path().join("data"))
        .arg(format!("127.0.0.1:{port}"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LABLINK_APP_ADMIN_PASSWORD", "a-long-admin-password")
        .env("LABLINK_PROVISION_PROVIDER", "local")
        .env("LABLINK_PROVISION_LOCAL_EXECUTABLE", &agent)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lablink serve");
    let pid = serve.id().expect("pid");
    let http = crate::helpers::client();
    let base = format!("http://127.0.0.1:{port}");
    within(60, "test", async {
        wait_for(30, "the allocator answers", || async {
            http.get(format!("{base}/api/health"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
                .then_some(())
        })
        .await;
        let own = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        assert_eq!(signal_masks(&own).0 & SIGNALS, STILL_IGNORED, "{own}");
        let launched = http
            .post(format!("{base}/api/launch"))
            .basic_auth(ADMIN_USER, Some("a-long-admin-password"))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[("num_vms", "1")])
            .send()
            .await
            .expect("POST /api/launch");
        assert_eq!(launched.status(), 202);
        crate::helpers::wait_until(30, "the agent reported its signals", || {
            std::fs::read_to_string(&report).is_ok_and(|r| r.contains("SigCgt:"))
        })
        .await;
    })
    .await;
    let _ = serve.start_kill();
    let _ = serve.wait().await;
    let status = std::fs::read_to_string(&report).expect("report");
    let (ignored, blocked) = signal_masks(&status);
    assert_eq!(ignored & SIGNALS, 0, "the agent ignores signals: {status}");
    assert_eq!(blocked & SIGNALS, 0, "the agent blocks signals: {status}");
}
