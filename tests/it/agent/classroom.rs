//! The classroom end to end: two seats on real agents, each with a TigerVNC Xvnc painted
//! a colour of its own (one is the instructor's own desktop, a seat they claimed), a
//! participant's desktop page and the console in headless Chromium. A raised hand shows
//! in the open console within 2 s (pushed, not polled); the instructor broadcasts their
//! seat and the participant's page shows its colour, then its own again at the stop; an
//! announcement shows on the page, and on the desktop as a notification.

use std::time::{Duration, Instant};

use super::browser_desktop::{claim_in_browser, wait_screen};
use super::x_display::{Display, require_tools};
use reqwest::Method;
use serde_json::json;

use super::{Gpu, LONG_POLL, Rig, Token, wait_vm};
use crate::browser::{
    Driver, browser, click, fill, require_browser, shoot, sign_in, start_driver, wait_css,
    wait_text,
};
use crate::helpers::{
    ADMIN_PASSWORD, TestServer, crd_command, free_port, mint_credential, wait_for, within,
};
use lablink::model::VmStatus;

/// How soon a raised hand must show in an open console.
const HAND_SHOWN_WITHIN: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvnc, xsetroot, xdotool and Chromium (.ci/run installs them)"]
async fn hands_broadcast_and_announcements_in_real_browsers() {
    require_tools();
    require_browser();
    let red = (204, 51, 51);
    let blue = (40, 90, 200);
    let displays = [Display::free(), Display::free()];
    let s = TestServer::start_with(|c| {
        c.server.long_poll_seconds = LONG_POLL;
        c.desktop.mode = "browser".into();
    })
    .await;
    let rigs = [Rig::new("classa"), Rig::new("classb")];
    let mut agents = Vec::new();
    for (rig, display) in rigs.iter().zip(&displays) {
        let port = free_port().to_string();
        let credential = mint_credential(&s, &rig.vm).await;
        agents.push(rig.agent(
            &s.base,
            Token::Flag(&credential),
            Gpu::Fake,
            &[
                "--vnc",
                "xvnc",
                "--vnc-display",
                &display.name,
                "--vnc-port",
                &port,
            ],
        ));
    }
    wait_for(60, "both VMs free", || async {
        (s.free_count().await == 2).then_some(())
    })
    .await;
    let display_of = |host: &str| -> &Display {
        &displays[rigs.iter().position(|r| r.vm == host).expect("known VM")]
    };

    let driver: Driver = start_driver().await;
    // The instructor's own desktop: a seat they claimed like anyone else.
    let teacher = browser(&driver, 1000, 760).await;
    let teacher_vm = claim_in_browser(&teacher, &s.base, "teacher@example.org").await;
    display_of(&teacher_vm).paint(blue).await;
    wait_screen(&teacher, blue, "the instructor's desktop").await;

    let ada = browser(&driver, 1000, 760).await;
    let ada_vm = claim_in_browser(&ada, &s.base, "ada@example.org").await;
    assert_ne!(ada_vm, teacher_vm);
    display_of(&ada_vm).paint(red).await;
    wait_screen(&ada, red, "Ada's desktop").await;
    wait_css(&ada, "#classroom[data-hand=down]").await;

    // The console is open (and stays the same page: the hand is pushed to it).
    let console = browser(&driver, 1200, 800).await;
    sign_in(&console, &s.base, ADMIN_PASSWORD).await;
    console
        .goto(&s.url("/admin/hands"))
        .await
        .expect("open /admin/hands");
    wait_css(&console, "#hands-empty").await;
    console
        .execute("window.__classroom_marker = 7; return true;", vec![])
        .await
        .expect("mark the page");

    let raised = Instant::now();
    click(&ada, "#hand-raise").await;
    wait_css(&console, &format!("tr.hand[data-host='{ada_vm}']")).await;
    let shown_after = raised.elapsed();
    assert!(
        shown_after < HAND_SHOWN_WITHIN,
        "the raised hand took {shown_after:?} to show in the console"
    );
    let marker = console
        .execute("return window.__classroom_marker || null;", vec![])
        .await
        .expect("read the marker");
    assert_eq!(
        marker,
        serde_json::json!(7),
        "the console page was reloaded"
    );
    eprintln!("raised hand shown in the console after {shown_after:?}");
    wait_css(&ada, "#classroom[data-hand=raised]").await;
    shoot(&ada, "classroom-hand-raised").await;
    shoot(&console, "classroom-hands").await;

    // Taken: Ada sees who comes.
    click(
        &console,
        &format!("tr.hand[data-host='{ada_vm}'] form[action$='/take'] button"),
    )
    .await;
    wait_css(&ada, "#classroom[data-hand=taken]").await;
    wait_text(&ada, "#hand-state", "admin is coming").await;

    // The instructor broadcasts their own seat: Ada's page shows its colour, then her own.
    console
        .goto(&s.url("/admin/hands"))
        .await
        .expect("open /admin/hands");
    let select = wait_css(&console, "#broadcast-host").await;
    select
        .select_by_value(&teacher_vm)
        .await
        .expect("pick the instructor's seat");
    click(&console, "#broadcast-form button[type=submit]").await;
    wait_css(&console, "#on-air").await;
    wait_css(&ada, "body[data-broadcast=connected]").await;
    wait_css(&ada, "#broadcast-note:not([hidden])").await;
    wait_screen(&ada, blue, "the broadcast on Ada's page").await;
    shoot(&ada, "classroom-broadcast").await;
    shoot(&console, "classroom-on-air").await;

    click(&console, "#broadcast-stop").await;
    wait_css(&console, "#off-air").await;
    wait_css(&ada, "body[data-broadcast=off]").await;
    wait_screen(&ada, red, "Ada's own desktop after the broadcast").await;

    // An announcement shows on her page at once.
    fill(
        &console,
        "#announce-text",
        "Break until 11:00 — back in room 2",
    )
    .await;
    click(&console, "#announce-form button[type=submit]").await;
    wait_text(
        &ada,
        "#announcement-text",
        "Break until 11:00 — back in room 2",
    )
    .await;
    shoot(&ada, "classroom-announcement").await;

    let audit = s
        .get("/admin/audit", crate::helpers::Auth::admin())
        .await
        .text;
    for action in [
        "hand_raised",
        "hand_taken",
        "broadcast_start",
        "broadcast_stop",
        "announcement",
    ] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }

    let _ = console.close().await;
    let _ = ada.close().await;
    let _ = teacher.close().await;
    for mut agent in agents {
        agent.stop(30).await;
    }
}

