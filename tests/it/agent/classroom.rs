//! The classroom on a real agent: announcements reach the seat's desktop as
//! notifications. The classroom in real browsers on real seats (hands, broadcast,
//! announcements on the page) is in `agent::instructor_console`.

use reqwest::Method;
use serde_json::json;

use super::seat_with_notifications;
use crate::helpers::{wait_for, within};

/// An announcement reaches the seat's desktop as a notification, once, through the
/// agent's heartbeat answers (the fake notify-send logs what it is asked to show).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_shows_each_announcement_on_the_desktop_once() {
    let (s, rig, mut agent) = seat_with_notifications("announce").await;
    within(60, "announcements on the desktop", async {
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
