//! The store across restarts, its lock against a second process, and schema versions.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use lablink::store::{Store, StoreError};

use crate::helpers::{ADMIN_PASSWORD, Auth, TestServer, crd_command, run_binary, within};

#[tokio::test]
async fn a_restart_keeps_data_and_token() {
    let s = TestServer::start().await;
    let (s, c) = within(30, "first run", async {
        s.register_many(3).await;
        let c = s.claim("ada@example.org", &crd_command("4/0Persist")).await;
        assert_eq!(c.status, StatusCode::OK);
        s.agent_post(
            "/api/vm-logs",
            &json!({"log_group": "g", "log_stream": "vm-1", "messages": ["kept across restarts"]}),
        )
        .await
        .expect(200);
        (s, c)
    })
    .await;
    let token = s.token().to_owned();
    let pin = s
        .stored_vm("vm-1")
        .await
        .expect("vm")
        .assignment
        .expect("a")
        .pin;

    let s = within(30, "restart", s.restart(|_| {})).await;
    within(30, "second run", async {
        assert_eq!(s.token(), token, "the agents' token survives a restart");
        assert_eq!(
            std::fs::read_to_string(s.dir.join("api-token"))
                .expect("token file")
                .trim_end(),
            token
        );
        let a = s
            .stored_vm("vm-1")
            .await
            .expect("vm")
            .assignment
            .expect("a");
        assert_eq!(a.email, "ada@example.org");
        assert_eq!(a.pin, pin);
        assert_eq!(s.free_count().await, 2);
        let logs = s.agent_get("/api/vm-logs/vm-1").await.expect(200);
        assert_eq!(logs["cloud_init_logs"], "kept across restarts");
        // The old token still works; the VM still answers its poll at once.
        let answer = s.vm_startup("vm-1").await.expect(200);
        assert_eq!(answer["pin"], pin.as_str());
        assert!(
            answer["command"]
                .as_str()
                .is_some_and(|c| c.contains("4/0Persist"))
        );
        // Same participant, same VM.
        let again = s
            .claim_again("ADA@example.org", &crd_command("4/0Persist"), &c)
            .await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.html);
        assert_eq!(again.hostname(), "vm-1");
        assert_eq!(again.pin(), pin);
        assert_eq!(s.free_count().await, 2);
        // The admin password was kept (hash verified, not re-created).
        s.get("/api/vm-status", Auth::admin()).await.expect(200);
    })
    .await;
}

#[tokio::test]
async fn a_second_open_of_a_running_store_is_refused() {
    let s = TestServer::start().await;
    let dir = s.dir.clone();
    let result = tokio::task::spawn_blocking(move || Store::open(&dir).map(|_| ()))
        .await
        .expect("open task");
    match result {
        Err(e @ StoreError::AlreadyOpen(_)) => {
            let message = e.to_string();
            assert!(
                message.contains(&s.dir.display().to_string()),
                "the message names the data dir: {message}"
            );
            assert!(
                message.contains("in use by another lablink process"),
                "{message}"
            );
        }
        Err(other) => panic!("expected AlreadyOpen, got {other:?}"),
        Ok(()) => panic!("a second Store::open succeeded while the server runs"),
    }
    // The server is unaffected.
    within(10, "health", s.get("/api/health", Auth::None))
        .await
        .expect(200);
}

/// `close` releases the file only once reads begun before it have finished, so a
/// restart in the same process can open the store again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_reads_in_flight_and_then_releases_the_file() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let closed = Arc::new(AtomicBool::new(false));
    let (began_tx, began) = mpsc::channel::<()>();
    let watched = store.clone();
    let seen_closed = closed.clone();
    let reader = store.clone();
    let read = tokio::spawn(async move {
        reader
            .read(move |_tx| {
                let _ = began_tx.send(());
                // Stay inside the read until `close` has stopped the writer, and a moment more:
                // `close` must not have returned when the read ends.
                for _ in 0..6000 {
                    if !watched.writer_alive() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(200));
                Ok(seen_closed.load(Ordering::SeqCst))
            })
            .await
    });
    began
        .recv_timeout(Duration::from_secs(30))
        .expect("the read began");
    let closer_store = store.clone();
    let closer_flag = closed.clone();
    let closing = tokio::task::spawn_blocking(move || {
        closer_store.close();
        closer_flag.store(true, Ordering::SeqCst);
    });
    let closed_during_read = within(30, "the read", read)
        .await
        .expect("read task")
        .expect("the read began before close, so it completes");
    assert!(
        !closed_during_read,
        "close returned while a read was in flight"
    );
    within(30, "close", closing).await.expect("close task");
    let reopened = Store::open(dir.path()).map(|_| ());
    assert!(reopened.is_ok(), "reopen right after close: {reopened:?}");
}

