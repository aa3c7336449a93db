//! Scheduled destruction: the upstream API, firing on a controllable clock, and schedules
//! that survive a restart.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use lablink::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_USER, Answer, Auth, TestServer, wait_for, within};

async fn admin_json(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> Answer {
    s.admin_json(method, path, body).await
}

fn refused(a: &Answer, status: u16, message: &str) {
    assert_eq!(
        a.expect(status),
        json!({"success": false, "message": message}),
        "{a:?}"
    );
}

#[tokio::test]
async fn the_schedule_api_checks_input_before_storing_anything() {
    let s = TestServer::start().await;
    within(30, "test", async {
        let post = |body: Value| admin_json(&s, Method::POST, "/api/schedule-destruction", Some(body));
        refused(&post(json!({"destruction_time": "2099-01-01T00:00:00Z"})).await, 400, "schedule_name is required");
        refused(&post(json!({"schedule_name": "x"})).await, 400, "destruction_time is required");
        let a = post(json!({"schedule_name": "x", "destruction_time": "next friday"})).await;
        assert!(a.expect(400)["message"].as_str().expect("text").starts_with("Invalid destruction_time format"));
        refused(
            &post(json!({"schedule_name": "x", "destruction_time": "2001-01-01T00:00:00Z"})).await,
            400,
            "destruction_time must be in the future",
        );
        for rule in ["FREQ=HOURLY", "FREQ=WEEKLY;BYDAY=XX", "BYDAY=MO"] {
            let a = post(json!({"schedule_name": "x", "destruction_time": "2099-01-01T00:00:00Z", "recurrence_rule": rule})).await;
            assert_eq!(a.expect(400)["success"], false, "{rule}");
        }
        // None of that stored anything.
        let list = admin_json(&s, Method::GET, "/api/schedule-destruction", None).await.expect(200);
        assert_eq!(list["count"], 0);

        let made = post(json!({
            "schedule_name": "wrap-up",
            "destruction_time": "2099-05-01T18:00:00.000Z",
            "recurrence_rule": "FREQ=WEEKLY;BYDAY=MO",
        }))
        .await
        .expect(200);
        assert_eq!(made, json!({"success": true, "schedule_id": 1, "message": "Scheduled destruction created successfully"}));
        refused(
            &post(json!({"schedule_name": "wrap-up", "destruction_time": "2099-05-02T18:00:00Z"})).await,
            409,
            "Schedule 'wrap-up' already exists",
        );
        let one = admin_json(&s, Method::GET, "/api/schedule-destruction/1", None).await.expect(200);
        let sched = &one["schedule"];
        assert_eq!(sched["destruction_time"], "Fri, 01 May 2099 18:00:00 GMT");
        assert_eq!(sched["status"], "scheduled");
        assert_eq!(sched["created_by"], ADMIN_USER);
        assert_eq!(sched["next_run"], "Mon, 04 May 2099 18:00:00 GMT");
        assert_eq!(sched["notification_hours_before"], 1);

        let filtered = admin_json(&s, Method::GET, "/api/schedule-destruction?status=cancelled", None).await.expect(200);
        assert_eq!(filtered["count"], 0);
        refused(
            &admin_json(&s, Method::GET, "/api/schedule-destruction?status=bogus", None).await,
            400,
            "Invalid status filter: bogus",
        );
        refused(&admin_json(&s, Method::GET, "/api/schedule-destruction/9", None).await, 404, "Schedule not found");

        // A recurring schedule can be cancelled (upstream could not).
        let cancelled = admin_json(&s, Method::DELETE, "/api/schedule-destruction/1", None).await.expect(200);
        assert_eq!(cancelled["message"], "Scheduled destruction 1 cancelled successfully");
        refused(
            &admin_json(&s, Method::DELETE, "/api/schedule-destruction/1", None).await,
            400,
            "Cannot cancel schedule with status 'cancelled'",
        );
        let anonymous = s.get("/api/schedule-destruction", Auth::None).await;
        assert_eq!(anonymous.status, 401);
    })
    .await;
}

async fn schedule_state(s: &TestServer, id: u64) -> Value {
    admin_json(
        s,
        Method::GET,
        &format!("/api/schedule-destruction/{id}"),
        None,
    )
    .await
    .expect(200)["schedule"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_on_the_clock_and_survive_a_restart() {
    let t0 = Utc
        .with_ymd_and_hms(2030, 3, 4, 9, 0, 0)
        .single()
        .expect("time");
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::starting_at(t0));
    let mut s =
        TestServer::start_on_with_clock(dir.path(), "127.0.0.1:0", clock.clone(), |_| {}).await;
    within(60, "test", async {
        s.register_running("vm-1").await;
        s.register_running("vm-2").await;
        let post = |body: Value| admin_json(&s, Method::POST, "/api/schedule-destruction", Some(body));
        post(json!({"schedule_name": "once", "destruction_time": "2030-03-04T10:00:00Z"})).await.expect(200);
        post(json!({"schedule_name": "daily", "destruction_time": "2030-03-04T11:00:00Z", "recurrence_rule": "FREQ=DAILY"}))
            .await
            .expect(200);
        // Not due yet: nothing happens.
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        assert!(s.stored_vm("vm-1").await.is_some());
        assert_eq!(schedule_state(&s, 1).await["status"], "scheduled");
    })
    .await;

    // The allocator is down when the one-off is due; it fires at the next start.
    s.stop().await;
    let clock = Arc::new(ManualClock::starting_at(t0 + Duration::minutes(75)));
    let s = TestServer::start_on_with_clock(dir.path(), "127.0.0.1:0", clock.clone(), |_| {}).await;
    within(60, "after restart", async {
        let once = wait_for(10, "the missed one-off fires", || async {
            let st = schedule_state(&s, 1).await;
            (st["status"] == "completed").then_some(st)
        })
        .await;
        assert_eq!(once["execution_count"], 1);
        let result = once["last_execution_result"].as_str().expect("result");
        assert!(
            result.starts_with("All VMs destroyed successfully"),
            "{result}"
        );
        assert!(result.contains("late"), "{result}");
        assert!(s.stored_vm("vm-1").await.is_none() && s.stored_vm("vm-2").await.is_none());
        assert_eq!(schedule_state(&s, 2).await["status"], "scheduled");

        // The daily one fires when the clock reaches it, and stays scheduled.
        s.register_running("vm-3").await;
        clock.advance(Duration::minutes(46));
        let daily = wait_for(10, "the daily schedule fires", || async {
            let st = schedule_state(&s, 2).await;
            (st["execution_count"] == 1 && st["status"] == "scheduled").then_some(st)
        })
        .await;
        assert_eq!(daily["next_run"], "Tue, 05 Mar 2030 11:00:00 GMT");
        assert!(s.stored_vm("vm-3").await.is_none());
        let runs = s.get("/api/runs", Auth::admin()).await.expect(200);
        assert_eq!(runs["runs"][0]["requested_by"], "schedule:daily");

        // A day later it fires again, with nothing left to destroy.
        clock.advance(Duration::days(1));
        let again = wait_for(10, "the daily schedule fires again", || async {
            let st = schedule_state(&s, 2).await;
            (st["execution_count"] == 2 && st["status"] == "scheduled").then_some(st)
        })
        .await;
        assert_eq!(again["last_execution_result"], "No VMs to destroy");
        assert_eq!(again["next_run"], "Wed, 06 Mar 2030 11:00:00 GMT");
    })
    .await;
}
