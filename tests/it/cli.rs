//! `lablink config check`, run as the real binary.

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

const UPSTREAM: &str = r#"
db:
  dbname: "lablink_db"
  user: "lablink"
  password: "lablink"
  host: "localhost"
  port: 5432
  table_name: "vm_table"
  message_channel: "vm_updates"
machine:
  machine_type: "g4dn.xlarge"
  image: "ghcr.io/talmolab/lablink-client-base-image:linux-amd64-latest-test"
  ami_id: "ami-0601752c11b394251"
  repository: "https://github.com/talmolab/sleap-tutorial-data.git"
  software: "sleap"
  extension: "slp"
app:
  admin_user: "admin"
  admin_password: "a-real-password-42"
  region: "us-west-2"
dns:
  enabled: false
  terraform_managed: false
  domain: ""
  zone_id: ""
eip:
  strategy: "dynamic"
ssl:
  provider: "none"
  email: ""
  certificate_arn: ""
allocator:
  image_tag: "linux-amd64-latest-test"
startup_script:
  enabled: false
  path: "config/custom-startup.sh"
  on_error: "continue"
monitoring:
  enabled: false
  email: ""
  thresholds:
    max_instances_per_5min: 10
    max_terminations_per_5min: 20
    max_unauthorized_calls_per_15min: 5
  budget:
    enabled: false
    monthly_budget_usd: 500
  cloudtrail:
    retention_days: 90
bucket_name: "tf-state-lablink-allocator-bucket"
deployment_name: "lablink"
environment: "dev"
"#;

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
