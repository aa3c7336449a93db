//! `lablink config check` and `lablink config reference`, run as the real binary.

use crate::helpers::run_binary;

#[tokio::test]
async fn config_check_lists_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "app:\n  admin_user: admin\n  admin_password: PLACEHOLDER_ADMIN_PASSWORD\n\
         machine:\n  sofware: sleap\n\
         db:\n  port: many\n",
    )
    .expect("write");
    let path = file.display().to_string();
    let out = run_binary(&["config", "check", &path], &[], 10).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for key in ["machine.sofware", "db.port", "app.admin_password"] {
        assert!(
            stderr.lines().any(|l| l.contains(&format!("{key}:"))),
            "{key} not reported: {stderr}"
        );
    }
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
    assert!(stderr.contains("did you mean `software`"), "{stderr}");
}

const UPSTREAM: &str = include_str!("../fixtures/upstream-config.yaml");

#[tokio::test]
async fn config_check_accepts_an_upstream_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, UPSTREAM).expect("write");
    let path = file.display().to_string();
    let out = run_binary(&["config", "check", &path], &[], 10).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}; stderr: {stderr}"
    );
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains(&path), "{stdout}");
}

#[tokio::test]
async fn config_check_of_a_missing_file_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.yaml").display().to_string();
    let out = run_binary(&["config", "check", &path], &[], 10).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.yaml"));
}

#[tokio::test]
async fn config_reference_prints_the_key_table_as_markdown() {
    let out = run_binary(&["config", "reference"], &[], 10).await;
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, lablink::config::Config::reference());
    assert!(
        stdout.contains(
            "| `server.heartbeat_seconds` | `LABLINK_SERVER_HEARTBEAT_SECONDS` | integer | `15` | 1–300 |"
        ),
        "{stdout}"
    );
}

#[tokio::test]
async fn commands_refuse_hostnames_that_are_not_rfc_1123_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().display().to_string();
    for bad in ["..", ".x", "a..b", "a_b", "-a"] {
        let vm = format!("--vm={bad}");
        let out = run_binary(&["token", "--data-dir", &data_dir, &vm], &[], 10).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--vm: Hostname"), "{bad}: {stderr}");
        assert!(out.stdout.is_empty(), "{bad}: no token printed");

        let out = run_binary(
            &[
                "agent",
                "--allocator-url",
                "http://127.0.0.1:9",
                &format!("--vm-name={bad}"),
                "--gpu-probe",
                "none",
            ],
            &[("PATH", "/usr/bin:/bin"), ("API_TOKEN", "t")],
            10,
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--vm-name: Hostname"), "{bad}: {stderr}");
    }
}

#[tokio::test]
async fn a_browser_demo_without_a_vnc_server_says_what_to_install() {
    let empty = tempfile::tempdir().expect("tempdir");
    let path = empty.path().display().to_string();
    let out = run_binary(
        &["demo", "--desktop", "browser", "--vms", "0"],
        &[("PATH", &path)],
        20,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("apt-get install tigervnc-standalone-server"),
        "{stderr}"
    );
    assert!(stderr.contains("--desktop crd"), "{stderr}");
}
