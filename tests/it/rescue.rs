//! Work rescue: before a destroy or a seat's reset, the VM's agent uploads the
//! participant's files; the allocator keeps them for the participant and the admin.
//! Real `lablink agent` processes (the local provider) do the packing; VMs driven by the
//! test itself check the upload's refusals and the deadlines.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use lablink::model::RunAction;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_PASSWORD, ADMIN_USER, Answer, Auth, TestServer, crd_command, launch_local,
    mint_credential, wait_for, within,
};

/// Entries of a zip archive and their contents.
fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip archive");
    let mut out = BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).expect("entry");
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("read entry");
        out.insert(entry.name().to_owned(), content);
    }
    out
}

/// A zip holding `files`.
fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content) in files {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("start");
        zip.write_all(content).expect("write");
    }
    zip.finish().expect("finish").into_inner()
}

async fn rescues(s: &TestServer) -> Vec<Value> {
    s.get("/api/rescues", Auth::admin()).await.expect(200)["rescues"]
        .as_array()
        .expect("rescues")
        .clone()
}

async fn get_bytes(
    s: &TestServer,
    path: &str,
    cookie: Option<&str>,
    admin: bool,
) -> (u16, Vec<u8>) {
    let mut req = s.client.get(s.url(path));
    if let Some(cookie) = cookie {
        req = req.header(COOKIE, cookie);
    }
    if admin {
        req = req.basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD));
    }
    let response = req.send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

async fn upload(
    s: &TestServer,
    id: u64,
    credential: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let req = s
        .client
        .post(s.url(&format!("/api/rescue/{id}")))
        .bearer_auth(credential)
        .header(CONTENT_TYPE, content_type)
        .body(body);
    Answer::read(req.send().await.expect("POST")).await
}

async fn heartbeat(s: &TestServer, host: &str, credential: &str) -> Value {
    s.post_json(
        "/api/heartbeat",
        &json!({"hostname": host, "boot_id": "0b1c-aa"}),
        Some(credential),
    )
    .await
    .expect(200)
}

fn desktop_of(s: &TestServer, host: &str) -> PathBuf {
    s.dir.join("local-vms").join(host).join("Desktop")
}

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

async fn admin_post(s: &TestServer, path: &str) -> Answer {
    let req = s
        .client
        .post(s.url(path))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .header(reqwest::header::ACCEPT, "application/json");
    Answer::read(req.send().await.expect("POST")).await
}

