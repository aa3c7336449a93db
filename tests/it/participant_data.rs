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
        let report = "\"..\": not a valid hostname; its files were not fetched\n\
                      \".x\": not a valid hostname; its files were not fetched\n";
        let want = [("_lablink_report.txt", report), ("vm-1/labels.slp", "one")]
            .map(|(n, t)| (n.to_owned(), t.to_owned()));
        assert_eq!(entries, want);
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

#[tokio::test]
async fn downloads_keep_to_the_size_caps_and_say_what_they_skipped() {
    const MIB: usize = 1024 * 1024;
    let tune = |per_vm: u64, total: u64| {
        move |c: &mut lablink::config::Config| {
            c.provision.provider = "local".into();
            c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
            c.machine.export_max_mb_per_vm = per_vm;
            c.machine.export_max_total_mb = total;
        }
    };
    let s = TestServer::start_with(tune(1, 100)).await;
    let s = within(60, "test", async {
        let desktop = |host: &str| s.dir.join("local-vms").join(host).join("Desktop");
        for host in ["vm-1", "vm-2", "vm-3", "vm-4"] {
            s.register_running(host).await;
        }
        // Over the per-VM cap: vm-1 is skipped, the others come.
        put(&desktop("vm-1").join("big.slp"), &"x".repeat(MIB + MIB / 2));
        for host in ["vm-2", "vm-3", "vm-4"] {
            put(&desktop(host).join("small.slp"), &"y".repeat(MIB * 6 / 10));
        }
        let (status, _, entries) = download(&s).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "_lablink_report.txt",
                "vm-2/small.slp",
                "vm-3/small.slp",
                "vm-4/small.slp"
            ]
        );
        assert_eq!(
            entries[0].1,
            "vm-1: skipped, its files take more than 1 MiB (machine.export_max_mb_per_vm)\n"
        );
        let exports = s.dir.join("exports");
        assert_eq!(std::fs::read_dir(&exports).expect("exports").count(), 0);
        let audit = s.get("/admin/audit", Auth::admin()).await;
        assert!(
            audit
                .text
                .contains("not fetched: vm-1: skipped, its files take more than 1 MiB"),
            "{}",
            audit.text
        );
        s
    })
    .await;

    // A total of 2 MiB: three small VMs fit, the fourth does not, and the big one still
    // does not fit its own cap.
    let s = s.restart(tune(1, 2)).await;
    within(60, "test", async {
        s.register_running("vm-5").await;
        put(
            &s.dir.join("local-vms/vm-5/Desktop/small.slp"),
            &"z".repeat(MIB * 6 / 10),
        );
        let (status, _, entries) = download(&s).await;
        assert_eq!(status, StatusCode::OK);
        let report = &entries[0];
        assert_eq!(report.0, "_lablink_report.txt");
        let lines: Vec<&str> = report.1.lines().collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.contains(
            &"vm-1: skipped, its files take more than 1 MiB (machine.export_max_mb_per_vm)"
        ));
        let total = lines
            .iter()
            .find(|l| l.ends_with(" MiB (machine.export_max_total_mb)"))
            .unwrap_or_else(|| panic!("no line for the total: {lines:?}"));
        assert!(
            total.contains(": skipped, the download reached its limit of 2 MiB"),
            "{total}"
        );
        let skipped = total.split(':').next().expect("host");
        let mut kept: Vec<&str> = entries[1..]
            .iter()
            .map(|(n, _)| n.split('/').next().expect("host"))
            .collect();
        kept.dedup();
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(
            !kept.contains(&skipped) && !kept.contains(&"vm-1"),
            "{kept:?}"
        );
    })
    .await;
}
