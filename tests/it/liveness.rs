//! VM identity and liveness: a credential lives exactly as long as its VM's launch, and
//! only VMs whose agent is demonstrably alive are handed out.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::helpers::{Auth, TestServer, crd_command, launch_local, pool_view, wait_for, within};

/// Agents heartbeat every second; three missed make a VM unresponsive.
fn fast_liveness(c: &mut lablink::config::Config) {
    c.server.heartbeat_seconds = 1;
    c.server.stale_after_heartbeats = 3;
}

fn local_provider(c: &mut lablink::config::Config, software: &str) {
    c.provision.provider = "local".into();
    c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
    c.machine.software = software.into();
}

async fn wait_free(s: &TestServer, n: u64, what: &str) {
    wait_for(30, what, || async {
        (s.free_count().await == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_credential_is_refused_after_destroy_all_and_a_new_launch() {
    // As shipped: per-VM credentials only.
    let s = TestServer::start_with(|c| {
        local_provider(c, "lablinkstale");
        c.access.shared_agent_token = false;
    })
    .await;
    let host = "lablinkstale-lablink-local-vm-1";
    let credential_file = s.dir.join("local-vms").join(host).join("agent-credential");
    within(90, "test", async {
        launch_local(&s, 1).await;
        wait_free(&s, 1, "the first launch's VM is free").await;
        let old = std::fs::read_to_string(&credential_file)
            .expect("the agent's credential file")
            .trim()
            .to_owned();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&credential_file)
                .expect("meta")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "only the agent's user reads it");

        let destroyed = s.admin_form("/destroy", &[], &[]).await.expect(202);
        let (run, lines) = s
            .finished_run(destroyed["run_id"].as_u64().expect("id"), 30)
            .await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        assert!(s.stored_vm(host).await.is_none());

        // Between the workshops: the old credential cannot bring the VM back.
        let report = json!({"hostname": host, "status": "running"});
        s.post_json("/api/vm-status", &report, Some(&old))
            .await
            .expect_error(401, "Invalid API token.");
        assert!(
            s.stored_vm(host).await.is_none(),
            "a refused report created a row"
        );

        launch_local(&s, 1).await;
        wait_free(&s, 1, "the second launch's VM is free").await;
        let new = std::fs::read_to_string(&credential_file)
            .expect("credential")
            .trim()
            .to_owned();
        assert_ne!(new, old, "the same name, a new launch, a new credential");
        let before = s.stored_vm(host).await.expect("the new VM");

        // The old credential is refused everywhere and changes nothing.
        s.post_json(
            "/api/vm-status",
            &json!({"hostname": host, "status": "error"}),
            Some(&old),
        )
        .await
        .expect_error(401, "Invalid API token.");
        s.post_json("/api/heartbeat", &json!({"hostname": host}), Some(&old))
            .await
            .expect_error(401, "Invalid API token.");
        s.get(&format!("/api/vm-status/{host}"), Auth::Bearer(&old))
            .await
            .expect_error(401, "Invalid API token.");
        assert_eq!(s.stored_vm(host).await.expect("vm").status, before.status);

        // A participant claims the new VM; a poll with the old credential learns nothing.
        let claimed = s
            .claim("ada@example.org", &crd_command("4/0ANewWorkshop"))
            .await;
        assert_eq!(claimed.hostname(), host);
        let poll = s
            .post_json("/vm_startup", &json!({"hostname": host}), Some(&old))
            .await;
        assert_eq!(poll.status, 401, "{}", poll.text);
        assert!(!poll.text.contains("4/0ANewWorkshop") && !poll.text.contains(&claimed.pin()));
        // The new one works.
        s.post_json("/api/heartbeat", &json!({"hostname": host}), Some(&new))
            .await
            .expect(200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_leaves_the_pool_and_comes_back_when_it_thaws() {
    let s = TestServer::start_with(|c| {
        local_provider(c, "lablinkfrozen");
        fast_liveness(c);
    })
    .await;
    let host = "lablinkfrozen-lablink-local-vm-1";
    within(90, "test", async {
        let pids = launch_local(&s, 1).await;
        let pid = Pid::from_raw(*pids.first().expect("a pid"));
        wait_free(&s, 1, "the VM is free").await;
        wait_for(20, "the agent heartbeats", || async {
            pool_view(&s).await[host]["heartbeats"]
                .as_bool()
                .filter(|b| *b)
        })
        .await;

        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        let frozen_at = Instant::now();
        wait_free(&s, 0, "the frozen VM leaves the free pool").await;
        let detected = frozen_at.elapsed();
        // Three missed one-second heartbeats, a sweep, and the agent's last beat's age.
        assert!(detected >= Duration::from_secs(2), "too soon: {detected:?}");
        let vm = pool_view(&s).await[host].clone();
        assert_eq!(vm["unresponsive"], true, "{vm}");
        assert_eq!(vm["alive"], false, "{vm}");
        assert!(
            vm["last_seen_seconds_ago"].as_u64().expect("seen") >= 2,
            "{vm}"
        );
        let metrics = s.get("/metrics", Auth::None).await;
        assert!(
            metrics.text.contains("lablink_vms_unresponsive 1"),
            "{}",
            metrics.text
        );
        assert!(
            metrics.text.contains(&format!(
                "lablink_vm_last_seen_seconds{{hostname=\"{host}\"}}"
            )),
            "{}",
            metrics.text
        );
        let refused = s.claim("ada@example.org", &crd_command("4/0AFrozen")).await;
        assert_eq!(refused.status, 503, "a frozen VM must not be handed out");

        kill(pid, Signal::SIGCONT).expect("SIGCONT");
        wait_free(&s, 1, "the thawed VM is back in the pool").await;
        assert_eq!(pool_view(&s).await[host]["unresponsive"], false);
        assert_eq!(pool_view(&s).await[host]["alive"], true);
        let claimed = s.claim("ada@example.org", &crd_command("4/0AThawed")).await;
        assert_eq!(claimed.hostname(), host);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_heartbeats_stays_free_while_it_polls() {
    let s = TestServer::start_with(fast_liveness).await;
    within(60, "test", async {
        s.register_running("legacy-vm-1").await;
        s.register_running("silent-vm-2").await;
        // The 0.1.2 client only long-polls (5 s hold here, asked again at once); the other
        // VM only registered and then went quiet.
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut poll = s.spawn_poll("legacy-vm-1");
        while Instant::now() < deadline {
            tokio::select! {
                answered = &mut poll => {
                    let (answer, _) = answered.expect("poll task");
                    assert_eq!(answer.status, 408, "{}", answer.text);
                    poll = s.spawn_poll("legacy-vm-1");
                }
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        // Well past the three-second limit: the polling VM is free, the silent one is not.
        let pool = pool_view(&s).await;
        assert_eq!(pool["legacy-vm-1"]["unresponsive"], false, "{pool:?}");
        assert_eq!(pool["legacy-vm-1"]["heartbeats"], false);
        assert_eq!(pool["silent-vm-2"]["unresponsive"], true, "{pool:?}");
        assert_eq!(s.free_count().await, 1);
        let claimed = s.claim("ada@example.org", &crd_command("4/0ALegacy")).await;
        assert_eq!(claimed.hostname(), "legacy-vm-1");
        let (answer, _) = poll.await.expect("poll");
        assert_eq!(answer.expect(200)["pin"], claimed.pin());
    })
    .await;
}

#[tokio::test]
async fn heartbeats_record_reboots_and_refuse_bad_values() {
    let s = TestServer::start().await;
    s.register_running("vm-1").await;
    let s = &s;
    let beat = |body: serde_json::Value| async move { s.agent_post("/api/heartbeat", &body).await };
    let first = beat(json!({"hostname": "vm-1", "boot_id": "0b1c-aa", "disk_free_pct": 42.5}))
        .await
        .expect(200);
    assert_eq!(first["status"], "ok");
    assert_eq!(first["interval_seconds"], 15);
    assert_eq!(first["reset_requested"], false);
    // Upstream's later shape names the VM `vm_id`.
    beat(json!({"vm_id": "vm-1", "boot_id": "0b1c-aa"}))
        .await
        .expect(200);
    assert_eq!(s.stored_vm("vm-1").await.expect("vm").reboots_observed, 0);
    beat(json!({"vm_id": "vm-1", "boot_id": "ffee-01"}))
        .await
        .expect(200);
    let vm = s.stored_vm("vm-1").await.expect("vm");
    assert_eq!(vm.reboots_observed, 1, "a new boot id is a reboot");
    assert!(vm.last_reboot_time.is_some());
    assert_eq!(pool_view(s).await["vm-1"]["disk_free_pct"], 42.5);

    beat(json!({"hostname": "vm-1", "disk_free_pct": 101}))
        .await
        .expect_error(400, "disk_free_pct: expected 0 to 100.");
    beat(json!({"hostname": "vm-1", "boot_id": "not a boot id"}))
        .await
        .expect_error(
            400,
            "boot_id: expected the kernel's boot id (hex digits and '-', at most 64).",
        );
    beat(json!({"boot_id": "aa"}))
        .await
        .expect_error(400, "hostname (or vm_id) is required.");
    beat(json!({"hostname": "no-such-vm"}))
        .await
        .expect_error(404, "VM not found.");
    let anonymous = s
        .post_json("/api/heartbeat", &json!({"hostname": "vm-1"}), None)
        .await;
    assert_eq!(anonymous.status, 401);
}
