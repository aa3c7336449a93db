//! `lablink backup` from a running allocator and `lablink restore` into a stopped one: the
//! real binary against a real server on loopback.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};
use reqwest::StatusCode;
use serde_json::json;

use lablink::model::{AuditEntry, Schedule, Vm};
use lablink::store::logs::{self, LogKind};
use lablink::store::tables::{FREE_VMS, VM_BY_EMAIL, VMS};
use lablink::store::{Store, audit, backup, codec, meta, schedules, vms};

use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, TestServer, crd_command, run_binary, within};

const ENV_PASSWORD: (&str, &str) = ("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD);

/// Everything a restore must bring back, as the store reads it.
#[derive(Debug, PartialEq)]
struct State {
    vms: Vec<Vm>,
    schedules: Vec<Schedule>,
    token: Option<String>,
    /// Newest first.
    audit: Vec<AuditEntry>,
    log: Option<String>,
}

async fn state(store: &Store) -> State {
    store
        .read(|tx| {
            Ok(State {
                vms: vms::list(tx)?,
                schedules: schedules::list(tx, None)?,
                token: meta::api_token(tx)?,
                audit: audit::recent(tx, 10_000)?,
                log: logs::read(tx, "vm-1", LogKind::from_log_group("g"))?,
            })
        })
        .await
        .expect("read the store")
}

async fn backup_with(base: &str, file: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let file = file.display().to_string();
    run_binary(&["backup", &file, "--url", base], env, 60).await
}

async fn restore(file: &Path, dir: &Path, force: bool) -> std::process::Output {
    let (file, dir) = (file.display().to_string(), dir.display().to_string());
    let mut args = vec!["restore", file.as_str(), "--data-dir", dir.as_str()];
    if force {
        args.push("--force");
    }
    run_binary(&args, &[], 60).await
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn assert_ok(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn partial(file: &Path) -> PathBuf {
    let mut name = file.file_name().expect("name").to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A pool with claims, a schedule, a shipped log and several audit entries.
async fn populate(s: &TestServer) {
    s.register_many(4).await;
    for email in ["ada@example.org", "bob@example.org"] {
        let c = s.claim(email, &crd_command("4/0Backup")).await;
        assert_eq!(c.status, StatusCode::OK, "{}", c.html);
    }
    s.agent_post(
        "/api/vm-logs",
        &json!({"log_group": "g", "log_stream": "vm-1", "messages": ["in the backup"]}),
    )
    .await
    .expect(200);
    let a = s
        .client
        .post(s.url("/api/schedule-destruction"))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .json(&json!({
            "schedule_name": "wrap-up",
            "destruction_time": "2099-05-01T18:00:00Z",
            "recurrence_rule": "FREQ=WEEKLY;BYDAY=MO",
        }))
        .send()
        .await
        .expect("POST schedule");
    assert_eq!(a.status(), StatusCode::OK);
    let now = chrono::Utc::now();
    s.app
        .store
        .write(move |tx| {
            audit::record(
                tx,
                "admin",
                Some("127.0.0.1".into()),
                "launch",
                "4 VMs",
                now,
            )?;
            audit::record(tx, "cli", None, "set-password", "changed", now)?;
            Ok(())
        })
        .await
        .expect("audit entries");
}

#[tokio::test]
async fn a_backup_of_a_running_allocator_restores_everything() {
    let mut s = TestServer::start().await;
    let out_dir = tempfile::tempdir().expect("tempdir");
    let file = out_dir.path().join("lablink.backup");
    let before = within(120, "populate and back up", async {
        populate(&s).await;
        let out = backup_with(&s.base, &file, &[ENV_PASSWORD]).await;
        assert_ok("lablink backup", &out);
        assert!(
            text(&out.stdout).contains("written to"),
            "{}",
            text(&out.stdout)
        );
        state(&s.app.store).await
    })
    .await;
    assert_eq!(
        std::fs::metadata(&file)
            .expect("backup file")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(!partial(&file).exists());
    let summary = backup::verify(&file).expect("the backup verifies");
    assert_eq!(summary.count(VMS), 4);
    assert_eq!(summary.count(VM_BY_EMAIL), 2);

    // The backup itself is in the audit log, after the snapshot was taken.
    let newest = before.audit.first().expect("audit entries");
    assert_eq!(newest.action, "backup");
    assert_eq!(newest.actor, ADMIN_USER);
    assert!(before.audit.len() >= 4, "{:?}", before.audit);
    assert_eq!(
        before.vms.iter().filter(|v| v.assignment.is_some()).count(),
        2
    );
    assert_eq!(before.schedules.len(), 1);
    assert!(
        before
            .log
            .as_deref()
            .is_some_and(|l| l.contains("in the backup"))
    );
    // No scratch file is left in the data directory.
    assert!(
        !listing(&s.dir).iter().any(|n| n.starts_with(".backup-")),
        "{:?}",
        listing(&s.dir)
    );
    s.stop().await;

    let fresh = tempfile::tempdir().expect("tempdir");
    let target = fresh.path().join("data");
    let out = within(60, "restore", restore(&file, &target, false)).await;
    assert_ok("lablink restore", &out);
    assert_eq!(listing(&target), vec!["lablink.redb".to_owned()]);

    let r = TestServer::start_in(&target, |_| {}).await;
    within(60, "the restored allocator", async {
        let after = state(&r.app.store).await;
        let expected = State {
            audit: before.audit[1..].to_vec(),
            ..before
        };
        assert_eq!(after, expected);
        assert_eq!(Some(r.token().to_owned()), expected.token);
        assert_eq!(r.free_count().await, 2);
        // Ada comes back to the VM she had.
        let again = r.claim("ada@example.org", &crd_command("4/0Again")).await;
        let had = expected
            .vms
            .iter()
            .find(|v| {
                v.assignment
                    .as_ref()
                    .is_some_and(|a| a.email == "ada@example.org")
            })
            .expect("ada's VM");
        assert_eq!(again.hostname(), had.hostname);
    })
    .await;
}

#[tokio::test]
async fn a_wrong_password_or_no_allocator_leaves_no_file() {
    let s = TestServer::start().await;
    let out_dir = tempfile::tempdir().expect("tempdir");
    let file = out_dir.path().join("b.redb");
    within(60, "test", async {
        let out = backup_with(&s.base, &file, &[("LABLINK_APP_ADMIN_PASSWORD", "not-it")]).await;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("wrong admin user or password"),
            "{}",
            text(&out.stderr)
        );
        assert!(!file.exists() && !partial(&file).exists());

        // No password at all (stdin is not a terminal): a usage error.
        let out = backup_with(&s.base, &file, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("LABLINK_APP_ADMIN_PASSWORD"),
            "{}",
            text(&out.stderr)
        );

        let out = backup_with("not a url", &file, &[ENV_PASSWORD]).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

        let nobody = format!("http://127.0.0.1:{}", crate::helpers::free_port());
        let out = backup_with(&nobody, &file, &[ENV_PASSWORD]).await;
        assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("not running") && stderr.contains(&nobody),
            "{stderr}"
        );
        assert!(!file.exists() && !partial(&file).exists());
    })
    .await;
}

#[tokio::test]
async fn restore_refuses_while_the_allocator_runs() {
    let s = TestServer::start().await;
    let out_dir = tempfile::tempdir().expect("tempdir");
    let file = out_dir.path().join("b.redb");
    within(60, "test", async {
        s.register_many(2).await;
        assert_ok(
            "backup",
            &backup_with(&s.base, &file, &[ENV_PASSWORD]).await,
        );
        s.register_many(3).await;
        let out = restore(&file, &s.dir, true).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("the allocator is running"), "{stderr}");
        assert!(
            !listing(&s.dir).iter().any(|n| n.contains("restore")),
            "{:?}",
            listing(&s.dir)
        );
        // The running store still has what it had.
        assert_eq!(s.free_count().await, 3);
    })
    .await;
}

#[tokio::test]
async fn restore_checks_the_file_and_keeps_the_old_store() {
    let mut s = TestServer::start().await;
    let out_dir = tempfile::tempdir().expect("tempdir");
    let file = out_dir.path().join("b.redb");
    within(60, "back up", async {
        s.register_many(2).await;
        assert_ok(
            "backup",
            &backup_with(&s.base, &file, &[ENV_PASSWORD]).await,
        );
        s.register_many(5).await;
    })
    .await;
    s.stop().await;
    let dir = s.dir.clone();
    let store_file = dir.join("lablink.redb");
    let original = std::fs::read(&store_file).expect("store");
    let names = listing(&dir);

    within(60, "restore", async {
        let garbage = out_dir.path().join("garbage.redb");
        std::fs::write(&garbage, vec![0x42u8; 64 * 1024]).expect("write");
        let out = restore(&garbage, &dir, true).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("not a LabLink store"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(std::fs::read(&store_file).expect("store"), original);
        assert_eq!(listing(&dir), names);

        let out = restore(&out_dir.path().join("absent.redb"), &dir, true).await;
        assert_eq!(out.status.code(), Some(2));

        // A store is there: only with --force.
        let out = restore(&file, &dir, false).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("--force"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(std::fs::read(&store_file).expect("store"), original);
        assert_eq!(listing(&dir), names);

        let out = restore(&file, &dir, true).await;
        assert_ok("restore --force", &out);
        let kept: Vec<String> = listing(&dir)
            .into_iter()
            .filter(|n| n.starts_with("lablink.redb.before-restore-"))
            .collect();
        assert_eq!(kept.len(), 1, "{:?}", listing(&dir));
        assert_eq!(std::fs::read(dir.join(&kept[0])).expect("kept"), original);
        assert_eq!(
            std::fs::read(&store_file).expect("store"),
            std::fs::read(&file).expect("backup")
        );
        assert!(
            !listing(&dir)
                .iter()
                .any(|n| n.starts_with(".lablink.redb.restore-"))
        );
    })
    .await;
    let r = TestServer::start_in(&dir, |_| {}).await;
    within(30, "restored", async {
        assert_eq!(r.free_count().await, 2);
    })
    .await;
}

/// Checks the invariants of one snapshot: every assigned VM has its e-mail entry and every
/// e-mail entry its assigned VM; the free index lists exactly the available VMs.
fn check_consistent(file: &Path) -> (usize, usize) {
    let db = redb::Builder::new()
        .open_read_only(file)
        .expect("open backup");
    let tx = db.begin_read().expect("read");
    let mut pool = BTreeMap::new();
    for entry in tx.open_table(VMS).expect("vms").iter().expect("iter") {
        let (k, v) = entry.expect("entry");
        let vm: Vm = codec::decode("vms", k.value(), v.value()).expect("decode");
        pool.insert(k.value().to_owned(), vm);
    }
    let mut by_email = BTreeMap::new();
    for entry in tx
        .open_table(VM_BY_EMAIL)
        .expect("index")
        .iter()
        .expect("iter")
    {
        let (k, v) = entry.expect("entry");
        by_email.insert(k.value().to_owned(), v.value().to_owned());
    }
    let mut free = Vec::new();
    for entry in tx.open_table(FREE_VMS).expect("free").iter().expect("iter") {
        let (k, _) = entry.expect("entry");
        free.push(k.value().1.to_owned());
    }
    for (email, host) in &by_email {
        let vm = pool
            .get(host)
            .unwrap_or_else(|| panic!("{email} → {host}, no such VM"));
        let assigned = vm.assignment.as_ref().map(|a| a.email.as_str());
        assert_eq!(
            assigned,
            Some(email.as_str()),
            "{host} in {}",
            file.display()
        );
    }
    let assigned = pool.values().filter(|v| v.assignment.is_some()).count();
    assert_eq!(
        assigned,
        by_email.len(),
        "assigned VMs without an e-mail entry"
    );
    free.sort();
    let mut available: Vec<String> = pool
        .values()
        .filter(|v| v.is_available())
        .map(|v| v.hostname.clone())
        .collect();
    available.sort();
    assert_eq!(free, available, "free index in {}", file.display());
    (assigned, pool.len())
}

#[tokio::test]
async fn backups_during_claims_are_consistent() {
    const VMS_N: usize = 100;
    let s = TestServer::start().await;
    let out_dir = tempfile::tempdir().expect("tempdir");
    let files = within(120, "claims and backups", async {
        s.register_many(VMS_N).await;
        // Before the claims: also checks the password once (Argon2 is slow in a debug
        // build; later checks are remembered).
        let first = out_dir.path().join("before.redb");
        assert_ok(
            "backup before claims",
            &backup_with(&s.base, &first, &[ENV_PASSWORD]).await,
        );
        let mut files = vec![first];
        let (client, base) = (s.client.clone(), s.base.clone());
        // Claims trickle in (a new one every few ms, several in flight) so the backups
        // below are taken in the middle of them.
        let claims = tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..VMS_N {
                let (client, base) = (client.clone(), base.clone());
                set.spawn(async move {
                    let email = format!("p{i}@example.org");
                    crate::helpers::claim_with(&client, &base, &email, &crd_command("4/0Load"))
                        .await
                        .status
                });
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let mut ok = 0;
            while let Some(status) = set.join_next().await {
                if status.expect("claim task") == StatusCode::OK {
                    ok += 1;
                }
            }
            ok
        });
        // Backups one after the other while the claims last (bounded); every fifth through
        // the binary, the others straight from the API.
        for i in 0..500 {
            let file = out_dir.path().join(format!("during-{i}.redb"));
            if i % 5 == 4 {
                let out = backup_with(&s.base, &file, &[ENV_PASSWORD]).await;
                assert_ok("backup during claims", &out);
            } else {
                let r = s
                    .client
                    .get(s.url("/api/backup"))
                    .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
                    .send()
                    .await
                    .expect("GET /api/backup");
                assert_eq!(r.status(), StatusCode::OK);
                assert_eq!(
                    r.headers()["content-type"].to_str().expect("type"),
                    "application/octet-stream"
                );
                let disposition = r.headers()["content-disposition"].to_str().expect("header");
                assert!(
                    disposition.starts_with("attachment; filename=\"lablink-backup-")
                        && disposition.ends_with(".redb\""),
                    "{disposition}"
                );
                std::fs::write(&file, r.bytes().await.expect("body")).expect("write");
            }
            files.push(file);
            if claims.is_finished() {
                break;
            }
        }
        assert_eq!(claims.await.expect("claims"), VMS_N, "every claim got a VM");
        let last = out_dir.path().join("after.redb");
        assert_ok(
            "backup after claims",
            &backup_with(&s.base, &last, &[ENV_PASSWORD]).await,
        );
        files.push(last);
        files
    })
    .await;
    let mut previous = 0;
    let mut midway = 0;
    for file in &files {
        backup::verify(file).expect("verifies");
        let (assigned, total) = check_consistent(file);
        assert_eq!(total, VMS_N);
        assert!(assigned >= previous, "snapshots go forward in time");
        if assigned > 0 && assigned < VMS_N {
            midway += 1;
        }
        previous = assigned;
    }
    assert_eq!(previous, VMS_N, "the last backup has every claim");
    assert!(midway > 0, "no backup was taken while claims were going on");
}
