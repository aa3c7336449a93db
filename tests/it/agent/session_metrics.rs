//! The real agent samples its seat at the interval the allocator sets (told in the
//! heartbeat's answer; the agent's own default is 15 s), with the fake nvidia-smi's figures,
//! and sends them in batches into the seat's session metrics.

use lablink::model::{Health, VmStatus};
use serde_json::Value;

use super::{Gpu, LONG_POLL, Rig, Token, wait_vm};
use crate::helpers::{Auth, TestServer, crd_command, wait_for, within};

async fn seat(s: &TestServer) -> Option<Value> {
    let all = s
        .get("/api/session-metrics", Auth::admin())
        .await
        .expect(200);
    all["seats"]
        .as_array()
        .and_then(|seats| seats.first().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_sends_samples_at_the_configured_interval() {
    let s = TestServer::start_with(|c| {
        c.server.long_poll_seconds = LONG_POLL;
        c.server.heartbeat_seconds = 1;
        c.metrics.sample_seconds = 1;
    })
    .await;
    let rig = Rig::new("sessionmetrics");
    rig.set_gpu_use("20, 1000");
    let mut agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Fake, &[]);
    within(60, "the agent's samples in the seat's series", async {
        wait_vm(&s, &rig.vm, 15, "healthy and running", |vm| {
            vm.health == Some(Health::Healthy) && vm.status == Some(VmStatus::Running)
        })
        .await;
        let claimed = s
            .claim("ada@example.org", &crd_command("4/0AbcSeries-1"))
            .await;
        assert_eq!(claimed.status, 200, "{}", claimed.html);
        let first = wait_for(20, "samples with the first figures", || async {
            seat(&s)
                .await
                .filter(|seat| seat["summary"]["samples"].as_u64() >= Some(4))
        })
        .await;
        assert_eq!(first["hostname"], rig.vm.as_str());
        assert_eq!(first["summary"]["gpu_util_peak"], 20.0);
        assert_eq!(first["summary"]["gpu_memory_peak_mib"], 1000);
        // The workshop software is not running; the seat is Chrome Remote Desktop.
        assert_eq!(first["points"][0]["in_use"], false);
        assert_eq!(first["summary"]["connected_seconds"], Value::Null);

        rig.set_gpu_use("80, 3000\n10, 500");
        let later = wait_for(20, "samples with the new figures", || async {
            seat(&s)
                .await
                .filter(|seat| seat["summary"]["gpu_util_peak"] == 80.0)
        })
        .await;
        assert_eq!(later["summary"]["gpu_memory_peak_mib"], 3500);
        let mean = later["summary"]["gpu_util_mean"].as_f64().expect("mean");
        assert!(mean > 20.0 && mean < 80.0, "mean {mean}");
        // One sample a second (the configured interval, not the agent's 15 s default):
        // the points' times say so.
        let points = later["points"].as_array().expect("points");
        let times: Vec<chrono::DateTime<chrono::Utc>> = points
            .iter()
            .map(|p| p["at"].as_str().expect("at").parse().expect("a time"))
            .collect();
        let span = (times[times.len() - 1] - times[0]).num_milliseconds() as f64 / 1000.0;
        let gaps = (times.len() - 1) as f64;
        assert!(
            gaps >= 5.0 && (0.7..=2.0).contains(&(span / gaps)),
            "{} samples over {span} s",
            times.len()
        );
    })
    .await;
    agent.assert_alive();
    let status = agent.stop(5).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
