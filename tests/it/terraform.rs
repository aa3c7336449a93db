//! The Terraform provider against a fake `terraform` (tests/fixtures/bin/terraform) that
//! records its calls and can succeed, fail or hang.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::helpers::{Auth, TestServer, wait_for, within};

pub(crate) fn fake_terraform() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin/terraform")
}

pub(crate) async fn terraform_server(timeout_secs: u64) -> TestServer {
    terraform_server_with(timeout_secs, |_| {}).await
}

async fn terraform_server_with(
    timeout_secs: u64,
    tune: impl FnOnce(&mut lablink::config::Config),
) -> TestServer {
    TestServer::start_with(|c| {
        c.provision.provider = "terraform".into();
        c.provision.terraform_bin = fake_terraform().display().to_string();
        // VMs download the lablink executable (not this test harness).
        c.provision.agent_binary = env!("CARGO_BIN_EXE_lablink").into();
        c.provision.allocator_url = "https://lablink.example.org".into();
        c.provision.run_timeout_seconds = timeout_secs;
        c.machine.software = "sleap".into();
        c.environment = "test".into();
        tune(c);
    })
    .await
}

pub(crate) fn control(s: &TestServer) -> PathBuf {
    s.dir.join("fake-tf")
}

pub(crate) fn set_mode(s: &TestServer, mode: &str) {
    std::fs::create_dir_all(control(s)).expect("mkdir");
    std::fs::write(control(s).join("mode"), mode).expect("mode");
}

pub(crate) fn calls(s: &TestServer) -> Vec<Value> {
    std::fs::read_to_string(control(s).join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("call record"))
        .collect()
}

