//! The classroom on a real agent: announcements reach the seat's desktop as
//! notifications. The classroom in real browsers on real seats (hands, broadcast,
//! announcements on the page) is in `agent::instructor_console`.

use reqwest::Method;
use serde_json::json;

use super::{Gpu, Rig, Token, wait_vm};
use crate::helpers::{TestServer, crd_command, wait_for, within};
use lablink::model::VmStatus;

/// An announcement reaches the seat's desktop as a notification, once, through the
/// agent's heartbeat answers (the fake notify-send logs what it is asked to show).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_shows_each_announcement_on_the_desktop_once() {
    let s = TestServer::start_with(|c| {
        c.server.long_poll_seconds = 2;
        c.server.heartbeat_seconds = 1;
    })
    .await;
    let rig = Rig::new("announce");
    let log = rig.path("notify.log");
    let mut agent = rig.agent_with_env(
        &s.base,
        Token::Flag(s.token()),
        Gpu::Fake,
        &[],
        &[("FAKE_NOTIFY_LOG", log.as_path())],
    );
    within(60, "announcements on the desktop", async {
        wait_vm(&s, &rig.vm, 15, "VM running", |vm| {
            vm.status == Some(VmStatus::Running)
        })
        .await;
        let claimed = s.claim("ada@example.org", &crd_command("4/ada-code")).await;
        assert_eq!(claimed.status, 200, "{}", claimed.html);
        agent
            .wait_log(10, &["desktop started; the participant can connect"], 1)
            .await;
        // A text that starts with a dash is shown, not taken for an option.
        for text in ["Break until 11:00", "-- Back in the room, please"] {
            s.admin_json(
                Method::POST,
                "/api/announcements",
                Some(json!({ "text": text })),
            )
            .await
            .expect(201);
            wait_for(15, "the notification", || async {
                rig.read("notify.log").contains(text).then_some(())
            })
            .await;
        }
        let shown = rig.read("notify.log");
        assert_eq!(shown.matches("Break until 11:00").count(), 1, "{shown}");
        assert_eq!(shown.matches("== end ==\n").count(), 2, "{shown}");
        assert!(
            shown.contains("--\nLabLink workshop\n-- Back in the room, please\n"),
            "{shown}"
        );
    })
    .await;
    agent.stop(5).await;
}
