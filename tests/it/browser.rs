//! The console and the participant page in headless Chromium (WebDriver through
//! chromedriver): an admin and a participant in two separate browsers, live updates
//! without reloads, and a screenshot of every page in `target/screenshots/`.
//!
//! They need Debian's Chromium and ChromeDriver, so they are `#[ignore]`d: `.ci/run`
//! installs both and runs them with `--ignored`; a missing browser fails them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_PASSWORD, ADMIN_USER, TestServer, crd_command, within};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest wait for anything the page shows.
pub(crate) const PAGE_WAIT: Duration = Duration::from_secs(60);

pub(crate) struct Driver {
    process: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

pub(crate) fn require_browser() {
    assert!(
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
        "{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
    );
}

pub(crate) async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let process = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    // Dropping the driver kills and reaps the process, also when it never answers.
    let driver = Driver {
        process,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(&status).send().await.is_ok() {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not answer on {}", driver.url);
}

/// A browser of its own (own profile, own cookies).
pub(crate) async fn browser(driver: &Driver, width: u32, height: u32) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--window-size={width},{height}"),
            ],
        }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("start a Chromium session")
}

pub(crate) fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir
}

pub(crate) async fn shoot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

pub(crate) async fn wait_css(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
}

/// Waits until the page's text under `css` contains `text` (no reload in between).
pub(crate) async fn wait_text(client: &Client, css: &str, text: &str) {
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    loop {
        let found = match client.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if found.contains(text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never showed {text:?}; last: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn count(client: &Client, css: &str) -> usize {
    client
        .find_all(Locator::Css(css))
        .await
        .map_or(0, |all| all.len())
}

pub(crate) async fn fill(client: &Client, css: &str, text: &str) {
    let field = wait_css(client, css).await;
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

pub(crate) async fn click(client: &Client, css: &str) {
    wait_css(client, css).await.click().await.expect("click");
}

/// A marker on the page object: gone after any navigation, so its presence proves the
/// page was never reloaded.
async fn mark_page(client: &Client) {
    client
        .execute("window.__lablink_marker = 42; return true;", vec![])
        .await
        .expect("set marker");
}

async fn assert_same_page(client: &Client) {
    let marker = client
        .execute("return window.__lablink_marker || null;", vec![])
        .await
        .expect("read marker");
    assert_eq!(marker, json!(42), "the page was reloaded");
}

pub(crate) async fn sign_in(client: &Client, base: &str, password: &str) -> String {
    sign_in_as(client, base, ADMIN_USER, password).await
}

/// Signs in through the login form as `user` (the admin or a helper account).
pub(crate) async fn sign_in_as(client: &Client, base: &str, user: &str, password: &str) -> String {
    client
        .goto(&format!("{base}/admin/login"))
        .await
        .expect("open login");
    fill(client, "#username", user).await;
    fill(client, "#password", password).await;
    click(client, "form button[type=submit]").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.source().await.expect("page source")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
async fn admin_and_participant_in_real_browsers() {
    require_browser();
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.machine.software = "browsertest".into();
    })
    .await;
    let driver = start_driver().await;
    within(300, "browser flow", async {
        let admin = browser(&driver, 1280, 900).await;
        let participant = browser(&driver, 390, 844).await;
        let base = s.base.clone();

        // Signing in: the console sends a browser to its login form.
        admin
            .goto(&format!("{base}/admin/instances"))
            .await
            .expect("open");
        wait_css(&admin, "#password").await;
        assert!(
            admin
                .current_url()
                .await
                .expect("url")
                .path()
                .ends_with("/admin/login")
        );
        shoot(&admin, "01-login").await;
        fill(&admin, "#username", ADMIN_USER).await;
        fill(&admin, "#password", ADMIN_PASSWORD).await;
        click(&admin, "form button[type=submit]").await;
        wait_css(&admin, "table.pool").await;
        assert_eq!(
            admin.current_url().await.expect("url").path(),
            "/admin/instances"
        );

        // Launch two VMs; the run streams below the form.
        admin
            .goto(&format!("{base}/admin/create"))
            .await
            .expect("open create");
        fill(&admin, "#num_vms", "2").await;
        click(&admin, "form.inline button[type=submit]").await;
        wait_text(&admin, "#run-panel", "succeeded").await;
        wait_text(
            &admin,
            "#run-panel pre.output",
            "browsertest-lablink-local-vm-2",
        )
        .await;
        shoot(&admin, "02-launch").await;

        // The instances table turns running without a reload.
        admin
            .goto(&format!("{base}/admin/instances"))
            .await
            .expect("open instances");
        wait_css(&admin, "#instances").await;
        mark_page(&admin).await;
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        while count(&admin, "#instances tr[data-status=running]").await < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "VMs never showed running"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_same_page(&admin).await;
        shoot(&admin, "03-instances-running").await;

        // A participant claims one on a phone-sized screen.
        participant
            .goto(&format!("{base}/"))
            .await
            .expect("open landing");
        wait_text(&participant, "#free-count", "2").await;
        shoot(&participant, "04-participant").await;
        fill(&participant, "#email", "grace@example.org").await;
        fill(
            &participant,
            "#crd_command",
            &crd_command("4/0ABrowserTest"),
        )
        .await;
        click(&participant, "form button[type=submit]").await;
        let host = wait_css(&participant, "#hostname")
            .await
            .text()
            .await
            .expect("host");
        let pin = wait_css(&participant, "#pin")
            .await
            .text()
            .await
            .expect("pin");
        assert!(host.starts_with("browsertest-lablink-local-vm-"), "{host}");
        assert_eq!(pin.len(), 6, "{pin}");
        shoot(&participant, "05-participant-assigned").await;

        // A bad command gets a friendly message.
        participant
            .goto(&format!("{base}/"))
            .await
            .expect("open landing");
        fill(&participant, "#email", "alan@example.org").await;
        fill(&participant, "#crd_command", "hello").await;
        click(&participant, "form button[type=submit]").await;
        wait_text(&participant, "p.error", "Invalid CRD command").await;
        shoot(&participant, "06-participant-bad-command").await;

        // The assignment appears in the admin's table, still without a reload.
        wait_text(
            &admin,
            &format!("#vm-{host} td.assignee"),
            "grace@example.org",
        )
        .await;
        assert_same_page(&admin).await;
        shoot(&admin, "07-instances-assigned").await;

        // The dashboard counts it.
        admin
            .goto(&format!("{base}/admin"))
            .await
            .expect("open dashboard");
        wait_text(&admin, "#counts", "Assigned").await;
        wait_css(&admin, "#chart").await;
        shoot(&admin, "08-dashboard").await;

        // Logs of the claimed VM, tailed live.
        admin
            .goto(&format!("{base}/admin/logs/{host}"))
            .await
            .expect("open logs");
        wait_text(&admin, "#log-container", "simulated desktop started").await;
        shoot(&admin, "09-logs").await;

        // Schedule a destruction and cancel it.
        admin
            .goto(&format!("{base}/admin/scheduled-destruction"))
            .await
            .expect("open schedules");
        fill(&admin, "#schedule_name", "end-of-day").await;
        let when = (chrono::Utc::now() + chrono::Duration::days(1))
            .format("%Y-%m-%dT%H:%M")
            .to_string();
        admin
            .execute(
                "document.getElementById('destruction_time').value = arguments[0]; return true;",
                vec![Value::String(when)],
            )
            .await
            .expect("set the time");
        click(&admin, "form.grid button[type=submit]").await;
        wait_text(&admin, "#schedules", "end-of-day").await;
        wait_text(&admin, "#schedules", "scheduled").await;
        shoot(&admin, "10-schedule-created").await;
        click(&admin, "#schedules form button").await;
        wait_text(&admin, "#schedules", "cancelled").await;
        shoot(&admin, "11-schedule-cancelled").await;

        // The other pages.
        for (path, name) in [
            ("/admin/instances/delete", "12-teardown"),
            ("/admin/token", "13-token"),
            ("/admin/audit", "14-audit"),
        ] {
            admin
                .goto(&format!("{base}{path}"))
                .await
                .expect("open page");
            wait_css(&admin, "main h1").await;
            shoot(&admin, name).await;
        }
        let audit = admin
            .find(Locator::Css("#audit"))
            .await
            .expect("audit table");
        let audit = audit.text().await.expect("audit text");
        for action in ["login", "launch", "schedule-destruction", "cancel-schedule"] {
            assert!(audit.contains(action), "audit log lacks {action}: {audit}");
        }

        // A state-changing request without the CSRF token is refused, even with the
        // session cookie.
        let status = admin
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch('/api/launch', {method: 'POST', credentials: 'same-origin',
                   headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                   body: 'num_vms=1'}).then(r => done(r.status), e => done(String(e)));",
                vec![],
            )
            .await
            .expect("fetch without a token");
        assert_eq!(status, json!(403));

        // Signing out ends the session.
        click(&admin, "form.signout button").await;
        wait_css(&admin, "#password").await;
        admin
            .goto(&format!("{base}/admin"))
            .await
            .expect("open console");
        wait_css(&admin, "#password").await;
        shoot(&admin, "15-signed-out").await;

        // Wrong passwords: after five, the address has to wait, even with the right one.
        for _ in 0..5 {
            let page = sign_in(&admin, &base, "wrong-password").await;
            assert!(page.contains("Wrong user name or password"), "{page}");
        }
        let page = sign_in(&admin, &base, ADMIN_PASSWORD).await;
        assert!(page.contains("Too many failed sign-ins"), "{page}");
        shoot(&admin, "16-rate-limited").await;

        admin.close().await.expect("close admin browser");
        participant
            .close()
            .await
            .expect("close participant browser");
    })
    .await;
}

/// The instructor fixes seats in the console (move, release with a typed confirmation,
/// clear, revoke) while the participant's seat page follows by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
async fn seat_control_in_real_browsers() {
    require_browser();
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.machine.software = "seatbrowser".into();
        c.server.heartbeat_seconds = 1;
    })
    .await;
    let driver = start_driver().await;
    within(300, "seat control", async {
        crate::helpers::launch_local(&s, 2).await;
        crate::helpers::wait_for(60, "two free VMs", || async {
            (s.free_count().await == 2).then_some(())
        })
        .await;
        let (one, two) = (
            "seatbrowser-lablink-local-vm-1",
            "seatbrowser-lablink-local-vm-2",
        );
        let admin = browser(&driver, 1400, 900).await;
        let participant = browser(&driver, 390, 844).await;
        let base = s.base.clone();

        // The participant claims; the answer moves on to their seat page.
        participant.goto(&format!("{base}/")).await.expect("open");
        fill(&participant, "#email", "ada@example.org").await;
        fill(&participant, "#crd_command", &crd_command("4/0ASeatPage")).await;
        click(&participant, "form button[type=submit]").await;
        wait_css(&participant, "#seat[data-state=ready]").await;
        wait_text(&participant, "#hostname", one).await;
        shoot(&participant, "20-seat-ready").await;

        sign_in(&admin, &base, ADMIN_PASSWORD).await;
        admin
            .goto(&format!("{base}/admin/instances"))
            .await
            .expect("instances");
        let row = |host: &str, rest: &str| format!("#vm-{host} {rest}");

        // Move the participant to vm-2: their page shows it without anyone reloading it.
        click(&admin, &row(one, "details.seat summary")).await;
        fill(
            &admin,
            &row(one, "form[action$='/move'] input[name=to]"),
            two,
        )
        .await;
        shoot(&admin, "21-seat-actions").await;
        click(&admin, &row(one, "form[action$='/move'] button")).await;
        wait_text(&admin, "#flash", &format!("moved from {one} to {two}")).await;
        wait_text(&participant, "#hostname", two).await;
        shoot(&participant, "22-seat-moved").await;

        // Release needs the VM's name typed in.
        wait_text(&admin, &row(two, "td.assignee"), "ada@example.org").await;
        click(&admin, &row(two, "details.seat summary")).await;
        fill(
            &admin,
            &row(two, "form[action$='/release'] input[name=confirm]"),
            "vm-2",
        )
        .await;
        click(&admin, &row(two, "form[action$='/release'] button")).await;
        wait_text(&admin, "#flash", "type the VM's name").await;
        assert!(s.stored_vm(two).await.expect("vm").assignment.is_some());
        // The form stayed open (live updates keep it) with what was typed.
        fill(
            &admin,
            &row(two, "form[action$='/release'] input[name=confirm]"),
            two,
        )
        .await;
        click(&admin, &row(two, "form[action$='/release'] button")).await;
        wait_text(&admin, "#flash", &format!("Seat on {two} released")).await;
        wait_css(&participant, "#seat[data-state=released]").await;
        wait_text(&participant, "h1", "Your seat was taken back").await;
        shoot(&participant, "23-seat-released").await;

        // The released VM's agent resets its desktop and the VM comes back to the pool.
        crate::helpers::wait_for(60, "both VMs free again", || async {
            (s.free_count().await == 2).then_some(())
        })
        .await;

        // Clear a false alarm.
        s.agent_post(
            "/api/gpu_health",
            &json!({"hostname": one, "gpu_status": "Unhealthy"}),
        )
        .await
        .expect(200);
        admin
            .goto(&format!("{base}/admin/instances"))
            .await
            .expect("instances");
        click(&admin, &row(one, "details.seat summary")).await;
        click(&admin, &row(one, "form[action$='/clear'] button")).await;
        wait_text(&admin, "#flash", &format!("{one} cleared")).await;

        // Revoke vm-1: its row goes.
        fill(
            &admin,
            &row(one, "form[action$='/revoke'] input[name=confirm]"),
            one,
        )
        .await;
        click(&admin, &row(one, "form[action$='/revoke'] button")).await;
        wait_text(&admin, "#flash", &format!("{one} revoked")).await;
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        while count(&admin, &format!("#vm-{one}")).await > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the revoked VM's row stayed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        shoot(&admin, "24-seat-revoked").await;

        admin
            .goto(&format!("{base}/admin/audit"))
            .await
            .expect("audit");
        let audit = wait_css(&admin, "#audit").await.text().await.expect("text");
        for action in ["move", "release", "clear", "revoke"] {
            assert!(audit.contains(action), "audit log lacks {action}: {audit}");
        }
        admin.close().await.expect("close admin");
        participant.close().await.expect("close participant");
    })
    .await;
}
