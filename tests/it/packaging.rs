//! What packaging relies on, run as the real binary: `lablink version`, readiness for
//! systemd's `Type=notify`, and `lablink install` into a scratch root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::{NotifySocket, free_port, run_binary, within};

#[tokio::test]
async fn version_names_the_release_the_commit_and_the_target() {
    let out = run_binary(&["version"], &[], 10).await;
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(concat!("lablink ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    let commit = lines
        .iter()
        .find_map(|l| l.strip_prefix("commit "))
        .expect("a commit line");
    // build.rs records the commit (LABLINK_GIT_COMMIT, else git) for the whole package, so
    // this test was built with the same value as the binary.
    assert_eq!(commit, env!("LABLINK_GIT_COMMIT"), "{stdout}");
    if git_head().is_some() {
        assert!(
            commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "built in a git checkout, yet: {stdout}"
        );
    } else if std::env::var("LABLINK_GIT_COMMIT").is_err() {
        // A source tree without .git (a tarball) and no commit passed in.
        assert_eq!(commit, "unknown", "{stdout}");
    }
    let target = lines
        .iter()
        .find_map(|l| l.strip_prefix("target "))
        .expect("a target line");
    assert!(
        target.starts_with("x86_64-") || target.contains("-linux-"),
        "{stdout}"
    );
    let long = run_binary(&["--version"], &[], 10).await;
    assert_eq!(String::from_utf8_lossy(&long.stdout), stdout);
}

/// The commit of the source tree, when it is a git checkout.
fn git_head() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test]
async fn serve_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut notify = NotifySocket::bind(dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.path().join("data");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lablink"))
        .args(["serve", "--listen", &listen, "--data-dir"])
        .arg(&data)
        .env_clear()
        .env("NOTIFY_SOCKET", &notify.path)
        .env("LABLINK_APP_ADMIN_PASSWORD", "a-long-admin-password")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lablink serve");

    let ready = notify.expect_line("READY=1", 20).await;
    assert!(
        ready.contains(&format!("STATUS=serving on http://{listen}/")),
        "{ready}"
    );
    // Ready means it answers: the listener and the store are open.
    let health = reqwest::get(format!("http://{listen}/health"))
        .await
        .expect("health answer");
    assert_eq!(health.status(), 200);

    let pid = Pid::from_raw(child.id().expect("pid") as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    notify.expect_line("STOPPING=1", 10).await;
    let status = within(20, "serve exits", child.wait()).await.expect("wait");
    assert!(status.success(), "{status}");
    assert_eq!(
        notify
            .messages
            .iter()
            .filter(|m| m.contains("READY=1"))
            .count(),
        1,
        "{:?}",
        notify.messages
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("installed file")
        .permissions()
        .mode()
        & 0o7777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("installed file")
}

#[tokio::test]
async fn install_serve_puts_binary_unit_and_settings_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "app:\n  admin_user: admin\nmachine:\n  software: sleap\n",
    )
    .expect("write config");
    let password = dir.path().join("admin-password");
    std::fs::write(&password, "a-long-admin-password\n").expect("write password");
    let agent_build = dir.path().join("lablink-gnu");
    std::fs::write(&agent_build, b"\x7fELF agent build").expect("write agent build");
    let root_arg = root.display().to_string();
    let config_arg = config.display().to_string();
    let password_arg = password.display().to_string();
    let agent_arg = agent_build.display().to_string();

    let out = run_binary(
        &[
            "install",
            "serve",
            "--root",
            &root_arg,
            "--config",
            &config_arg,
            "--agent-binary",
            &agent_arg,
            "--listen",
            "127.0.0.1:5000",
            "--allocator-url",
            "https://lablink.example.org/",
            "--admin-password-file",
            &password_arg,
            "--public-ip",
            "192.0.2.10",
        ],
        &[],
        30,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let binary = root.join("usr/local/bin/lablink");
    assert_eq!(
        std::fs::read(&binary).expect("binary"),
        std::fs::read(env!("CARGO_BIN_EXE_lablink")).expect("this build")
    );
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/lablink-agent")).expect("agent build"),
        b"\x7fELF agent build"
    );
    let unit = read(&root.join("etc/systemd/system/lablink.service"));
    assert!(
        unit.contains("ExecStart=/usr/local/bin/lablink serve --config /etc/lablink/config.yaml")
    );
    assert!(unit.contains("Type=notify"));
    let drop_in = read(&root.join("etc/systemd/system/lablink.service.d/10-install.conf"));
    for line in [
        "Environment=\"LABLINK_SERVER_LISTEN=127.0.0.1:5000\"",
        "Environment=\"LABLINK_PROVISION_ALLOCATOR_URL=https://lablink.example.org\"",
        "LoadCredential=admin-password:/etc/lablink/admin-password",
        "Environment=\"LABLINK_APP_ADMIN_PASSWORD_FILE=%d/admin-password\"",
        "Environment=\"ALLOCATOR_PUBLIC_IP=192.0.2.10\"",
    ] {
        assert!(
            drop_in.lines().any(|l| l == line),
            "{line} missing:\n{drop_in}"
        );
    }
    let secret = root.join("etc/lablink/admin-password");
    assert_eq!(read(&secret), "a-long-admin-password\n");
    assert_eq!(mode(&secret), 0o600);
    let installed_config = root.join("etc/lablink/config.yaml");
    assert_eq!(read(&installed_config), read(&config));
    assert_eq!(mode(&installed_config), 0o640);
    assert!(read(&root.join("etc/sysusers.d/lablink.conf")).contains("u lablink"));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("a-long-admin-password"),
        "the password is never printed"
    );

    // An upgrade without --config keeps the installed settings (and checks them).
    std::fs::write(&installed_config, "machine:\n  software: napari\n").expect("edit");
    let again = run_binary(&["install", "serve", "--root", &root_arg], &[], 30).await;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(read(&installed_config), "machine:\n  software: napari\n");
}

