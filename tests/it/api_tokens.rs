//! Admin API tokens: stored hashed, scoped, audited under their name, revoked at once,
//! their last use kept; the console page; `lablink login`/`logout` and the commands that
//! then sign in with the stored token; the renamed password variable.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_PASSWORD, Answer, Auth, TestServer, run_binary, wait_for, within};
use crate::ui::Console;

/// `POST /api/admin-tokens` with the password; the answer.
async fn create(s: &TestServer, name: &str, scope: &str) -> Value {
    s.admin_json(
        Method::POST,
        "/api/admin-tokens",
        Some(json!({"name": name, "scope": scope})),
    )
    .await
    .expect(201)
}

/// A request with `Authorization: Bearer <token>`.
async fn with_token(
    s: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Answer {
    let mut request = s.client.request(method, s.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    Answer::read(request.send().await.expect("request")).await
}

/// `GET /api/admin-tokens` with the password: the token named `name`.
async fn listed(s: &TestServer, name: &str) -> Option<Value> {
    let list = s.get("/api/admin-tokens", Auth::admin()).await.expect(200);
    list["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
}

async fn stored_tokens(s: &TestServer) -> Vec<lablink::model::AdminToken> {
    s.app
        .store
        .read(lablink::store::admin_tokens::list)
        .await
        .expect("read the tokens")
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn tokens_are_hashed_scoped_audited_and_revoked_at_once() {
    let s = TestServer::start().await;
    within(60, "test", async {
        let monitor = create(&s, "monitor", "read_only").await;
        let ci = create(&s, "ci", "admin").await;
        let (monitor_token, ci_token) = (
            monitor["token"].as_str().expect("token"),
            ci["token"].as_str().expect("token"),
        );
        assert!(ci_token.starts_with("lablink_at_") && ci_token.len() >= 11 + 43);
        assert_eq!(ci["scope"], "admin");
        assert_ne!(monitor["id"], ci["id"]);

        // Refusals name what to fix.
        let again = json!({"name": "ci", "scope": "read_only"});
        s.admin_json(Method::POST, "/api/admin-tokens", Some(again))
            .await
            .expect_error(
                409,
                "name: an API token named \"ci\" exists already; choose another name or revoke that one",
            );
        let bad_scope = json!({"name": "x", "scope": "root"});
        s.admin_json(Method::POST, "/api/admin-tokens", Some(bad_scope))
            .await
            .expect_error(400, "scope: give \"read_only\" or \"admin\" (not \"root\").");
        let no_name = json!({"name": " ", "scope": "admin"});
        s.admin_json(Method::POST, "/api/admin-tokens", Some(no_name))
            .await
            .expect_error(400, "name: give the token a name (what uses it, e.g. \"ci\")");

        // Read-only: reads, and nothing else.
        with_token(&s, Method::GET, "/api/vms", monitor_token, None)
            .await
            .expect(200);
        let mint = json!({"hostname": "lab-pc-1"});
        with_token(
            &s,
            Method::POST,
            "/api/vm-credentials",
            monitor_token,
            Some(mint.clone()),
        )
        .await
        .expect_error(
            403,
            "The API token \"monitor\" has the read_only scope: it may only make GET and HEAD \
             requests. Use an admin-scope token (or the password) for changes.",
        );
        // Nor the reads that hand out secrets, participants' files or screens, or act.
        for (path, what) in [
            ("/api/backup", "download a backup"),
            ("/api/scp-client", "collect participants' data"),
            ("/admin/rescues/all.zip", "download participants' files"),
            ("/admin/rescues/1", "download participants' files"),
            ("/admin/desktop/lab-vm-1/ws", "watch or take over"),
        ] {
            let refused = with_token(&s, Method::GET, path, monitor_token, None).await;
            assert_eq!(refused.status, 403, "{path}: {}", refused.text);
            assert!(refused.text.contains(what), "{path}: {}", refused.text);
        }
        let backup = s
            .client
            .get(s.url("/api/backup"))
            .bearer_auth(ci_token)
            .send()
            .await
            .expect("backup");
        assert_eq!(backup.status(), 200, "an admin-scope token may");
        // Admin: changes, audited under the token's name.
        with_token(&s, Method::POST, "/api/vm-credentials", ci_token, Some(mint))
            .await
            .expect(201);
        let entry = &s.recent_audit(1).await[0];
        assert_eq!(
            (entry.actor.as_str(), entry.action.as_str()),
            ("admin (token \"ci\")", "mint")
        );
        assert_eq!(entry.from.as_deref(), Some("127.0.0.1"));

        // A token cannot make tokens, nor revoke another one.
        let more = json!({"name": "more", "scope": "admin"});
        with_token(&s, Method::POST, "/api/admin-tokens", ci_token, Some(more))
            .await
            .expect_error(
                403,
                "An API token (here \"ci\") cannot create API tokens; use the admin password or the console.",
            );
        let other = format!("/api/admin-tokens/{}", monitor["id"]);
        with_token(&s, Method::DELETE, &other, ci_token, None)
            .await
            .expect_error(
                403,
                "An API token (here \"ci\") cannot revoke other API tokens; use the admin password or the console.",
            );

        // The last use is listed (the list itself may be read with a token).
        let seen = with_token(&s, Method::GET, "/api/admin-tokens", monitor_token, None)
            .await
            .expect(200);
        let ci_listed = seen["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .find(|t| t["name"] == "ci")
            .expect("ci listed")
            .clone();
        assert!(ci_listed["last_used_at"].is_string(), "{ci_listed}");
        assert_eq!(ci_listed["last_used_from"], "127.0.0.1");
        assert_eq!(ci_listed["created_by"], "admin");
        assert!(ci_listed.get("token").is_none() && ci_listed.get("digest").is_none());

        // Only the SHA-256 is kept: not in the records, the store file or a backup.
        let stored = stored_tokens(&s).await;
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(ci_token.as_bytes()));
        assert!(stored.iter().any(|t| t.name == "ci" && t.digest == digest));
        let secret = ci_token.trim_start_matches("lablink_at_");
        let file = std::fs::read(s.dir.join(lablink::store::FILE_NAME)).expect("store file");
        let backup = s
            .client
            .get(s.url("/api/backup"))
            .bearer_auth(ci_token)
            .send()
            .await
            .expect("GET /api/backup");
        assert_eq!(backup.status(), StatusCode::OK);
        let backup = backup.bytes().await.expect("backup bytes");
        assert!(contains(&backup, &digest), "the backup has the digest");
        for (what, bytes) in [("store", &file[..]), ("backup", &backup[..])] {
            assert!(!contains(bytes, secret), "the token's text is in the {what}");
        }

        // Revoked: refused from the next request on, and audited.
        let revoked = s
            .admin_json(Method::DELETE, &format!("/api/admin-tokens/{}", ci["id"]), None)
            .await
            .expect(200);
        assert!(revoked["message"].as_str().expect("message").contains("\"ci\""));
        with_token(&s, Method::GET, "/api/vms", ci_token, None)
            .await
            .expect_error(401, "API token unknown or revoked.");
        let actions: Vec<String> = s
            .recent_audit(20)
            .await
            .into_iter()
            .map(|e| format!("{} {}", e.action, e.detail))
            .collect();
        for expected in [
            "revoke-api-token \"ci\" (admin)",
            "create-api-token \"ci\" (admin)",
            "create-api-token \"monitor\" (read_only)",
        ] {
            assert!(actions.iter().any(|a| a == expected), "{actions:?}");
        }
        assert!(listed(&s, "ci").await.is_none());

        // A read-only token may revoke itself (`lablink logout`).
        let own = format!("/api/admin-tokens/{}", monitor["id"]);
        with_token(&s, Method::DELETE, &own, monitor_token, None)
            .await
            .expect(200);
        assert_eq!(
            s.recent_audit(1).await[0].actor,
            "admin (token \"monitor\")"
        );

        // Unknown tokens count against the sign-in limit as wrong passwords do.
        for _ in 0..lablink::server::login_limit::MAX_FAILURES {
            with_token(&s, Method::GET, "/api/vms", ci_token, None)
                .await
                .expect(401);
        }
        with_token(&s, Method::GET, "/api/vms", ci_token, None)
            .await
            .expect(429);
        s.get("/api/vms", Auth::admin()).await.expect(429);
    })
    .await;
}

#[tokio::test]
async fn the_last_use_is_written_once_a_minute_and_at_shutdown() {
    let s = TestServer::start().await;
    let token = create(&s, "poller", "read_only").await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let first_use = within(30, "first use", async {
        with_token(&s, Method::GET, "/api/vms", &token, None)
            .await
            .expect(200);
        // The first use is written at once (by a task of its own).
        wait_for(10, "the first use is stored", || async {
            stored_tokens(&s).await[0].last_used_at
        })
        .await
    })
    .await;
    let second_use = within(30, "second use", async {
        with_token(&s, Method::GET, "/api/vms", &token, None)
            .await
            .expect(200);
        let listed = listed(&s, "poller").await.expect("listed");
        let shown: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(listed["last_used_at"].clone()).expect("a time");
        assert!(shown > first_use, "the list shows the newest use");
        // Within the minute, nothing more is written.
        assert_eq!(stored_tokens(&s).await[0].last_used_at, Some(first_use));
        shown
    })
    .await;
    let s = s.restart(|_| {}).await;
    let after = stored_tokens(&s).await;
    assert_eq!(
        after[0].last_used_at,
        Some(second_use),
        "flushed at shutdown"
    );
    assert_eq!(after[0].last_used_from.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn the_console_page_creates_shows_once_and_revokes() {
    let s = TestServer::start().await;
    within(60, "test", async {
        let console = Console::sign_in(&s).await;
        let page = console.get("/admin/api-tokens").await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("page");
        assert!(html.contains("href=\"/admin/api-tokens\""), "in the nav");
        assert!(html.contains("No API tokens."));

        let form = [("name", "laptop"), ("scope", "admin")];
        let forged = console.post("/admin/api-tokens", &form).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert!(listed(&s, "laptop").await.is_none());

        let csrf = console.csrf.clone();
        let made = console
            .post(
                "/admin/api-tokens",
                &[
                    ("name", "laptop"),
                    ("scope", "admin"),
                    ("csrf_token", &csrf),
                ],
            )
            .await;
        assert_eq!(made.status(), StatusCode::OK);
        let html = made.text().await.expect("page");
        let token = crate::helpers::html_field(&html, "new-api-token").expect("shown once");
        assert!(token.starts_with("lablink_at_"), "{token}");
        assert!(html.contains("it is not shown again"));
        with_token(&s, Method::GET, "/api/vms", &token, None)
            .await
            .expect(200);

        let html = console
            .get("/admin/api-tokens")
            .await
            .text()
            .await
            .expect("page");
        assert!(!html.contains(&token), "the token is shown only once");
        let id = listed(&s, "laptop").await.expect("listed")["id"].clone();
        assert!(html.contains(&format!("id=\"api-token-{id}\"")));
        assert!(!html.contains(">never<"), "its last use is shown");
        assert!(html.contains("127.0.0.1"));

        let revoke = format!("/admin/api-tokens/{id}/revoke");
        let forged = console.post(&revoke, &[]).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        let done = console.post(&revoke, &[("csrf_token", &csrf)]).await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        with_token(&s, Method::GET, "/api/vms", &token, None)
            .await
            .expect_error(401, "API token unknown or revoked.");
        assert_eq!(s.recent_audit(1).await[0].action, "revoke-api-token");
    })
    .await;
}

/// A home for the command line: `HOME` and `XDG_CONFIG_HOME` in a temporary directory.
struct Home {
    dir: tempfile::TempDir,
    home: String,
    config: String,
}

impl Home {
    fn new() -> Home {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().display().to_string();
        let config = dir.path().join("config").display().to_string();
        Home { dir, home, config }
    }

    fn logins(&self) -> PathBuf {
        Path::new(&self.config).join("lablink/logins.json")
    }

    async fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
        let mut env = vec![
            ("HOME", self.home.as_str()),
            ("XDG_CONFIG_HOME", self.config.as_str()),
        ];
        env.extend_from_slice(extra);
        run_binary(args, &env, 30).await
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_password(dir: &Path, password: &str) -> String {
    let path = dir.join("password");
    std::fs::write(&path, password).expect("password file");
    path.display().to_string()
}

#[tokio::test]
async fn lablink_login_stores_a_token_the_commands_use_and_logout_revokes_it() {
    let s = TestServer::start().await;
    let home = Home::new();
    let wrong = write_password(home.dir.path(), "not-the-password");
    within(120, "test", async {
        // A wrong password: refused, nothing stored.
        let out = home
            .run(&["login", "--url", &s.base, "--password-file", &wrong], &[])
            .await;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("wrong admin user or password"));
        assert!(!home.logins().exists());
        assert!(listed(&s, "tester@lab").await.is_none());

        let out = home
            .run(
                &["login", "--url", &s.base, "--name", "tester@lab"],
                &[("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD)],
            )
            .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let meta = std::fs::metadata(home.logins()).expect("logins file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let stored = std::fs::read_to_string(home.logins()).expect("read");
        assert!(
            !stored.contains(ADMIN_PASSWORD),
            "the password is not stored"
        );
        let file: Value = serde_json::from_str(&stored).expect("json");
        let token = file["allocators"][&s.base]["token"]
            .as_str()
            .expect("the token")
            .to_owned();
        assert_eq!(file["default"], s.base.as_str());
        assert_eq!(file["allocators"][&s.base]["scope"], "admin");
        assert!(listed(&s, "tester@lab").await.is_some());

        // No password and no --url: the stored default address and token.
        s.register_running("lab-vm-1").await;
        let out = home.run(&["seat", "revoke", "lab-vm-1"], &[]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let entry = &s.recent_audit(1).await[0];
        assert_eq!(
            (entry.actor.as_str(), entry.action.as_str()),
            ("admin (token \"tester@lab\")", "revoke")
        );
        let backup = home.dir.path().join("b.redb");
        let backup_arg = backup.display().to_string();
        let out = home.run(&["backup", &backup_arg], &[]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(backup.is_file());

        // LABLINK_TOKEN comes first: a read-only one may not change anything.
        let monitor = create(&s, "monitor", "read_only").await;
        let monitor_token = monitor["token"].as_str().expect("token");
        s.register_running("lab-vm-2").await;
        let out = home
            .run(
                &["seat", "revoke", "lab-vm-2"],
                &[("LABLINK_TOKEN", monitor_token)],
            )
            .await;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("read_only"),
            "{}",
            text(&out.stderr)
        );

        // A logins file others may read is refused, naming it.
        std::fs::set_permissions(home.logins(), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let out = home.run(&["backup", &backup_arg], &[]).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(&home.logins().display().to_string()),
            "{}",
            text(&out.stderr)
        );
        std::fs::set_permissions(home.logins(), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");

        // Logging in again replaces this machine's token for the address.
        let out = home
            .run(
                &["login", "--name", "tester@lab"],
                &[("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD)],
            )
            .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        with_token(&s, Method::GET, "/api/vms", &token, None)
            .await
            .expect(401);
        let file: Value =
            serde_json::from_str(&std::fs::read_to_string(home.logins()).expect("read"))
                .expect("json");
        let token = file["allocators"][&s.base]["token"]
            .as_str()
            .expect("the new token")
            .to_owned();

        // Logout: revoked on the allocator, forgotten here; the password is needed again.
        let out = home.run(&["logout"], &[]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("revoked"),
            "{}",
            text(&out.stdout)
        );
        with_token(&s, Method::GET, "/api/vms", &token, None)
            .await
            .expect_error(401, "API token unknown or revoked.");
        let stored = std::fs::read_to_string(home.logins()).expect("read");
        assert!(!stored.contains(&token), "{stored}");
        let out = home
            .run(&["backup", &backup_arg, "--url", &s.base], &[])
            .await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("no admin password"));
    })
    .await;
}

#[tokio::test]
async fn a_revoked_stored_token_says_to_log_in_again() {
    let s = TestServer::start().await;
    let home = Home::new();
    within(60, "test", async {
        let out = home
            .run(
                &["login", "--url", &s.base, "--read-only", "--name", "ro"],
                &[("LABLINK_APP_ADMIN_PASSWORD", ADMIN_PASSWORD)],
            )
            .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let ro = listed(&s, "ro").await.expect("listed");
        assert_eq!(ro["scope"], "read_only");
        s.admin_json(
            Method::DELETE,
            &format!("/api/admin-tokens/{}", ro["id"]),
            None,
        )
        .await
        .expect(200);
        let file = home.dir.path().join("b.redb").display().to_string();
        let out = home.run(&["backup", &file], &[]).await;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("unknown or revoked") && stderr.contains("lablink login"),
            "{stderr}"
        );
        // Logout of a token revoked already: forgotten, and that is all.
        let out = home.run(&["logout"], &[]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("already revoked"));
    })
    .await;
}

#[tokio::test]
async fn the_old_password_variable_is_refused_naming_the_new_one() {
    let s = TestServer::start().await;
    let home = Home::new();
    within(60, "test", async {
        let file = home.dir.path().join("b.redb").display().to_string();
        for args in [
            vec!["backup", file.as_str(), "--url", s.base.as_str()],
            vec!["seat", "release", "lab-vm-1", "--url", s.base.as_str()],
            vec!["login", "--url", s.base.as_str()],
        ] {
            let out = home
                .run(&args, &[("LABLINK_ADMIN_PASSWORD", ADMIN_PASSWORD)])
                .await;
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert!(
                text(&out.stderr)
                    .contains("LABLINK_ADMIN_PASSWORD was renamed LABLINK_APP_ADMIN_PASSWORD"),
                "{args:?}: {}",
                text(&out.stderr)
            );
        }
        assert!(!home.logins().exists());
    })
    .await;
}

#[tokio::test]
async fn a_revoked_token_loses_its_live_streams_and_a_locked_out_address_keeps_good_tokens() {
    let s = TestServer::start().await;
    within(60, "test", async {
        let watcher = create(&s, "watcher", "read_only").await;
        let token = watcher["token"].as_str().expect("token");
        let mut stream = s
            .client
            .get(s.url("/admin/events/pool"))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("stream");
        assert_eq!(stream.status(), 200);
        stream.chunk().await.expect("first event").expect("open");
        s.admin_json(
            Method::DELETE,
            &format!("/api/admin-tokens/{}", watcher["id"]),
            None,
        )
        .await
        .expect(200);
        // The revocation is a commit: the stream checks and ends.
        while let Some(chunk) = stream.chunk().await.expect("read") {
            assert!(!chunk.is_empty());
        }

        // Wrong tokens lock the address out; a good token still works from it.
        let good = create(&s, "good", "read_only").await;
        let mut locked = false;
        for _ in 0..50 {
            let wrong = with_token(&s, Method::GET, "/api/vms", "lablink_at_wrong", None).await;
            if wrong.status == 429 {
                locked = true;
                break;
            }
            assert_eq!(wrong.status, 401);
        }
        assert!(locked, "wrong tokens meet the sign-in limit");
        with_token(
            &s,
            Method::GET,
            "/api/vms",
            good["token"].as_str().expect("token"),
            None,
        )
        .await
        .expect(200);
    })
    .await;
}