/// A released seat's files are saved before its reset moves them aside; the next
/// participant's files are saved before a destroy takes the VM. Symlinks leading out of
/// the desktop are not packed, files past `rescue.max_mb` are listed instead. Each
/// participant downloads only their own; the admin downloads any, or all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_saved_before_a_release_resets_and_before_a_destroy() {
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.machine.software = "lablinkrescue".into();
        c.server.heartbeat_seconds = 1;
        c.rescue.max_mb = 1;
        c.rescue.timeout_seconds = 60;
    })
    .await;
    within(120, "release and destroy rescues", async {
        launch_local(&s, 1).await;
        wait_for(30, "the VM is free", || async {
            (s.free_count().await == 1).then_some(())
        })
        .await;
        let ada = s
            .claim("ada@example.org", &crd_command("4/0ARescueAda"))
            .await;
        let host = ada.hostname();
        let desktop = desktop_of(&s, &host);
        write(&desktop.join("project/labels.slp"), b"ada's work");
        write(&desktop.join("notes.txt"), b"not a workshop file");
        // 1.5 MiB: past rescue.max_mb, listed instead of packed.
        write(&desktop.join("big.slp"), &vec![7u8; 1536 * 1024]);
        let outside = s.dir.join("secret.slp");
        std::fs::write(&outside, "not ada's").expect("write");
        std::os::unix::fs::symlink(&outside, desktop.join("escape.slp")).expect("symlink");
        std::os::unix::fs::symlink(&s.dir, desktop.join("up")).expect("symlink");

        // Release: the rescue ends before the reset moves the files aside.
        admin_post(&s, &format!("/api/vms/{host}/release"))
            .await
            .expect(200);
        wait_for(30, "the VM reset and free again", || async {
            (s.free_count().await == 1).then_some(())
        })
        .await;
        let after_release = rescues(&s).await;
        assert_eq!(after_release.len(), 1, "{after_release:?}");
        let released = &after_release[0];
        assert_eq!(released["reason"], "release");
        assert_eq!(released["outcome"], "saved", "{released}");
        assert_eq!(
            (released["files"].as_u64(), released["left_out"].as_u64()),
            (Some(1), Some(1))
        );
        let ada_id = released["id"].as_u64().expect("id");
        let (status, zip) = get_bytes(&s, &format!("/admin/rescues/{ada_id}"), None, true).await;
        assert_eq!(status, 200);
        let files = unzip(&zip);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            vec!["LABLINK-NOT-INCLUDED.txt", "project/labels.slp"],
            "no symlinked file, nothing past the limit"
        );
        assert_eq!(files["project/labels.slp"], b"ada's work");
        assert!(String::from_utf8_lossy(&files["LABLINK-NOT-INCLUDED.txt"]).contains("big.slp"));
        let previous = desktop.parent().expect("vm dir").join("lablink-previous");
        assert_eq!(
            std::fs::read_dir(&previous).expect("moved aside").count(),
            1
        );

        // The next participant; a destroy saves their files before the VM goes.
        let lin = s
            .claim("lin@example.org", &crd_command("4/0ARescueLin"))
            .await;
        assert_eq!(lin.hostname(), host);
        write(&desktop.join("lin.slp"), b"lin's work");
        let destroyed = admin_post(&s, &format!("/api/vms/{host}/destroy"))
            .await
            .expect(202);
        let (run, lines) = s
            .finished_run(destroyed["run_id"].as_u64().expect("run id"), 60)
            .await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?}: {lines:?}"))
        };
        assert!(at("rescuing files of 1 seat(s)") < at("lin@example.org saved"));
        assert!(
            at("rescued files: 1 saved") < at(&format!("stopped {host}")),
            "{lines:?}"
        );
        assert!(at("rescued files: 1 saved") < at("removed 1 VM record(s)"));
        let all = rescues(&s).await;
        let lins = &all[0];
        assert_eq!(
            (lins["email"].as_str(), lins["reason"].as_str()),
            (Some("lin@example.org"), Some("destroy"))
        );
        assert_eq!(lins["outcome"], "saved");
        let lin_id = lins["id"].as_u64().expect("id");

        // Each participant, by their browser's claim cookie, sees and gets only their own;
        // their seat page links to them.
        let ada_cookie = ada.cookie.as_deref().expect("cookie");
        let lin_cookie = lin.cookie.as_deref().expect("cookie");
        let (_, seat) = get_bytes(&s, "/my-vm", Some(ada_cookie), false).await;
        assert!(String::from_utf8_lossy(&seat).contains(r#"href="/my-files""#));
        let (_, state) = get_bytes(&s, "/api/my-vm", Some(ada_cookie), false).await;
        let state: Value = serde_json::from_slice(&state).expect("json");
        assert_eq!(state["saved_files"], 1);
        let page = s
            .client
            .get(s.url("/my-files"))
            .header(COOKIE, ada_cookie)
            .send()
            .await
            .expect("GET");
        let page = page.text().await.expect("html");
        assert!(page.contains(&format!("/my-files/{ada_id}")), "{page}");
        assert!(!page.contains(&format!("/my-files/{lin_id}")), "{page}");
        let (status, mine) =
            get_bytes(&s, &format!("/my-files/{ada_id}"), Some(ada_cookie), false).await;
        assert_eq!(status, 200);
        assert_eq!(mine, zip);
        let (status, _) =
            get_bytes(&s, &format!("/my-files/{lin_id}"), Some(ada_cookie), false).await;
        assert_eq!(status, 404, "another participant's files");
        let (status, lins_zip) =
            get_bytes(&s, &format!("/my-files/{lin_id}"), Some(lin_cookie), false).await;
        assert_eq!(status, 200);
        assert_eq!(unzip(&lins_zip)["lin.slp"], b"lin's work");
        let (status, _) = get_bytes(&s, &format!("/my-files/{ada_id}"), None, false).await;
        assert_eq!(status, 401, "no claim cookie");
        // Ada's e-mail in a cookie with another token: not her browser.
        let (name, value) = ada_cookie.split_once('=').expect("name=value");
        let (_, email) = value.split_once('.').expect("token.email");
        let forged = format!("{name}=forgedtoken.{email}");
        let (status, _) = get_bytes(&s, &format!("/my-files/{ada_id}"), Some(&forged), false).await;
        assert_eq!(status, 404);
        let (status, _) = get_bytes(&s, &format!("/admin/rescues/{ada_id}"), None, false).await;
        assert!(
            matches!(status, 401 | 303),
            "admin download without signing in: {status}"
        );

        // The admin: every archive in one zip, each stored as it was uploaded.
        let (status, everything) = get_bytes(&s, "/admin/rescues/all.zip", None, true).await;
        assert_eq!(status, 200);
        let inner = unzip(&everything);
        assert_eq!(inner.len(), 2, "{:?}", inner.keys());
        assert!(inner.values().any(|z| *z == zip));
        assert!(inner.values().any(|z| *z == lins_zip));
        let (status, html) = get_bytes(&s, "/admin/rescues", None, true).await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&html).contains("lin@example.org"));
    })
    .await;
}