pub(crate) fn args_of(call: &Value) -> Vec<String> {
    call["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("text").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_runs_init_and_apply_with_generated_variables() {
    let s = terraform_server(60).await;
    within(60, "test", async {
        set_mode(&s, "succeed");
        let a = s
            .admin_form("/api/launch", &[("num_vms", "2")], &[])
            .await
            .expect(202);
        let (run, lines) = s.finished_run(a["run_id"].as_u64().expect("id"), 30).await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        assert_eq!(run["exit_code"], 0);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("debug: using token [redacted]")),
            "{lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains(s.token())),
            "the token leaked: {lines:?}"
        );

        let calls = calls(&s);
        let commands: Vec<String> = calls.iter().map(|c| args_of(c)[0].clone()).collect();
        assert_eq!(commands, ["init", "output", "apply", "output"]);
        let init = args_of(&calls[0]);
        assert_eq!(
            &init[..4],
            ["init", "-input=false", "-no-color", "-reconfigure"]
        );
        let state_path = s.dir.join("terraform/state/client-vm.tfstate");
        assert_eq!(
            init[4],
            format!("-backend-config=path={}", state_path.display())
        );
        assert_eq!(
            args_of(&calls[2]),
            [
                "apply",
                "-input=false",
                "-no-color",
                "-auto-approve",
                "-json",
                "-var-file=lablink.tfvars.json"
            ]
        );
        for call in &calls {
            assert_eq!(call["TF_IN_AUTOMATION"], "1");
            assert_eq!(call["TF_INPUT"], "0");
            // Its own process group: the allocator can stop it and its children together.
            assert_eq!(call["pid"], call["pgid"]);
        }
        let workdir = PathBuf::from(calls[0]["cwd"].as_str().expect("cwd"));
        assert_eq!(workdir.parent(), Some(s.dir.join("terraform").as_path()));
        assert!(
            workdir
                .file_name()
                .expect("name")
                .to_string_lossy()
                .starts_with("client-vm-0.")
        );
        assert!(workdir.join("main.tf").is_file() && workdir.join("backend.tf").is_file());

        let vars_path = workdir.join("lablink.tfvars.json");
        let mode = std::fs::metadata(&vars_path)
            .expect("tfvars")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the variables hold the token");
        let vars: Value = serde_json::from_str(&std::fs::read_to_string(&vars_path).expect("read"))
            .expect("json");
        assert_eq!(vars["vm_indices"], serde_json::json!([1, 2]));
        assert_eq!(vars["resource_prefix"], "sleap-lablink-client-test");
        assert_eq!(vars["allocator_url"], "https://lablink.example.org");
        // Each VM its own credential, none of them the shared token.
        let credential = |h: &str| s.app.identities.credential(h).expect("an identity");
        assert_eq!(
            vars["api_tokens"],
            serde_json::json!({
                "sleap-lablink-client-test-vm-1": credential("sleap-lablink-client-test-vm-1"),
                "sleap-lablink-client-test-vm-2": credential("sleap-lablink-client-test-vm-2"),
            })
        );
        assert!(!vars["api_tokens"].to_string().contains(s.token()));
        assert!(vars.get("api_token").is_none());
        assert_eq!(vars["gpu_support"], true);
        assert_eq!(vars["machine_type"], "g4dn.xlarge");
        assert_eq!(vars["ssh_cidr_blocks"], serde_json::json!(["0.0.0.0/0"]));
        assert_eq!(vars["startup_script_b64"], "", "no custom startup script");
        assert_eq!(
            vars["repository"],
            Value::Null,
            "absent stays absent, never \"None\""
        );
        assert_eq!(vars["agent_sha256"].as_str().map(str::len), Some(64));

        // The VMs exist as rows with their creation time, before they report anything.
        for host in [
            "sleap-lablink-client-test-vm-1",
            "sleap-lablink-client-test-vm-2",
        ] {
            let vm = s.stored_vm(host).await.expect("row created");
            assert_eq!(vm.status, None);
            assert_eq!(vm.timings.terraform_apply.duration_seconds, Some(42.0));
        }

        // Launching more adds to what the state holds.
        let b = s
            .admin_form("/api/launch", &[("num_vms", "1")], &[])
            .await
            .expect(202);
        s.finished_run(b["run_id"].as_u64().expect("id"), 30).await;
        let vars: Value = serde_json::from_str(&std::fs::read_to_string(&vars_path).expect("read"))
            .expect("json");
        assert_eq!(vars["vm_indices"], serde_json::json!([1, 2, 3]));

        // Destroying one VM applies without it; destroying all runs destroy.
        let one = s
            .admin_form("/api/vms/sleap-lablink-client-test-vm-2/destroy", &[], &[])
            .await
            .expect(202);
        let (run, _) = s
            .finished_run(one["run_id"].as_u64().expect("id"), 30)
            .await;
        assert_eq!(run["state"], "succeeded");
        let vars: Value = serde_json::from_str(&std::fs::read_to_string(&vars_path).expect("read"))
            .expect("json");
        assert_eq!(vars["vm_indices"], serde_json::json!([1, 3]));
        assert!(
            s.stored_vm("sleap-lablink-client-test-vm-2")
                .await
                .is_none()
        );

        let all = s.admin_form("/destroy", &[], &[]).await.expect(202);
        let (run, lines) = s
            .finished_run(all["run_id"].as_u64().expect("id"), 30)
            .await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        let last = self::calls(&s);
        assert_eq!(
            args_of(last.last().expect("a call")),
            [
                "destroy",
                "-input=false",
                "-no-color",
                "-auto-approve",
                "-json",
                "-var-file=lablink.tfvars.json"
            ]
        );
        s.get("/api/vm-status", Auth::admin())
            .await
            .expect_error(404, "No VMs found.");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_apply_is_recorded_and_leaves_no_rows() {
    let s = terraform_server(60).await;
    within(60, "test", async {
        set_mode(&s, "fail");
        let a = s
            .admin_form("/api/launch", &[("num_vms", "2")], &[])
            .await
            .expect(202);
        let (run, lines) = s.finished_run(a["run_id"].as_u64().expect("id"), 30).await;
        assert_eq!(run["state"], "failed");
        assert_eq!(run["exit_code"], 1);
        assert!(
            lines.iter().any(|l| l.contains("UnauthorizedOperation")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("run failed: terraform apply exited")),
            "{lines:?}"
        );
        s.get("/api/vm-status", Auth::admin())
            .await
            .expect_error(404, "No VMs found.");
        // The credentials written for the VMs that were never made are dead too.
        assert!(
            s.app.identities.names().is_empty(),
            "{:?}",
            s.app.identities.names()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_startup_script_goes_to_new_vms_and_an_oversized_one_stops_the_run() {
    let scripts = tempfile::tempdir().expect("tempdir");
    let script = scripts.path().join("custom-startup.sh");
    let text = "#!/bin/bash\nset -e\npip install 'sleap-extras==1.0'\n";
    std::fs::write(&script, text).expect("write script");
    let path = script.display().to_string();
    let s = terraform_server_with(60, |c| {
        c.startup_script.enabled = true;
        c.startup_script.path = path;
    })
    .await;
    within(60, "test", async {
        set_mode(&s, "succeed");
        let a = s
            .admin_form("/api/launch", &[("num_vms", "1")], &[])
            .await
            .expect(202);
        let (run, lines) = s.finished_run(a["run_id"].as_u64().expect("id"), 30).await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        let workdir = PathBuf::from(calls(&s)[0]["cwd"].as_str().expect("cwd"));
        let vars: Value = serde_json::from_str(
            &std::fs::read_to_string(workdir.join("lablink.tfvars.json")).expect("read"),
        )
        .expect("json");
        use base64::Engine;
        let sent = base64::engine::general_purpose::STANDARD
            .decode(vars["startup_script_b64"].as_str().expect("a string"))
            .expect("base64");
        assert_eq!(sent, text.as_bytes());

        std::fs::write(&script, "#".repeat(9000)).expect("grow script");
        let a = s
            .admin_form("/api/launch", &[("num_vms", "2")], &[])
            .await
            .expect(202);
        let (run, lines) = s.finished_run(a["run_id"].as_u64().expect("id"), 30).await;
        assert_eq!(run["state"], "failed", "{lines:?}");
        assert!(
            lines.iter().any(|l| l.contains("startup_script.path")
                && l.contains("9000 bytes")
                && l.contains("at most 8192")),
            "{lines:?}"
        );
        let applies = calls(&s)
            .iter()
            .filter(|c| args_of(c)[0] == "apply")
            .count();
        assert_eq!(applies, 1, "no apply with a script that cannot fit");
    })
    .await;
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_apply_blocks_other_runs_then_times_out_with_its_group() {
    let s = terraform_server(2).await;
    within(60, "test", async {
        set_mode(&s, "hang");
        let a = s
            .admin_form("/api/launch", &[("num_vms", "1")], &[])
            .await
            .expect(202);
        let id = a["run_id"].as_u64().expect("id");
        // While it runs, a second action is refused and told what is running.
        let second = s.admin_form("/api/launch", &[("num_vms", "1")], &[]).await;
        let err = second.expect(409);
        let message = err["error"].as_str().expect("text");
        assert!(
            message.contains(&format!("run #{id}")) && message.contains("launch 1 VM(s)"),
            "{message}"
        );
        s.admin_form("/destroy", &[], &[]).await.expect(409);

        let (run, lines) = s.finished_run(id, 30).await;
        assert_eq!(run["state"], "timed_out", "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("process group was stopped")),
            "{lines:?}"
        );
        let sleeper: i32 = std::fs::read_to_string(control(&s).join("hang.pid"))
            .expect("hang.pid")
            .trim()
            .parse()
            .expect("pid");
        wait_for(10, "the hung terraform's child is killed", || async {
            (!alive(sleeper)).then_some(())
        })
        .await;
        // The next run may start.
        set_mode(&s, "succeed");
        s.admin_form("/api/launch", &[("num_vms", "1")], &[])
            .await
            .expect(202);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_being_destroyed_is_not_handed_out() {
    let s = terraform_server(3).await;
    within(60, "test", async {
        set_mode(&s, "succeed");
        let launched = s
            .admin_form("/api/launch", &[("num_vms", "2")], &[])
            .await
            .expect(202);
        s.finished_run(launched["run_id"].as_u64().expect("id"), 30)
            .await;
        s.register_running("sleap-lablink-client-test-vm-1").await;
        s.register_running("sleap-lablink-client-test-vm-2").await;
        set_mode(&s, "hang");
        let run = s
            .admin_form("/api/vms/sleap-lablink-client-test-vm-1/destroy", &[], &[])
            .await
            .expect(202);
        assert_eq!(s.free_count().await, 1);
        let claimed = s
            .claim(
                "eve@example.org",
                &crate::helpers::crd_command("4/0ADuring"),
            )
            .await;
        assert_eq!(claimed.hostname(), "sleap-lablink-client-test-vm-2");
        // The destroy fails (times out) and the state still has the VM: it may be handed
        // out again.
        let (run, _) = s
            .finished_run(run["run_id"].as_u64().expect("id"), 30)
            .await;
        assert_eq!(run["state"], "timed_out");
        let vm = s
            .stored_vm("sleap-lablink-client-test-vm-1")
            .await
            .expect("still there");
        assert!(!vm.destroying);
        assert_eq!(s.free_count().await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_stops_the_run_before_any_apply() {
    let s = terraform_server(60).await;
    within(60, "test", async {
        set_mode(&s, "state-unreadable");
        let a = s
            .admin_form("/api/launch", &[("num_vms", "1")], &[])
            .await
            .expect(202);
        let (run, lines) = s.finished_run(a["run_id"].as_u64().expect("id"), 30).await;
        assert_eq!(run["state"], "failed", "{lines:?}");
        assert!(
            lines.iter().any(|l| l.contains("AccessDenied")),
            "{lines:?}"
        );
        let commands: Vec<String> = calls(&s).iter().map(|c| args_of(c)[0].clone()).collect();
        assert!(
            !commands.contains(&"apply".to_owned()),
            "applied blind: {commands:?}"
        );

        // "Destroy all" asks Terraform even with no VM rows: its state says what exists.
        set_mode(&s, "succeed");
        let all = s.admin_form("/destroy", &[], &[]).await.expect(202);
        let (run, _) = s
            .finished_run(all["run_id"].as_u64().expect("id"), 30)
            .await;
        assert_eq!(run["state"], "succeeded");
        let last = calls(&s);
        assert_eq!(args_of(last.last().expect("a call"))[0], "destroy");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_files_come_over_ssh_from_each_vm() {
    let s = terraform_server_with(60, |c| {
        c.provision.ssh_bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bin/ssh")
            .display()
            .to_string();
        c.machine.export_max_mb_per_vm = 1;
    })
    .await;
    within(60, "test", async {
        set_mode(&s, "succeed");
        let a = s
            .admin_form("/api/launch", &[("num_vms", "2")], &[])
            .await
            .expect(202);
        s.finished_run(a["run_id"].as_u64().expect("id"), 30).await;
        let names: Vec<String> = serde_json::from_str(
            &std::fs::read_to_string(control(&s).join("state.json")).expect("state"),
        )
        .expect("names");
        // The first VM has a desktop with files; the second has no running container.
        let desktop = control(&s).join("desktops").join(&names[0]);
        std::fs::create_dir_all(desktop.join("models")).expect("mkdir");
        std::fs::write(desktop.join("labels.slp"), "tracked").expect("write");
        std::fs::write(desktop.join("models/big.slp"), "model").expect("write");

        let (status, _, entries) = crate::participant_data::download(&s).await;
        assert_eq!(status, reqwest::StatusCode::OK);
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[0].0, "_lablink_report.txt");
        assert!(
            entries[0]
                .1
                .starts_with(&format!("{}: ssh to {}", names[1], names[1])),
            "{}",
            entries[0].1
        );
        assert_eq!(
            entries[1],
            (format!("{}/labels.slp", names[0]), "tracked".to_owned())
        );
        // The archive's entry that tried to climb out landed nowhere.
        let mut pending = vec![s.dir.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
                assert_ne!(
                    entry.file_name(),
                    "escaped.slp",
                    "{}",
                    entry.path().display()
                );
                if entry.file_type().expect("type").is_dir() {
                    pending.push(entry.path());
                }
            }
        }
        // ssh ran with the pool's key, non-interactively, to the VMs' addresses.
        let calls = std::fs::read_to_string(control(&s).join("ssh.jsonl")).expect("ssh calls");
        assert_eq!(calls.lines().count(), 2, "{calls}");
        for line in calls.lines() {
            let call: Value = serde_json::from_str(line).expect("call");
            let args = args_of(&call);
            assert!(args.contains(&"BatchMode=yes".to_owned()), "{args:?}");
            assert!(
                args.iter().any(|a| a.ends_with("client-vm.pem")),
                "{args:?}"
            );
            assert!(args.iter().any(|a| a.contains("*.slp")), "{args:?}");
        }
        let audit = s.get("/admin/audit", Auth::admin()).await;
        assert!(audit.text.contains("not fetched"), "{}", audit.text);

        // Over the per-VM cap (1 MiB here): the stream is cut there and nothing is kept.
        std::fs::write(desktop.join("huge.slp"), "x".repeat(3 << 20)).expect("write");
        let answer = s.get("/api/scp-client", Auth::admin()).await;
        assert_eq!(answer.status, 500, "{}", answer.text);
        assert!(
            answer.text.contains(&format!(
                "{}: skipped, its files take more than 1 MiB (machine.export_max_mb_per_vm)",
                names[0]
            )),
            "{}",
            answer.text
        );
        let exports = s.dir.join("exports");
        assert_eq!(std::fs::read_dir(&exports).expect("exports").count(), 0);
    })
    .await;
}
