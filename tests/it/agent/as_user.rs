//! The desktop runs as the desktop user, not as root, without the agent's credential.

use std::path::{Path, PathBuf};

use lablink::model::VmStatus;

use super::{Gpu, Rig, Token, short_poll_server, tutorial_repository, wait_vm};
use crate::helpers::{crd_command, wait_for, within};

/// A program that writes who ran it, its environment and its input to `dir/<name>.*`.
fn recorder(rig: &Rig, name: &str, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = rig.path(name);
    let out = dir.join(name).display().to_string();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncat >'{out}.stdin'\nid -u >'{out}.uid'\nid -G >'{out}.groups'\n\
             env >'{out}.env'\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >'{out}.args'\n"
        ),
    )
    .expect("write recorder");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, to switch to the nobody account (.ci/run runs as root)"]
async fn the_desktop_runs_as_the_desktop_user_without_the_agent_credential() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "switching the desktop to another account needs root"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("look up nobody")
        .expect("a `nobody` account");
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw()))
            .expect("chown to nobody");
    };
    let s = short_poll_server().await;
    let mut rig = Rig::new("asuser");
    // The desktop user reaches its programs and writes its records in a folder of its own.
    std::fs::set_permissions(rig.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod rig");
    let records = rig.path("records");
    std::fs::create_dir(&records).expect("mkdir records");
    chown(&records);
    rig.start_host = recorder(&rig, "start-host", &records);
    let script = recorder(&rig, "startup", &records);
    let repo = tutorial_repository(&records);
    for entry in std::fs::read_dir(&records).expect("records") {
        let path = entry.expect("entry").path();
        let status = std::process::Command::new("chown")
            .args(["-R", &format!("{}:{}", nobody.uid, nobody.gid)])
            .arg(&path)
            .status()
            .expect("chown -R");
        assert!(status.success());
    }
    // Git creates the missing desktop folder as the desktop user.
    let desktop = records.join("Desktop");
    let token = s.token().to_owned();
    let (script, repo, desktop_arg) = (
        script.display().to_string(),
        repo.display().to_string(),
        desktop.display().to_string(),
    );
    let mut agent = rig.agent(
        &s.base,
        Token::Env(&token),
        Gpu::Fake,
        &[
            "--desktop-user",
            "nobody",
            "--startup-script",
            &script,
            "--tutorial-repo",
            &repo,
            "--desktop-dir",
            &desktop_arg,
        ],
    );
    let read = |name: &str| std::fs::read_to_string(records.join(name)).unwrap_or_default();
    within(60, "desktop as nobody", async {
        wait_vm(&s, &rig.vm, 30, "VM running", |vm| {
            vm.status == Some(VmStatus::Running)
        })
        .await;
        let claimed = s
            .claim("ada@example.org", &crd_command("4/0AbcAsUser-1"))
            .await;
        assert_eq!(claimed.status, 200, "{}", claimed.html);
        let pin = claimed.pin();
        wait_for(15, "start-host ran", || async {
            (read("start-host.args").lines().count() == 3).then_some(())
        })
        .await;
        assert_eq!(
            read("start-host.args").lines().collect::<Vec<_>>(),
            rig.expected_argv("4/0AbcAsUser-1")
        );
        assert_eq!(read("start-host.stdin"), format!("{pin}\n{pin}\n"));
    })
    .await;

    let groups =
        nix::unistd::getgrouplist(&std::ffi::CString::new("nobody").expect("name"), nobody.gid)
            .expect("nobody's groups");
    let mut groups: Vec<String> = groups.iter().map(ToString::to_string).collect();
    groups.sort();
    groups.dedup();
    for program in ["start-host", "startup"] {
        assert_eq!(
            read(&format!("{program}.uid")).trim(),
            nobody.uid.to_string(),
            "{program}"
        );
        let mut ran_with: Vec<String> = read(&format!("{program}.groups"))
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        ran_with.sort();
        ran_with.dedup();
        assert_eq!(ran_with, groups, "{program}: groups (root's must be gone)");
        let env = read(&format!("{program}.env"));
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        assert_eq!(var("USER").as_deref(), Some("nobody"), "{program}: {env}");
        assert_eq!(
            var("LOGNAME").as_deref(),
            Some("nobody"),
            "{program}: {env}"
        );
        assert_eq!(
            var("HOME").map(PathBuf::from),
            Some(nobody.dir.clone()),
            "{program}: {env}"
        );
        assert_eq!(
            var("XDG_RUNTIME_DIR").map(PathBuf::from),
            Some(PathBuf::from(format!("/run/user/{}", nobody.uid))),
            "{program}: {env}"
        );
        assert!(
            !env.contains(&token),
            "{program}: the token is in its environment: {env}"
        );
        for name in [
            "API_TOKEN",
            "API_TOKEN_FILE",
            "LABLINK_LOG",
            "FAKE_GPU_MODE_FILE",
        ] {
            assert!(var(name).is_none(), "{program}: {name} passed on: {env}");
        }
        assert!(var("PATH").is_some(), "{program}: {env}");
    }
    let env = read("start-host.env");
    assert!(
        env.lines().any(|l| l == "DISPLAY="),
        "DISPLAY emptied: {env}"
    );
    let runtime = std::fs::metadata(format!("/run/user/{}", nobody.uid)).expect("runtime dir");
    assert_eq!(
        runtime.uid(),
        nobody.uid.as_raw(),
        "the runtime dir is nobody's"
    );
    let clone = std::fs::metadata(desktop.join("sleap-tutorial-data/README.md"))
        .expect("the tutorial was cloned");
    assert_eq!(clone.uid(), nobody.uid.as_raw(), "cloned as nobody");
    assert_eq!(
        std::fs::metadata(&desktop).expect("desktop").uid(),
        nobody.uid.as_raw(),
        "the desktop folder is nobody's"
    );

    // Nor can the desktop user read the agent's environment.
    let pid = agent.child.id().expect("agent pid");
    let peek = std::process::Command::new("cat")
        .arg(format!("/proc/{pid}/environ"))
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .expect("cat as nobody");
    assert!(
        !peek.status.success(),
        "nobody read the agent's environment"
    );
    assert!(!String::from_utf8_lossy(&peek.stdout).contains(&token));

    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
