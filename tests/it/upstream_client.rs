//! The unmodified Python client of LabLink 0.1.2 (`lablink-client-service` from PyPI)
//! against `lablink serve`: its long-poll is woken with a participant's command and PIN,
//! and its GPU check is recorded. It needs that client in a virtualenv, so it is
//! `#[ignore]`d: `.ci/run` installs it and runs it with `--ignored`; missing, it fails.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use lablink::model::{Health, VmStatus};
use serde_json::json;

use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, TestServer, crd_command, wait_for, within};

fn virtualenv() -> PathBuf {
    let dir = std::env::var_os("LABLINK_UPSTREAM_CLIENT_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/lablink-tools/upstream-client-0.1.2"))
        })
        .expect("LABLINK_UPSTREAM_CLIENT_VENV or HOME");
    assert!(
        dir.join("bin/subscribe").is_file(),
        "{} has no upstream client (pip install lablink-client-service==0.1.2; .ci/run does)",
        dir.display()
    );
    dir
}

/// One of the upstream client's programs, run as its container runs them: environment
/// variables, and Hydra writing its output folder in the working directory.
fn upstream(
    venv: &std::path::Path,
    program: &str,
    s: &TestServer,
    vm: &str,
    token: &str,
    work: &std::path::Path,
) -> tokio::process::Child {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin");
    tokio::process::Command::new(venv.join("bin").join(program))
        .current_dir(work)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", fixtures.display()))
        .env("HOME", work)
        .env("ALLOCATOR_URL", format!("{}/", s.base))
        .env("API_TOKEN", token)
        .env("VM_NAME", vm)
        .env("FAKE_GPU_MODE_FILE", work.join("gpu-mode"))
        .env("FAKE_GPU_CALL_LOG", work.join("gpu-calls"))
        .env("FAKE_GPU_PID_FILE", work.join("gpu-pids"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(work.join(format!("{program}.log"))).expect("log"))
        .stderr(std::fs::File::create(work.join(format!("{program}.err"))).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the upstream client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the upstream 0.1.2 client from PyPI (.ci/run installs it)"]
async fn the_upstream_0_1_2_client_works_against_lablink_serve() {
    let venv = virtualenv();
    // As shipped: per-VM credentials; the upstream client only forwards API_TOKEN.
    let s = TestServer::start_with(|c| c.access.shared_agent_token = false).await;
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("gpu-mode"), "healthy").expect("gpu mode");
    let vm = "upstream-vm-1";
    // Minted by the admin, as for a machine the lab runs itself.
    let minted: serde_json::Value = reqwest::Client::new()
        .post(s.url("/api/vm-credentials"))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .json(&json!({"hostname": vm}))
        .send()
        .await
        .expect("mint")
        .json()
        .await
        .expect("json");
    let token = minted["credentials"][vm]
        .as_str()
        .expect("a credential")
        .to_owned();
    // The 0.1.2 boot script reports the status with curl; the client only waits.
    s.post_json(
        "/api/vm-status",
        &json!({"hostname": vm, "status": "running"}),
        Some(&token),
    )
    .await
    .expect(200);

    let mut gpu = upstream(&venv, "check_gpu", &s, vm, &token, work.path());
    let mut subscriber = upstream(&venv, "subscribe", &s, vm, &token, work.path());
    let read = |name: &str| std::fs::read_to_string(work.path().join(name)).unwrap_or_default();
    within(90, "the upstream client", async {
        wait_for(40, "check_gpu reports Healthy", || async {
            let vm = s.stored_vm(vm).await?;
            (vm.health == Some(Health::Healthy)).then_some(())
        })
        .await;
        wait_for(20, "subscribe parks its long-poll", || async {
            (s.app.waiters.parked() == 1).then_some(())
        })
        .await;
        let claimed = s
            .claim("ada@example.org", &crd_command("4/0AupstreamCode"))
            .await;
        assert_eq!(claimed.status, 200, "{}", claimed.html);
        let status = within(30, "subscribe exits after the hand-over", subscriber.wait())
            .await
            .expect("wait");
        assert!(
            status.success(),
            "{status}: {}{}",
            read("subscribe.log"),
            read("subscribe.err")
        );
    })
    .await;
    let log = read("subscribe.log");
    assert!(log.contains("Received CRD command from allocator"), "{log}");
    // Its start-host is an absolute path (/opt/google/…) that this machine lacks: the
    // command reached it, rebuilt from the code alone, and failed only to execute.
    assert!(log.contains("CRD setup complete"), "{log}");
    let _ = gpu.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), gpu.wait()).await;
    let stored = s.stored_vm(vm).await.expect("vm");
    assert_eq!(stored.status, Some(VmStatus::Running));
    assert!(stored.assignment.is_some());
}
