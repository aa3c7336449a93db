//! Who may do what: per-VM agent credentials, claim limits per network and per address,
//! the join code and the e-mail allow-list.

use lablink::model::VmStatus;
use serde_json::json;

use crate::helpers::{ADMIN_PASSWORD, Auth, TestServer, crd_command, run_binary, wait_for, within};

/// A server as shipped: VMs must use their own credentials.
async fn per_vm_server() -> TestServer {
    TestServer::start_with(|c| c.access.shared_agent_token = false).await
}

/// A credential minted for `host` (as the admin does for a machine of the manual provider).
async fn vm_token(s: &TestServer, host: &str) -> String {
    s.app
        .identities
        .reissue(host, "test")
        .await
        .expect("mint a credential")
}

#[tokio::test]
async fn a_vm_credential_acts_only_as_its_vm() {
    let s = per_vm_server().await;
    let a = vm_token(&s, "lab-vm-a").await;
    let b = vm_token(&s, "lab-vm-b").await;
    let status = |host: &str| json!({"hostname": host, "status": "running"});

    s.post_json("/api/vm-status", &status("lab-vm-a"), Some(&a))
        .await
        .expect(200);
    s.post_json("/api/vm-status", &status("lab-vm-b"), Some(&b))
        .await
        .expect(200);
    s.post_json("/api/vm-status", &status("lab-vm-b"), Some(&a))
        .await
        .expect_error(
            403,
            "This token belongs to VM lab-vm-a; it cannot act for another VM.",
        );
    for (path, body) in [
        (
            "/api/gpu_health",
            json!({"hostname": "lab-vm-b", "gpu_status": "Unhealthy"}),
        ),
        (
            "/api/update_inuse_status",
            json!({"hostname": "lab-vm-b", "status": true}),
        ),
        ("/vm_startup", json!({"hostname": "lab-vm-b"})),
        (
            "/api/vm-logs",
            json!({"log_group": "g", "log_stream": "lab-vm-b", "messages": ["x"]}),
        ),
        ("/api/vm-metrics/lab-vm-b", json!({"container_start": 1.0})),
    ] {
        let answer = s.post_json(path, &body, Some(&a)).await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.text);
    }
    s.get("/api/vm-status/lab-vm-b", Auth::Bearer(&a))
        .await
        .expect(403);
    s.get("/api/vm-logs/lab-vm-b", Auth::Bearer(&a))
        .await
        .expect(403);
    s.get("/api/vm-status", Auth::Bearer(&a)).await.expect(403);
    s.get("/api/vm-status/lab-vm-a", Auth::Bearer(&a))
        .await
        .expect(200);
    // Nothing the refused requests asked for happened.
    let b = s.stored_vm("lab-vm-b").await.expect("b");
    assert_eq!(b.status, Some(VmStatus::Running));
    assert!(!b.in_use);

    // The shared token is refused unless the configuration accepts it; a forged
    // credential (another VM's name on A's tag) too.
    s.post_json("/api/vm-status", &status("lab-vm-a"), Some(s.token()))
        .await
        .expect_error(401, "Invalid API token.");
    let forged = a.replace("lab-vm-a", "lab-vm-b");
    s.post_json("/api/vm-status", &status("lab-vm-b"), Some(&forged))
        .await
        .expect_error(401, "Invalid API token.");
    // The admin still reads everything.
    s.get("/api/vm-status", Auth::admin()).await.expect(200);
}

#[tokio::test]
async fn the_shared_token_works_for_every_vm_when_enabled() {
    let s = TestServer::start_with(|c| c.access.shared_agent_token = true).await;
    for host in ["lab-vm-a", "lab-vm-b"] {
        s.post_json(
            "/api/vm-status",
            &json!({"hostname": host, "status": "running"}),
            Some(s.token()),
        )
        .await
        .expect(200);
    }
    s.get("/api/vm-status", Auth::Bearer(s.token()))
        .await
        .expect(200);
    // VM credentials keep their scope even then.
    s.post_json(
        "/api/vm-status",
        &json!({"hostname": "lab-vm-b", "status": "error"}),
        Some(&vm_token(&s, "lab-vm-a").await),
    )
    .await
    .expect(403);
}

