//! Seat control: the instructor releases, moves, clears and revokes through the JSON API
//! and the command line; the participant's seat page follows, also when their VM dies.

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_PASSWORD, Auth, Claimed, TestServer, crd_command, pool_view, run_binary, wait_for, within,
};

async fn admin_post(s: &TestServer, path: &str, body: Value) -> crate::helpers::Answer {
    let r = s
        .client
        .post(s.url(path))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .json(&body)
        .send()
        .await
        .expect("POST");
    crate::helpers::Answer::read(r).await
}

/// The seat as this browser's page sees it (`GET /api/my-vm`).
async fn my_seat(s: &TestServer, claimed: &Claimed) -> Value {
    let r = s
        .client
        .get(s.url("/api/my-vm"))
        .header("cookie", claimed.cookie.as_deref().expect("cookie"))
        .send()
        .await
        .expect("GET /api/my-vm");
    crate::helpers::Answer::read(r).await.expect(200)
}

/// The seat page's "another VM" form, from the browser that made `claimed`.
async fn reseat(s: &TestServer, claimed: &Claimed, command: &str) -> Claimed {
    let response = s
        .client
        .post(s.url("/api/request_vm"))
        .header("cookie", claimed.cookie.as_deref().expect("cookie"))
        .form(&[
            ("email", "ada@example.org"),
            ("crd_command", command),
            ("reseat", "1"),
        ])
        .send()
        .await
        .expect("POST /api/request_vm");
    let status = response.status();
    let html = response.text().await.expect("page");
    Claimed {
        status,
        html,
        cookie: None,
    }
}

/// `GET /my-vm` without script, as a plain reload shows it.
async fn seat_page(s: &TestServer, claimed: &Claimed) -> String {
    s.client
        .get(s.url("/my-vm"))
        .header("cookie", claimed.cookie.as_deref().expect("cookie"))
        .send()
        .await
        .expect("GET /my-vm")
        .text()
        .await
        .expect("html")
}

async fn audit_actions(s: &TestServer) -> Vec<String> {
    s.recent_audit(100)
        .await
        .into_iter()
        .map(|e| format!("{} {}", e.action, e.detail))
        .collect()
}