/// An announcement reaches the seat's desktop as a notification, once, through the
/// agent's heartbeat answers (the fake notify-send logs what it is asked to show).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_shows_each_announcement_on_the_desktop_once() {
    let s = TestServer::start_with(|c| {
        c.server.long_poll_seconds = 2;
        c.server.heartbeat_seconds = 1;
    })
    .await;
    let rig = Rig::new("announce");
    let log = rig.path("notify.log");
    let mut agent = rig.agent_with_env(
        &s.base,
        Token::Flag(s.token()),
        Gpu::Fake,
        &[],
        &[("FAKE_NOTIFY_LOG", log.as_path())],
    );
    within(60, "announcements on the desktop", async {
        wait_vm(&s, &rig.vm, 15, "VM running", |vm| {
            vm.status == Some(VmStatus::Running)
        })
        .await;
        let claimed = s.claim("ada@example.org", &crd_command("4/ada-code")).await;
        assert_eq!(claimed.status, 200, "{}", claimed.html);
        agent
            .wait_log(10, &["desktop started; the participant can connect"], 1)
            .await;
        // A text that starts with a dash is shown, not taken for an option.
        for text in ["Break until 11:00", "-- Back in the room, please"] {
            s.admin_json(
                Method::POST,
                "/api/announcements",
                Some(json!({ "text": text })),
            )
            .await
            .expect(201);
            wait_for(15, "the notification", || async {
                rig.read("notify.log").contains(text).then_some(())
            })
            .await;
        }
        let shown = rig.read("notify.log");
        assert_eq!(shown.matches("Break until 11:00").count(), 1, "{shown}");
        assert_eq!(shown.matches("== end ==\n").count(), 2, "{shown}");
        assert!(
            shown.contains("--\nLabLink workshop\n-- Back in the room, please\n"),
            "{shown}"
        );
    })
    .await;
    agent.stop(5).await;
}