/// A store written by the first release's schema (v1; `tests/fixtures/store-v1`, made by
/// that build's `lablink serve` through its API: three running VMs, one claimed by
/// ada@example.org, logs, boot timings, in-use) opens with this build: every migration runs
/// and nothing written before is lost.
#[tokio::test]
async fn a_store_from_schema_v1_is_upgraded_with_its_data() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1");
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["lablink.redb", "api-token"] {
        std::fs::copy(fixture.join(file), dir.path().join(file)).expect("copy the fixture");
    }
    let old_token = std::fs::read_to_string(fixture.join("api-token")).expect("token");
    let s = TestServer::start_in(dir.path(), |_| {}).await;
    within(30, "the upgraded store", async {
        assert_eq!(s.token(), old_token.trim(), "the agents' token is kept");
        let statuses = s.agent_get("/api/vm-status").await.expect(200);
        assert_eq!(
            statuses,
            json!({"old-vm-1": "running", "old-vm-2": "running", "old-vm-3": "running"})
        );
        let mut claimed = Vec::new();
        for host in ["old-vm-1", "old-vm-2", "old-vm-3"] {
            let vm = s.stored_vm(host).await.expect("the VM is kept");
            assert!(vm.health.is_some(), "{host}: GPU health kept");
            assert_eq!(vm.in_use, host == "old-vm-2", "{host}: in-use kept");
            if let Some(a) = vm.assignment {
                claimed.push((host, a));
            }
        }
        let [(host, assignment)] = claimed.as_slice() else {
            panic!("exactly one VM was claimed: {claimed:?}");
        };
        assert_eq!(assignment.email, "ada@example.org");
        assert_eq!(assignment.crd_code, "4/0AfJohXkUpgradeFixture");
        let timings = s.stored_vm("old-vm-1").await.expect("vm").timings;
        assert_eq!(
            timings.cloud_init.duration_seconds,
            Some(90.0),
            "boot timings kept"
        );

        // The participant's VM still starts their desktop with the stored code.
        let startup = s
            .agent_post("/vm_startup", &json!({"hostname": host}))
            .await
            .expect(200);
        assert_eq!(startup["pin"], json!(assignment.pin));
        assert!(
            startup["command"]
                .as_str()
                .is_some_and(|c| c.contains("4/0AfJohXkUpgradeFixture")),
            "{startup}"
        );
        let logs = s
            .get(
                "/api/vm-logs/old-vm-1",
                Auth::Basic("admin", ADMIN_PASSWORD),
            )
            .await
            .expect(200);
        assert_eq!(logs["logs"], json!("written by schema v1\nsecond line"));

        // Schema 12's accounts: none yet, and a helper can be added and sign in.
        let accounts = s.get("/api/accounts", Auth::admin()).await.expect(200);
        assert_eq!(accounts, json!({"accounts": []}));
        s.admin_json(
            reqwest::Method::POST,
            "/api/accounts",
            Some(json!({"name": "helper1", "password": "a long helper secret"})),
        )
        .await
        .expect(201);
        assert_eq!(
            s.get("/admin", Auth::Basic("helper1", "a long helper secret"))
                .await
                .status,
            200
        );

        // Once their agents are heard again, the upgraded pool hands out the next VM.
        for vm in ["old-vm-1", "old-vm-2", "old-vm-3"] {
            s.agent_post(
                "/api/vm-status",
                &json!({"hostname": vm, "status": "running"}),
            )
            .await
            .expect(200);
        }
        let next = s
            .claim("grace@example.org", &crd_command("4/0AfterUpgrade"))
            .await;
        assert_eq!(next.status, StatusCode::OK, "{}", next.html);
        let next_host = next.field("hostname").expect("a hostname");
        assert_ne!(&next_host, host, "a claimed VM is not handed out again");
    })
    .await;
    let mut s = s;
    s.stop().await;
    let db = redb::Database::open(dir.path().join("lablink.redb")).expect("open redb directly");
    let tx = redb::ReadableDatabase::begin_read(&db).expect("read");
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta_v1");
    let table = tx.open_table(meta).expect("meta table");
    let version = table
        .get("schema_version")
        .expect("get")
        .expect("a version");
    assert_eq!(
        version.value(),
        lablink::store::migrate::SCHEMA_VERSION
            .to_string()
            .as_bytes(),
        "the file is at this build's schema"
    );
}