#[tokio::test]
async fn move_release_and_reset_through_the_api() {
    let s = TestServer::start().await;
    s.register_many(2).await;
    let claimed = s.claim("ada@example.org", &crd_command("4/0AMoveMe")).await;
    assert_eq!(claimed.hostname(), "vm-1");
    let seat = my_seat(&s, &claimed).await;
    assert_eq!(
        seat,
        json!({"state": "ready", "hostname": "vm-1", "last_seen_seconds_ago": null, "event": null, "saved_files": 0})
    );

    // vm-2's agent waits; the move wakes it with the participant's code and a new PIN.
    let poll = s.spawn_poll("vm-2");
    wait_for(10, "vm-2 parked", || async {
        (s.app.waiters.parked() == 1).then_some(())
    })
    .await;
    let moved = admin_post(&s, "/api/vms/vm-1/move", json!({}))
        .await
        .expect(200);
    assert_eq!(moved["to"]["hostname"], "vm-2");
    assert_eq!(moved["from"]["reset_pending"], true);
    let (woken, _) = poll.await.expect("poll");
    let woken = woken.expect(200);
    assert!(
        woken["command"]
            .as_str()
            .expect("command")
            .contains("4/0AMoveMe")
    );
    assert_ne!(woken["pin"], claimed.pin(), "a move gives a new PIN");
    // The participant's page follows by itself: the new VM and its PIN.
    assert_eq!(my_seat(&s, &claimed).await["hostname"], "vm-2");
    let page = seat_page(&s, &claimed).await;
    assert!(page.contains(r#"<dd id="hostname">vm-2</dd>"#), "{page}");
    assert!(page.contains(&format!(
        r#"<dd id="pin">{}</dd>"#,
        woken["pin"].as_str().expect("pin")
    )));

    // vm-1 is not handed out before its agent has reset the desktop.
    assert_eq!(s.free_count().await, 0);
    let beat = s
        .agent_post("/api/heartbeat", &json!({"hostname": "vm-1"}))
        .await
        .expect(200);
    assert_eq!(beat["reset_requested"], true);
    assert_eq!(beat["reset_id"], 1);
    // A report about an older reset changes nothing.
    let stale = s
        .agent_post(
            "/api/vm-reset-done",
            &json!({"hostname": "vm-1", "reset_id": 0}),
        )
        .await
        .expect(200);
    assert_eq!(stale["available"], false);
    let done = s
        .agent_post(
            "/api/vm-reset-done",
            &json!({"hostname": "vm-1", "reset_id": 1}),
        )
        .await
        .expect(200);
    assert_eq!(done["available"], true);
    assert_eq!(s.free_count().await, 1);

    // Release: the participant loses the seat; their page says so and offers a new one.
    let released = admin_post(&s, "/api/vms/vm-2/release", json!({}))
        .await
        .expect(200);
    assert_eq!(released["vm"]["participant"], Value::Null);
    assert_eq!(my_seat(&s, &claimed).await["state"], "released");
    let page = seat_page(&s, &claimed).await;
    assert!(page.contains("Your seat was taken back"), "{page}");
    assert!(
        page.contains(r#"name="email" value="ada@example.org""#),
        "{page}"
    );
    admin_post(&s, "/api/vms/vm-2/release", json!({}))
        .await
        .expect_error(409, "vm-2 has no participant; nothing to release.");
    // They take a new seat: vm-1 (reset), not vm-2 (waiting for its reset).
    let again = s.claim("ada@example.org", &crd_command("4/0AAgain")).await;
    assert_eq!(again.hostname(), "vm-1");

    let actions = audit_actions(&s).await;
    assert!(
        actions
            .iter()
            .any(|a| a == "move ada@example.org from vm-1 to vm-2"),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a == "release vm-2 (participant ada@example.org)"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn seat_actions_refuse_what_they_cannot_do() {
    let s = TestServer::start().await;
    s.register_many(2).await;
    s.claim("ada@example.org", &crd_command("4/0ANoMove")).await;
    s.report_status("vm-2", "initializing").await;
    admin_post(&s, "/api/vms/vm-1/move", json!({"to": "vm-2"}))
        .await
        .expect_error(
            409,
            "vm-2 cannot take the participant: it must be running, free, healthy and its agent alive.",
        );
    admin_post(&s, "/api/vms/vm-1/move", json!({}))
        .await
        .expect_error(
            409,
            "No other VM is free (running, unassigned, healthy, agent alive); launch more or release one.",
        );
    admin_post(&s, "/api/vms/vm-2/move", json!({}))
        .await
        .expect_error(409, "vm-2 has no participant; nothing to move.");
    admin_post(&s, "/api/vms/vm-1/move", json!({"to": "../x"}))
        .await
        .expect(400);
    admin_post(&s, "/api/vms/vm-1/move", json!({"where": "vm-2"}))
        .await
        .expect(400);
    admin_post(&s, "/api/vms/no-such-vm/release", json!({}))
        .await
        .expect_error(404, "VM not found.");
    for verb in ["release", "move", "clear", "revoke"] {
        let anonymous = s
            .client
            .post(s.url(&format!("/api/vms/vm-1/{verb}")))
            .send()
            .await
            .expect("POST");
        assert_eq!(anonymous.status(), 401, "{verb}");
        let as_agent = s
            .post_json(
                &format!("/api/vms/vm-1/{verb}"),
                &json!({}),
                Some(s.token()),
            )
            .await;
        assert_eq!(
            as_agent.status, 401,
            "{verb}: an agent's token is not the admin"
        );
    }
    // Nothing changed.
    assert_eq!(
        s.stored_vm("vm-1")
            .await
            .expect("vm")
            .assignment
            .expect("held")
            .email,
        "ada@example.org"
    );
}

#[tokio::test]
async fn clear_takes_back_a_false_alarm() {
    let s = TestServer::start().await;
    s.register_running("vm-1").await;
    s.agent_post(
        "/api/gpu_health",
        &json!({"hostname": "vm-1", "gpu_status": "Unhealthy"}),
    )
    .await
    .expect(200);
    assert_eq!(s.free_count().await, 0);
    let cleared = admin_post(&s, "/api/vms/vm-1/clear", json!({}))
        .await
        .expect(200);
    assert_eq!(cleared["available"], true);
    assert_eq!(s.free_count().await, 1);
    assert!(audit_actions(&s).await.iter().any(|a| a == "clear vm-1"));
}

#[tokio::test]
async fn a_revoked_vm_loses_its_credential_and_its_record() {
    // As shipped: per-VM credentials.
    let s = TestServer::start_with(|c| c.access.shared_agent_token = false).await;
    let minted = admin_post(
        &s,
        "/api/vm-credentials",
        json!({"hostnames": ["lab-pc-1", "lab-pc-2"]}),
    )
    .await
    .expect(201);
    let credential = minted["credentials"]["lab-pc-1"]
        .as_str()
        .expect("credential")
        .to_owned();
    s.post_json(
        "/api/vm-status",
        &json!({"hostname": "lab-pc-1", "status": "running"}),
        Some(&credential),
    )
    .await
    .expect(200);
    let listed = s
        .get("/api/vm-credentials", Auth::admin())
        .await
        .expect(200);
    assert_eq!(listed["hostnames"], json!(["lab-pc-1", "lab-pc-2"]));
    assert!(
        !listed.to_string().contains(&credential),
        "never the secrets"
    );
    let claimed = s
        .claim("ada@example.org", &crd_command("4/0ARevoked"))
        .await;
    assert_eq!(claimed.hostname(), "lab-pc-1");

    admin_post(&s, "/api/vms/lab-pc-1/revoke", json!({}))
        .await
        .expect(200);
    assert!(s.stored_vm("lab-pc-1").await.is_none());
    s.post_json(
        "/api/vm-status",
        &json!({"hostname": "lab-pc-1", "status": "running"}),
        Some(&credential),
    )
    .await
    .expect_error(401, "Invalid API token.");
    assert!(
        s.stored_vm("lab-pc-1").await.is_none(),
        "a revoked credential registered again"
    );
    assert_eq!(my_seat(&s, &claimed).await["state"], "released");
    // A name minted but never used is revoked too; then it is unknown.
    admin_post(&s, "/api/vms/lab-pc-2/revoke", json!({}))
        .await
        .expect(200);
    admin_post(&s, "/api/vms/lab-pc-2/revoke", json!({}))
        .await
        .expect_error(404, "VM not found.");
    assert_eq!(
        s.get("/api/vm-credentials", Auth::admin())
            .await
            .expect(200)["hostnames"],
        json!([])
    );
    for bad in [
        json!({}),
        json!({"hostnames": []}),
        json!({"hostname": "a..b"}),
        json!({"hostnames": ["ok", "-bad"]}),
    ] {
        assert_eq!(
            admin_post(&s, "/api/vm-credentials", bad.clone())
                .await
                .status,
            400,
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seat_page_reacts_when_the_vm_stops_responding() {
    let s = TestServer::start_with(|c| {
        c.server.heartbeat_seconds = 1;
        c.server.stale_after_heartbeats = 3;
    })
    .await;
    within(60, "test", async {
        s.register_running("vm-1").await;
        s.agent_post("/api/heartbeat", &json!({"hostname": "vm-1"}))
            .await
            .expect(200);
        let claimed = s
            .claim("ada@example.org", &crd_command("4/0ABeforeDeath"))
            .await;
        assert_eq!(claimed.hostname(), "vm-1");
        // The claim's answer moves on to the seat page by itself, script or not.
        assert!(
            claimed
                .html
                .contains(r#"http-equiv="refresh" content="5; url=/my-vm""#)
        );
        // vm-1's agent dies (no more heartbeats); vm-2 comes up meanwhile and stays alive.
        s.register_running("vm-2").await;
        let seat = wait_for(15, "the page says the VM stopped responding", || async {
            s.agent_post("/api/heartbeat", &json!({"hostname": "vm-2"}))
                .await
                .expect(200);
            let seat = my_seat(&s, &claimed).await;
            (seat["state"] == "unresponsive").then_some(seat)
        })
        .await;
        assert_eq!(seat["hostname"], "vm-1");
        assert!(
            seat["last_seen_seconds_ago"].as_u64().expect("seen") >= 3,
            "{seat}"
        );
        // Without script, a reload shows it and offers a new seat.
        let page = seat_page(&s, &claimed).await;
        assert!(page.contains("Your VM stopped responding"), "{page}");
        assert!(page.contains(r#"name="crd_command""#), "{page}");
        assert!(
            !page.contains("http-equiv=\"refresh\""),
            "a form must not be reloaded away"
        );

        assert!(page.contains(r#"name="reseat" value="1""#), "{page}");
        // A plain re-submit (to see the PIN again) moves nobody.
        let again = s
            .claim_again("ada@example.org", &crd_command("4/0ARefresh"), &claimed)
            .await;
        assert_eq!(again.hostname(), "vm-1");
        // The seat page's form: a new VM, with a new PIN.
        let reseated = reseat(&s, &claimed, &crd_command("4/0AAfterDeath")).await;
        assert_eq!(reseated.hostname(), "vm-2", "{}", reseated.html);
        assert!(reseated.html.contains("You have a new VM"));
        assert_eq!(my_seat(&s, &claimed).await["state"], "ready");
        let dead = s.stored_vm("vm-1").await.expect("vm-1");
        assert!(
            dead.assignment.is_none() && dead.reset_pending,
            "reset before reuse"
        );
        // Only the same browser is re-seated: an e-mail alone does not move anyone.
        let other = s.claim("ada@example.org", &crd_command("4/0AOther")).await;
        assert_eq!(other.hostname(), "vm-2");
        assert!(other.field("pin").is_none());
    })
    .await;
}

#[tokio::test]
async fn lablink_seat_fixes_a_seat_from_the_command_line() {
    let s = TestServer::start().await;
    s.register_many(2).await;
    s.claim("ada@example.org", &crd_command("4/0ACli")).await;
    let base = s.url("");
    let env = [("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD)];
    let out = run_binary(
        &["seat", "move", "vm-1", "--to", "vm-2", "--url", &base],
        &env,
        20,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved from vm-1 to vm-2"));
    let out = run_binary(&["seat", "release", "vm-1", "--url", &base], &env, 20).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vm-1 has no participant"));
    let out = run_binary(&["seat", "release", "vm-2", "--url", &base], &env, 20).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = run_binary(&["seat", "clear", "../etc", "--url", &base], &env, 20).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("HOST"));
    let wrong = run_binary(
        &["seat", "clear", "vm-1", "--to", "vm-2", "--url", &base],
        &env,
        20,
    )
    .await;
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("--to"));
    assert!(pool_view(&s).await["vm-2"]["participant"].is_null());
}

#[tokio::test]
async fn a_forged_cookie_learns_nothing_about_a_seat() {
    use base64::Engine;
    let s = TestServer::start().await;
    s.register_running("vm-1").await;
    let claimed = s.claim("ada@example.org", &crd_command("4/0AForged")).await;
    assert_eq!(claimed.hostname(), "vm-1");
    let email = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("ada@example.org");
    for path in ["/api/my-vm", "/my-vm"] {
        let page = s
            .client
            .get(s.url(path))
            .header("cookie", format!("lablink_claim=guess.{email}"))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("text");
        assert!(!page.contains("vm-1"), "{path}: {page}");
        assert!(!page.contains(&claimed.pin()), "{path}: {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assigned_client_without_heartbeats_is_not_called_dead() {
    // The 0.1.2 client stops asking once it has its participant: silence is no evidence.
    let s = TestServer::start_with(|c| {
        c.server.heartbeat_seconds = 1;
        c.server.stale_after_heartbeats = 2;
    })
    .await;
    within(30, "test", async {
        s.register_running("legacy-vm-1").await;
        s.register_running("beating-vm-2").await;
        s.agent_post("/api/heartbeat", &json!({"hostname": "beating-vm-2"}))
            .await
            .expect(200);
        let poll = s.spawn_poll("legacy-vm-1");
        wait_for(10, "the poll parked", || async {
            (s.app.waiters.parked() == 1).then_some(())
        })
        .await;
        let legacy = s
            .claim("ada@example.org", &crd_command("4/0ALegacySeat"))
            .await;
        assert_eq!(legacy.hostname(), "legacy-vm-1");
        poll.await.expect("poll").0.expect(200);
        let beating = s
            .claim("lin@example.org", &crd_command("4/0ABeatingSeat"))
            .await;
        assert_eq!(beating.hostname(), "beating-vm-2");
        // The heartbeating one, silent, is called unresponsive; the 0.1.2 one is not.
        wait_for(15, "the silent heartbeating VM is marked", || async {
            pool_view(&s).await["beating-vm-2"]["unresponsive"]
                .as_bool()
                .filter(|u| *u)
        })
        .await;
        assert_eq!(pool_view(&s).await["legacy-vm-1"]["unresponsive"], false);
        assert_eq!(my_seat(&s, &legacy).await["state"], "ready");
    })
    .await;
}
