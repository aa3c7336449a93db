//! Helper accounts: what a helper sees and may do (the console, its live stream, peeking
//! at and taking over a desktop) and what they are refused (403, naming what helpers may
//! not do); the admin managing accounts through the console, the API and `lablink
//! accounts`; passwords kept as Argon2 hashes only; the audit log; sessions ending with
//! the account or its password.

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::desktop::{FakeAgent, browser_server, claim, open_in_background, register_running};
use crate::helpers::{
    ADMIN_USER, Answer, Auth, TestServer, admin_cli_env, free_port, read_events_until, run_binary,
    succeeded, within,
};
use crate::ui::{Console, login_as};

const HELPER: &str = "maria";
const HELPER_PASSWORD: &str = "correct horse battery staple";

/// `POST /api/accounts` as the admin (Basic).
async fn add_helper(s: &TestServer, name: &str, password: &str) -> Answer {
    s.admin_json(
        Method::POST,
        "/api/accounts",
        Some(json!({"name": name, "role": "helper", "password": password})),
    )
    .await
}

/// The account `name` as `GET /api/accounts` lists it.
async fn listed(s: &TestServer, name: &str) -> Option<Value> {
    let list = s.get("/api/accounts", Auth::admin()).await.expect(200);
    list["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
}

/// A console request as a signed-in browser, with the session's CSRF token in the header
/// (as htmx sends it) and a JSON body.
async fn console_json(
    console: &Console,
    s: &TestServer,
    method: Method,
    path: &str,
    body: Value,
) -> Answer {
    let cookie = console_cookie(console);
    let response = s
        .client
        .request(method, s.url(path))
        .header(reqwest::header::COOKIE, cookie)
        .header("x-csrf-token", &console.csrf)
        .header(ACCEPT, "application/json")
        .json(&body)
        .send()
        .await
        .expect("request");
    Answer::read(response).await
}

fn console_cookie(console: &Console) -> String {
    console.cookie.clone()
}

/// A console form POST with the session's CSRF token; the status and body.
async fn console_form(
    console: &Console,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut fields = vec![("csrf_token", console.csrf.as_str())];
    fields.extend_from_slice(form);
    let response = console.post(path, &fields).await;
    let status = response.status();
    (status, response.text().await.expect("body"))
}

/// Whether the console page at `path` is shown (200) or the browser is sent to sign in.
async fn page_status(console: &Console, path: &str) -> (StatusCode, String) {
    let response = console.get(path).await;
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await.expect("body");
    (status, if location.is_empty() { body } else { location })
}

#[track_caller]
fn refused_as_helper(what: &str, status: u16, body: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    assert!(
        body.contains("helper account") && body.contains("may not launch"),
        "{what}: the refusal names what helpers may not do: {body}"
    );
}

#[tokio::test]
async fn a_helper_sees_the_console_and_is_refused_what_only_the_admin_may_do() {
    let s = TestServer::start().await;
    within(90, "test", async {
        register_running(&s, "vm-1").await;
        let seated = s
            .claim("ada@example.org", &crate::helpers::crd_command("4/0Ok"))
            .await;
        assert_eq!(seated.status, StatusCode::OK, "{}", seated.html);
        add_helper(&s, HELPER, HELPER_PASSWORD).await.expect(201);
        let helper = Console::sign_in_as(&s, HELPER, HELPER_PASSWORD).await;

        // The pages a helper may see, without the buttons they may not use.
        let (status, instances) = page_status(&helper, "/admin/instances").await;
        assert_eq!(status, 200, "{instances}");
        assert!(instances.contains("maria (helper)"), "{instances}");
        assert!(instances.contains("/admin/logs/vm-1"), "{instances}");
        for hidden in [
            "/admin/instances/vm-1/reboot",
            "/admin/instances/vm-1/release",
            "/api/vms/vm-1/destroy",
            "href=\"/admin/api-tokens\"",
            "href=\"/admin/accounts\"",
            "href=\"/admin/create\"",
        ] {
            assert!(
                !instances.contains(hidden),
                "{hidden} shown to a helper: {instances}"
            );
        }
        for page in [
            "/admin",
            "/admin/event",
            "/admin/waitlist",
            "/admin/scheduled-destruction",
            "/admin/logs/vm-1",
        ] {
            let (status, body) = page_status(&helper, page).await;
            assert_eq!(status, 200, "{page}: {body}");
        }
        let (_, schedules) = page_status(&helper, "/admin/scheduled-destruction").await;
        assert!(
            !schedules.contains("action=\"/admin/scheduled-destruction\""),
            "{schedules}"
        );
        // The admin's own view of the same page has the buttons.
        let admin = Console::sign_in(&s).await;
        let (_, admin_view) = page_status(&admin, "/admin/instances").await;
        assert!(
            admin_view.contains("/admin/instances/vm-1/release"),
            "{admin_view}"
        );
        assert!(
            admin_view.contains("href=\"/admin/accounts\""),
            "{admin_view}"
        );

        // The live stream of the pool.
        let stream = s
            .client
            .get(s.url("/admin/events/pool?view=instances"))
            .header(reqwest::header::COOKIE, console_cookie(&helper))
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .expect("events");
        assert_eq!(stream.status(), 200);
        let seen = within(
            20,
            "the pool stream",
            read_events_until(stream, "event: instances"),
        )
        .await;
        assert!(seen.contains("vm-1"), "{seen}");
        assert!(!seen.contains("/admin/instances/vm-1/release"), "{seen}");

        // Admin-only pages answer a page saying why.
        for page in [
            "/admin/api-tokens",
            "/admin/accounts",
            "/admin/token",
            "/admin/audit",
            "/admin/create",
            "/admin/rescues",
            "/admin/export-sessions.csv",
        ] {
            let (status, body) = page_status(&helper, page).await;
            refused_as_helper(page, status.as_u16(), &body);
        }

        // Every action of the admin's, through the console (session + CSRF) …
        let forms: [(&str, &[(&str, &str)]); 8] = [
            ("/admin/instances/vm-1/reboot", &[]),
            ("/admin/instances/vm-1/release", &[("confirm", "vm-1")]),
            ("/admin/instances/vm-1/move", &[]),
            ("/admin/api-tokens", &[("name", "mine"), ("scope", "admin")]),
            (
                "/admin/accounts",
                &[("name", "ben"), ("password", HELPER_PASSWORD)],
            ),
            ("/admin/accounts/maria/remove", &[]),
            (
                "/admin/scheduled-destruction",
                &[
                    ("schedule_name", "x"),
                    ("destruction_time", "2099-01-01T00:00"),
                ],
            ),
            ("/admin/token/rotate", &[]),
        ];
        for (path, form) in forms {
            let (status, body) = console_form(&helper, path, form).await;
            refused_as_helper(path, status.as_u16(), &body);
        }
        let api: [(Method, &str, Value); 8] = [
            (Method::POST, "/api/launch", json!({"num_vms": 1})),
            (Method::POST, "/destroy", json!({})),
            (Method::POST, "/api/vms/vm-1/destroy", json!({})),
            (Method::POST, "/api/vms/vm-1/release", json!({})),
            (
                Method::POST,
                "/api/admin-tokens",
                json!({"name": "mine", "scope": "admin"}),
            ),
            (
                Method::POST,
                "/api/accounts",
                json!({"name": "ben", "password": HELPER_PASSWORD}),
            ),
            (Method::DELETE, "/api/accounts/maria", json!({})),
            (Method::POST, "/api/reboot-vm", json!({"hostname": "vm-1"})),
        ];
        for (method, path, body) in api {
            let answer = console_json(&helper, &s, method, path, body).await;
            refused_as_helper(path, answer.status.as_u16(), &answer.text);
        }
        // … and with the helper's name and password over HTTP Basic.
        let helper_basic = Auth::Basic(HELPER, HELPER_PASSWORD);
        assert_eq!(s.get("/api/vms", helper_basic).await.status, 403);
        for path in [
            "/api/backup",
            "/api/accounts",
            "/api/scp-client",
            "/api/vm-logs/vm-1",
        ] {
            let answer = s.get(path, helper_basic).await;
            refused_as_helper(path, answer.status.as_u16(), &answer.text);
        }
        let launch = helper_basic
            .apply(s.client.post(s.url("/api/launch")))
            .form(&[("num_vms", "1")])
            .send()
            .await
            .expect("POST");
        let launch = Answer::read(launch).await;
        refused_as_helper("Basic /api/launch", launch.status.as_u16(), &launch.text);

        // Nothing happened: the seat is held, no run, no token, no other account.
        let vm = s.stored_vm("vm-1").await.expect("vm-1");
        assert_eq!(
            vm.assignment.expect("still seated").email,
            "ada@example.org"
        );
        assert!(
            s.get("/api/runs", Auth::admin()).await.expect(200)["runs"]
                .as_array()
                .expect("runs")
                .is_empty()
        );
        assert!(
            s.get("/api/admin-tokens", Auth::admin()).await.expect(200)["tokens"]
                .as_array()
                .expect("tokens")
                .is_empty()
        );
        assert!(listed(&s, "ben").await.is_none());
        assert!(listed(&s, HELPER).await.is_some());

        // Signing out works for a helper too.
        let (status, _) = console_form(&helper, "/admin/logout", &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, location) = page_status(&helper, "/admin").await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::SEE_OTHER, "/admin/login?next=%2Fadmin")
        );
    })
    .await;
}