#[tokio::test]
async fn install_refuses_bad_settings_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let root_arg = root.display().to_string();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "machine:\n  sofware: sleap\n").expect("write config");
    let config_arg = config.display().to_string();
    let token = dir.path().join("token");
    std::fs::write(&token, "agent-token\n").expect("write token");
    let token_arg = token.display().to_string();
    let escaping_token = dir.path().join("escaping-token");
    std::fs::write(&escaping_token, "agent\u{1b}[2Jtoken\n").expect("write token");
    let escaping_token_arg = escaping_token.display().to_string();
    // `lablink install agent --root ROOT --token-file TOKEN` with these flags.
    let agent = |flags: &[&str], token: &str| -> Vec<String> {
        [
            "install",
            "agent",
            "--root",
            &root_arg,
            "--token-file",
            token,
        ]
        .iter()
        .chain(flags)
        .map(|a| (*a).to_owned())
        .collect()
    };
    // Control characters would start new lines (settings) in env files and drop-ins.
    let url = "https://lablink.example.org";
    let control_cases: Vec<(Vec<String>, &str)> = vec![
        (
            agent(
                &[
                    "--allocator-url",
                    "https://lablink.example.org/\nLD_PRELOAD=/tmp/x.so",
                ],
                &token_arg,
            ),
            "--allocator-url: the value contains the control character U+000A",
        ),
        (
            agent(
                &["--allocator-url", "https://lablink.example.org\r\tx"],
                &token_arg,
            ),
            "--allocator-url: the value contains the control character U+000D",
        ),
        (
            agent(&["--allocator-url", url], &escaping_token_arg),
            "--token-file: the value contains the control character U+001B",
        ),
        (
            agent(
                &[
                    "--allocator-url",
                    url,
                    "--vm-name",
                    "lab-pc-3\nVM_NAME=other",
                ],
                &token_arg,
            ),
            "--vm-name: Hostname may contain only",
        ),
        (
            agent(
                &["--allocator-url", url, "--software", "sleap\u{7f}"],
                &token_arg,
            ),
            "--software",
        ),
        (
            [
                "install",
                "serve",
                "--root",
                &root_arg,
                "--config",
                &config_arg,
                "--allocator-url",
                "https://lablink.example.org/\nExecStartPre=/bin/sh",
            ]
            .map(str::to_owned)
            .to_vec(),
            "--allocator-url: the value contains the control character U+000A",
        ),
    ];
    for (args, needle) in control_cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_binary(&args, &[], 30).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!root.exists(), "{args:?} wrote files");
    }

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["install", "serve", "--root", &root_arg],
            "give --config FILE",
        ),
        (
            vec![
                "install",
                "serve",
                "--root",
                &root_arg,
                "--config",
                &config_arg,
            ],
            "machine.sofware",
        ),
        (
            vec![
                "install",
                "serve",
                "--root",
                &root_arg,
                "--config",
                "/nonexistent/config.yaml",
            ],
            "/nonexistent/config.yaml",
        ),
        (
            vec![
                "install",
                "agent",
                "--root",
                &root_arg,
                "--allocator-url",
                "lablink.example.org",
                "--token-file",
                &config_arg,
            ],
            "--allocator-url",
        ),
        (
            vec![
                "install",
                "agent",
                "--root",
                &root_arg,
                "--allocator-url",
                "http://127.0.0.1:5000",
                "--token-file",
                "/nonexistent/token",
            ],
            "--token-file",
        ),
    ];
    for (args, needle) in cases {
        let out = run_binary(&args, &[], 30).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!root.exists(), "{args:?} wrote files");
    }
}

