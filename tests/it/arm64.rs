//! The aarch64 release builds (AWS Graviton GPU instances), run here under qemu-user:
//! both report what they are, and the static one serves a claim and stops cleanly.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::helpers::{
    Claimed, SERVE_ADMIN_PASSWORD, ServeProc, client, crd_command, free_port, within,
};

/// Where the arm64 glibc loader and libraries are (Debian's libc6-arm64-cross).
const SYSROOT: &str = "/usr/aarch64-linux-gnu";

/// `<target dir>/<target>/release/lablink`, where scripts/dist.sh builds it.
fn aarch64_binary(target: &str) -> PathBuf {
    let debug_exe = PathBuf::from(env!("CARGO_BIN_EXE_lablink"));
    let target_dir = debug_exe
        .parent()
        .and_then(|profile| profile.parent())
        .expect("the target directory");
    let binary = target_dir.join(target).join("release/lablink");
    assert!(
        binary.is_file(),
        "{} is missing: run scripts/dist.sh (.ci/run does)",
        binary.display()
    );
    binary
}

/// qemu-aarch64 running `binary` (with arm64's glibc for a glibc build).
fn under_qemu(binary: &Path) -> tokio::process::Command {
    let found = std::process::Command::new("qemu-aarch64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "qemu-aarch64 is missing (apt-get install qemu-user libc6-arm64-cross)"
    );
    let mut qemu = tokio::process::Command::new("qemu-aarch64");
    if binary.to_string_lossy().contains("-gnu/") {
        assert!(
            Path::new(SYSROOT)
                .join("lib/ld-linux-aarch64.so.1")
                .exists(),
            "{SYSROOT} has no arm64 loader (apt-get install libc6-arm64-cross)"
        );
        qemu.args(["-L", SYSROOT]);
    }
    qemu.arg(binary).kill_on_drop(true);
    qemu
}

#[tokio::test]
#[ignore = "needs qemu-aarch64 and the aarch64 build"]
async fn both_aarch64_builds_report_their_version_and_target_under_qemu() {
    for target in ["aarch64-unknown-linux-musl", "aarch64-unknown-linux-gnu"] {
        let mut qemu = under_qemu(&aarch64_binary(target));
        let out = within(30, &format!("{target}: lablink version"), async {
            qemu.arg("version")
                .stdin(Stdio::null())
                .output()
                .await
                .expect("run qemu-aarch64")
        })
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{target}: {} {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some(concat!("lablink ", env!("CARGO_PKG_VERSION"))),
            "{stdout}"
        );
        assert!(
            lines.contains(&format!("target {target}").as_str()),
            "{stdout}"
        );
        assert!(
            lines.contains(&concat!("commit ", env!("LABLINK_GIT_COMMIT"))),
            "{target} was built from another commit (run scripts/dist.sh again): {stdout}"
        );
    }
}

/// The static aarch64 build as the allocator: a VM registers, a participant's claim is
/// answered with it, the pool says whose it is, and SIGTERM stops it with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs qemu-aarch64 and the aarch64 build"]
async fn the_static_aarch64_build_serves_a_claim_under_qemu() {
    let qemu = under_qemu(&aarch64_binary("aarch64-unknown-linux-musl"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = within(
        60,
        "lablink serve under qemu starts",
        ServeProc::start_program(qemu, &data, port, tmp.path().join("serve.log"), &[]),
    )
    .await;
    let token = std::fs::read_to_string(data.join("api-token")).expect("api-token");
    let http = client();

    within(60, "register, claim and read the pool", async {
        let registered = http
            .post(format!("{base}/api/vm-status"))
            .bearer_auth(token.trim())
            .json(&json!({"hostname": "graviton-1", "status": "running"}))
            .send()
            .await
            .expect("register the VM");
        assert_eq!(registered.status(), 200);

        let answer = http
            .post(format!("{base}/api/request_vm"))
            .form(&[
                ("email", "arm@example.org"),
                ("crd_command", &crd_command("4/0AGraviton")),
            ])
            .send()
            .await
            .expect("claim");
        let claimed = Claimed {
            status: answer.status(),
            cookie: None,
            html: answer.text().await.expect("claim page"),
        };
        assert_eq!(claimed.status, 200, "{}", claimed.html);
        assert_eq!(claimed.hostname(), "graviton-1");
        claimed.pin();

        let pool: Value = http
            .get(format!("{base}/api/vms"))
            .basic_auth("admin", Some(SERVE_ADMIN_PASSWORD))
            .send()
            .await
            .expect("the pool")
            .json()
            .await
            .expect("the pool as JSON");
        let vms = pool["vms"].as_array().expect("vms");
        assert_eq!(vms.len(), 1, "{pool}");
        assert_eq!(vms[0]["hostname"], "graviton-1", "{pool}");
        assert_eq!(vms[0]["participant"], "arm@example.org", "{pool}");
    })
    .await;

    let pid = server.child.id().expect("the allocator's pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = within(30, "serve under qemu stops", server.child.wait())
        .await
        .expect("wait");
    assert!(status.success(), "exit status {status}");
}
