//! Before the VM is offered: the tutorial is cloned and the custom startup script retried.

use std::path::PathBuf;

use lablink::model::VmStatus;

use super::{Gpu, Rig, Token, short_poll_server, tutorial_repository, wait_vm};

/// A startup script that fails the first `failures` times it runs, counting its runs.
fn flaky_script(rig: &Rig, failures: u32) -> PathBuf {
    let script = rig.path("custom-startup.sh");
    let runs = rig.path("startup-runs");
    std::fs::write(
        &script,
        format!(
            "echo run >> '{runs}'\nn=$(wc -l < '{runs}')\necho \"installing, attempt $n\"\n\
             if [ \"$n\" -le {failures} ]; then echo 'mirror unreachable' >&2; exit 7; fi\n",
            runs = runs.display()
        ),
    )
    .expect("write script");
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_is_cloned_and_a_flaky_startup_script_retried_before_running() {
    let s = short_poll_server().await;
    let rig = Rig::new("setup");
    let repo = tutorial_repository(rig.dir.path());
    let script = flaky_script(&rig, 1);
    let desktop = rig.path("Desktop");
    let (repo, script, desktop) = (
        repo.display().to_string(),
        script.display().to_string(),
        desktop.display().to_string(),
    );
    let mut agent = rig.agent(
        &s.base,
        Token::Env(s.token()),
        Gpu::Fake,
        &[
            "--tutorial-repo",
            &repo,
            "--desktop-dir",
            &desktop,
            "--startup-script",
            &script,
            "--startup-max-delay",
            "0.1",
        ],
    );
    wait_vm(&s, &rig.vm, 30, "VM running", |vm| {
        vm.status == Some(VmStatus::Running)
    })
    .await;
    assert_eq!(
        rig.read("startup-runs").lines().count(),
        2,
        "one failure, one success"
    );
    assert_eq!(
        std::fs::read_to_string(rig.path("Desktop/sleap-tutorial-data/README.md")).expect("clone"),
        "tutorial\n"
    );
    let log = agent.log();
    assert!(log.contains("custom startup script failed"), "{log}");
    assert!(
        log.contains("mirror unreachable"),
        "the script's output is logged: {log}"
    );
    assert!(log.contains("custom startup script succeeded"), "{log}");
    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_script_that_never_succeeds_stops_the_vm_only_when_asked() {
    let s = short_poll_server().await;

    let rig = Rig::new("setupfail");
    let script = flaky_script(&rig, 99).display().to_string();
    let mut agent = rig.agent(
        &s.base,
        Token::Env(s.token()),
        Gpu::Fake,
        &[
            "--startup-script",
            &script,
            "--startup-attempts",
            "2",
            "--startup-max-delay",
            "0.1",
            "--startup-on-error",
            "fail",
        ],
    );
    let status = agent.exit_within(30).await;
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    let vm = s.stored_vm(&rig.vm).await.expect("registered");
    assert_eq!(vm.status, Some(VmStatus::Error));
    assert_eq!(rig.read("startup-runs").lines().count(), 2);
    let log = agent.log();
    assert!(
        log.contains(
            "ERROR: custom startup script failed after 2 attempts: exited with exit status: 7"
        ),
        "{log}"
    );

    // `continue` (the default): the VM is offered anyway, the error stays in the log.
    let rig = Rig::new("setupgo");
    let script = flaky_script(&rig, 99).display().to_string();
    let mut agent = rig.agent(
        &s.base,
        Token::Env(s.token()),
        Gpu::Fake,
        &[
            "--startup-script",
            &script,
            "--startup-attempts",
            "2",
            "--startup-max-delay",
            "0.1",
        ],
    );
    wait_vm(&s, &rig.vm, 30, "VM running", |vm| {
        vm.status == Some(VmStatus::Running)
    })
    .await;
    assert!(
        agent
            .log()
            .contains("ERROR: custom startup script failed after 2 attempts")
    );
    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0));
}