#[tokio::test]
async fn a_second_serve_process_exits_with_a_clear_message() {
    let s = TestServer::start().await;
    let dir = s.dir.display().to_string();
    let out = run_binary(
        &["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0"],
        &[("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        10,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exited {:?}; stderr: {stderr}",
        out.status
    );
    assert!(
        stderr.contains("in use by another lablink process"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains(&dir), "names the directory: {stderr}");
    // The running server still serves.
    within(10, "health", s.get("/api/health", Auth::None))
        .await
        .expect(200);
}

/// What `lablink token --data-dir DIR` prints; it must succeed.
async fn printed_token(dir: &str) -> String {
    let out = run_binary(&["token", "--data-dir", dir], &[], 10).await;
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

#[tokio::test]
async fn lablink_token_prints_the_token_while_running_and_after() {
    let mut s = TestServer::start().await;
    let dir = s.dir.display().to_string();
    let token = s.token().to_owned();
    assert_eq!(printed_token(&dir).await, token);

    s.stop().await;
    assert_eq!(printed_token(&dir).await, token);

    // A directory without a store is an error, not a new token.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = run_binary(
        &["token", "--data-dir", &empty.path().display().to_string()],
        &[],
        10,
    )
    .await;
    assert!(!out.status.success());
    assert!(!empty.path().join("lablink.redb").exists());
}

#[tokio::test]
async fn a_store_from_a_newer_version_is_refused() {
    let mut s = TestServer::start().await;
    s.register_running("vm-1").await;
    s.stop().await;
    let dir = s.dir.clone();
    let result = tokio::task::spawn_blocking(move || {
        let db = redb::Database::create(dir.join("lablink.redb")).expect("open redb directly");
        let tx = db.begin_write().expect("begin write");
        {
            let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta_v1");
            let mut table = tx.open_table(meta).expect("meta table");
            table
                .insert("schema_version", b"99".as_slice())
                .expect("insert");
        }
        tx.commit().expect("commit");
        drop(db);
        Store::open(&dir).map(|_| ())
    })
    .await
    .expect("task");
    match result {
        Err(StoreError::SchemaTooNew { found, known }) => {
            assert_eq!(found, 99);
            assert!(known < 99);
        }
        Err(other) => panic!("expected SchemaTooNew, got {other:?}"),
        Ok(()) => panic!("a store with schema 99 was opened"),
    }
    // And the refusal did not rewrite the version (a later, newer binary still can).
    let dir = s.dir.clone();
    let again = tokio::task::spawn_blocking(move || Store::open(&dir).map(|_| ()))
        .await
        .expect("task");
    assert!(
        matches!(again, Err(StoreError::SchemaTooNew { found: 99, .. })),
        "{again:?}"
    );
}

fn mode_of(path: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).expect("stat").permissions().mode();
    format!("{:04o}", mode & 0o7777)
}

#[tokio::test]
async fn the_store_file_is_private_whatever_the_umask_and_folder() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");

    // A data directory open to everyone (and this process's umask, usually 022).
    let open_dir = dir.path().join("open");
    std::fs::create_dir(&open_dir).expect("mkdir");
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let store = Store::open(&open_dir).expect("open");
    let file = open_dir.join(lablink::store::FILE_NAME);
    assert_eq!(mode_of(&file), "0600");

    // A store file someone made readable is made private again at the next open.
    store.close();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    Store::open(&open_dir).expect("reopen").close();
    assert_eq!(mode_of(&file), "0600");

    // `lablink serve` started with umask 0 (a unit or container that forgot UMask=).
    let data_dir = dir.path().join("umask-0");
    let mut serve = tokio::process::Command::new("sh")
        .args([
            "-c",
            "umask 000; exec \"$0\" serve --data-dir \"$1\" --listen 127.0.0.1:0",
        ])
        .arg(env!("CARGO_BIN_EXE_lablink"))
        .arg(&data_dir)
        .env_clear()
        .env("LABLINK_APP_ADMIN_PASSWORD", "a-long-admin-password")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lablink serve");
    let token = data_dir.join("api-token");
    crate::helpers::wait_until(30, "the allocator wrote its token", || token.exists()).await;
    let _ = serve.start_kill();
    let _ = serve.wait().await;
    assert_eq!(mode_of(&data_dir), "0700");
    assert_eq!(mode_of(&data_dir.join(lablink::store::FILE_NAME)), "0600");
    assert_eq!(mode_of(&token), "0600");
}
