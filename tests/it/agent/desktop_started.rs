//! The agent tells the allocator when the participant's desktop started (the event
//! report's time from claim to desktop), and only once start-host has succeeded.

use lablink::model::{Health, VmStatus};

use super::{Gpu, Rig, Token, short_poll_server, wait_start_host_runs, wait_vm};
use crate::helpers::{crd_command, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_the_desktop_started_after_start_host_succeeded() {
    let s = short_poll_server().await;
    let rig = Rig::new("ready");
    rig.set_start_host_exit(1);
    let mut agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Fake, &[]);
    within(50, "desktop started", async {
        wait_vm(&s, &rig.vm, 15, "VM running and healthy", |vm| {
            vm.status == Some(VmStatus::Running) && vm.health == Some(Health::Healthy)
        })
        .await;
        let first = s
            .claim("hedy@example.org", &crd_command("4/0AbcFail-333"))
            .await;
        assert_eq!(first.status, 200, "{}", first.html);
        let failed = wait_vm(&s, &rig.vm, 10, "status error", |vm| {
            vm.status == Some(VmStatus::Error)
        })
        .await;
        let held = failed.assignment.expect("assignment");
        assert_eq!(held.desktop_ready_at, None, "start-host failed: not ready");

        rig.set_start_host_exit(0);
        let again = s
            .claim_again("hedy@example.org", &crd_command("4/0AbcFresh-444"), &first)
            .await;
        assert_eq!(again.status, 200, "{}", again.html);
        wait_start_host_runs(&rig, 2, 30).await;
        let ready = wait_vm(&s, &rig.vm, 10, "the desktop start recorded", |vm| {
            vm.assignment
                .as_ref()
                .is_some_and(|a| a.desktop_ready_at.is_some())
        })
        .await;
        let a = ready.assignment.expect("assignment");
        let at = a.desktop_ready_at.expect("recorded");
        assert!(
            at >= a.assigned_at,
            "{at} before the claim {}",
            a.assigned_at
        );
        assert_eq!(a.assigned_at, held.assigned_at, "the same assignment");
        agent
            .wait_log(10, &["desktop started; the participant can connect"], 1)
            .await;
        agent.assert_alive();
    })
    .await;
    let status = agent.stop(5).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
