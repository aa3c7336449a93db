//! `lablink bench`, run small as the real binary: every phase still runs and says what it
//! measured. No figure is asserted; the bench measures, it does not judge.

use crate::helpers::{run_binary, succeeded};

#[tokio::test]
async fn every_bench_phase_runs_and_reports() {
    let out = run_binary(
        &[
            "bench",
            "--clients",
            "4",
            "--seconds",
            "1",
            "--pool",
            "300",
            "--parked",
            "50",
            "--wakes",
            "10",
            "--heartbeat-vms",
            "100",
            "--heartbeat-every",
            "1",
            "--heartbeat-run",
            "2",
            "--frozen",
            "10",
            "--desktop-streams",
            "5",
        ],
        &[],
        120,
    )
    .await;
    let stdout = succeeded(&out);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` line:\n{stdout}"))
            .to_owned()
    };
    // Claims pick only VMs whose agent is alive: the pool's registered agents are, so
    // none is refused. How many fit in the one-second phase depends on the machine.
    let claims = line("POST /api/request_vm");
    let ok: u32 = claims
        .split("ok ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no claim count in `{claims}`"));
    assert!(ok > 0, "{stdout}");
    assert!(claims.contains("refused 0  errors 0"), "{stdout}");
    assert!(
        line("claim → agent wake").contains("woken 10 of 10"),
        "{stdout}"
    );
    assert!(line("POST /api/heartbeat").contains("errors 0"), "{stdout}");
    assert!(
        line("allocator CPU, heartbeats").contains("% of one core"),
        "{stdout}"
    );
    assert!(
        line("frozen agent → unresponsive").contains("(10 of 10 seen; 0 before freezing"),
        "{stdout}"
    );
    assert!(
        line("desktop relay throughput").contains("% of direct"),
        "{stdout}"
    );
    assert!(
        line("desktop relay latency").contains("added p99"),
        "{stdout}"
    );
    assert!(line("idle desktop streams").contains("5 open"), "{stdout}");
}
