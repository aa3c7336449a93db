//! The admin console over plain HTTP: sessions, CSRF, the sign-in limit, the reboot API,
//! token rotation, exports, live events and `lablink admin set-password`.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, Auth, TestServer, read_events_until, within};

/// A signed-in browser: its session cookie and the page's CSRF token.
pub(crate) struct Console {
    http: Client,
    base: String,
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("lablink_session="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn login(s: &TestServer, password: &str) -> reqwest::Response {
    login_as(s, ADMIN_USER, password).await
}

pub(crate) async fn login_as(s: &TestServer, user: &str, password: &str) -> reqwest::Response {
    crate::helpers::no_redirects()
        .post(s.url("/admin/login"))
        .form(&[
            ("username", user),
            ("password", password),
            ("next", "/admin/instances"),
        ])
        .send()
        .await
        .expect("POST /admin/login")
}

impl Console {
    pub(crate) async fn sign_in(s: &TestServer) -> Console {
        Console::sign_in_as(s, ADMIN_USER, ADMIN_PASSWORD).await
    }

    /// Signs in as `user` (the admin or an account).
    pub(crate) async fn sign_in_as(s: &TestServer, user: &str, password: &str) -> Console {
        let answer = login_as(s, user, password).await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        assert_eq!(answer.headers()[LOCATION], "/admin/instances");
        let set = answer
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("lablink_session="))
            .expect("a session cookie")
            .to_owned();
        assert!(set.contains("HttpOnly"), "{set}");
        assert!(set.contains("SameSite=Strict"), "{set}");
        assert!(set.contains("Max-Age=43200"), "{set}");
        let mut console = Console {
            http: crate::helpers::no_redirects(),
            base: s.base.clone(),
            cookie: session_cookie(&answer).expect("cookie"),
            csrf: String::new(),
        };
        let page = console.get("/admin/instances").await;
        assert_eq!(page.status(), StatusCode::OK);
        console.csrf = csrf_of(&page.text().await.expect("page"));
        console
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .header(ACCEPT, "text/html")
            .send()
            .await
            .expect("GET")
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(form)
            .send()
            .await
            .expect("POST")
    }
}

#[tokio::test]
async fn browsers_sign_in_and_forms_need_the_session_token() {
    let s = TestServer::start().await;
    within(60, "test", async {
        // Not signed in: a browser is sent to the form, a script gets upstream's challenge.
        let page = crate::helpers::no_redirects()
            .get(s.url("/admin/instances"))
            .header(ACCEPT, "text/html")
            .send()
            .await
            .expect("GET");
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            page.headers()[LOCATION],
            "/admin/login?next=%2Fadmin%2Finstances"
        );
        assert_eq!(s.get("/admin/instances", Auth::None).await.status, 401);

        let console = Console::sign_in(&s).await;
        // Signing in again from the same browser gives a new session id; the old one ends.
        let again = crate::helpers::no_redirects()
            .post(s.url("/admin/login"))
            .header(COOKIE, &console.cookie)
            .form(&[("username", ADMIN_USER), ("password", ADMIN_PASSWORD)])
            .send()
            .await
            .expect("POST /admin/login");
        assert_eq!(again.status(), StatusCode::SEE_OTHER);
        let renewed = session_cookie(&again).expect("a new session cookie");
        assert_ne!(renewed, console.cookie, "new id at sign-in");
        assert_eq!(
            console.get("/admin/audit").await.status(),
            StatusCode::SEE_OTHER
        );
        let console = Console::sign_in(&s).await;

        // A form post without the token, or with another one, is refused.
        let refused = console.post("/api/launch", &[("num_vms", "1")]).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let forged = console
            .post("/api/launch", &[("num_vms", "1"), ("csrf_token", "forged")])
            .await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        // With it, the manual provider answers for itself (it cannot launch).
        let csrf = console.csrf.clone();
        let accepted = console
            .post("/api/launch", &[("num_vms", "1"), ("csrf_token", &csrf)])
            .await;
        assert_eq!(accepted.status(), StatusCode::BAD_REQUEST);
        // The header form (htmx) works the same way.
        let header = console
            .http
            .post(s.url("/admin/token/rotate"))
            .header(COOKIE, &console.cookie)
            .header("x-csrf-token", "forged")
            .form(&[("confirm", "rotate")])
            .send()
            .await
            .expect("POST");
        assert_eq!(header.status(), StatusCode::FORBIDDEN);

        // HTTP Basic still works for scripts, without a token.
        s.admin_form("/destroy", &[], &[]).await.expect(404);

        // Sessions live in the store: they survive a restart.
        let s = s.restart(|_| {}).await;
        let console = Console {
            base: s.base.clone(),
            ..console
        };
        assert_eq!(console.get("/admin/audit").await.status(), StatusCode::OK);

        // A session in use is extended now and then (a save moves its expiry), not on
        // every request.
        let cookie = session_cookie(&login(&s, ADMIN_PASSWORD).await).expect("cookie");
        let fresh = Console {
            http: crate::helpers::no_redirects(),
            base: s.base.clone(),
            cookie,
            csrf: String::new(),
        };
        let first = fresh.get("/admin/audit").await;
        assert_eq!(first.status(), StatusCode::OK);
        assert!(
            session_cookie(&first).is_some(),
            "first use extends the session"
        );
        let second = fresh.get("/admin/audit").await;
        assert_eq!(second.status(), StatusCode::OK);
        assert!(
            session_cookie(&second).is_none(),
            "not saved again right away"
        );

        // Signing out ends the session for good, and its open live views with it.
        let live = console
            .http
            .get(s.url("/admin/events/pool?view=instances"))
            .header(COOKIE, &console.cookie)
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .expect("GET events");
        assert_eq!(live.status(), StatusCode::OK);
        let csrf = console.csrf.clone();
        let out = console
            .post("/admin/logout", &[("csrf_token", &csrf)])
            .await;
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        let ended = tokio::time::timeout(Duration::from_secs(10), live.text())
            .await
            .expect("the live view ends after sign-out");
        assert!(ended.is_ok());
        assert_eq!(
            console.get("/admin/audit").await.status(),
            StatusCode::SEE_OTHER
        );
        let audit = s.get("/admin/audit", Auth::admin()).await;
        assert_eq!(audit.status, 200);
        for action in ["login", "logout"] {
            assert!(audit.text.contains(action), "{}", audit.text);
        }
    })
    .await;
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_address() {
    let s = TestServer::start().await;
    within(60, "test", async {
        for _ in 0..5 {
            let answer = login(&s, "not-the-password").await;
            assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        }
        let locked = login(&s, ADMIN_PASSWORD).await;
        assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
        // Basic counts too, and is refused the same way.
        let basic = s.get("/api/schedule-destruction", Auth::admin()).await;
        assert_eq!(basic.status, 429);
        assert!(basic.text.contains("try again in"), "{}", basic.text);

        // Behind a trusted proxy (loopback by default), clients count by their own address.
        let via_proxy = |client: &'static str, password: &'static str| {
            let s = &s;
            async move {
                crate::helpers::no_redirects()
                    .post(s.url("/admin/login"))
                    .header("x-forwarded-for", client)
                    .form(&[("username", ADMIN_USER), ("password", password)])
                    .send()
                    .await
                    .expect("POST")
                    .status()
            }
        };
        for _ in 0..5 {
            assert_eq!(
                via_proxy("203.0.113.1", "nope").await,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            via_proxy("203.0.113.1", ADMIN_PASSWORD).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            via_proxy("203.0.113.2", ADMIN_PASSWORD).await,
            StatusCode::SEE_OTHER
        );
    })
    .await;
}

#[tokio::test]
async fn a_login_form_posted_from_another_site_is_refused() {
    let s = TestServer::start().await;
    let answer = crate::helpers::no_redirects()
        .post(s.url("/admin/login"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("username", ADMIN_USER), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn reboot_api_as_upstream() {
    let s = TestServer::start().await;
    within(60, "test", async {
        s.register_running("vm-1").await;
        let post = |body: serde_json::Value| {
            let s = &s;
            async move {
                let r = s
                    .client
                    .post(s.url("/api/reboot-vm"))
                    .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
                    .json(&body)
                    .send()
                    .await
                    .expect("POST");
                crate::helpers::Answer::read(r).await
            }
        };
        post(json!({}))
            .await
            .expect_error(400, "Hostname is required.");
        post(json!({"hostname": "vm-9"}))
            .await
            .expect_error(404, "VM not found.");
        // The manual provider cannot reboot: a 409 that says so.
        let failed = post(json!({"hostname": "vm-1"})).await;
        assert_eq!(failed.status, 409);
        assert!(
            failed.text.contains("Failed to initiate reboot"),
            "{}",
            failed.text
        );

        let info = s
            .get("/api/reboot-vm/vm-1", Auth::admin())
            .await
            .expect(200);
        assert_eq!(info["hostname"], "vm-1");
        assert_eq!(info["reboot_count"], 0);
        assert!(info["last_reboot_time"].is_null());
        s.get("/api/reboot-vm/vm-9", Auth::admin())
            .await
            .expect_error(404, "VM not found.");
        assert_eq!(s.get("/api/reboot-vm/vm-1", Auth::None).await.status, 401);
    })
    .await;
}

#[tokio::test]
async fn rotating_the_agent_token_refuses_the_old_one() {
    let s = TestServer::start().await;
    within(60, "test", async {
        let old = s.token().to_owned();
        let console = Console::sign_in(&s).await;
        let csrf = console.csrf.clone();
        let unconfirmed = console
            .post("/admin/token/rotate", &[("csrf_token", &csrf)])
            .await;
        assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
        let page = console
            .post(
                "/admin/token/rotate",
                &[("csrf_token", &csrf), ("confirm", "rotate")],
            )
            .await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("page");
        let start = html.find("id=\"new-token\">").expect("new token shown") + 15;
        let new = html[start..]
            .split('<')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(new.len(), 43, "{new}");
        assert_ne!(new, old);

        let status = json!({"hostname": "vm-1", "status": "running"});
        s.post_json("/api/vm-status", &status, Some(&old))
            .await
            .expect_error(401, "Invalid API token.");
        s.post_json("/api/vm-status", &status, Some(&new))
            .await
            .expect(200);
        let file = std::fs::read_to_string(s.dir.join("api-token")).expect("token file");
        assert_eq!(file.trim(), new);
        // Shown once: the page afterwards names only a fingerprint.
        let later = console
            .get("/admin/token")
            .await
            .text()
            .await
            .expect("page");
        assert!(!later.contains(&new));

        let s = s.restart(|_| {}).await;
        s.post_json("/api/vm-status", &status, Some(&new))
            .await
            .expect(200);
    })
    .await;
}

#[tokio::test]
async fn the_pool_exports_as_csv_and_json_without_credentials() {
    let s = TestServer::start().await;
    within(60, "test", async {
        s.register_running("vm-1").await;
        let claimed = s
            .claim(
                "ada@example.org",
                &crate::helpers::crd_command("4/0AExport"),
            )
            .await;
        assert_eq!(claimed.hostname(), "vm-1");
        let csv = s.get("/admin/export.csv", Auth::admin()).await;
        assert_eq!(csv.status, 200);
        assert!(
            csv.content_type.starts_with("text/csv"),
            "{}",
            csv.content_type
        );
        let mut lines = csv.text.lines();
        assert!(
            lines
                .next()
                .expect("header")
                .starts_with("hostname,status,gpu_health")
        );
        let row = lines.next().expect("row");
        assert!(row.starts_with("vm-1,running,"), "{row}");
        assert!(row.contains("ada@example.org"), "{row}");
        let pin = claimed.field("pin").expect("pin");
        assert!(!csv.text.contains(&pin) && !csv.text.contains("4/0AExport"));
        let json = s.get("/admin/export.json", Auth::admin()).await.expect(200);
        assert_eq!(json[0]["participant_email"], "ada@example.org");
        s.get("/admin/export.xml", Auth::admin()).await.expect(404);
    })
    .await;
}

#[tokio::test]
async fn exported_cells_never_start_a_spreadsheet_formula() {
    let s = TestServer::start().await;
    within(60, "test", async {
        s.register_running("vm-1").await;
        s.agent_post(
            "/api/gpu_health",
            &json!({"hostname": "vm-1", "gpu_status": "@SUM(1+1)*cmd|' /C calc'!A0"}),
        )
        .await
        .expect(200);
        let email = "=2+5+cmd@example.org";
        let claimed = s
            .claim(email, &crate::helpers::crd_command("4/0AFormula"))
            .await;
        assert_eq!(claimed.hostname(), "vm-1");

        let csv = s.get("/admin/export.csv", Auth::admin()).await;
        assert_eq!(csv.status, 200);
        let mut reader = csv::Reader::from_reader(csv.text.as_bytes());
        let header = reader.headers().expect("header").clone();
        let row = reader.records().next().expect("a row").expect("a record");
        let cell = |name: &str| {
            let at = header.iter().position(|h| h == name).expect(name);
            row[at].to_owned()
        };
        assert_eq!(cell("participant_email"), format!("'{email}"));
        assert_eq!(cell("gpu_health"), "'@SUM(1+1)*cmd|' /C calc'!A0");
        assert_eq!(cell("hostname"), "vm-1");
        // The JSON export is data for programs, not a spreadsheet: unchanged.
        let json = s.get("/admin/export.json", Auth::admin()).await.expect(200);
        assert_eq!(json[0]["participant_email"], email);
    })
    .await;
}

#[tokio::test]
async fn live_events_follow_the_pool_and_resume_a_run() {
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.machine.software = "ssetest".into();
    })
    .await;
    within(120, "test", async {
        let events = s
            .client
            .get(s.url("/admin/events/pool"))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .send()
            .await
            .expect("GET events");
        assert!(
            events.headers()[CONTENT_TYPE]
                .to_str()
                .expect("type")
                .starts_with("text/event-stream")
        );
        let launched = s
            .admin_form("/api/launch", &[("num_vms", "2")], &[])
            .await
            .expect(202);
        // The table arrives at once, then changes as the VM registers and runs.
        let seen = read_events_until(events, "data-status=\"running\"").await;
        assert!(seen.contains("event: counts"), "{seen}");
        assert!(seen.contains("event: instances"), "{seen}");

        let id = launched["run_id"].as_u64().expect("id");
        let (_, lines) = s.finished_run(id, 30).await;
        assert!(lines.len() >= 2, "{lines:?}");
        // Resuming after the first line sends the rest, then the end.
        let resumed = s
            .client
            .get(s.url(&format!("/admin/runs/{id}/events")))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .header("last-event-id", "1")
            .send()
            .await
            .expect("GET run events");
        let seen = read_events_until(resumed, "event: done").await;
        assert!(!seen.contains(&lines[0]), "line 0 sent again: {seen}");
        assert!(seen.contains("event: state"), "{seen}");
        assert!(seen.contains(&format!("id: {}", lines.len())), "{seen}");
    })
    .await;
}

#[tokio::test]
async fn set_password_changes_the_login_of_a_stopped_allocator() {
    let mut s = TestServer::start().await;
    let dir = s.dir.clone();
    s.stop().await;
    let file = dir.join("new-password");
    std::fs::write(&file, "brand-new-password\n").expect("write");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lablink"))
            .args(args)
            .output()
            .expect("run lablink")
    };
    let dir_arg = dir.display().to_string();
    let file_arg = file.display().to_string();
    let short = dir.join("short");
    std::fs::write(&short, "abc\n").expect("write");
    let refused = run(&[
        "admin",
        "set-password",
        "--data-dir",
        &dir_arg,
        "--password-file",
        &short.display().to_string(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let ok = run(&[
        "admin",
        "set-password",
        "--data-dir",
        &dir_arg,
        "--password-file",
        &file_arg,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // The configured password has not changed, so the new one stays in force.
    let s = s.restart(|_| {}).await;
    assert_eq!(
        login(&s, "brand-new-password").await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        login(&s, ADMIN_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A running allocator holds the store: the command says what to do.
    let busy = run(&[
        "admin",
        "set-password",
        "--data-dir",
        &dir_arg,
        "--password-file",
        &file_arg,
    ]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("stop it"));
}

#[tokio::test]
async fn a_new_configured_password_signs_every_browser_out() {
    let s = TestServer::start().await;
    within(60, "test", async {
        let console = Console::sign_in(&s).await;

        // The same configured password at the next start: the session goes on.
        let s = s.restart(|_| {}).await;
        let console = Console {
            base: s.base.clone(),
            ..console
        };
        assert_eq!(console.get("/admin/audit").await.status(), StatusCode::OK);

        // Another one: every browser signs in again, with the new password.
        let s = s
            .restart(|c| c.app.admin_password = Some("a-new-configured-password".into()))
            .await;
        let console = Console {
            base: s.base.clone(),
            ..console
        };
        let page = console.get("/admin/audit").await;
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert!(
            page.headers()[LOCATION]
                .to_str()
                .expect("location")
                .starts_with("/admin/login"),
            "{:?}",
            page.headers()
        );
        assert_eq!(
            login(&s, "a-new-configured-password").await.status(),
            StatusCode::SEE_OTHER
        );
        let audit = s
            .get(
                "/admin/audit",
                Auth::Basic(ADMIN_USER, "a-new-configured-password"),
            )
            .await;
        assert_eq!(audit.status, 200);
        assert!(
            audit
                .text
                .contains("admin password changed through the configuration; all sessions ended"),
            "{}",
            audit.text
        );
    })
    .await;
}

#[tokio::test]
async fn vendored_htmx_is_served_with_validators_and_pages_carry_the_csp() {
    let s = TestServer::start().await;
    let js = s
        .client
        .get(s.url("/assets/vendor/htmx.min.js"))
        .send()
        .await
        .expect("GET");
    assert_eq!(js.status(), StatusCode::OK);
    let etag = js.headers()["etag"].to_str().expect("etag").to_owned();
    assert!(
        js.headers()["cache-control"]
            .to_str()
            .expect("cc")
            .contains("max-age")
    );
    let again = s
        .client
        .get(s.url("/assets/vendor/htmx.min.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let page = s
        .client
        .get(s.url("/admin/login"))
        .send()
        .await
        .expect("GET");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
}

#[tokio::test]
async fn session_cookies_are_secure_behind_https() {
    let s = TestServer::start_with(|c| {
        c.provision.allocator_url = "https://lablink.example.org".into();
    })
    .await;
    assert_eq!(
        session_cookie_attributes(&s).await,
        [
            "HttpOnly",
            "Max-Age=43200",
            "Path=/",
            "SameSite=Strict",
            "Secure"
        ]
    );
}

/// Over plain HTTP a browser would drop a `Secure` cookie, so none is set there.
#[tokio::test]
async fn session_cookies_over_plain_http_are_not_secure() {
    let s = TestServer::start_with(|c| {
        c.provision.allocator_url = "http://127.0.0.1:8000".into();
    })
    .await;
    assert_eq!(
        session_cookie_attributes(&s).await,
        ["HttpOnly", "Max-Age=43200", "Path=/", "SameSite=Strict"]
    );
}

/// The attributes of the session cookie a real sign-in sets, as written, sorted.
async fn session_cookie_attributes(s: &TestServer) -> Vec<String> {
    let answer = login(s, ADMIN_PASSWORD).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let set = answer
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("lablink_session="))
        .expect("a session cookie")
        .to_owned();
    let mut attributes: Vec<String> = set
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .collect();
    attributes.sort();
    attributes
}

#[tokio::test]
async fn the_log_stream_follows_new_lines() {
    let s = TestServer::start().await;
    within(60, "test", async {
        s.register_running("vm-1").await;
        let console = Console::sign_in(&s).await;
        let page = console
            .get("/admin/logs/vm-1")
            .await
            .text()
            .await
            .expect("page");
        assert!(
            page.contains("/admin/logs/vm-1/events?cloud-init=0&amp;container=0"),
            "{page}"
        );
        let stream = console
            .http
            .get(s.url("/admin/logs/vm-1/events?cloud-init=0&container=0"))
            .header(COOKIE, &console.cookie)
            .send()
            .await
            .expect("GET events");
        assert_eq!(stream.status(), StatusCode::OK);
        s.agent_post(
            "/api/vm-logs",
            &json!({"log_group": "lablink-docker", "log_stream": "vm-1",
                    "messages": ["<b>desktop</b> started"]}),
        )
        .await
        .expect(200);
        let seen = read_events_until(stream, "started").await;
        assert!(seen.contains("event: container"), "{seen}");
        assert!(
            seen.contains("&lt;b&gt;desktop&lt;/b&gt; started"),
            "escaped: {seen}"
        );
        assert!(seen.contains("id: 0:1"), "{seen}");
        assert_eq!(
            console.get("/admin/logs/vm-9").await.status(),
            StatusCode::NOT_FOUND
        );
    })
    .await;
}

#[tokio::test]
async fn the_console_mints_and_revokes_vm_credentials() {
    // As shipped: per-VM credentials; a machine of the manual provider needs one minted.
    let s = TestServer::start_with(|c| c.access.shared_agent_token = false).await;
    within(60, "test", async {
        let console = Console::sign_in(&s).await;
        let csrf = console.csrf.clone();
        let bad = console
            .post(
                "/admin/token/mint",
                &[("csrf_token", &csrf), ("hostname", "lab pc")],
            )
            .await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let page = console
            .post(
                "/admin/token/mint",
                &[("csrf_token", &csrf), ("hostname", "lab-pc-7")],
            )
            .await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("page");
        let start = html
            .find("id=\"minted-credential\">")
            .expect("credential shown")
            + "id=\"minted-credential\">".len();
        let credential = html[start..]
            .split('<')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            credential.starts_with("lablink-vm:lab-pc-7:"),
            "{credential}"
        );
        let status = json!({"hostname": "lab-pc-7", "status": "running"});
        s.post_json("/api/vm-status", &status, Some(&credential))
            .await
            .expect(200);
        // Listed by name only, with a revoke form; shown once.
        let later = console
            .get("/admin/token")
            .await
            .text()
            .await
            .expect("page");
        assert!(
            later.contains("<td class=\"host\">lab-pc-7</td>"),
            "{later}"
        );
        assert!(!later.contains(&credential));
        let unconfirmed = console
            .post(
                "/admin/instances/lab-pc-7/revoke",
                &[("csrf_token", &csrf), ("confirm", "lab-pc")],
            )
            .await;
        assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
        let revoked = console
            .post(
                "/admin/instances/lab-pc-7/revoke",
                &[("csrf_token", &csrf), ("confirm", "lab-pc-7")],
            )
            .await;
        assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
        s.post_json("/api/vm-status", &status, Some(&credential))
            .await
            .expect_error(401, "Invalid API token.");
        assert!(s.stored_vm("lab-pc-7").await.is_none());
    })
    .await;
}

const OPEN_CLAIMS: &str = "Anyone who reaches this page can take seats with made-up e-mail \
                           addresses: set access.join_code or access.allowed_emails.";

#[tokio::test]
async fn the_dashboard_warns_while_anyone_who_reaches_it_can_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    within(60, "test", async {
        // On loopback (the test servers), nobody else reaches the participant page.
        let mut s = TestServer::start_in(dir.path(), |_| {}).await;
        let page = s.get("/admin", Auth::admin()).await;
        assert_eq!(page.status, 200);
        assert!(page.text.contains("Dashboard"), "{}", page.text);
        assert!(!page.text.contains(OPEN_CLAIMS), "{}", page.text);
        s.stop().await;

        // On every address, with neither gate: the warning.
        let mut s = TestServer::start_on(dir.path(), "0.0.0.0:0", |_| {}).await;
        let page = s.get("/admin", Auth::admin()).await;
        assert!(page.text.contains(OPEN_CLAIMS), "{}", page.text);
        s.stop().await;

        // A join code, or an allow-list, is a gate.
        let mut s = TestServer::start_on(dir.path(), "0.0.0.0:0", |c| {
            c.access.join_code = "owl-41".into();
        })
        .await;
        let page = s.get("/admin", Auth::admin()).await;
        assert!(!page.text.contains(OPEN_CLAIMS), "{}", page.text);
        s.stop().await;
        let s = TestServer::start_on(dir.path(), "0.0.0.0:0", |c| {
            c.access.allowed_emails = "@example.org".into();
        })
        .await;
        let page = s.get("/admin", Auth::admin()).await;
        assert!(!page.text.contains(OPEN_CLAIMS), "{}", page.text);
    })
    .await;
}
