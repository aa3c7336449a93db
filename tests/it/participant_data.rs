//! `GET /api/scp-client`: the participants' files of every VM as one zip.

use std::io::Read;

use reqwest::StatusCode;

use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, Auth, TestServer, within};

/// Downloads the zip: status, `Content-Disposition`, and each entry's name and content.
pub async fn download(s: &TestServer) -> (StatusCode, String, Vec<(String, String)>) {
    let answer = s
        .client
        .get(s.url("/api/scp-client"))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("GET /api/scp-client");
    let status = answer.status();
    let disposition = answer
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = answer.bytes().await.expect("body");
    let mut entries = Vec::new();
    if status == StatusCode::OK {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
        for i in 0..zip.len() {
            let mut file = zip.by_index(i).expect("entry");
            let mut text = String::new();
            file.read_to_string(&mut text).expect("read entry");
            entries.push((file.name().to_owned(), text));
        }
        entries.sort();
    }
    (status, disposition, entries)
}

fn put(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_vms_desktop_files_come_as_one_zip() {
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.machine.software = "datatest".into();
    })
    .await;
    within(60, "test", async {
        s.get("/api/scp-client", Auth::admin())
            .await
            .expect_error(404, "No VMs found in the database.");
        let launched = s
            .admin_form("/api/launch", &[("num_vms", "2")], &[])
            .await
            .expect(202);
        s.finished_run(launched["run_id"].as_u64().expect("id"), 30)
            .await;
        crate::helpers::wait_for(30, "two VMs registered", || async {
            (s.free_count().await == 2).then_some(())
        })
        .await;
        s.get("/api/scp-client", Auth::admin())
            .await
            .expect_error(404, "No slp files found in any VMs.");

        let (one, two) = ("datatest-lablink-local-vm-1", "datatest-lablink-local-vm-2");
        let desktop = |host: &str| s.dir.join("local-vms").join(host).join("Desktop");
        put(&desktop(one).join("labels.slp"), "one");
        put(&desktop(one).join("session/labels.slp"), "nested");
        put(&desktop(one).join("models/trained.slp"), "model");
        put(&desktop(one).join("predictions/out.slp"), "prediction");
        put(&desktop(one).join("notes.txt"), "not data");
        put(&desktop(two).join("mine.slp"), "two");

        let (status, disposition, entries) = download(&s).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            disposition.starts_with("attachment; filename=lablink_data")
                && disposition.ends_with(".zip"),
            "{disposition}"
        );
        let want = [
            (format!("{one}/labels.slp"), "one"),
            (format!("{one}/session/labels.slp"), "nested"),
            (format!("{two}/mine.slp"), "two"),
        ]
        .map(|(n, t)| (n, t.to_owned()));
        assert_eq!(entries, want);
        // The scratch folder is gone once the download started.
        let exports = s.dir.join("exports");
        assert_eq!(std::fs::read_dir(&exports).expect("exports").count(), 0);
        let audit = s.get("/admin/audit", Auth::admin()).await;
        assert!(audit.text.contains("download-data"), "{}", audit.text);
    })
    .await;
}

#[tokio::test]
async fn the_manual_provider_says_it_cannot_fetch_files() {
    let s = TestServer::start().await;
    s.register_running("vm-1").await;
    let answer = s.get("/api/scp-client", Auth::admin()).await;
    assert_eq!(answer.status, 500, "{}", answer.text);
    assert!(
        answer
            .text
            .contains("vm-1: the manual provider cannot fetch files"),
        "{}",
        answer.text
    );
    assert_eq!(s.get("/api/scp-client", Auth::None).await.status, 401);
}

#[tokio::test]
async fn a_stored_name_that_is_no_hostname_never_leads_out_of_the_scratch_folder() {
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
    })
    .await;
    within(60, "test", async {
        // `vm-1` has a file; `..` and `.x` were stored by an older LabLink, and
        // `local-vms/../Desktop` is a folder of the data directory.
        s.register_running("vm-1").await;
        let now = chrono::Utc::now();
        s.app
            .store
            .write(move |tx| {
                for host in ["..", ".x"] {
                    lablink::store::vms::report_status(tx, host, None, now)?;
                }
                Ok(())
            })
            .await
            .expect("store write");
        let local = s.dir.join("local-vms");
        put(&local.join("vm-1/Desktop/labels.slp"), "one");
        put(&s.dir.join("Desktop/escaped.slp"), "outside");
        put(&local.join(".x/Desktop/hidden.slp"), "hidden");

        let (status, _, entries) = download(&s).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(entries, [("vm-1/labels.slp".to_owned(), "one".to_owned())]);
        let exports = s.dir.join("exports");
        let left: Vec<_> = std::fs::read_dir(&exports)
            .expect("exports")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "left in {}: {left:?}", exports.display());
        let audit = s.get("/admin/audit", Auth::admin()).await;
        assert!(
            audit
                .text
                .contains("&quot;..&quot;: not a valid hostname; its files were not fetched"),
            "{}",
            audit.text
        );
    })
    .await;
}
