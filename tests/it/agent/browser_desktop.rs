//! The browser desktop end to end: `lablink agent` on two VMs, each starting a real X and
//! VNC server (TigerVNC's Xvnc) for its browser seat, painted a colour of its own; the
//! allocator relaying; headless Chromium showing each participant their own VM's desktop.
//! The instructor's peek shows the same pixels and its input never reaches the desktop;
//! taking control does. Needs Xvnc, xsetroot, xdotool and Chromium (`.ci/run` installs
//! them).

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use super::x_display::{Display, require, require_tools};
use super::{AgentProc, Gpu, LONG_POLL, Rig, Token};
use crate::browser::{
    Driver, browser, click, fill, require_browser, shoot, sign_in, start_driver, wait_css,
};
use crate::helpers::{
    ADMIN_PASSWORD, ADMIN_USER, TestServer, free_port, mint_credential, wait_for, within,
};

/// An RFB viewer over the relay's WebSocket, as noVNC speaks it: for the checks a
/// browser cannot make (refusals, input from a peek).
struct RawViewer {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pending: Vec<u8>,
    /// Bytes per pixel and the shifts of red, green and blue, from ServerInit.
    format: (usize, bool, [u8; 3]),
    size: (u16, u16),
}

/// Opens the WebSocket at `path`; the HTTP status when the handshake is refused.
async fn open_socket(addr: &str, path: &str, headers: &[(&str, String)]) -> Result<RawViewer, u16> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("header value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(RawViewer {
            ws,
            pending: Vec::new(),
            format: (4, false, [16, 8, 0]),
            size: (0, 0),
        }),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("WebSocket to {path} failed: {e}"),
    }
}

impl RawViewer {
    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            let message = within(30, "RFB bytes from the relay", self.ws.next())
                .await
                .expect("the relay closed the stream")
                .expect("a WebSocket message");
            match message {
                Message::Binary(b) => self.pending.extend_from_slice(&b),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
        self.pending.drain(..n).collect()
    }

    async fn send(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send to the relay");
    }

    /// Version, security None (the agent did the VNC password), ClientInit, ServerInit.
    async fn handshake(&mut self) {
        let version = self.read_exact(12).await;
        assert_eq!(&version, b"RFB 003.008\n");
        self.send(version).await;
        let count = self.read_exact(1).await[0] as usize;
        let types = self.read_exact(count).await;
        assert_eq!(types, vec![1], "the viewer is offered security None only");
        self.send(vec![1]).await;
        assert_eq!(
            self.read_exact(4).await,
            vec![0, 0, 0, 0],
            "security result"
        );
        self.send(vec![1]).await;
        let init = self.read_exact(24).await;
        self.size = (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        );
        let pixel = &init[4..20];
        self.format = (
            usize::from(pixel[0] / 8),
            pixel[2] != 0,
            [pixel[10], pixel[11], pixel[12]],
        );
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        self.read_exact(name_len).await;
    }

    async fn pointer(&mut self, x: u16, y: u16) {
        let mut m = vec![5, 0];
        m.extend_from_slice(&x.to_be_bytes());
        m.extend_from_slice(&y.to_be_bytes());
        self.send(m).await;
    }

    /// A full frame in Raw encoding; the colour of its centre pixel.
    async fn frame_centre(&mut self) -> (u8, u8, u8) {
        let (w, h) = self.size;
        let mut m = vec![3, 0, 0, 0, 0, 0];
        m.extend_from_slice(&w.to_be_bytes());
        m.extend_from_slice(&h.to_be_bytes());
        self.send(m).await;
        loop {
            let kind = self.read_exact(1).await[0];
            match kind {
                0 => break,
                2 => {}
                3 => {
                    let head = self.read_exact(7).await;
                    let len = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
                    self.read_exact(len).await;
                }
                other => panic!("unexpected server message {other}"),
            }
        }
        let head = self.read_exact(3).await;
        let rects = u16::from_be_bytes([head[1], head[2]]);
        let (bpp, big_endian, [rs, gs, bs]) = self.format;
        let mut centre = None;
        for _ in 0..rects {
            let r = self.read_exact(12).await;
            let field = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
            let (x, y, rw, rh) = (field(0), field(2), field(4), field(6));
            assert_eq!(&r[8..12], &[0, 0, 0, 0], "Raw encoding");
            let data = self
                .read_exact(usize::from(rw) * usize::from(rh) * bpp)
                .await;
            let (cx, cy) = (w / 2, h / 2);
            if (x..x + rw).contains(&cx) && (y..y + rh).contains(&cy) {
                let at = (usize::from(cy - y) * usize::from(rw) + usize::from(cx - x)) * bpp;
                let bytes = &data[at..at + bpp];
                let value = if big_endian {
                    bytes.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b))
                } else {
                    bytes
                        .iter()
                        .rev()
                        .fold(0u32, |v, b| (v << 8) | u32::from(*b))
                };
                let channel = |shift: u8| ((value >> shift) & 0xff) as u8;
                centre = Some((channel(rs), channel(gs), channel(bs)));
            }
        }
        centre.expect("the frame covers the centre")
    }
}