/// The upload takes only the VM's own credential, for its own pending rescue, up to the
/// size limit; the reset waits until the rescue has ended.
#[tokio::test]
async fn uploads_are_refused_unless_they_are_the_vms_own_pending_rescue() {
    let s = TestServer::start_with(|c| {
        c.rescue.max_mb = 1;
        c.rescue.timeout_seconds = 600;
    })
    .await;
    s.register_many(2).await;
    let one = mint_credential(&s, "vm-1").await;
    let two = mint_credential(&s, "vm-2").await;
    heartbeat(&s, "vm-1", &one).await;
    let ada = s
        .claim("ada@example.org", &crd_command("4/0ARefusals"))
        .await;
    assert_eq!(ada.hostname(), "vm-1");
    admin_post(&s, "/api/vms/vm-1/release").await.expect(200);

    let beat = heartbeat(&s, "vm-1", &one).await;
    assert_eq!(
        beat["reset_requested"], false,
        "the reset waits for the rescue"
    );
    let id = beat["rescue"]["id"]
        .as_u64()
        .expect("a rescue is asked for");
    assert_eq!(beat["rescue"]["patterns"], json!(["**/*.slp"]));
    assert_eq!(beat["rescue"]["max_bytes"], 1024 * 1024);

    let good = zip_of(&[("a.slp", b"work")]);
    let status = |a: Answer| a.status.as_u16();
    assert_eq!(
        status(upload(&s, id, &two, "application/zip", good.clone()).await),
        403
    );
    assert_eq!(
        status(upload(&s, id, s.token(), "application/zip", good.clone()).await),
        403,
        "the shared token"
    );
    assert_eq!(
        status(upload(&s, id + 100, &one, "application/zip", good.clone()).await),
        404
    );
    assert_eq!(
        status(upload(&s, id, &one, "text/plain", good.clone()).await),
        415
    );
    assert_eq!(
        status(upload(&s, id, &one, "application/zip", vec![0u8; 3 * 1024 * 1024]).await),
        413
    );
    assert_eq!(
        status(upload(&s, id, &one, "application/zip", b"not a zip".to_vec()).await),
        400
    );
    assert_eq!(rescues(&s).await[0]["outcome"], "pending");
    assert!(
        std::fs::read_dir(s.dir.join("rescued"))
            .expect("folder")
            .next()
            .is_none(),
        "nothing refused was kept"
    );

    let kept = upload(&s, id, &one, "application/zip", good.clone())
        .await
        .expect(200);
    assert_eq!(kept["rescue"]["outcome"], "saved");
    assert_eq!(kept["rescue"]["files"], 1);
    assert_eq!(
        status(upload(&s, id, &one, "application/zip", good).await),
        409,
        "it ended"
    );
    let beat = heartbeat(&s, "vm-1", &one).await;
    assert_eq!(beat["reset_requested"], true);
    assert!(beat.get("rescue").is_none(), "{beat}");
}

