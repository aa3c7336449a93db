//! A whole workshop run through the real binary, then a search of every log it wrote
//! (the allocator's JSON log at debug level and each local agent's log) for the secrets
//! that passed through it.

use std::path::Path;

use lablink::shared_token::SharedToken;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::helpers::{ServeProc, crd_command, free_port, html_field, wait_for, within};

const ADMIN_PASSWORD: &str = "Sekrit-Admin-Pw-7731";
const WRONG_PASSWORD: &str = "Wrong-Guess-Pw-9911";
const JOIN_CODE: &str = "Join-Code-5521";
const CRD_CODE: &str = "4/0AeanS0aSecretCrdCode-q7Zx";

fn every_log(dir: &Path, serve_log: &Path) -> Vec<(String, String)> {
    let mut logs = vec![(
        serve_log.display().to_string(),
        std::fs::read_to_string(serve_log).expect("serve log"),
    )];
    let vms = dir.join("local-vms");
    for entry in std::fs::read_dir(&vms).expect("local-vms").flatten() {
        let log = entry.path().join("agent.log");
        if let Ok(text) = std::fs::read_to_string(&log) {
            logs.push((log.display().to_string(), text));
        }
    }
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let serve_log = tmp.path().join("serve.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut serve = ServeProc::start_with_env(
        &data,
        port,
        serve_log.clone(),
        &[
            ("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("LABLINK_LOG_FORMAT", "json"),
            ("LABLINK_LOG", "debug"),
            ("LABLINK_PROVISION_PROVIDER", "local"),
            ("LABLINK_ACCESS_JOIN_CODE", JOIN_CODE),
            ("PATH", &std::env::var("PATH").unwrap_or_default()),
        ],
    )
    .await;
    let shared = std::fs::read_to_string(data.join("api-token"))
        .expect("token file")
        .trim()
        .to_owned();
    let http = reqwest::Client::new();

    let (pin, session, csrf, new_token, vm, api_token) = within(90, "a workshop", async {
        // The admin launches a VM (Basic auth) after one wrong guess.
        let wrong = http
            .post(format!("{base}/api/launch"))
            .basic_auth("admin", Some(WRONG_PASSWORD))
            .form(&[("num_vms", "1")])
            .send()
            .await
            .expect("launch");
        assert_eq!(wrong.status(), 401);
        let launched = http
            .post(format!("{base}/api/launch"))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .header("accept", "application/json")
            .form(&[("num_vms", "1")])
            .send()
            .await
            .expect("launch");
        assert_eq!(launched.status(), 202);
        wait_for(40, "the local VM is free", || async {
            let count: Value = reqwest::get(format!("{base}/api/unassigned_vms_count"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (count["count"] == 1).then_some(())
        })
        .await;

        // A participant claims it with a join code and a CRD command.
        let claim = reqwest::Client::new()
            .post(format!("{base}/api/request_vm"))
            .form(&[
                ("email", "ada@example.org"),
                ("join_code", JOIN_CODE),
                ("crd_command", &crd_command(CRD_CODE)),
            ])
            .send()
            .await
            .expect("claim");
        assert_eq!(claim.status(), 200);
        let page = claim.text().await.expect("page");
        let pin = html_field(&page, "pin").expect("a PIN");
        let vm = html_field(&page, "hostname").expect("a VM");

        // A script's admin API token is made and used.
        let made: Value = http
            .post(format!("{base}/api/admin-tokens"))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .json(&serde_json::json!({"name": "ci", "scope": "admin"}))
            .send()
            .await
            .expect("make a token")
            .json()
            .await
            .expect("json");
        let api_token = made["token"].as_str().expect("a token").to_owned();
        let used = http
            .get(format!("{base}/api/vms"))
            .bearer_auth(&api_token)
            .send()
            .await
            .expect("GET /api/vms");
        assert_eq!(used.status(), 200);

        // The admin signs in with the form and rotates the agents' token.
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let signed_in = no_redirects
            .post(format!("{base}/admin/login"))
            .form(&[
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("next", "/admin/token"),
            ])
            .send()
            .await
            .expect("sign in");
        assert_eq!(signed_in.status(), 303);
        let session = signed_in
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("lablink_session="))
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_owned();
        let token_page = no_redirects
            .get(format!("{base}/admin/token"))
            .header("cookie", &session)
            .send()
            .await
            .expect("token page")
            .text()
            .await
            .expect("html");
        let csrf = hidden(&token_page, "csrf_token");
        let rotated = no_redirects
            .post(format!("{base}/admin/token/rotate"))
            .header("cookie", &session)
            .form(&[("csrf_token", csrf.as_str()), ("confirm", "rotate")])
            .send()
            .await
            .expect("rotate")
            .text()
            .await
            .expect("html");
        let new_token = std::fs::read_to_string(data.join("api-token"))
            .expect("token file")
            .trim()
            .to_owned();
        assert_ne!(new_token, shared, "rotated: {rotated}");
        let session = session
            .strip_prefix("lablink_session=")
            .unwrap_or_default()
            .to_owned();
        (pin, session, csrf, new_token, vm, api_token)
    })
    .await;

    // Let the agent act on its assignment, then stop everything so every log is flushed.
    wait_for(30, "the agent started the desktop", || async {
        every_log(&data, &serve_log)
            .iter()
            .skip(1)
            .any(|(_, agent_log)| {
                agent_log.contains("desktop started; the participant can connect")
            })
            .then_some(())
    })
    .await;
    let pid = Pid::from_raw(serve.child.id().expect("pid") as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    within(20, "serve exits", serve.child.wait())
        .await
        .expect("wait");

    let old = SharedToken::new(shared.clone());
    let new = SharedToken::new(new_token.clone());
    // The VM's launch identity, as the stopped allocator's store keeps it.
    let nonce = {
        let store = lablink::store::Store::open(&data).expect("store");
        let all = store
            .read(lablink::store::identities::list)
            .await
            .expect("identities");
        store.close();
        all.into_iter()
            .find(|(h, _)| *h == vm)
            .map(|(_, i)| i.nonce)
            .expect("the VM's identity")
    };
    assert!(!nonce.is_empty());
    let secrets = [
        ("admin password", ADMIN_PASSWORD.to_owned()),
        ("wrong password", WRONG_PASSWORD.to_owned()),
        ("join code", JOIN_CODE.to_owned()),
        ("CRD code", CRD_CODE.to_owned()),
        ("PIN", format!("\"{pin}\"")),
        ("shared token", shared.clone()),
        ("rotated token", new_token.clone()),
        ("VM credential", old.for_vm(&vm, &nonce)),
        ("VM credential after rotation", new.for_vm(&vm, &nonce)),
        ("CSRF token", csrf.clone()),
        ("session id", session.clone()),
        ("admin API token", api_token.clone()),
    ];
    let logs = every_log(&data, &serve_log);
    assert!(logs.len() >= 2, "the agent's log is searched too");
    let total: usize = logs.iter().map(|(_, text)| text.lines().count()).sum();
    assert!(total > 20, "a debug run writes plenty: {total} lines");
    for (file, text) in &logs {
        for (what, secret) in &secrets {
            assert!(!secret.is_empty());
            assert!(
                !text.contains(secret.as_str()),
                "the {what} appears in {file}"
            );
        }
    }
}

/// The value of the hidden input `name` of a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in page"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').expect("end of value")].to_owned()
}
