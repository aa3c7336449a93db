//! The participant's side: the landing page, the claim form, rejoining, and many
//! participants claiming at once.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    Auth, Claimed, TestServer, claim_presenting, claim_with, crd_command, html_field, within,
};

const REAL_COMMAND: &str = "DISPLAY= /opt/google/chrome-remote-desktop/start-host \
    --code=\"4/0AVG7fiQp-9xYz\" \
    --redirect-url=\"https://remotedesktop.google.com/_/oauthredirect\" --name=$(hostname)";

fn assert_form_error(c: &Claimed, status: u16, message: &str) {
    assert_eq!(c.status.as_u16(), status, "{}", c.html);
    assert!(
        c.html.contains("<form") && c.html.contains("action=\"/api/request_vm\""),
        "the form is shown again: {}",
        c.html
    );
    assert!(c.html.contains(message), "{message:?} not in {}", c.html);
    assert!(c.field("pin").is_none(), "no PIN on an error page");
}

#[tokio::test]
async fn landing_page_shows_the_form_and_the_free_count() {
    let s = TestServer::start().await;
    within(30, "test", async {
        let page = s.get("/", Auth::None).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.content_type.starts_with("text/html"),
            "{}",
            page.content_type
        );
        assert!(page.text.contains("action=\"/api/request_vm\""));
        assert!(page.text.contains("name=\"email\""));
        assert!(page.text.contains("name=\"crd_command\""));
        assert_eq!(html_field(&page.text, "free-count").as_deref(), Some("0"));

        s.register_many(3).await;
        s.report_status("vm-9", "initializing").await;
        let page = s.get("/", Auth::None).await;
        assert_eq!(html_field(&page.text, "free-count").as_deref(), Some("3"));
        assert_eq!(
            s.get("/api/unassigned_vms_count", Auth::None)
                .await
                .expect(200),
            json!({"count": 3})
        );
    })
    .await;
}

#[tokio::test]
async fn a_claim_shows_the_hostname_and_a_pin() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_many(2).await;
        let c = s.claim("ada@example.org", REAL_COMMAND).await;
        assert_eq!(c.status, StatusCode::OK, "{}", c.html);
        assert_eq!(
            c.hostname(),
            "vm-1",
            "the lowest-numbered free VM is picked"
        );
        let pin = c.pin();
        assert!(c.html.contains("https://remotedesktop.google.com/access"));
        assert_eq!(s.free_count().await, 1);

        let vm = s.stored_vm("vm-1").await.expect("vm");
        let a = vm.assignment.expect("assigned");
        assert_eq!(a.email, "ada@example.org");
        assert_eq!(a.pin, pin);
        assert_eq!(a.crd_code, "4/0AVG7fiQp-9xYz", "only the code is kept");
    })
    .await;
}

#[tokio::test]
async fn bad_claims_are_refused_and_write_nothing() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_many(2).await;
        const REQUIRED: &str = "Email and CRD command are required.";
        for (email, command) in [
            ("", REAL_COMMAND),
            ("ada@example.org", ""),
            ("   ", REAL_COMMAND),
            ("ada@example.org", "  \n "),
        ] {
            let c = s.claim(email, command).await;
            assert_form_error(&c, 400, REQUIRED);
        }
        // Fields absent altogether.
        let r = s
            .client
            .post(s.url("/api/request_vm"))
            .form(&[("email", "ada@example.org")])
            .send()
            .await
            .expect("POST");
        let c = Claimed {
            status: r.status(),
            html: r.text().await.expect("page"),
            cookie: None,
        };
        assert_form_error(&c, 400, REQUIRED);

        for email in ["ada", "ada@", "@example.org", "a b@example.org"] {
            let c = s.claim(email, REAL_COMMAND).await;
            assert_eq!(c.status, StatusCode::BAD_REQUEST, "{email}: {}", c.html);
            assert!(c.html.contains("e-mail"), "{email}: {}", c.html);
            assert!(c.field("pin").is_none());
        }
        let no_code = "DISPLAY= /opt/google/chrome-remote-desktop/start-host \
                       --redirect-url=\"https://remotedesktop.google.com/_/oauthredirect\"";
        let c = s.claim("ada@example.org", no_code).await;
        assert_form_error(&c, 400, "Invalid CRD command");
        for evil in [
            crd_command("$(reboot)"),
            crd_command("4/0Ab;reboot"),
            crd_command("`id`"),
            "start-host --code=4/0Ab&&rm -rf ~".to_owned(),
        ] {
            let c = s.claim("ada@example.org", &evil).await;
            assert_form_error(&c, 400, "Invalid CRD command");
        }
        // The e-mail the participant typed is kept in the form.
        let c = s
            .claim("mallory@example.org", &crd_command("$(reboot)"))
            .await;
        assert!(
            c.html.contains("value=\"mallory@example.org\""),
            "{}",
            c.html
        );

        // Nothing was assigned.
        assert_eq!(s.free_count().await, 2);
        for host in ["vm-1", "vm-2"] {
            let vm = s.stored_vm(host).await.expect("vm");
            assert!(vm.assignment.is_none(), "{host} was assigned: {vm:?}");
            assert_eq!(
                s.agent_get(&format!("/api/vm-status/{host}"))
                    .await
                    .expect(200),
                json!({"hostname": host, "status": "running"})
            );
        }
    })
    .await;
}