#[tokio::test]
async fn local_agents_run_on_their_own_credentials() {
    let s = TestServer::start_with(|c| {
        c.access.shared_agent_token = false;
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
    })
    .await;
    within(60, "local VMs", async {
        s.admin_form("/api/launch", &[("num_vms", "2")], &[])
            .await
            .expect(202);
        wait_for(40, "both VMs running", || async {
            let free = s.free_count().await;
            (free == 2).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn lablink_token_prints_a_vm_credential_the_server_accepts() {
    let mut s = per_vm_server().await;
    let dir = s.dir.display().to_string();
    // The allocator holds its store: minting goes through its API.
    let held = run_binary(&["token", "--data-dir", &dir, "--vm", "lab-pc-3"], &[], 10).await;
    assert_eq!(held.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&held.stderr).contains("give --url"));
    let base = s.url("");
    let out = run_binary(
        &["token", "--url", &base, "--vm", "lab-pc-3"],
        &[("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        10,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        Some(printed.clone()),
        s.app.identities.credential("lab-pc-3")
    );
    s.post_json(
        "/api/vm-status",
        &json!({"hostname": "lab-pc-3", "status": "running"}),
        Some(&printed),
    )
    .await
    .expect(200);
    let bad = run_binary(&["token", "--data-dir", &dir, "--vm", "no spaces"], &[], 10).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--vm"));
    s.stop().await;
}

/// A claim as if from `client` behind the (trusted, loopback) proxy.
async fn claim_from(
    s: &TestServer,
    client: &str,
    email: &str,
    fields: &[(&str, &str)],
) -> (u16, String, Option<String>) {
    let command = crd_command(&format!("code-{}", email.replace(['@', '.'], "-")));
    let mut form = vec![("email", email), ("crd_command", command.as_str())];
    form.extend_from_slice(fields);
    let response = reqwest::Client::new()
        .post(s.url("/api/request_vm"))
        .header("x-forwarded-for", client)
        .form(&form)
        .send()
        .await
        .expect("claim");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, response.text().await.expect("body"), retry)
}

#[tokio::test]
async fn claims_are_limited_per_network_and_per_address() {
    let s = TestServer::start_with(|c| {
        c.access.claims_per_network_per_minute = 3;
        c.access.claims_per_email_per_minute = 2;
    })
    .await;
    s.register_many(10).await;

    for n in 0..3 {
        let (status, _, _) =
            claim_from(&s, "198.51.100.7", &format!("p{n}@example.org"), &[]).await;
        assert_eq!(status, 200);
    }
    let (status, page, retry) = claim_from(&s, "198.51.100.7", "p9@example.org", &[]).await;
    assert_eq!(status, 429, "{page}");
    assert!(
        page.contains("Too many requests for a VM from here"),
        "{page}"
    );
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| (1..=60).contains(&s))));
    // Another network is not affected; IPv6 counts per /64.
    let (status, _, _) = claim_from(&s, "203.0.113.9", "p9@example.org", &[]).await;
    assert_eq!(status, 200);

    // Per address: a rejoin twice is fine, a third time within the minute is not.
    let (status, _, _) = claim_from(&s, "2001:db8::1", "p9@example.org", &[]).await;
    assert_eq!(status, 200);
    let (status, page, _) = claim_from(&s, "2001:db8::2", "p9@example.org", &[]).await;
    assert_eq!(status, 429, "{page}");
    let (status, _, _) = claim_from(&s, "2001:db8::3", "q@example.org", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(s.free_count().await, 10 - 5);
    let metrics = reqwest::get(s.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("lablink_claims_total{outcome=\"limited\"} 2"),
        "refusals are counted: {metrics}"
    );
}

#[tokio::test]
async fn a_join_code_and_an_allow_list_gate_the_claim() {
    let s = TestServer::start_with(|c| {
        c.access.join_code = "owl-42".into();
        c.access.allowed_emails = "@example.org, guest@other.org".into();
    })
    .await;
    s.register_many(3).await;
    let landing = reqwest::get(s.url("/"))
        .await
        .expect("landing")
        .text()
        .await
        .expect("html");
    assert!(
        landing.contains("name=\"join_code\""),
        "the form asks for the code"
    );

    let (status, page, _) = claim_from(&s, "198.51.100.1", "ada@example.org", &[]).await;
    assert_eq!(status, 400);
    assert!(
        page.contains("Enter the workshop&#x27;s join code")
            || page.contains("Enter the workshop's join code"),
        "{page}"
    );
    let (status, page, _) = claim_from(
        &s,
        "198.51.100.1",
        "ada@example.org",
        &[("join_code", "owl-41")],
    )
    .await;
    assert_eq!(status, 403);
    assert!(page.contains("not this workshop"), "{page}");
    let (status, page, _) = claim_from(
        &s,
        "198.51.100.1",
        "bob@evil.org",
        &[("join_code", "owl-42")],
    )
    .await;
    assert_eq!(status, 403);
    assert!(page.contains("not registered for this workshop"), "{page}");
    assert_eq!(s.free_count().await, 3, "refused claims take nothing");

    for email in ["Ada@Example.org", "guest@other.org"] {
        let (status, page, _) =
            claim_from(&s, "198.51.100.1", email, &[("join_code", " owl-42 ")]).await;
        assert_eq!(status, 200, "{email}: {page}");
    }
    assert_eq!(s.free_count().await, 1);
}

#[test]
fn allow_list_entries_are_checked() {
    let mut c = lablink::config::Config::default();
    c.access.allowed_emails = "@example.org, not-an-address".into();
    let problems = c.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "access.allowed_emails");
    assert!(problems[0].message.contains("not-an-address"));
    c.access.allowed_emails = "ada@example.org,@lab.example.org".into();
    c.access.join_code = "ab".into();
    let problems = c.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "access.join_code");
}
