//! The "I need help" launcher on a real agent: `lablink hand`, run as a child process the
//! way the desktop's launcher runs it, reaches the agent over its socket; the agent
//! forwards to the allocator with the VM's own credential and shows the answer as a
//! desktop notification (the fake notify-send logs it).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use super::{AgentToken, Rig, release_and_wait_free};
use crate::helpers::{TestServer, open_hands, wait_for, within};

/// `lablink hand ARGS` with the agent's socket in the environment.
async fn hand(socket: &Path, args: &[&str]) -> Output {
    hand_as(Path::new(env!("CARGO_BIN_EXE_lablink")), socket, args, None).await
}

/// `exe hand ARGS` with the agent's socket in the environment, as `uid` if given.
async fn hand_as(exe: &Path, socket: &Path, args: &[&str], uid: Option<u32>) -> Output {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("hand")
        .args(args)
        .env_clear()
        .env("LABLINK_HAND_SOCKET", socket)
        .kill_on_drop(true);
    if let Some(uid) = uid {
        cmd.uid(uid);
    }
    within(40, "lablink hand", cmd.output())
        .await
        .expect("run lablink hand")
}

fn said(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A seat held by ada, its agent (with `extra` flags) on the VM's own credential,
/// notifications logged.
async fn seat(rig: &Rig, extra: &[&str]) -> (TestServer, super::AgentProc) {
    super::seated_agent(rig, AgentToken::Own, extra).await
}

async fn notified(rig: &Rig, text: &str) {
    wait_for(15, &format!("the notification {text:?}"), || async {
        rig.read("notify.log")
            .contains(&format!("LabLink workshop\n{text}\n== end ==\n"))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desktop_button_raises_and_lowers_the_hand_through_the_agent() {
    let rig = Rig::new("hand");
    let (s, mut agent) = seat(&rig, &[]).await;
    let socket = rig.path("hand.sock");

    // The button: in the menu and on the Desktop, running this executable, no shell.
    let menu = rig.path("home/.local/share/applications/lablink-hand.desktop");
    let on_desktop = rig.path("home/Desktop/lablink-hand.desktop");
    let entry = wait_for(15, "the launcher on the desktop", || async {
        let (a, b) = (
            std::fs::read_to_string(&menu).ok()?,
            std::fs::read_to_string(&on_desktop).ok()?,
        );
        (a == b).then_some(a)
    })
    .await;
    let exec: Vec<&str> = entry.lines().filter(|l| l.starts_with("Exec=")).collect();
    let binary = env!("CARGO_BIN_EXE_lablink");
    assert_eq!(
        exec,
        [
            format!("Exec={binary} hand --socket {}", socket.display()),
            format!("Exec={binary} hand --socket {} --lower", socket.display()),
        ],
        "{entry}"
    );
    assert!(
        entry.starts_with("[Desktop Entry]\nType=Application\n"),
        "{entry}"
    );
    assert!(entry.contains("\nName=I need help\n"), "{entry}");
    for file in [&menu, &on_desktop] {
        let mode = std::fs::metadata(file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{}", file.display());
    }

    within(90, "the hand up and down from the desktop", async {
        let up = hand(&socket, &[]).await;
        let (code, stdout, stderr) = said(&up);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(stdout, "Your hand is up — a helper is on the way.\n");
        let hands = open_hands(&s).await;
        assert_eq!(hands.len(), 1, "{hands:?}");
        assert_eq!(hands[0]["hostname"], rig.vm.as_str());
        assert_eq!(hands[0]["participant"], "ada@example.org");
        notified(&rig, "Your hand is up — a helper is on the way.").await;

        let down = hand(&socket, &["--lower"]).await;
        let (code, stdout, stderr) = said(&down);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(stdout, "Your hand is down: you no longer ask for help.\n");
        assert!(open_hands(&s).await.is_empty());
        notified(&rig, "Your hand is down: you no longer ask for help.").await;

        // Up again at once: the allocator's refusal is the answer, on stderr and the desktop.
        let again = hand(&socket, &[]).await;
        let (code, stdout, stderr) = said(&again);
        assert_eq!(code, Some(1), "{stdout}{stderr}");
        assert!(
            stderr.starts_with("lablink hand: Too many requests; wait "),
            "{stderr}"
        );
        let refusal = stderr.trim_start_matches("lablink hand: ").trim_end();
        notified(&rig, refusal).await;
        assert!(open_hands(&s).await.is_empty());
    })
    .await;

    // Released: the reset takes the launcher off the Desktop (ada left nothing else, so
    // nothing is moved aside); the menu keeps it for the next participant.
    release_and_wait_free(&s, &rig.vm).await;
    assert!(!on_desktop.exists(), "the launcher left the Desktop");
    assert!(!rig.path("home/lablink-previous").exists());
    assert!(menu.exists());

    agent.stop(10).await;
    // No agent: the socket is gone, and the message names it.
    let alone = hand(&socket, &[]).await;
    let (code, _, stderr) = said(&alone);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the LabLink agent at {}",
            socket.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("is `lablink agent` running"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, to run `lablink hand` as other accounts (.ci/run runs as root)"]
async fn only_the_desktop_user_and_the_agents_account_are_served() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "running clients as other accounts needs root"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("look up nobody")
        .expect("a `nobody` account");
    let rig = Rig::new("handuid");
    // Every account may reach the socket: the agent checks who connects, not the folder.
    std::fs::set_permissions(rig.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod rig");
    // nobody's desktop (simulated: no start-host to run as nobody).
    let (s, mut agent) = seat(
        &rig,
        &["--desktop-user", "nobody", "--desktop", "simulated"],
    )
    .await;
    let socket = rig.path("hand.sock");
    // The build's own folder may be closed to other accounts (a target dir under /root).
    let exe = rig.path("lablink");
    std::fs::copy(env!("CARGO_BIN_EXE_lablink"), &exe).expect("copy lablink");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // An account that is neither the desktop's nor the agent's.
    let stranger = nobody.uid.as_raw() - 1;
    let out = hand_as(&exe, &socket, &[], Some(stranger)).await;
    let (code, stdout, stderr) = said(&out);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "lablink hand: Only the desktop's own account may ask for help here.\n"
    );
    assert!(open_hands(&s).await.is_empty());
    agent
        .wait_log(
            10,
            &["refused a request for help", &format!("uid={stranger}")],
            1,
        )
        .await;

    let out = hand_as(&exe, &socket, &[], Some(nobody.uid.as_raw())).await;
    let (code, stdout, stderr) = said(&out);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "Your hand is up — a helper is on the way.\n");
    assert_eq!(open_hands(&s).await.len(), 1);
    agent.stop(10).await;
}
