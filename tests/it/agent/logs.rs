//! Log shipping: every line once, across allocator and agent restarts.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Gpu, LONG_POLL, Rig, Token, short_poll_server};
use crate::helpers::{Auth, TestServer, wait_for, within};

/// The non-empty lines of one kind of shipped log.
async fn shipped(s: &TestServer, vm: &str, key: &str) -> Vec<String> {
    let answer = s.agent_get(&format!("/api/vm-logs/{vm}")).await;
    if answer.status == 404 {
        return Vec::new(); // the agent has not registered the VM yet
    }
    answer.expect(200)[key]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn append(path: &Path, lines: &[&str]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log file");
    for line in lines {
        writeln!(f, "{line}").expect("append");
    }
    f.sync_all().expect("sync");
}

/// Both logs once they hold exactly `cloud` and `container` (ANSI stripped), with no
/// duplicates appearing a moment later either.
async fn expect_shipped(s: &TestServer, rig: &Rig, cloud: &[&str], container: &[&str]) {
    let vm = rig.vm.as_str();
    let want = |l: &[&str]| l.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let (cloud, container) = (want(cloud), want(container));
    let last = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let seen = last.clone();
    let done = tokio::time::timeout(
        Duration::from_secs(25),
        wait_for(25, "shipped logs", || async {
            let got = (
                shipped(s, vm, "cloud_init_logs").await,
                shipped(s, vm, "docker_logs").await,
            );
            let complete = got.0.len() >= cloud.len() && got.1.len() >= container.len();
            *seen.lock().expect("lock") = got;
            complete.then_some(())
        }),
    )
    .await;
    let got = last.lock().expect("lock").clone();
    assert!(
        done.is_ok(),
        "logs incomplete:\ncloud-init {:?}\ncontainer {:?}",
        got.0,
        got.1
    );
    // Several flush intervals of the agent, measured by its own GPU probes.
    rig.wait_gpu_probes(4, 10).await;
    let got = (
        shipped(s, vm, "cloud_init_logs").await,
        shipped(s, vm, "docker_logs").await,
    );
    assert_eq!(got.0, cloud, "cloud-init log");
    assert_eq!(got.1, container, "container log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_shipped_once_across_allocator_and_agent_restarts() {
    let s = short_poll_server().await;
    let rig = Rig::new("logs");
    let (cloud_file, container_file) = (rig.path("cloud-init.log"), rig.path("container.log"));
    append(
        &cloud_file,
        &["ci 1 boot", "\u{1b}[32mci 2 green\u{1b}[0m ok", "ci 3"],
    );
    append(
        &container_file,
        &["\u{1b}[1;31mctr 1 red\u{1b}[0m", "ctr 2"],
    );
    let cloud_arg = cloud_file.display().to_string();
    let container_arg = container_file.display().to_string();
    let args = [
        "--log-file",
        cloud_arg.as_str(),
        "--container-log-file",
        container_arg.as_str(),
    ];
    let mut agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Fake, &args);
    let mut cloud = vec!["ci 1 boot", "ci 2 green ok", "ci 3"];
    let mut container = vec!["ctr 1 red", "ctr 2"];
    let s = within(55, "logs across restarts", async {
        expect_shipped(&s, &rig, &cloud, &container).await;

        // The allocator goes away; lines written meanwhile wait in the file.
        let mut s = s;
        s.stop().await;
        append(&cloud_file, &["ci 4 while down", "\u{1b}[33mci 5\u{1b}[0m"]);
        append(&container_file, &["ctr 3 while down"]);
        agent.wait_log(10, &["log batch: not delivered"], 1).await;
        let s = s
            .restart_on_same_port(|c| c.server.long_poll_seconds = LONG_POLL)
            .await;
        cloud.extend(["ci 4 while down", "ci 5"]);
        container.push("ctr 3 while down");
        expect_shipped(&s, &rig, &cloud, &container).await;
        assert!(
            agent.count(&["log batch: not delivered"]) >= 1,
            "the outage was not noticed: the test did not exercise it"
        );

        // More lines, shipped; then some written just before the agent stops, and some
        // while it is stopped: the restarted agent resumes where it was.
        append(&cloud_file, &["ci 6"]);
        append(&container_file, &["ctr 4"]);
        cloud.push("ci 6");
        container.push("ctr 4");
        expect_shipped(&s, &rig, &cloud, &container).await;
        append(&cloud_file, &["ci 7 before stop"]);
        let status = agent.stop(10).await;
        assert_eq!(status.code(), Some(0), "exit status {status}");
        append(&cloud_file, &["ci 8 while stopped"]);
        append(&container_file, &["ctr 5 while stopped"]);
        cloud.extend(["ci 7 before stop", "ci 8 while stopped"]);
        container.push("ctr 5 while stopped");
        agent = rig.agent(&s.base, Token::Flag(s.token()), Gpu::Fake, &args);
        expect_shipped(&s, &rig, &cloud, &container).await;
        s
    })
    .await;
    let body = s
        .get(&format!("/api/vm-logs/{}", rig.vm), Auth::admin())
        .await
        .expect(200);
    assert!(!body.to_string().contains("\\u001b"), "ANSI left: {body}");
    agent.assert_alive();
    let status = agent.stop(10).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