#[tokio::test]
async fn install_agent_writes_its_environment_and_a_root_only_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let token = dir.path().join("token");
    std::fs::write(&token, "agent-secret-token\n").expect("write token");
    let root_arg = root.display().to_string();
    let token_arg = token.display().to_string();
    let args = [
        "install",
        "agent",
        "--root",
        &root_arg,
        "--allocator-url",
        "https://lablink.example.org",
        "--token-file",
        &token_arg,
        "--vm-name",
        "lab-pc-3",
    ];
    let out = run_binary(&args, &[], 30).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = read(&root.join("etc/lablink/agent.env"));
    assert_eq!(
        env,
        "ALLOCATOR_URL=https://lablink.example.org\nVM_NAME=lab-pc-3\nSUBJECT_SOFTWARE=sleap\n"
    );
    let secret = root.join("etc/lablink/agent-token");
    assert_eq!(read(&secret), "agent-secret-token\n");
    assert_eq!(mode(&secret), 0o600);
    let unit = read(&root.join("etc/systemd/system/lablink-agent.service"));
    assert!(unit.contains("ExecStart=/usr/local/bin/lablink agent"));
    assert!(unit.contains("LoadCredential=agent-token:/etc/lablink/agent-token"));
    let crd_drop_in =
        root.join("etc/systemd/system/lablink-agent.service.d/10-chrome-remote-desktop.conf");
    assert!(
        !crd_drop_in.exists(),
        "no Chrome Remote Desktop on this root"
    );

    // Where Chrome Remote Desktop's session helper is installed, its drop-in comes along.
    let helper = root.join("opt/google/chrome-remote-desktop/user-session");
    std::fs::create_dir_all(helper.parent().expect("folder")).expect("mkdir");
    std::fs::write(&helper, b"").expect("helper");
    let out = run_binary(&args, &[], 30).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(read(&crd_drop_in).contains("NoNewPrivileges=no"));
}

/// README.md's configuration reference is exactly what `lablink config reference` prints,
/// so it lists every key the program reads, with its current default and rule.
#[test]
fn readme_configuration_reference_is_the_generated_one() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("## Configuration reference\n")
        .expect("README has a configuration reference");
    let section = &readme[start..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    assert!(
        section == lablink::config::Config::reference(),
        "README.md's configuration reference is stale: replace the section with the \
         output of `lablink config reference`"
    );
    for key in lablink::config::Config::keys() {
        assert_eq!(
            lablink::config::env_name(&key),
            format!("LABLINK_{}", key.replace('.', "_").to_uppercase()),
            "the README's rule for variable names does not hold for {key}"
        );
    }
}

/// The deployment configurations in config/ load cleanly, each names its own environment,
/// and production pins the client image to this release.
#[test]
fn deployment_configs_are_valid_and_prod_is_pinned() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("config/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let (config, problems) = lablink::config::Config::from_file(&path).expect("loads");
        let mut problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        problems.extend(config.validate().iter().map(ToString::to_string));
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        assert_eq!(config.environment, name, "{}", path.display());
        assert_eq!(config.provision.provider, "terraform", "{}", path.display());
        if name == "prod" {
            assert_eq!(
                config.machine.image,
                concat!(
                    "ghcr.io/talmolab/lablink-client:",
                    env!("CARGO_PKG_VERSION")
                ),
                "prod must run the client image of this release"
            );
        }
        seen.push(name);
    }
    seen.sort();
    assert_eq!(seen, ["ci-test", "dev", "prod", "test"]);
}