fn close(a: (u8, u8, u8), b: (u8, u8, u8)) -> bool {
    let d = |x: u8, y: u8| x.abs_diff(y) <= 8;
    d(a.0, b.0) && d(a.1, b.1) && d(a.2, b.2)
}

/// The colour of the screenshot's pixel at the middle of the desktop area.
async fn screen_centre(client: &fantoccini::Client) -> (u8, u8, u8) {
    let png = client.screenshot().await.expect("screenshot");
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    // Below the page's header bar, in the middle.
    let (x, y) = (info.width as usize / 2, info.height as usize * 3 / 5);
    let at = (y * info.width as usize + x) * channels;
    (buf[at], buf[at + 1], buf[at + 2])
}

pub(super) async fn wait_screen(client: &fantoccini::Client, want: (u8, u8, u8), what: &str) {
    let mut last = (0, 0, 0);
    for _ in 0..150 {
        last = screen_centre(client).await;
        if close(last, want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: the desktop never showed {want:?}; last {last:?}");
}

pub(super) async fn claim_in_browser(
    client: &fantoccini::Client,
    base: &str,
    email: &str,
) -> String {
    client.goto(&format!("{base}/")).await.expect("open /");
    fill(client, "#email", email).await;
    click(client, "form button[type=submit]").await;
    click(client, "#open-desktop").await;
    wait_css(client, "body[data-desktop=connected]").await;
    wait_css(client, ".desktop-host")
        .await
        .text()
        .await
        .expect("host text")
}

fn cookie_header(cookies: &[fantoccini::cookies::Cookie<'static>]) -> String {
    cookies
        .iter()
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One agent per rig, each giving its display's Xvnc to browser desktops, once all their
/// VMs are free.
pub(super) async fn xvnc_agents(
    s: &TestServer,
    rigs: &[Rig],
    displays: &[Display],
) -> Vec<AgentProc> {
    let mut agents = Vec::new();
    for (rig, display) in rigs.iter().zip(displays) {
        let port = free_port().to_string();
        // Browser desktops take only a VM's own credential.
        let credential = mint_credential(s, &rig.vm).await;
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
    let want = rigs.len() as u64;
    wait_for(60, &format!("{want} VMs free"), || async {
        (s.free_count().await == want).then_some(())
    })
    .await;
    agents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvnc, xsetroot, xdotool and Chromium (.ci/run installs them)"]
async fn participants_get_their_own_desktop_in_the_browser_and_the_instructor_peeks() {
    require_tools();
    require_browser();
    let red = (204, 51, 51);
    let green = (51, 170, 85);
    let displays = [Display::free(), Display::free()];
    let mut s = TestServer::start_with(|c| {
        c.server.long_poll_seconds = LONG_POLL;
        c.desktop.mode = "browser".into();
    })
    .await;
    let rigs = [Rig::new("desktopa"), Rig::new("desktopb")];
    let agents = xvnc_agents(&s, &rigs, &displays).await;
    let colour_of = |host: &str| -> (u8, u8, u8) {
        let i = rigs
            .iter()
            .position(|r| r.vm == host)
            .unwrap_or_else(|| panic!("unknown VM {host}"));
        [red, green][i]
    };
    let display_of = |host: &str| -> &Display {
        &displays[rigs.iter().position(|r| r.vm == host).expect("known VM")]
    };
    let colour_and_display = async |host: &str| {
        display_of(host).paint(colour_of(host)).await;
    };

    let driver: Driver = start_driver().await;
    let ada = browser(&driver, 1000, 760).await;
    let ada_vm = claim_in_browser(&ada, &s.base, "ada@example.org").await;
    colour_and_display(&ada_vm).await;
    wait_screen(&ada, colour_of(&ada_vm), "Ada's desktop").await;
    shoot(&ada, "desktop-participant").await;

    let bob = browser(&driver, 1000, 760).await;
    let bob_vm = claim_in_browser(&bob, &s.base, "bob@example.org").await;
    assert_ne!(ada_vm, bob_vm);
    colour_and_display(&bob_vm).await;
    wait_screen(&bob, colour_of(&bob_vm), "Bob's desktop").await;

    // Without a claim cookie, with a forged one, or from another site: refused.
    assert_eq!(
        open_socket(s.addr(), "/desktop/ws", &[]).await.err(),
        Some(403)
    );
    let forged = format!(
        "lablink_claim=forged.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("ada@example.org")
    );
    assert_eq!(
        open_socket(s.addr(), "/desktop/ws", &[("cookie", forged)])
            .await
            .err(),
        Some(403)
    );
    let ada_cookie = cookie_header(&ada.get_all_cookies().await.expect("cookies"));
    assert_eq!(
        open_socket(
            s.addr(),
            "/desktop/ws",
            &[
                ("cookie", ada_cookie.clone()),
                ("origin", "http://evil.example".into())
            ]
        )
        .await
        .err(),
        Some(403)
    );
    // Ada's cookie reaches Ada's desktop only.
    let mut own = open_socket(s.addr(), "/desktop/ws", &[("cookie", ada_cookie)])
        .await
        .unwrap_or_else(|status| panic!("Ada's own desktop refused: {status}"));
    own.handshake().await;
    assert!(close(own.frame_centre().await, colour_of(&ada_vm)));
    drop(own);
    // Another participant's cookie: their own desktop, never Ada's (the seat comes from
    // the cookie; no request names a VM).
    let bob_cookie = cookie_header(&bob.get_all_cookies().await.expect("cookies"));
    let mut other = open_socket(s.addr(), "/desktop/ws", &[("cookie", bob_cookie)])
        .await
        .unwrap_or_else(|status| panic!("Bob's own desktop refused: {status}"));
    other.handshake().await;
    let seen = other.frame_centre().await;
    assert!(
        close(seen, colour_of(&bob_vm)),
        "Bob's cookie showed {seen:?}"
    );
    assert!(!close(seen, colour_of(&ada_vm)));
    drop(other);

    // The instructor's peek: the same pixels, and the participant is told.
    let admin = browser(&driver, 1000, 760).await;
    sign_in(&admin, &s.base, ADMIN_PASSWORD).await;
    admin
        .goto(&s.url(&format!("/admin/desktop/{ada_vm}")))
        .await
        .expect("open the peek");
    wait_css(&admin, "body[data-desktop=connected]").await;
    wait_screen(&admin, colour_of(&ada_vm), "the instructor's peek").await;
    shoot(&admin, "desktop-peek").await;
    wait_css(&ada, "#desktop-notice:not([hidden])").await;
    shoot(&ada, "desktop-participant-watched").await;

    // A peek's input never reaches the desktop; taking control's does.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN_USER}:{ADMIN_PASSWORD}"))
    );
    let display = display_of(&ada_vm);
    assert_eq!(display.pointer(), (5, 5));
    let peek_path = format!("/admin/desktop/{ada_vm}/ws");
    let mut peek = open_socket(s.addr(), &peek_path, &[("authorization", basic.clone())])
        .await
        .unwrap_or_else(|status| panic!("peek refused: {status}"));
    peek.handshake().await;
    peek.pointer(50, 60).await;
    // The server answers requests in order: three full frames after the pointer event,
    // it would long have moved the pointer.
    for _ in 0..3 {
        peek.frame_centre().await;
    }
    assert_eq!(display.pointer(), (5, 5), "a peek moved the pointer");
    let control_path = format!("/admin/desktop/{ada_vm}/ws?control=1");
    let mut control = open_socket(s.addr(), &control_path, &[("authorization", basic)])
        .await
        .unwrap_or_else(|status| panic!("control refused: {status}"));
    control.handshake().await;
    control.pointer(50, 60).await;
    control.frame_centre().await;
    wait_for(10, "the instructor's pointer on the desktop", || async {
        (display.pointer() == (50, 60)).then_some(())
    })
    .await;

    // Both views are in the audit log.
    let audit = s.get("/admin/audit", crate::helpers::Auth::admin()).await;
    let page = audit.text;
    assert!(page.contains("desktop_peek"), "{page}");
    assert!(page.contains("desktop_control"), "{page}");

    drop(peek);
    drop(control);
    let _ = admin.close().await;

    // A reload, and an allocator restart: Ada's desktop comes back by itself (her page
    // reconnects, and so does her VM's agent).
    ada.refresh().await.expect("reload");
    wait_css(&ada, "body[data-desktop=connected][data-connects='1']").await;
    wait_screen(&ada, colour_of(&ada_vm), "Ada's desktop after a reload").await;
    s = s
        .restart_on_same_port(|c| {
            c.server.long_poll_seconds = LONG_POLL;
            c.desktop.mode = "browser".into();
        })
        .await;
    // Connected a second time since the reload: after the restart.
    wait_css(&ada, "body[data-desktop=connected][data-connects='2']").await;
    agents[rigs.iter().position(|r| r.vm == ada_vm).expect("Ada's VM")]
        .wait_log(60, &["desktop channel open"], 2)
        .await;
    wait_screen(
        &ada,
        colour_of(&ada_vm),
        "Ada's desktop after the allocator restarted",
    )
    .await;

    // Releasing Ada's seat ends her stream; her page goes to the seat page, which says so.
    let released = s
        .client
        .post(s.url(&format!("/api/vms/{ada_vm}/release")))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("release");
    assert_eq!(released.status(), 200);
    wait_css(&ada, "#seat[data-state=released]").await;
    shoot(&ada, "desktop-released").await;
    let _ = bob.close().await;
    let _ = ada.close().await;
    for mut agent in agents {
        agent.stop(30).await;
    }
}

/// `lablink demo --desktop browser` and tests: the local provider gives each VM a real
/// Xvnc desktop of its own, reached through the relay like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvnc (.ci/run installs it)"]
async fn the_local_provider_gives_browser_seats_a_real_desktop() {
    require_tools();
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
        c.desktop.mode = "browser".into();
    })
    .await;
    crate::helpers::launch_local(&s, 1).await;
    wait_for(60, "the local VM free", || async {
        (s.free_count().await == 1).then_some(())
    })
    .await;
    let claimed = s.claim("lin@example.org", "").await;
    assert_eq!(claimed.status, 200, "{}", claimed.html);
    let cookie = claimed.cookie.expect("a claim cookie");
    let mut viewer = None;
    for _ in 0..100 {
        if let Ok(v) = open_socket(s.addr(), "/desktop/ws", &[("cookie", cookie.clone())]).await {
            viewer = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut viewer = viewer.expect("the local VM's desktop opened within 20 s");
    viewer.handshake().await;
    assert_eq!(viewer.size, lablink::agent::vnc::XVNC_SIZE);
    viewer.frame_centre().await;
}

/// An Xvfb display that outlives its clients (`-noreset`: without it, the X server resets
/// when `xsetroot`, its only client, exits, and the colour is gone).
struct Xvfb(std::process::Child);

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--vnc x11vnc`: the agent attaches x11vnc to a display a desktop already runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvfb, x11vnc, xsetroot, xdotool and Chromium (.ci/run installs them)"]
async fn x11vnc_shows_an_existing_display_in_the_browser() {
    require(&["Xvfb", "x11vnc", "xsetroot", "xdotool"]);
    require_browser();
    let display = Display::free();
    let xvfb = Xvfb(
        Command::new("Xvfb")
            .args([
                &display.name,
                "-screen",
                "0",
                "800x600x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start Xvfb (apt-get install xvfb)"),
    );
    let blue = (40, 90, 200);
    display.paint(blue).await;
    let s = TestServer::start_with(|c| {
        c.server.long_poll_seconds = LONG_POLL;
        c.desktop.mode = "browser".into();
    })
    .await;
    let rig = Rig::new("attached");
    let credential = mint_credential(&s, &rig.vm).await;
    let port = free_port().to_string();
    let mut agent = rig.agent(
        &s.base,
        Token::Flag(&credential),
        Gpu::Fake,
        &[
            "--vnc",
            "x11vnc",
            "--vnc-display",
            &display.name,
            "--vnc-port",
            &port,
        ],
    );
    wait_for(60, "the VM free", || async {
        (s.free_count().await == 1).then_some(())
    })
    .await;
    let driver: Driver = start_driver().await;
    let lin = browser(&driver, 1000, 760).await;
    claim_in_browser(&lin, &s.base, "lin@example.org").await;
    wait_screen(&lin, blue, "the attached display").await;
    shoot(&lin, "desktop-x11vnc").await;
    let _ = lin.close().await;
    agent.stop(30).await;
    drop(xvfb);
}
