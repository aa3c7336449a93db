//! The workshop's countdown on the participant's desktop: once a mark has passed, the agent
//! of an assigned VM shows it with notify-send, once per mark.

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::json;

use super::seat_with_notifications;
use crate::helpers::{TestServer, wait_for, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_shows_each_countdown_mark_on_the_desktop_once() {
    let (s, rig, mut agent) = seat_with_notifications("countdown").await;
    within(60, "countdown on the desktop", async {
        assert_eq!(rig.read("notify.log"), "", "nothing to announce yet");

        // An event ending in 20 minutes: its 30-minute mark has passed.
        let now = Utc::now();
        s.admin_json(
            Method::POST,
            "/api/event",
            Some(json!({
                "name": "Countdown",
                "start": (now - Duration::hours(1)).to_rfc3339(),
                "end": (now + Duration::minutes(20)).to_rfc3339(),
                "seats": 1,
                "spare_percent": 0,
                "prewarm_minutes": 0,
                "warn_minutes": "30,5",
            })),
        )
        .await
        .expect(201);
        let shown = wait_for(15, "the notification", || async {
            let text = rig.read("notify.log");
            text.contains("== end ==\n").then_some(text)
        })
        .await;
        assert!(shown.contains("--urgency=critical"), "{shown}");
        assert!(
            shown.contains("The workshop ends in 30 minutes."),
            "{shown}"
        );
        // Later heartbeats carry the same notice: it is not shown again.
        agent.wait_log(10, &["desktop notification shown"], 1).await;
        let beats = heartbeats(&s).await;
        wait_for(10, "three more heartbeats", || async {
            (heartbeats(&s).await >= beats + 3).then_some(())
        })
        .await;
        assert_eq!(rig.read("notify.log").matches("== end ==\n").count(), 1);
    })
    .await;
    agent.stop(5).await;
}

/// Heartbeats the allocator has answered, from its request metrics.
async fn heartbeats(s: &TestServer) -> u64 {
    s.metrics_text()
        .await
        .lines()
        .filter(|l| {
            l.starts_with("lablink_http_request_duration_seconds_count{")
                && l.contains("route=\"/api/heartbeat\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
