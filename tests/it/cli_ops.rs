//! The command line against a running allocator: `status`, `seats`, `logs`, `launch`,
//! `destroy`, `runs` and `export` run as real `lablink` processes against a real server,
//! for people (tables) and scripts (`--json`, exit statuses).

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{
    ADMIN_USER, Auth, TestServer, admin_cli_env, crd_command, free_port, run_binary, succeeded,
    wait_for, within,
};

/// Runs `lablink ARGS --url <server>` as the admin.
async fn lablink(s: &TestServer, args: &[&str]) -> Output {
    let base = s.url("");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--url", base.as_str()]);
    run_binary(&all, &admin_cli_env(), 60).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn failed_with(out: &Output, code: i32, says: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    assert!(
        stderr(out).contains(says),
        "expected {says:?} in: {}",
        stderr(out)
    );
}

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&succeeded(out))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Asserts the object `v` has (at least) each of `wanted`.
#[track_caller]
fn has_keys(v: &Value, wanted: &[&str]) {
    let present = keys(v);
    for key in wanted {
        assert!(present.contains(key), "no {key:?} in {v}");
    }
}

/// A run's record as the API gives it, which `runs`, `launch` and `destroy` print.
const RUN_KEYS: [&str; 9] = [
    "id",
    "action",
    "state",
    "progress",
    "requested_by",
    "started_at",
    "ended_at",
    "exit_code",
    "cancelled_by",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_seats_show_the_pool_as_tables_and_json() {
    let s = TestServer::start().await;
    s.register_many(3).await;
    s.claim("ada@example.org", &crd_command("4/0AStatus")).await;
    within(120, "test", async {
        let text = succeeded(&lablink(&s, &["status"]).await);
        assert!(text.contains(": ok, up "), "{text}");
        assert!(
            text.contains("VMs: 3 — 1 assigned, 2 free, 0 starting, 0 unresponsive"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.contains("ada@example.org"))
            .unwrap_or_else(|| panic!("no row for the seat: {text}"));
        assert!(row.starts_with("vm-1") && row.contains("running"), "{row}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("HOST") && l.contains("PARTICIPANT"))
        );

        let status = json_of(&lablink(&s, &["status", "--json"]).await);
        assert_eq!(
            keys(&status),
            ["counts", "event", "health", "runs_in_progress", "vms"]
        );
        assert_eq!(
            keys(&status["counts"]),
            [
                "assigned",
                "error",
                "free",
                "starting",
                "total",
                "unhealthy",
                "unresponsive"
            ]
        );
        has_keys(&status["health"], &["status", "checks", "uptime_seconds"]);
        has_keys(
            &status["vms"][0],
            &[
                "hostname",
                "status",
                "health",
                "participant",
                "in_use",
                "available",
                "unresponsive",
                "last_seen_seconds_ago",
            ],
        );
        assert_eq!(status["counts"]["total"], 3);
        assert_eq!(status["counts"]["assigned"], 1);
        assert_eq!(status["counts"]["free"], 2);
        assert_eq!(status["event"], Value::Null);
        assert_eq!(status["runs_in_progress"], json!([]));
        assert_eq!(status["health"]["status"], "ok");
        assert_eq!(status["vms"].as_array().map(Vec::len), Some(3));

        let seats = succeeded(&lablink(&s, &["seats"]).await);
        assert!(
            seats
                .lines()
                .any(|l| l.starts_with("vm-1") && l.contains("ada@example.org"))
        );
        assert!(seats.contains("1 seated, 2 free"), "{seats}");
        let listed = json_of(&lablink(&s, &["seats", "list", "--json"]).await);
        assert_eq!(keys(&listed), ["free", "seats"]);
        assert_eq!(
            keys(&listed["seats"][0]),
            [
                "alive",
                "assigned_at",
                "hostname",
                "in_use",
                "participant",
                "unresponsive"
            ]
        );
        assert_eq!(listed["free"], 2);
        assert_eq!(listed["seats"][0]["hostname"], "vm-1");
        assert_eq!(listed["seats"][0]["participant"], "ada@example.org");

        let moved =
            json_of(&lablink(&s, &["seats", "move", "vm-1", "--to", "vm-3", "--json"]).await);
        assert!(
            moved["message"]
                .as_str()
                .is_some_and(|m| m.contains("vm-3")),
            "{moved}"
        );
        let listed = json_of(&lablink(&s, &["seats", "--json"]).await);
        assert_eq!(listed["seats"][0]["hostname"], "vm-3");
        let released = json_of(&lablink(&s, &["seats", "release", "vm-3", "--json"]).await);
        assert!(released["message"].is_string(), "{released}");
        let listed = json_of(&lablink(&s, &["seats", "--json"]).await);
        assert_eq!(listed["seats"], json!([]), "{listed}");
        failed_with(
            &lablink(&s, &["seats", "release", "vm-2"]).await,
            1,
            "vm-2 has no participant",
        );
        failed_with(&lablink(&s, &["seats", "clear", "../x"]).await, 2, "HOST");
    })
    .await;
}

/// Every subcommand that talks to an allocator, with each way of calling it: one request
/// each for the credential checks below.
const EVERY_SUBCOMMAND: [&[&str]; 19] = [
    &["status"],
    &["seats"],
    &["seats", "release", "vm-1"],
    &["seats", "move", "vm-1", "--to", "vm-2"],
    &["seats", "clear", "vm-1"],
    &["seats", "revoke", "vm-1"],
    &["logs", "vm-1"],
    &["logs", "vm-1", "--follow"],
    &["launch", "1"],
    &["destroy", "vm-1"],
    &["destroy", "--all", "--yes"],
    &["runs"],
    &["runs", "1"],
    &["runs", "1", "--follow"],
    &["runs", "1", "--cancel"],
    &["export"],
    &["export", "report"],
    &["export", "sessions"],
    &["export", "rescues"],
];

/// The subcommands of `EVERY_SUBCOMMAND` that change something.
fn changes(args: &[&str]) -> bool {
    matches!(args[0], "launch" | "destroy")
        || args.len() > 2 && args[0] == "seats"
        || args.contains(&"--cancel")
}

/// Runs `lablink ARGS --url <base>` with `env` and nothing else.
async fn lablink_as(base: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--url", base]);
    run_binary(&all, env, 30).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_an_unreachable_allocator_and_bad_flags_have_their_statuses() {
    let s = TestServer::start().await;
    s.register_many(2).await;
    within(240, "test", async {
        let base = s.url("");
        let token = |scope: &'static str| {
            let s = &s;
            async move {
                s.admin_json(
                    reqwest::Method::POST,
                    "/api/admin-tokens",
                    Some(json!({"name": scope, "scope": scope})),
                )
                .await
                .expect(201)
            }
        };
        let revoked = token("admin").await;
        s.admin_json(
            reqwest::Method::DELETE,
            &format!("/api/admin-tokens/{}", revoked["id"]),
            None,
        )
        .await
        .expect(200);
        let revoked = revoked["token"].as_str().expect("token").to_owned();
        let read_only = token("read_only").await["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let closed = format!("http://127.0.0.1:{}", free_port());
        for args in EVERY_SUBCOMMAND {
            let wrong = [("LABLINK_APP_ADMIN_PASSWORD", "not-the-password")];
            failed_with(
                &lablink_as(&base, args, &wrong).await,
                3,
                "wrong admin user or password",
            );
            // Five refusals in a row lock this address out; a good sign-in clears them.
            s.get("/api/vms", Auth::admin()).await.expect(200);
            let out = lablink_as(&base, args, &[("LABLINK_TOKEN", &revoked)]).await;
            failed_with(&out, 3, "is unknown or revoked");
            assert!(
                stderr(&out).contains("lablink login"),
                "{args:?}: {}",
                stderr(&out)
            );
            s.get("/api/vms", Auth::admin()).await.expect(200);
            if changes(args) {
                failed_with(
                    &lablink_as(&base, args, &[("LABLINK_TOKEN", &read_only)]).await,
                    3,
                    "has the read_only scope",
                );
            }
            failed_with(
                &lablink_as(&closed, args, &admin_cli_env()).await,
                4,
                "cannot connect to",
            );
        }
        // A read-only token reads.
        for args in [&["status"][..], &["seats"], &["runs"], &["logs", "vm-1"]] {
            succeeded(&lablink_as(&base, args, &[("LABLINK_TOKEN", &read_only)]).await);
        }
        let wrong_user = run_binary(
            &["status", "--url", &base, "--user", "mallory"],
            &admin_cli_env(),
            30,
        )
        .await;
        failed_with(&wrong_user, 3, "HTTP 401");
        // `login` too: nothing is stored when the allocator cannot be reached.
        let home = tempfile::tempdir().expect("tempdir");
        let config = home.path().display().to_string();
        let login = lablink_as(
            &closed,
            &["login"],
            &[
                ("XDG_CONFIG_HOME", config.as_str()),
                ("LABLINK_APP_ADMIN_PASSWORD", crate::helpers::ADMIN_PASSWORD),
            ],
        )
        .await;
        failed_with(&login, 4, "cannot connect to");
        assert!(!home.path().join("lablink/logins.json").exists());

        failed_with(
            &run_binary(&["status", "--url", "ftp://x"], &admin_cli_env(), 30).await,
            2,
            "--url",
        );
        failed_with(
            &run_binary(&["status", "--url", &base], &[], 30).await,
            2,
            "no admin password",
        );
        failed_with(&lablink(&s, &["launch", "0"]).await, 2, "COUNT");
        failed_with(&lablink(&s, &["runs", "--follow"]).await, 2, "<ID>");
        failed_with(&lablink(&s, &["destroy"]).await, 2, "<HOSTS>");
        failed_with(&lablink(&s, &["destroy", "--all"]).await, 2, "--yes");
        failed_with(
            &lablink(&s, &["destroy", "a", "b", "--detach"]).await,
            2,
            "one HOST",
        );
        failed_with(
            &lablink(&s, &["export", "rescues", "--format", "csv"]).await,
            2,
            "ZIP",
        );
        failed_with(
            &lablink(&s, &["logs", "vm-1", "--kind", "nope"]).await,
            2,
            "--kind",
        );
        let audit = s.recent_audit(50).await;
        assert!(
            !audit.iter().any(|e| e.actor != ADMIN_USER
                || !["login", "create-api-token", "revoke-api-token"].contains(&e.action.as_str())),
            "nothing refused changed anything: {audit:?}"
        );
    })
    .await;
}

async fn ship_logs(s: &TestServer, host: &str, group: &str, lines: &[&str]) {
    s.agent_post(
        "/api/vm-logs",
        &json!({"log_group": group, "log_stream": host, "messages": lines}),
    )
    .await
    .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_printed_whole_and_followed_as_they_arrive() {
    let s = TestServer::start().await;
    s.register_running("vm-1").await;
    within(120, "test", async {
        failed_with(
            &lablink(&s, &["logs", "vm-1"]).await,
            0,
            "no logs shipped yet",
        );
        ship_logs(
            &s,
            "vm-1",
            "lablink-cloud-init",
            &["boot step one", "boot step two"],
        )
        .await;
        ship_logs(&s, "vm-1", "lablink-docker", &["container says hello"]).await;

        let all = succeeded(&lablink(&s, &["logs", "vm-1"]).await);
        let boot = all.find("boot step one").expect("boot lines");
        let container = all.find("container says hello").expect("container lines");
        assert!(boot < container, "{all}");
        let only = succeeded(&lablink(&s, &["logs", "vm-1", "--kind", "container"]).await);
        assert!(
            only.contains("container says hello") && !only.contains("boot step"),
            "{only}"
        );
        let answer = json_of(&lablink(&s, &["logs", "vm-1", "--json"]).await);
        assert_eq!(
            keys(&answer),
            ["cloud_init_logs", "docker_logs", "hostname", "logs"]
        );
        assert_eq!(answer["hostname"], "vm-1");
        // Followed, one JSON answer a line, each with the cursor to go on from.
        let mut follower = spawn(&s, &["logs", "vm-1", "--follow", "--json"]);
        let mut lines = BufReader::new(follower.stdout.take().expect("stdout")).lines();
        let first = lines.next_line().await.expect("read").expect("a line");
        let first: Value = serde_json::from_str(&first).expect("one JSON object a line");
        assert!(first["cursor"].is_string(), "{first}");
        assert!(
            first["docker_logs"]
                .as_str()
                .is_some_and(|l| l.contains("container says hello")),
            "{first}"
        );
        follower.start_kill().expect("stop the follower");
        let _ = follower.wait().await;
        assert!(
            answer["docker_logs"]
                .as_str()
                .is_some_and(|l| l.contains("hello"))
        );
        failed_with(&lablink(&s, &["logs", "vm-9"]).await, 1, "VM not found");

        let mut follower = spawn(&s, &["logs", "vm-1", "--follow"]);
        let mut lines = BufReader::new(follower.stdout.take().expect("stdout")).lines();
        let mut seen = Vec::new();
        read_until(&mut lines, &mut seen, "container says hello").await;
        // Lines shipped after it started come while it waits.
        ship_logs(&s, "vm-1", "lablink-docker", &["a later line"]).await;
        read_until(&mut lines, &mut seen, "a later line").await;
        ship_logs(&s, "vm-1", "lablink-cloud-init", &["a late boot line"]).await;
        read_until(&mut lines, &mut seen, "a late boot line").await;
        let count = |text: &str| seen.iter().filter(|l| l.contains(text)).count();
        assert_eq!(count("boot step one"), 1, "each line once: {seen:?}");
        assert_eq!(count("container says hello"), 1, "each line once: {seen:?}");
        follower.start_kill().expect("stop the follower");
        let _ = follower.wait().await;

        // Only the error lines, a traceback with its line: whole, and followed (the
        // traceback arrives in two batches and stays whole).
        ship_logs(
            &s,
            "vm-1",
            "lablink-docker",
            &["INFO all fine", "ERROR sleap crashed"],
        )
        .await;
        let errors = succeeded(&lablink(&s, &["logs", "vm-1", "--errors"]).await);
        assert!(errors.contains("ERROR sleap crashed"), "{errors}");
        assert!(
            !errors.contains("all fine") && !errors.contains("hello"),
            "{errors}"
        );
        let mut errors_follower = spawn(&s, &["logs", "vm-1", "--follow", "--errors"]);
        let mut lines = BufReader::new(errors_follower.stdout.take().expect("stdout")).lines();
        let mut seen = Vec::new();
        read_until(&mut lines, &mut seen, "ERROR sleap crashed").await;
        ship_logs(
            &s,
            "vm-1",
            "lablink-docker",
            &[
                "ERROR failed to load model",
                "Traceback (most recent call last):",
            ],
        )
        .await;
        read_until(&mut lines, &mut seen, "Traceback").await;
        ship_logs(
            &s,
            "vm-1",
            "lablink-docker",
            &[
                "  File \"train.py\", line 3, in <module>",
                "ValueError: bad shape",
                "INFO retrying",
                "ERROR gave up",
            ],
        )
        .await;
        read_until(&mut lines, &mut seen, "ERROR gave up").await;
        assert!(
            seen.iter().any(|l| l.contains("File \"train.py\"")),
            "{seen:?}"
        );
        assert!(
            seen.iter().any(|l| l.contains("ValueError: bad shape")),
            "{seen:?}"
        );
        assert!(!seen.iter().any(|l| l.contains("INFO")), "{seen:?}");
        errors_follower.start_kill().expect("stop");
        let _ = errors_follower.wait().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_runs_and_destroy_follow_runs_to_their_end() {
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.machine.software = "cliops".into();
    })
    .await;
    within(180, "test", async {
        let launched = succeeded(&lablink(&s, &["launch", "2"]).await);
        assert!(
            launched.contains("(pid "),
            "the run's output is printed: {launched}"
        );
        wait_for(60, "two VMs running", || async {
            (s.free_count().await == 2).then_some(())
        })
        .await;

        let runs = succeeded(&lablink(&s, &["runs"]).await);
        let row = runs
            .lines()
            .find(|l| l.starts_with("#1 launch 2 VM(s)"))
            .unwrap_or_else(|| panic!("{runs}"));
        assert!(
            row.contains("succeeded") && row.contains(ADMIN_USER),
            "{row}"
        );
        let listed = json_of(&lablink(&s, &["runs", "--json"]).await);
        assert_eq!(listed["runs"][0]["id"], 1);
        has_keys(&listed["runs"][0], &RUN_KEYS);
        assert_eq!(
            listed["runs"][0]["progress"],
            json!({"done": 2, "total": 2, "failed": 0})
        );
        let one = json_of(&lablink(&s, &["runs", "1", "--json"]).await);
        assert_eq!(keys(&one), ["lines", "run"]);
        assert_eq!(one["run"]["state"], "succeeded");
        assert!(
            one["lines"].as_array().is_some_and(|l| !l.is_empty()),
            "{one}"
        );
        let shown = succeeded(&lablink(&s, &["runs", "1"]).await);
        assert!(
            shown.starts_with("Run #1 launch 2 VM(s): succeeded"),
            "{shown}"
        );
        failed_with(&lablink(&s, &["runs", "99"]).await, 1, "No run #99");

        let detached = json_of(&lablink(&s, &["launch", "1", "--detach", "--json"]).await);
        let id = detached["run_id"].as_u64().expect("run id").to_string();
        let followed = json_of(&lablink(&s, &["runs", &id, "--follow", "--json"]).await);
        has_keys(&followed, &RUN_KEYS);
        assert_eq!(followed["state"], "succeeded");
        wait_for(60, "three VMs running", || async {
            (s.free_count().await == 3).then_some(())
        })
        .await;

        let host = "cliops-lablink-local-vm-3";
        let destroyed = json_of(&lablink(&s, &["destroy", host, "--json"]).await);
        has_keys(&destroyed, &RUN_KEYS);
        assert_eq!(destroyed["state"], "succeeded");
        assert_eq!(destroyed["action"], "destroy_vm");
        failed_with(&lablink(&s, &["destroy", host]).await, 1, "VM not found");
        let all = json_of(&lablink(&s, &["destroy", "--all", "--yes", "--json"]).await);
        assert_eq!(all["state"], "succeeded");
        assert_eq!(s.free_count().await, 0);
        let audit: Vec<String> = s
            .recent_audit(20)
            .await
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert!(audit.iter().any(|a| a == "destroy-all"), "{audit:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_fails_the_command_that_follows_it() {
    let s = crate::terraform::terraform_server(60).await;
    within(120, "test", async {
        crate::terraform::set_mode(&s, "fail");
        let out = lablink(&s, &["launch", "1"]).await;
        failed_with(&out, 1, "run #1 ended failed (exit code 1)");
        // Terraform's own error is among the run's printed output.
        assert!(
            stdout(&out).contains("UnauthorizedOperation"),
            "{}",
            stdout(&out)
        );
        failed_with(
            &lablink(&s, &["runs", "1", "--follow"]).await,
            1,
            "ended failed",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_downloads_the_records_to_a_private_file_or_stdout() {
    let s = TestServer::start().await;
    s.register_many(2).await;
    s.claim("ada@example.org", &crd_command("4/0AExport")).await;
    within(120, "test", async {
        let csv = succeeded(&lablink(&s, &["export"]).await);
        let header = csv.lines().next().expect("a header");
        assert!(header.starts_with("hostname,"), "{header}");
        assert!(
            csv.lines()
                .any(|l| l.starts_with("vm-1,") && l.contains("ada@example.org"))
        );

        let file = s.dir.join("pool.json");
        let out = lablink(
            &s,
            &[
                "export",
                "pool",
                "--format",
                "json",
                "-o",
                file.to_str().expect("path"),
            ],
        )
        .await;
        succeeded(&out);
        assert!(stderr(&out).contains("wrote"), "{}", stderr(&out));
        let mode = std::fs::metadata(&file)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "participants' addresses are owner-only"
        );
        let records: Value =
            serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("JSON");
        let text = records.to_string();
        assert!(
            text.contains("vm-2") && text.contains("ada@example.org"),
            "{text}"
        );

        failed_with(&lablink(&s, &["export", "report"]).await, 1, "No event");
        // The agent's session samples (the shared token may speak for vm-1).
        let sample = json!({"age_seconds": 0, "gpu_utilization_pct": 42.0,
            "gpu_memory_used_mib": 900, "in_use": true, "desktop_connected": null});
        s.agent_post(
            "/api/session-metrics",
            &json!({"hostname": "vm-1", "interval_seconds": 15, "samples": [sample]}),
        )
        .await
        .expect(200);
        let sessions = succeeded(&lablink(&s, &["export", "sessions"]).await);
        assert!(
            sessions
                .lines()
                .any(|l| l.contains("vm-1") && l.contains("ada@example.org")),
            "{sessions}"
        );
        // The download's refusal comes with the allocator's reason, and writes nothing.
        let zip = s.dir.join("rescues.zip");
        let none = lablink(
            &s,
            &["export", "rescues", "-o", zip.to_str().expect("path")],
        )
        .await;
        failed_with(&none, 1, "No rescued files are kept.");
        assert!(!zip.exists());
    })
    .await;
}

/// Starts `lablink ARGS --url <server>` as the admin, its stdout and stderr piped.
fn spawn(s: &TestServer, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_lablink"))
        .args(args)
        .args(["--url", &s.url("")])
        .env_clear()
        .envs(admin_cli_env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn lablink {args:?}: {e}"))
}

/// Reads `lines` until one contains `wanted`; every line read is kept in `seen`.
async fn read_until<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    seen: &mut Vec<String>,
    wanted: &str,
) {
    while !seen.iter().any(|l| l.contains(wanted)) {
        match lines.next_line().await.expect("read") {
            Some(line) => seen.push(line),
            None => panic!("ended before {wanted:?}: {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_launch_shows_its_progress_and_ends_when_cancelled() {
    let s = crate::terraform::terraform_server(60).await;
    within(120, "test", async {
        crate::terraform::set_mode(&s, "paced");
        let mut launch = spawn(&s, &["launch", "2"]);
        let mut progress = BufReader::new(launch.stderr.take().expect("stderr")).lines();
        let mut seen = Vec::new();
        read_until(&mut progress, &mut seen, "run #1: 0/2").await;
        std::fs::write(crate::terraform::control(&s).join("step-1"), "").expect("step");
        read_until(&mut progress, &mut seen, "run #1: 1/2").await;

        let runs = succeeded(&lablink(&s, &["runs"]).await);
        let row = runs.lines().find(|l| l.starts_with("#1 ")).expect("run #1");
        assert!(row.contains("running") && row.contains("1/2"), "{row}");
        let status = succeeded(&lablink(&s, &["status"]).await);
        assert!(
            status.contains("Run in progress: #1 launch 2 VM(s) 1/2 (by admin"),
            "{status}"
        );

        let cancelled = succeeded(&lablink(&s, &["runs", "1", "--cancel"]).await);
        assert!(cancelled.contains("run #1"), "{cancelled}");
        read_until(&mut progress, &mut seen, "ended cancelled").await;
        let ended = launch.wait().await.expect("launch ends");
        assert_eq!(ended.code(), Some(1), "{seen:?}");
        failed_with(
            &lablink(&s, &["runs", "1", "--cancel"]).await,
            1,
            "already finished",
        );
        let run = json_of(&lablink(&s, &["runs", "1", "--json"]).await);
        assert_eq!(run["run"]["cancelled_by"], ADMIN_USER);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_destroy_shows_its_progress_and_is_cancelled_from_the_command_line() {
    let s = crate::terraform::terraform_server(60).await;
    within(120, "test", async {
        crate::terraform::set_mode(&s, "succeed");
        succeeded(&lablink(&s, &["launch", "3"]).await);
        crate::terraform::set_mode(&s, "paced");
        let mut destroy = spawn(&s, &["destroy", "--all", "--yes"]);
        let mut progress = BufReader::new(destroy.stderr.take().expect("stderr")).lines();
        let mut seen = Vec::new();
        read_until(&mut progress, &mut seen, "run #2: 0/3").await;
        std::fs::write(crate::terraform::control(&s).join("step-1"), "").expect("step");
        read_until(&mut progress, &mut seen, "run #2: 1/3").await;
        let listed = json_of(&lablink(&s, &["runs", "--json"]).await);
        let run = &listed["runs"][0];
        assert_eq!(
            (&run["id"], &run["action"]),
            (&json!(2), &json!("destroy_all"))
        );
        assert_eq!(run["state"], "running");
        assert_eq!(run["progress"], json!({"done": 1, "total": 3, "failed": 0}));

        let cancelled = json_of(&lablink(&s, &["runs", "2", "--cancel", "--json"]).await);
        has_keys(&cancelled, &["status", "run"]);
        assert_eq!(cancelled["status"], "cancelling");
        assert_eq!(cancelled["run"]["id"], 2);
        read_until(&mut progress, &mut seen, "run #2 ended cancelled").await;
        let ended = destroy.wait().await.expect("destroy ends");
        assert_eq!(ended.code(), Some(1), "{seen:?}");
        let run = json_of(&lablink(&s, &["runs", "2", "--json"]).await)["run"].clone();
        assert_eq!(run["state"], "cancelled");
        assert_eq!(run["cancelled_by"], ADMIN_USER);
        // Terraform finished the VM under way when interrupted, and went no further.
        assert_eq!(run["progress"], json!({"done": 2, "total": 3, "failed": 0}));
        let left: Vec<String> = serde_json::from_str(
            &std::fs::read_to_string(crate::terraform::control(&s).join("state.json"))
                .expect("state"),
        )
        .expect("names");
        assert_eq!(left.len(), 1, "{left:?}");
    })
    .await;
}