#[tokio::test]
async fn a_helper_peeks_at_and_takes_over_a_desktop_and_the_audit_log_names_them() {
    let s = browser_server("browser").await;
    within(60, "test", async {
        register_running(&s, "vm-1").await;
        let (answer, _) = claim(&s, &[("email", "ada@example.org")]).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        add_helper(&s, HELPER, HELPER_PASSWORD).await.expect(201);
        let helper = Console::sign_in_as(&s, HELPER, HELPER_PASSWORD).await;
        let (status, page) = page_status(&helper, "/admin/desktop/vm-1?control=1").await;
        assert_eq!(status, 200, "{page}");

        let mut agent = FakeAgent::connect(&s, "vm-1").await;
        for (query, view_only) in [("", true), ("?control=1", false)] {
            let opening = open_in_background(
                &s,
                &format!("/admin/desktop/vm-1/ws{query}"),
                ("cookie", console_cookie(&helper)),
            );
            let open = agent.next_open().await;
            assert_eq!(open["view_only"], view_only, "{query}");
            let _tunnel = agent.tunnel(&s, open["id"].as_str().expect("id")).await;
            let mut socket = opening.await.expect("join").expect("the helper's socket");
            socket.close(None).await.expect("close");
            while socket.next().await.is_some() {}
        }
        let audit = s.recent_audit(20).await;
        let by_helper: Vec<&str> = audit
            .iter()
            .filter(|e| e.actor == HELPER)
            .map(|e| e.action.as_str())
            .collect();
        assert!(by_helper.contains(&"login"), "{audit:?}");
        assert!(
            by_helper.iter().filter(|a| a.contains("desktop")).count() >= 2,
            "both openings are audited under the helper's name: {audit:?}"
        );

        // A helper removed while driving a desktop loses it at once.
        let opening = open_in_background(
            &s,
            "/admin/desktop/vm-1/ws?control=1",
            ("cookie", console_cookie(&helper)),
        );
        let open = agent.next_open().await;
        let _tunnel = agent.tunnel(&s, open["id"].as_str().expect("id")).await;
        let mut socket = opening.await.expect("join").expect("the helper's socket");
        s.admin_json(Method::DELETE, "/api/accounts/maria", None)
            .await
            .expect(200);
        within(10, "the removed helper's view to end", async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, tokio_tungstenite::tungstenite::Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn the_admin_adds_resets_and_removes_helpers_in_the_console_and_the_api() {
    let s = TestServer::start().await;
    within(90, "test", async {
        let admin = Console::sign_in(&s).await;
        let (status, page) = page_status(&admin, "/admin/accounts").await;
        assert_eq!(status, 200);
        assert!(page.contains("No accounts besides the admin"), "{page}");

        // The console's form needs the session's CSRF token.
        let no_token = admin
            .post("/admin/accounts", &[("name", HELPER), ("password", HELPER_PASSWORD)])
            .await;
        assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
        let (status, page) = console_form(&admin, "/admin/accounts", &[("name", HELPER), ("role", "helper"), ("password", HELPER_PASSWORD)]).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("Account &quot;maria&quot; (helper) created"), "{page}");
        assert!(page.contains("id=\"account-maria\""), "{page}");

        // Kept as an Argon2 hash only.
        let stored = s
            .app
            .store
            .read(|tx| lablink::store::accounts::get(tx, HELPER))
            .await
            .expect("read")
            .expect("stored");
        assert!(stored.password_hash.starts_with("$argon2id$"), "{}", stored.password_hash);
        assert!(lablink::pool::accounts::verify_password(HELPER_PASSWORD, &stored.password_hash));
        let file = std::fs::read(s.dir.join(lablink::store::FILE_NAME)).expect("store file");
        assert!(
            !file.windows(HELPER_PASSWORD.len()).any(|w| w == HELPER_PASSWORD.as_bytes()),
            "the password is nowhere in the store"
        );
        let listed_json = s.get("/api/accounts", Auth::admin()).await;
        assert!(!listed_json.text.contains("argon2"), "{}", listed_json.text);

        // Bad input is named.
        add_helper(&s, HELPER, HELPER_PASSWORD).await.expect_error(409, "name: an account named \"maria\" exists already; choose another name, or give it a new password");
        add_helper(&s, ADMIN_USER, HELPER_PASSWORD).await.expect_error(409, "name: \"admin\" is the admin's user name (app.admin_user); choose another name");
        add_helper(&s, "ben", "short").await.expect_error(400, "password: at least 12 characters (this one has 5)");
        add_helper(&s, "ben", "").await.expect_error(400, "password: at least 12 characters (this one has 0)");
        add_helper(&s, "bennet", "my-Bennet-password").await.expect_error(400, "password: it must not contain the account's name");
        add_helper(&s, "b n", HELPER_PASSWORD).await.expect_error(400, "name: letters, digits, '.', '_', '-' and '@' only (not ' ')");
        s.admin_json(Method::POST, "/api/accounts", Some(json!({"name": "ben", "role": "admin", "password": HELPER_PASSWORD})))
            .await
            .expect_error(400, "role: give one of helper (not \"admin\"); the admin is the one from the configuration.");
        s.admin_json(Method::DELETE, "/api/accounts/nobody", None)
            .await
            .expect_error(404, "No account named \"nobody\" (`lablink accounts list` shows them).");
        s.admin_json(Method::POST, "/api/accounts/nobody/password", Some(json!({"password": HELPER_PASSWORD})))
            .await
            .expect_error(404, "No account named \"nobody\" (`lablink accounts list` shows them).");
        let (status, page) = console_form(&admin, "/admin/accounts", &[("name", HELPER), ("password", HELPER_PASSWORD)]).await;
        assert_eq!(status, 409, "{page}");
        assert!(page.contains("exists already"), "{page}");

        // An admin-scope API token may list accounts, not change them.
        let token = s
            .admin_json(Method::POST, "/api/admin-tokens", Some(json!({"name": "ci", "scope": "admin"})))
            .await
            .expect(201)["token"]
            .as_str()
            .expect("token")
            .to_owned();
        assert_eq!(s.get("/api/accounts", Auth::Bearer(&token)).await.status, 200);
        let by_token = Answer::read(
            s.client
                .post(s.url("/api/accounts"))
                .bearer_auth(&token)
                .json(&json!({"name": "ben", "password": HELPER_PASSWORD}))
                .send()
                .await
                .expect("POST"),
        )
        .await;
        by_token.expect_error(403, "An API token (here \"ci\") cannot create, change or remove accounts; use the admin password or the console.");

        // The helper signs in (the list shows when), over the form and over Basic.
        let helper = Console::sign_in_as(&s, HELPER, HELPER_PASSWORD).await;
        let account = listed(&s, HELPER).await.expect("listed");
        assert!(account["last_sign_in_at"].is_string(), "{account}");
        assert_eq!(account["last_sign_in_from"], "127.0.0.1");
        assert_eq!(account["created_by"], ADMIN_USER);
        assert_eq!(s.get("/admin", Auth::Basic(HELPER, HELPER_PASSWORD)).await.status, 200);
        let wrong = login_as(&s, HELPER, "not the password at all").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

        // A new password (console form): the helper's session ends, the old password fails.
        let new_password = "a different long secret";
        let (status, _) = console_form(&admin, "/admin/accounts/maria/password", &[("password", new_password)]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, location) = page_status(&helper, "/admin/instances").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        assert!(location.starts_with("/admin/login"), "{location}");
        assert_eq!(login_as(&s, HELPER, HELPER_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(s.get("/admin", Auth::Basic(HELPER, HELPER_PASSWORD)).await.status, 401);
        let helper = Console::sign_in_as(&s, HELPER, new_password).await;
        // A weak new password is refused, naming why.
        s.admin_json(Method::POST, "/api/accounts/maria/password", Some(json!({"password": "tiny"})))
            .await
            .expect_error(400, "password: at least 12 characters (this one has 4)");

        // Removed (API): the session ends at once, the password no longer signs in.
        let removed = s.admin_json(Method::DELETE, "/api/accounts/maria", None).await.expect(200);
        assert_eq!(removed["message"], "Account \"maria\" removed; its console sessions ended.");
        let (status, _) = page_status(&helper, "/admin/instances").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(s.get("/admin", Auth::Basic(HELPER, new_password)).await.status, 401);
        assert!(listed(&s, HELPER).await.is_none());

        // Removed (console form) after adding it again through the API.
        add_helper(&s, "ben", HELPER_PASSWORD).await.expect(201);
        let (status, _) = console_form(&admin, "/admin/accounts/ben/remove", &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(listed(&s, "ben").await.is_none());

        let audit = s.recent_audit(50).await;
        let actions: Vec<(&str, &str)> = audit.iter().map(|e| (e.actor.as_str(), e.action.as_str())).collect();
        for action in ["create-account", "reset-account-password", "remove-account"] {
            assert!(actions.contains(&(ADMIN_USER, action)), "{action} audited: {actions:?}");
        }
        let reset = audit.iter().find(|e| e.action == "reset-account-password").expect("reset");
        assert!(reset.detail.contains("1 console session(s) ended"), "{}", reset.detail);
        assert!(
            audit.iter().all(|e| !e.detail.contains(HELPER_PASSWORD) && !e.detail.contains(new_password)),
            "no password in the audit log"
        );
    })
    .await;
}

/// `lablink accounts …` against `s`, with `stdin` piped in when given.
async fn accounts_cli(
    s: &TestServer,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lablink"));
    cmd.arg("accounts")
        .args(args)
        .args(["--url", &s.base])
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn lablink");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    within(
        30,
        &format!("lablink accounts {}", args.join(" ")),
        child.wait_with_output(),
    )
    .await
    .expect("run lablink")
}

#[track_caller]
fn failed_with(out: &std::process::Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "stderr: {stderr}");
}

#[tokio::test]
async fn lablink_accounts_manages_helpers_from_the_command_line() {
    let s = TestServer::start().await;
    within(120, "test", async {
        let admin = admin_cli_env();
        let with_password = [admin[0], ("LABLINK_ACCOUNT_PASSWORD", HELPER_PASSWORD)];
        let out = accounts_cli(&s, &["add", HELPER], &with_password, None).await;
        assert_eq!(
            succeeded(&out).trim(),
            "Account \"maria\" (helper) created."
        );
        // From stdin, as a password manager pipes it.
        let out = accounts_cli(
            &s,
            &["add", "ben", "--json"],
            &admin,
            Some("piped in password\n"),
        )
        .await;
        let made: Value = serde_json::from_str(&succeeded(&out)).expect("json");
        assert_eq!(
            (made["name"].as_str(), made["role"].as_str()),
            (Some("ben"), Some("helper"))
        );
        assert_eq!(
            s.get("/admin", Auth::Basic("ben", "piped in password"))
                .await
                .status,
            200
        );

        let out = accounts_cli(&s, &["list"], &admin, None).await;
        let table = succeeded(&out);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(
            table.contains("maria") && table.contains("ben") && table.contains("helper"),
            "{table}"
        );
        let out = accounts_cli(&s, &["--json"], &admin, None).await;
        let listed: Value = serde_json::from_str(&succeeded(&out)).expect("json");
        assert_eq!(listed["accounts"].as_array().expect("accounts").len(), 2);

        // Bad input: usage errors (2) before anything is sent; refusals (1); credentials (3);
        // nobody there (4).
        failed_with(
            &accounts_cli(&s, &["add", HELPER], &with_password, None).await,
            1,
            "exists already",
        );
        failed_with(
            &accounts_cli(&s, &["add", "cleo"], &admin, Some("short\n")).await,
            2,
            "password: at least 12 characters",
        );
        failed_with(
            &accounts_cli(&s, &["add", "cleo"], &admin, Some("")).await,
            2,
            "password: at least 12 characters (this one has 0)",
        );
        failed_with(
            &accounts_cli(&s, &["add", "cl o"], &with_password, None).await,
            2,
            "NAME: letters, digits",
        );
        failed_with(
            &accounts_cli(
                &s,
                &["add", "cleo", "--role", "admin"],
                &with_password,
                None,
            )
            .await,
            2,
            "--role admin: give one of helper",
        );
        failed_with(
            &accounts_cli(&s, &["remove", "nobody"], &admin, None).await,
            1,
            "No account named \"nobody\"",
        );
        failed_with(
            &accounts_cli(&s, &["password", "nobody"], &with_password, None).await,
            1,
            "No account named \"nobody\"",
        );
        let wrong = [
            ("LABLINK_APP_ADMIN_PASSWORD", "not-the-admin-password"),
            ("LABLINK_ACCOUNT_PASSWORD", HELPER_PASSWORD),
        ];
        failed_with(
            &accounts_cli(&s, &["add", "cleo"], &wrong, None).await,
            3,
            "lablink accounts:",
        );
        let as_helper = [
            ("LABLINK_APP_ADMIN_USER", HELPER),
            ("LABLINK_APP_ADMIN_PASSWORD", HELPER_PASSWORD),
        ];
        failed_with(
            &accounts_cli(&s, &["list"], &as_helper, None).await,
            3,
            "helper account",
        );
        let nobody = format!("http://127.0.0.1:{}", free_port());
        let out = run_binary(&["accounts", "list", "--url", &nobody], &admin, 30).await;
        failed_with(&out, 4, "cannot connect");
        assert!(
            listed_names(&s).await == ["ben", "maria"],
            "nothing changed by the failures"
        );

        // A new password, then removal.
        let new_password = [
            admin[0],
            ("LABLINK_ACCOUNT_PASSWORD", "another long secret"),
        ];
        let out = accounts_cli(&s, &["password", HELPER], &new_password, None).await;
        assert!(succeeded(&out).contains("has a new password"));
        assert_eq!(
            s.get("/admin", Auth::Basic(HELPER, "another long secret"))
                .await
                .status,
            200
        );
        assert_eq!(
            s.get("/admin", Auth::Basic(HELPER, HELPER_PASSWORD))
                .await
                .status,
            401
        );
        let out = accounts_cli(&s, &["remove", HELPER], &admin, None).await;
        assert_eq!(
            succeeded(&out).trim(),
            "Account \"maria\" removed; its console sessions ended."
        );
        assert_eq!(listed_names(&s).await, ["ben"]);
        // The password was read, never shown.
        let audit = s.recent_audit(50).await;
        assert!(audit.iter().all(|e| !e.detail.contains(HELPER_PASSWORD)));
    })
    .await;
}

async fn listed_names(s: &TestServer) -> Vec<String> {
    let list = s.get("/api/accounts", Auth::admin()).await.expect(200);
    list["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The admin adds a helper on the Accounts page; the helper, in a browser of their own,
/// sees the instances update live without the admin's buttons, and is told why an
/// admin-only page is closed to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
async fn accounts_and_a_helper_in_real_browsers() {
    use crate::browser::{
        browser, click, fill, require_browser, shoot, start_driver, wait_css, wait_text,
    };
    require_browser();
    let s = TestServer::start().await;
    let driver = start_driver().await;
    within(240, "accounts in browsers", async {
        register_running(&s, "vm-1").await;
        let base = s.base.clone();
        let admin = browser(&driver, 1400, 900).await;
        crate::browser::sign_in(&admin, &base, crate::helpers::ADMIN_PASSWORD).await;
        admin
            .goto(&format!("{base}/admin/accounts"))
            .await
            .expect("accounts");
        fill(&admin, "#account-name", HELPER).await;
        fill(&admin, "#account-password", HELPER_PASSWORD).await;
        click(&admin, "form[action='/admin/accounts'] button[type=submit]").await;
        wait_text(&admin, "p.ok", "created").await;
        wait_css(&admin, "#account-maria").await;
        shoot(&admin, "60-accounts").await;

        let helper = browser(&driver, 1400, 900).await;
        helper
            .goto(&format!("{base}/admin/login?next=/admin/instances"))
            .await
            .expect("login");
        fill(&helper, "#username", HELPER).await;
        fill(&helper, "#password", HELPER_PASSWORD).await;
        click(&helper, "form button[type=submit]").await;
        wait_text(&helper, "span.who", "maria (helper)").await;
        wait_css(&helper, "#vm-vm-1").await;
        // A participant sits down: the helper's table shows it by itself.
        let seated = s
            .claim("ada@example.org", &crate::helpers::crd_command("4/0Live"))
            .await;
        assert_eq!(seated.status, StatusCode::OK, "{}", seated.html);
        wait_text(&helper, "#vm-vm-1 td.assignee", "ada@example.org").await;
        let source = helper.source().await.expect("source");
        for hidden in [
            "/admin/instances/vm-1/release",
            "/admin/instances/vm-1/reboot",
            "/api/vms/vm-1/destroy",
        ] {
            assert!(!source.contains(hidden), "{hidden} shown to a helper");
        }
        assert!(
            source.contains("/admin/desktop/vm-1") || source.contains("/admin/logs/vm-1"),
            "the helper's links are there"
        );
        shoot(&helper, "61-helper-instances").await;

        helper
            .goto(&format!("{base}/admin/api-tokens"))
            .await
            .expect("tokens page");
        wait_text(&helper, "p.error", "is a helper account").await;
        shoot(&helper, "62-helper-refused").await;
        helper.close().await.expect("close");
        admin.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn a_session_that_outlived_its_password_is_refused() {
    let s = TestServer::start().await;
    within(60, "test", async {
        add_helper(&s, HELPER, HELPER_PASSWORD).await.expect(201);
        let helper = Console::sign_in_as(&s, HELPER, HELPER_PASSWORD).await;
        assert_eq!(page_status(&helper, "/admin").await.0, StatusCode::OK);
        // The password changes while the session stays in the store (as when a request of
        // the helper's saved it again just after the reset deleted it).
        let hash = lablink::pool::accounts::hash_password("yet another long secret").expect("hash");
        s.app
            .store
            .write(move |tx| {
                lablink::store::accounts::update(tx, HELPER, |a| a.password_hash = hash)?;
                Ok(())
            })
            .await
            .expect("write");
        let (status, location) = page_status(&helper, "/admin").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        assert!(location.starts_with("/admin/login"), "{location}");
    })
    .await;
}