/// A destroy waits for a rescue no longer than `rescue.timeout_seconds`; an agent without
/// heartbeats (the upstream client) is not waited for. The event's hard stop (a destroy-all
/// requested by `event:<name>`) is recorded as such.
#[tokio::test]
async fn a_destroy_goes_on_after_the_deadline_and_records_why() {
    let s = TestServer::start_with(|c| c.rescue.timeout_seconds = 2).await;
    s.register_many(2).await;
    let one = mint_credential(&s, "vm-1").await;
    heartbeat(&s, "vm-1", &one).await;
    let ada = s.claim("ada@example.org", &crd_command("4/0ASilent")).await;
    assert_eq!(ada.hostname(), "vm-1");
    let lin = s
        .claim("lin@example.org", &crd_command("4/0AUpstream"))
        .await;
    assert_eq!(lin.hostname(), "vm-2");

    let run = s
        .app
        .provisioner
        .start(RunAction::DestroyAll, "event:spring-school", None)
        .await
        .expect("destroy all");
    let (run, lines) = s.finished_run(run.id, 30).await;
    assert_eq!(run["state"], "succeeded", "{lines:?}");
    let all = rescues(&s).await;
    let by_host = |h: &str| {
        all.iter()
            .find(|r| r["hostname"] == h)
            .expect("rescue")
            .clone()
    };
    let (silent, upstream) = (by_host("vm-1"), by_host("vm-2"));
    assert_eq!(silent["outcome"], "timed_out", "{silent}");
    assert_eq!(silent["reason"], "event-end");
    let at = |v: &Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(v[k].as_str().expect("time")).expect("rfc3339")
    };
    assert!(at(&silent, "finished_at") >= at(&silent, "deadline"));
    assert_eq!(upstream["outcome"], "unsupported");
    assert_eq!(
        at(&upstream, "finished_at"),
        at(&upstream, "requested_at"),
        "not waited for"
    );
    let summary = lines
        .iter()
        .position(|l| l.contains("rescued files:"))
        .expect("summary");
    let removed = lines
        .iter()
        .position(|l| l.contains("removed 2 VM record(s)"))
        .expect("removed");
    assert!(summary < removed, "{lines:?}");
    assert!(lines[summary].contains("1 timed out") && lines[summary].contains("1 unsupported"));
    assert!(s.stored_vm("vm-1").await.is_none());
}

/// A released seat's rescue with no upload times out at its deadline (the job, not a
/// waiter, ends it); then the reset goes on.
#[tokio::test]
async fn a_release_rescue_without_an_upload_times_out_and_the_reset_goes_on() {
    let s = TestServer::start_with(|c| c.rescue.timeout_seconds = 1).await;
    s.register_running("vm-1").await;
    let one = mint_credential(&s, "vm-1").await;
    heartbeat(&s, "vm-1", &one).await;
    s.claim("ada@example.org", &crd_command("4/0ATimeout"))
        .await;
    admin_post(&s, "/api/vms/vm-1/release").await.expect(200);
    assert!(heartbeat(&s, "vm-1", &one).await.get("rescue").is_some());
    let beat = wait_for(10, "the rescue times out", || async {
        let beat = heartbeat(&s, "vm-1", &one).await;
        (beat["reset_requested"] == true).then_some(beat)
    })
    .await;
    assert!(beat.get("rescue").is_none());
    assert_eq!(rescues(&s).await[0]["outcome"], "timed_out");
}