#[tokio::test]
async fn refused_claims_do_not_wake_the_agent() {
    let s = TestServer::start_with(|c| c.server.long_poll_seconds = 1).await;
    within(30, "test", async {
        s.register_running("vm-1").await;
        let poll = s.vm_startup("vm-1");
        let claim = async {
            crate::helpers::wait_until(5, "the poll parks", || s.app.waiters.parked() == 1).await;
            s.claim("ada@example.org", &crd_command("$(reboot)")).await
        };
        let (poll, c) = tokio::join!(poll, claim);
        assert_eq!(c.status, StatusCode::BAD_REQUEST);
        poll.expect_error(408, "timeout");
    })
    .await;
}

#[tokio::test]
async fn no_free_vm_is_a_503_page() {
    let s = TestServer::start().await;
    within(30, "test", async {
        let c = s.claim("ada@example.org", REAL_COMMAND).await;
        assert_form_error(&c, 503, "No available VMs");
        s.register_running("vm-1").await;
        s.report_status("vm-2", "initializing").await;
        let first = s.claim("ada@example.org", REAL_COMMAND).await;
        assert_eq!(first.status, StatusCode::OK);
        let c = s.claim("bob@example.org", &crd_command("4/0Other")).await;
        assert_form_error(&c, 503, "No available VMs");
        assert!(c.html.contains("value=\"bob@example.org\""));
        assert_eq!(html_field(&c.html, "free-count").as_deref(), Some("0"));
    })
    .await;
}

