//! The RFB handshake against real VNC servers: x11vnc on Xvfb, and TigerVNC's Xvnc, each
//! reading a password file `rfb::write_password_file` wrote. The agent's side
//! authenticates, `rfb::serve` hands a view-only session to a viewer, and the viewer gets
//! the server's screen size and a framebuffer update.
//!
//! They need Xvfb, x11vnc and TigerVNC, so they are `#[ignore]`d: `.ci/run` installs them
//! and runs these with `--ignored`; a missing binary fails them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lablink::rfb::{self, RfbError};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{free_port, within};

const XVFB: &str = "/usr/bin/Xvfb";
const X11VNC: &str = "/usr/bin/x11vnc";
const XVNC: &str = "/usr/bin/Xvnc";
/// Longest wait for a server to start, or for any one exchange.
const WAIT: Duration = Duration::from_secs(30);

fn require(binary: &str, package: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing (apt-get install {package})"
    );
}

/// A child process, stopped and reaped when dropped; its log is printed when the test
/// fails.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `command` with its output in `log`, or only its stderr with `piped_stdout`.
    fn spawn(mut command: Command, log: PathBuf, piped_stdout: bool) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let stdout = if piped_stdout {
            Stdio::piped()
        } else {
            file.try_clone().expect("log file").into()
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test if the process has ended.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} ended ({status}):\n{}", self.log.display(), self.log());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} -----\n{}\n----- end -----",
                self.log.display(),
                self.log()
            );
        }
        // SIGTERM first: an X server then removes its lock file and socket.
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.wait();
    }
}

/// Starts an X server given `-displayfd 1` and returns it with the display number it chose.
fn start_x_server(command: Command, log: PathBuf) -> (Proc, u32) {
    let mut server = Proc::spawn(command, log, true);
    let stdout = server.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    // Reads until the server ends, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        lines.for_each(drop);
    });
    let display = match rx.recv_timeout(WAIT) {
        Ok(Some(Ok(line))) => line.trim().parse().ok(),
        _ => None,
    };
    match display {
        Some(display) => (server, display),
        None => {
            server.assert_running();
            panic!("{} chose no display within {WAIT:?}", server.log.display());
        }
    }
}

/// The first connection a VNC server starting on `port` accepts.
async fn connect(port: u16, server: &mut Proc) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            return stream;
        }
        server.assert_running();
        assert!(
            Instant::now() < deadline,
            "nothing accepts on 127.0.0.1:{port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The checks every server gets: a wrong password is refused; the right one is accepted
/// and a view-only viewer behind `serve` sees a `width`×`height` screen and its updates.
async fn check_server(port: u16, server: &mut Proc, password: &str, width: u16, height: u16) {
    let mut conn = connect(port, server).await;
    let e = within(
        30,
        "wrong password",
        rfb::authenticate(&mut conn, "wr0ng!!!"),
    )
    .await
    .expect_err("a wrong password is refused");
    assert!(matches!(e, RfbError::PasswordRefused(_)), "{e}");
    drop(conn);

    let mut conn = connect(port, server).await;
    within(30, "right password", rfb::authenticate(&mut conn, password))
        .await
        .expect("the password is accepted");
    let (mut viewer, relay_end) = tokio::io::duplex(64 * 1024);
    let relay = tokio::spawn(rfb::serve(
        relay_end,
        conn,
        true,
        std::time::Duration::from_secs(30),
    ));
    within(30, "viewer handshake and ServerInit", async {
        let mut greeting = [0; 12];
        viewer.read_exact(&mut greeting).await.expect("greeting");
        viewer.write_all(b"RFB 003.008\n").await.expect("version");
        let mut types = [0; 2];
        viewer.read_exact(&mut types).await.expect("types");
        assert_eq!(types, [1, 1], "only None");
        viewer.write_all(&[1]).await.expect("choice");
        let mut result = [0; 4];
        viewer.read_exact(&mut result).await.expect("result");
        assert_eq!(result, [0; 4]);
        viewer.write_all(&[0]).await.expect("ClientInit");

        let mut init = [0; 24];
        viewer.read_exact(&mut init).await.expect("ServerInit");
        let size = (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        );
        assert_eq!(size, (width, height), "the X server's screen size");
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
        let mut name = vec![0; name_len as usize];
        viewer.read_exact(&mut name).await.expect("desktop name");
    })
    .await;

    // A key press is dropped on the way; the update request behind it is answered.
    let [w1, w0] = width.to_be_bytes();
    let [h1, h0] = height.to_be_bytes();
    let mut input = vec![4, 1, 0, 0, 0, 0, 0, b'x'];
    input.extend_from_slice(&[3, 0, 0, 0, 0, 0, w1, w0, h1, h0]);
    viewer.write_all(&input).await.expect("input");
    within(30, "FramebufferUpdate", async {
        let mut header = [0; 4];
        viewer.read_exact(&mut header).await.expect("update");
        assert_eq!(header[0], 0, "a FramebufferUpdate");
        assert!(
            u16::from_be_bytes([header[2], header[3]]) > 0,
            "with rectangles"
        );
    })
    .await;
    drop(viewer);
    within(30, "relay end", relay)
        .await
        .expect("join")
        .expect("the relay ends cleanly when the viewer leaves");
}

#[tokio::test]
#[ignore = "needs Xvfb and x11vnc"]
async fn x11vnc_on_xvfb_takes_the_password_file_and_serves_a_view_only_viewer() {
    require(XVFB, "xvfb");
    require(X11VNC, "x11vnc");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut xvfb = Command::new(XVFB);
    xvfb.args([
        "-displayfd",
        "1",
        "-screen",
        "0",
        "1024x768x24",
        "-nolisten",
        "tcp",
    ]);
    let (_xvfb, display) = start_x_server(xvfb, dir.path().join("xvfb.log"));

    let password = rfb::random_password();
    let passwd = dir.path().join("passwd");
    rfb::write_password_file(&passwd, &password).expect("password file");
    let port = free_port();
    let mut x11vnc = Command::new(X11VNC);
    x11vnc
        .args(["-display", &format!(":{display}"), "-localhost", "-norc"])
        .args(["-rfbport", &port.to_string(), "-rfbauth"])
        .arg(&passwd)
        .args(["-forever", "-shared"]);
    let mut x11vnc = Proc::spawn(x11vnc, dir.path().join("x11vnc.log"), false);
    check_server(port, &mut x11vnc, &password, 1024, 768).await;
}

#[tokio::test]
#[ignore = "needs TigerVNC"]
async fn tigervnc_takes_the_password_file_and_serves_a_view_only_viewer() {
    require(XVNC, "tigervnc-standalone-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let password = rfb::random_password();
    let passwd = dir.path().join("passwd");
    rfb::write_password_file(&passwd, &password).expect("password file");
    let port = free_port();
    let mut xvnc = Command::new(XVNC);
    xvnc.args(["-displayfd", "1", "-geometry", "800x600", "-depth", "24"])
        .args(["-localhost", "-rfbport", &port.to_string(), "-rfbauth"])
        .arg(&passwd)
        .args(["-SecurityTypes", "VncAuth", "-nolisten", "tcp"]);
    let (mut xvnc, _display) = start_x_server(xvnc, dir.path().join("xvnc.log"));
    check_server(port, &mut xvnc, &password, 800, 600).await;
}
