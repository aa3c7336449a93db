//! What the agent reports while it runs: GPU health (healthy, failing, hanging, missing)
//! and whether the workshop's software is in use.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use lablink::model::{Health, VmStatus};
use tokio::process::{Child, Command};

use super::{Gpu, LONG_POLL, Rig, Token, short_poll_server, wait_vm};
use crate::helpers::{TestServer, crd_command, wait_for, within};

async fn wait_free_count(s: &TestServer, want: u64, secs: u64) {
    wait_for(secs, &format!("free VM count {want}"), || async {
        (s.free_count().await == want).then_some(())
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_carries_gpu_utilisation_to_the_seat() {
    let s = TestServer::start_with(|c| {
        c.server.long_poll_seconds = LONG_POLL;
        c.server.heartbeat_seconds = 1;
    })
    .await;
    let rig = Rig::new("gpuuse");
    rig.set_gpu_use("37, 1024\n12, 512");
    let mut agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Fake, &[]);
    let from = chrono::Utc::now() - chrono::Duration::minutes(1);
    let usage = |s: &TestServer| {
        let pool = s.app.pool.clone();
        async move {
            let to = chrono::Utc::now() + chrono::Duration::minutes(1);
            lablink::pool::usage::for_event(&pool, from, to)
                .await
                .expect("usage")
        }
    };
    within(40, "GPU figures in the seat's usage", async {
        wait_vm(&s, &rig.vm, 15, "healthy and running", |vm| {
            vm.health == Some(Health::Healthy) && vm.status == Some(VmStatus::Running)
        })
        .await;
        wait_free_count(&s, 1, 5).await;
        let claimed = s
            .claim("ada@example.org", &crd_command("4/0AbcUse-123"))
            .await;
        assert_eq!(claimed.status, 200, "{}", claimed.html);
        // The busiest GPU, and the memory of both.
        let seat = wait_for(15, "a heartbeat with the figures", || async {
            usage(&s).await.into_iter().find(|u| u.gpu_samples > 0)
        })
        .await;
        assert_eq!(seat.email, "ada@example.org");
        assert_eq!(seat.hostname, rig.vm);
        assert_eq!((seat.gpu_util_max, seat.gpu_memory_max_mib), (37.0, 1536));

        // A GPU that stops giving figures: the heartbeats go on without them.
        rig.set_gpu_use("[N/A], [N/A]");
        rig.wait_gpu_probes(2, 10).await;
        // One heartbeat may have read the figures before the probe: it is the next one.
        let beats = |n: u64| {
            let usage = &usage;
            let s = &s;
            async move {
                wait_for(10, "more heartbeats", || async {
                    let now = usage(s).await[0].clone();
                    (now.heartbeats >= n).then_some(now)
                })
                .await
            }
        };
        let seen = usage(&s).await[0].heartbeats;
        let before = beats(seen + 1).await;
        let after = beats(before.heartbeats + 2).await;
        assert_eq!(after.gpu_samples, before.gpu_samples);
        assert_eq!(after.gpu_util_max, 37.0);
        assert_eq!(after.gpu_util_avg(), Some(37.0));
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
        // Its last line: the GPU monitor has ended, so the reports counted below are all.
        agent
            .wait_log(5, &["no GPU tooling found; GPU monitor stops"], 1)
            .await;
        wait_vm(&s, &rig.vm, 10, "running", |vm| {
            vm.status == Some(VmStatus::Running)
        })
        .await;
        // N/A does not keep a VM from being handed out.
        wait_free_count(&s, 1, 5).await;
        // Exactly one report.
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
        rig.wait_gpu_probes(3, 10).await;
        assert_eq!(agent.count(&[reported]), 3, "reported without a change");
    })
    .await;
    let status = agent.stop(5).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