#[tokio::test]
async fn rejoining_returns_the_same_vm_and_pin() {
    let s = TestServer::start().await;
    within(30, "test", async {
        s.register_many(3).await;
        let first = s.claim("Ada.Lovelace@Example.org", REAL_COMMAND).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.html);
        let (host, pin) = (first.hostname(), first.pin());
        assert_eq!(s.free_count().await, 2);

        let cookie = first.cookie.clone().expect("the claim sets a cookie");
        assert!(cookie.starts_with("lablink_claim="), "{cookie}");

        // Knowing the e-mail is not enough: the VM is named, the PIN is not shown, and a
        // code brought along is not passed on.
        let stranger = claim_presenting(
            &s.client,
            &s.base,
            "ada.lovelace@example.org",
            &crd_command("4/0Hijack"),
            None,
        )
        .await;
        assert_eq!(stranger.status, StatusCode::OK, "{}", stranger.html);
        assert_eq!(stranger.hostname(), host);
        assert!(stranger.field("pin").is_none(), "PIN shown to a stranger");
        assert!(!stranger.html.contains(&pin), "PIN shown to a stranger");
        let answer = s.vm_startup(&host).await.expect(200);
        assert!(
            !answer["command"].as_str().unwrap_or("").contains("Hijack"),
            "{answer}"
        );

        // Same person, same browser, typed differently, same command.
        let again = claim_presenting(
            &s.client,
            &s.base,
            "  ada.lovelace@EXAMPLE.ORG ",
            REAL_COMMAND,
            Some(&cookie),
        )
        .await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.html);
        assert_eq!(again.hostname(), host);
        assert_eq!(again.pin(), pin);
        assert!(again.html.contains("Welcome back"), "{}", again.html);
        assert_eq!(s.free_count().await, 2, "no second VM taken");
        let answer = s.vm_startup(&host).await.expect(200);
        assert_eq!(answer["pin"], pin.as_str());
        assert!(
            answer["command"]
                .as_str()
                .is_some_and(|c| c.contains("--code=\"4/0AVG7fiQp-9xYz\"")),
            "{answer}"
        );

        // A fresh code (codes are single-use): passed on, PIN kept.
        let rotated = claim_presenting(
            &s.client,
            &s.base,
            "ada.lovelace@example.org",
            &crd_command("4/0NewCode-2"),
            Some(&cookie),
        )
        .await;
        assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.html);
        assert_eq!(rotated.hostname(), host);
        assert_eq!(rotated.pin(), pin);
        assert!(
            rotated.html.contains("new Chrome Remote Desktop code"),
            "{}",
            rotated.html
        );
        assert_eq!(s.free_count().await, 2);
        let answer = s.vm_startup(&host).await.expect(200);
        assert_eq!(
            answer,
            json!({
                "status": "success",
                "pin": pin,
                "command": crd_command("4/0NewCode-2"),
            })
        );
        let stored = s.stored_vm(&host).await.expect("vm").assignment.expect("a");
        assert_eq!(stored.email, "ada.lovelace@example.org");
        assert_eq!(stored.crd_code, "4/0NewCode-2");
        assert_eq!(stored.pin, pin);

        // Someone else gets another VM.
        let other = s.claim("bob@example.org", REAL_COMMAND).await;
        assert_eq!(other.status, StatusCode::OK);
        assert_ne!(other.hostname(), host);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_share_a_vm() {
    const VMS: usize = 50;
    const PARTICIPANTS: usize = 200;
    let s = TestServer::start().await;
    within(50, "test", async {
        s.register_many(VMS).await;
        assert_eq!(s.free_count().await, VMS as u64);

        let client = crate::helpers::client();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(PARTICIPANTS));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..PARTICIPANTS {
            let (client, base, start) = (client.clone(), s.base.clone(), start.clone());
            tasks.spawn(async move {
                let email = format!("participant-{i:03}@example.org");
                let command = crd_command(&format!("4/0Code-{i:03}"));
                start.wait().await;
                let c = claim_with(&client, &base, &email, &command).await;
                (email, c)
            });
        }
        let mut won: BTreeMap<String, String> = BTreeMap::new();
        let mut refused = 0;
        while let Some(done) = tasks.join_next().await {
            let (email, c) = done.expect("claim task");
            match c.status {
                StatusCode::OK => {
                    won.insert(email, c.hostname());
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(c.html.contains("No available VMs"), "{}", c.html);
                    refused += 1;
                }
                other => panic!("unexpected {other}: {}", c.html),
            }
        }
        assert_eq!(won.len(), VMS, "answers 200");
        assert_eq!(refused, PARTICIPANTS - VMS, "answers 503");
        let hosts: BTreeSet<&String> = won.values().collect();
        assert_eq!(hosts.len(), VMS, "distinct hostnames");

        assert_eq!(s.free_count().await, 0);
        let vms = s
            .app
            .store
            .read(lablink::store::vms::list)
            .await
            .expect("list");
        assert_eq!(vms.len(), VMS);
        let mut stored: BTreeMap<String, String> = BTreeMap::new();
        for vm in vms {
            let a = vm
                .assignment
                .unwrap_or_else(|| panic!("{} not assigned", vm.hostname));
            let previous = stored.insert(a.email.clone(), vm.hostname.clone());
            assert!(previous.is_none(), "{} holds two VMs", a.email);
        }
        assert_eq!(stored, won, "the store agrees with the pages");
    })
    .await;
}

#[tokio::test]
async fn another_sites_page_cannot_claim_a_seat() {
    let s = TestServer::start().await;
    s.register_running("vm-1").await;
    within(30, "cross-site claim", async {
        let forged = s
            .client
            .post(s.url("/api/request_vm"))
            .header("sec-fetch-site", "cross-site")
            .form(&[
                ("email", "ada@example.org"),
                ("crd_command", &crd_command("4/0Ada")),
            ])
            .send()
            .await
            .expect("POST");
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert!(forged.headers().get(reqwest::header::SET_COOKIE).is_none());
        assert_eq!(s.free_count().await, 1, "nothing was claimed");
        // The same form from the workshop's own page works.
        let own = s.claim("ada@example.org", &crd_command("4/0Ada")).await;
        assert_eq!(own.status, 200, "{}", own.html);
    })
    .await;
}
