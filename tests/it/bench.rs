//! `lablink bench`, run small as the real binary: every phase still runs and says what it
//! measured. No figure is asserted; the bench measures, it does not judge.

use std::process::Output;

use crate::helpers::{run_binary, succeeded};

/// `lablink bench` with a small load (4 clients for 1 s, 300 VMs, 50 parked long-polls,
/// 10 wakes) and `more` arguments.
async fn small_bench(more: &[&str]) -> Output {
    let mut args = vec![
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
    ];
    args.extend_from_slice(more);
    run_binary(&args, &[], 120).await
}

#[tokio::test]
async fn every_bench_phase_runs_and_reports() {
    let out = small_bench(&[
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
        "--wall-seats",
        "10",
        "--wall-run",
        "2",
        "--broadcast-viewers",
        "0",
    ])
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
    assert!(line("seat wall").contains("10 seats"), "{stdout}");
    assert!(line("seat wall bandwidth").contains("errors 0"), "{stdout}");
}

/// A small run with `--json --compare`: the document holds the figures the gate reads,
/// and a baseline no run can meet (claims per health 1000 × better) fails the gate with
/// status 1 and the table naming the figure, while the figures within their tolerance pass.
#[tokio::test]
async fn json_document_and_a_failed_comparison() {
    let dir = tempfile::tempdir().expect("temp dir");
    let baseline = dir.path().join("baseline.json");
    let settings = serde_json::json!({
        "clients": 4, "seconds": 1, "pool": 300, "parked": 50, "wakes": 10,
        "heartbeat_vms": 0, "heartbeat_every": 15, "heartbeat_run": 30, "frozen": 0,
        "desktop_streams": 0, "wall_seats": 0, "wall_run": 30, "broadcast_viewers": 0
    });
    let document = serde_json::json!({
        "context": {"taken": "2026-12-07T00:00:00Z", "cores": 2, "load_average": null,
                    "version": "0.1.0", "commit": "test", "target": "test"},
        "settings": settings,
        "figures": {"claims_per_health": 1000.0, "parked_longpoll_kib": 1e9, "start_ms": 1e9},
        "tolerances": {
            "claims_per_health": {"better": "higher", "worst_ratio": 0.65},
            "parked_longpoll_kib": {"better": "lower", "worst_ratio": 1.35},
            "start_ms": {"better": "lower", "worst_ratio": 2.0}
        }
    });
    std::fs::write(&baseline, document.to_string()).expect("write baseline");
    let out = small_bench(&[
        "--heartbeat-vms",
        "0",
        "--frozen",
        "0",
        "--desktop-streams",
        "0",
        "--wall-seats",
        "0",
        "--broadcast-viewers",
        "0",
        "--json",
        "--compare",
        baseline.to_str().expect("UTF-8 path"),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}); stderr: {stderr}"));
    assert_eq!(doc["settings"], settings);
    assert_eq!(doc["context"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["context"]["cores"].as_u64().expect("cores") >= 1);
    let figures = &doc["figures"];
    for name in [
        "claims_per_health",
        "parked_longpoll_kib",
        "start_ms",
        "health_rps",
    ] {
        assert!(
            figures[name].as_f64().expect("a number") > 0.0,
            "{name}: {doc:#}"
        );
    }
    let verdicts: Vec<(&str, &str)> = doc["comparison"]
        .as_array()
        .expect("the comparison")
        .iter()
        .map(|r| {
            (
                r["figure"].as_str().expect("figure"),
                r["verdict"].as_str().expect("verdict"),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("claims_per_health", "regression"),
            ("parked_longpoll_kib", "improved"),
            ("start_ms", "improved")
        ]
    );
    // The report's lines and the table go to stderr, the reason last.
    assert!(stderr.contains("start to first answer"), "{stderr}");
    assert!(
        stderr.contains("| claims_per_health | 1000 |") && stderr.contains("| REGRESSION |"),
        "{stderr}"
    );
    assert!(
        stderr.contains("lablink bench: regression: claims_per_health is"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_baseline_is_refused_before_measuring() {
    let dir = tempfile::tempdir().expect("temp dir");
    let baseline = dir.path().join("baseline.json");
    std::fs::write(&baseline, "{\"figures\": {}}").expect("write baseline");
    let out = run_binary(
        &[
            "bench",
            "--smoke",
            "--compare",
            baseline.to_str().expect("UTF-8 path"),
        ],
        &[],
        30,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "lablink bench: baseline {}: not a bench document",
            baseline.display()
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// The broadcast phase alone, with 3 viewers: its lines and figures are there, the rates
/// and the first-frame time above zero, the CPU share and memory growth measured. The
/// screen is Xvnc where it is installed and the synthetic server elsewhere: the line says
/// which, and the figures exist either way.
#[tokio::test]
async fn the_broadcast_phase_measures_a_small_room() {
    let out = small_bench(&[
        "--heartbeat-vms",
        "0",
        "--frozen",
        "0",
        "--desktop-streams",
        "0",
        "--wall-seats",
        "0",
        "--broadcast-viewers",
        "3",
        "--json",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}); stderr: {stderr}"));
    assert_eq!(doc["settings"]["broadcast_viewers"], 3);
    let figure = |name: &str| {
        doc["figures"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("no figure {name}: {doc:#}"))
    };
    for name in [
        "broadcast_first_frame_all_ms",
        "broadcast_vm_upload_bytes_s",
        "broadcast_vm_upload_bytes_s_per_viewer",
        "broadcast_delivered_bytes_s_per_viewer",
        "broadcast_delivered_slowest_bytes_s",
        "broadcast_updates_per_s",
    ] {
        assert!(figure(name) > 0.0, "{name}: {doc:#}");
    }
    assert!(figure("broadcast_cpu_pct") >= 0.0, "{doc:#}");
    assert!(figure("broadcast_rss_growth_mib").is_finite(), "{doc:#}");
    assert_eq!(figure("broadcast_refused_opens"), 0.0, "{stderr}");
    assert_eq!(figure("broadcast_unserved_viewers"), 0.0, "{stderr}");
    assert_eq!(figure("broadcast_viewer_errors"), 0.0, "{stderr}");
    let viewers = stderr
        .lines()
        .find(|l| l.starts_with("broadcast viewers"))
        .unwrap_or_else(|| panic!("no broadcast line: {stderr}"));
    assert!(
        viewers.contains("3 viewers") && viewers.contains("first frame on 3 of them"),
        "{viewers}"
    );
    let real = figure("broadcast_real_vnc") == 1.0;
    assert_eq!(viewers.contains("screen: Xvnc"), real, "{viewers}");
    assert_eq!(
        viewers.contains("screen: synthetic RFB server"),
        !real,
        "{viewers}"
    );
    if real {
        assert!(figure("broadcast_xvnc_cpu_pct") > 0.0, "{doc:#}");
        assert!(figure("broadcast_screen_changes_per_s") > 0.0, "{doc:#}");
    }
    for line in [
        "broadcast VM upload",
        "broadcast delivered",
        "broadcast allocator",
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(line)),
            "no `{line}`: {stderr}"
        );
    }
}
