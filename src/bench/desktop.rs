//! The browser desktop relay: a viewer straight on a VNC server against the same viewer
//! through the allocator (WebSocket → allocator → agent tunnel → VNC server), for full
//! frames per second (throughput) and small round trips (added latency); then many idle
//! desktop streams on one allocator (its memory per stream and CPU while they idle).
//!
//! The VNC server is a synthetic one in this process (RFB 3.8, security None, every
//! framebuffer update request answered with a Raw rectangle of the size asked), so the
//! figures are the relay's, not a real server's encoding speed. The agents are this
//! executable's own desktop channel code, run in-process, one per VM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use tokio_util::sync::CancellationToken;

use super::heartbeat::{cpu_share, cpu_time};
use super::report::Record;
use super::{Server, register, rss_mib};
use crate::agent::api::Allocator;
use crate::agent::desktop_channel::{self, DesktopSource};
use crate::agent::vnc::{Endpoint, VncKind, VncServer, XVNC_SIZE};

/// The synthetic desktop's size (a full-HD screen, 32 bits per pixel).
const WIDTH: u16 = 1920;
const HEIGHT: u16 = 1080;
const BYTES_PER_PIXEL: usize = 4;
const ROUND_TRIPS: usize = 2_000;
pub(super) const RAW: i32 = 0;
pub(super) const COPY_RECT: i32 = 1;
/// What noVNC asks for first from a server at depth 24 (zlib, or JPEG when a quality level
/// is asked for too).
pub(super) const TIGHT: i32 = 7;
/// What a browser viewer gets from a busy screen: zlib-compressed tiles.
pub(super) const ZRLE: i32 = 16;
/// What the broadcast's fan-out serves besides Raw and CopyRect (stateless tiles).
const HEXTILE: i32 = 5;
/// A Tight pixel at depth 24: three bytes.
const TPIXEL: usize = 3;

/// The synthetic server, for the in-process agents.
pub(super) struct Synthetic(pub(super) u16);

impl DesktopSource for Synthetic {
    fn endpoint(&self) -> Result<Endpoint, String> {
        Ok(Endpoint {
            port: self.0,
            password: String::new(),
        })
    }
}

/// Serves RFB 3.8 with security None on a loopback port until `stop`. With `changes`, an
/// incremental update request is answered one interval later (a screen that changes that
/// often); without, at once.
pub(super) async fn synthetic_server(
    stop: CancellationToken,
    changes: Option<Duration>,
) -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let frame: Arc<[u8]> =
        vec![0x5a; usize::from(WIDTH) * usize::from(HEIGHT) * BYTES_PER_PIXEL].into();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = stop.cancelled() => return,
            };
            if let Ok((stream, _)) = accepted {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_viewer(stream, frame.clone(), changes));
            }
        }
    });
    Ok(port)
}

async fn serve_viewer(
    mut s: TcpStream,
    frame: Arc<[u8]>,
    changes: Option<Duration>,
) -> std::io::Result<()> {
    s.write_all(b"RFB 003.008\n").await?;
    let mut version = [0u8; 12];
    s.read_exact(&mut version).await?;
    s.write_all(&[1, 1]).await?;
    let mut choice = [0u8; 1];
    s.read_exact(&mut choice).await?;
    s.write_all(&[0, 0, 0, 0]).await?;
    s.read_exact(&mut choice).await?; // ClientInit
    let mut init = Vec::new();
    init.extend_from_slice(&WIDTH.to_be_bytes());
    init.extend_from_slice(&HEIGHT.to_be_bytes());
    init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    init.extend_from_slice(&5u32.to_be_bytes());
    init.extend_from_slice(b"bench");
    s.write_all(&init).await?;
    loop {
        let mut kind = [0u8; 1];
        s.read_exact(&mut kind).await?;
        match kind[0] {
            // FramebufferUpdateRequest: answer with a Raw rectangle of the size asked.
            3 => {
                let mut r = [0u8; 9];
                s.read_exact(&mut r).await?;
                if let (1, Some(every)) = (r[0], changes) {
                    tokio::time::sleep(every).await;
                }
                let w = u16::from_be_bytes([r[5], r[6]]).min(WIDTH);
                let h = u16::from_be_bytes([r[7], r[8]]).min(HEIGHT);
                let mut head = vec![0, 0, 0, 1, 0, 0, 0, 0];
                head.extend_from_slice(&w.to_be_bytes());
                head.extend_from_slice(&h.to_be_bytes());
                head.extend_from_slice(&[0, 0, 0, 0]);
                s.write_all(&head).await?;
                s.write_all(&frame[..usize::from(w) * usize::from(h) * BYTES_PER_PIXEL])
                    .await?;
            }
            // SetPixelFormat: its frame is one grey, the same in any 32-bit format.
            0 => {
                let mut format = [0u8; 19];
                s.read_exact(&mut format).await?;
            }
            2 => {
                let mut head = [0u8; 3];
                s.read_exact(&mut head).await?;
                let n = u16::from_be_bytes([head[1], head[2]]);
                let mut skip = vec![0u8; usize::from(n) * 4];
                s.read_exact(&mut skip).await?;
            }
            _ => return Ok(()),
        }
    }
}

/// A viewer's connection: straight to the server, or through the allocator.
pub(super) enum Link {
    Direct(TcpStream),
    Relayed {
        ws: Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>,
        pending: Vec<u8>,
    },
}

impl Link {
    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Link::Direct(s) => s.write_all(bytes).await.map_err(|e| e.to_string()),
            Link::Relayed { ws, .. } => ws
                .send(Message::Binary(bytes.to_vec().into()))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Reads and drops `n` bytes.
    async fn consume(&mut self, mut n: usize, buf: &mut [u8]) -> Result<(), String> {
        match self {
            Link::Direct(s) => {
                while n > 0 {
                    let take = n.min(buf.len());
                    s.read_exact(&mut buf[..take])
                        .await
                        .map_err(|e| e.to_string())?;
                    n -= take;
                }
                Ok(())
            }
            Link::Relayed { ws, pending } => loop {
                if pending.len() >= n {
                    pending.drain(..n);
                    return Ok(());
                }
                n -= pending.len();
                pending.clear();
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => pending.extend_from_slice(&b),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the relay closed the stream".into()),
                }
            },
        }
    }

    /// `n` bytes (a few: headers).
    async fn read(&mut self, n: usize) -> Result<Vec<u8>, String> {
        match self {
            Link::Direct(s) => {
                let mut bytes = vec![0u8; n];
                s.read_exact(&mut bytes).await.map_err(|e| e.to_string())?;
                Ok(bytes)
            }
            Link::Relayed { ws, pending } => {
                while pending.len() < n {
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) => pending.extend_from_slice(&b),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("the relay closed the stream".into()),
                    }
                }
                Ok(pending.drain(..n).collect())
            }
        }
    }

    /// Version and security None (what the agent offers viewers, and the synthetic
    /// server), then the init messages; the screen's size.
    pub(super) async fn handshake(&mut self) -> Result<(u16, u16), String> {
        self.read(12).await?;
        self.send(b"RFB 003.008\n").await?;
        self.read(2).await?;
        self.send(&[1]).await?;
        self.read(4).await?;
        self.init().await
    }

    /// ClientInit (shared), and ServerInit read past its name; the screen's size.
    async fn init(&mut self) -> Result<(u16, u16), String> {
        self.send(&[1]).await?;
        let init = self.read(24).await?;
        let name = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
        self.read(name as usize).await?;
        Ok((
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        ))
    }

    /// Asks for `encodings`, the preferred first (Raw is what a viewer gets when it names
    /// none).
    pub(super) async fn encodings(&mut self, encodings: &[i32]) -> Result<(), String> {
        let count = u16::try_from(encodings.len()).map_err(|e| e.to_string())?;
        let mut m = vec![2, 0];
        m.extend_from_slice(&count.to_be_bytes());
        for encoding in encodings {
            m.extend_from_slice(&encoding.to_be_bytes());
        }
        self.send(&m).await
    }

    /// One framebuffer update of `w`×`h`, requested and read in full; its size in bytes.
    async fn update(&mut self, w: u16, h: u16, buf: &mut [u8]) -> Result<usize, String> {
        self.request(false, (w, h)).await?;
        self.read_update(buf).await
    }

    /// Asks for an update of the screen from its top left corner.
    pub(super) async fn request(
        &mut self,
        incremental: bool,
        (w, h): (u16, u16),
    ) -> Result<(), String> {
        let mut m = vec![3, u8::from(incremental), 0, 0, 0, 0];
        m.extend_from_slice(&w.to_be_bytes());
        m.extend_from_slice(&h.to_be_bytes());
        self.send(&m).await
    }

    /// The next framebuffer update (Raw, CopyRect, Tight or ZRLE rectangles) read in full,
    /// past any bell or clipboard text before it; its size in bytes.
    pub(super) async fn read_update(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        let mut head = self.read(4).await?;
        loop {
            match head[0] {
                0 => break,
                // Bell: that byte alone.
                2 => head = [&head[1..], &self.read(1).await?].concat(),
                // ServerCutText: padding, a length, the text.
                3 => {
                    let len = self.read(4).await?;
                    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                    self.consume(len as usize, buf).await?;
                    head = self.read(4).await?;
                }
                other => return Err(format!("server message {other} instead of an update")),
            }
        }
        let mut bytes = 4;
        for _ in 0..u16::from_be_bytes([head[2], head[3]]) {
            let rect = self.read(12).await?;
            let (rw, rh) = (
                u16::from_be_bytes([rect[4], rect[5]]),
                u16::from_be_bytes([rect[6], rect[7]]),
            );
            let encoding = i32::from_be_bytes([rect[8], rect[9], rect[10], rect[11]]);
            let data = match encoding {
                RAW => usize::from(rw) * usize::from(rh) * BYTES_PER_PIXEL,
                COPY_RECT => 4,
                TIGHT => {
                    bytes += self.tight((rw, rh), buf).await?;
                    0
                }
                HEXTILE => {
                    bytes += self.hextile((rw, rh), buf).await?;
                    0
                }
                ZRLE => {
                    let len = self.read(4).await?;
                    bytes += 4;
                    u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize
                }
                // DesktopSize and friends carry no pixels.
                e if e < 0 => 0,
                e => return Err(format!("encoding {e} was not asked for")),
            };
            self.consume(data, buf).await?;
            bytes += 12 + data;
        }
        Ok(bytes)
    }

    /// A Hextile rectangle of `w`×`h` after its header, read in full; its size in bytes.
    async fn hextile(&mut self, (w, h): (u16, u16), buf: &mut [u8]) -> Result<usize, String> {
        let (w, h) = (usize::from(w), usize::from(h));
        let mut bytes = 0;
        for ty in (0..h).step_by(16) {
            for tx in (0..w).step_by(16) {
                let kind = self.read(1).await?[0];
                let mut len = if kind & 1 != 0 {
                    (w - tx).min(16) * (h - ty).min(16) * BYTES_PER_PIXEL
                } else {
                    (usize::from(kind & 2 != 0) + usize::from(kind & 4 != 0)) * BYTES_PER_PIXEL
                };
                if kind & 1 == 0 && kind & 8 != 0 {
                    self.consume(len, buf).await?;
                    bytes += len;
                    let count = usize::from(self.read(1).await?[0]);
                    bytes += 1;
                    len = count
                        * if kind & 16 != 0 {
                            BYTES_PER_PIXEL + 2
                        } else {
                            2
                        };
                }
                self.consume(len, buf).await?;
                bytes += 1 + len;
            }
        }
        Ok(bytes)
    }

    /// A Tight rectangle of `w`×`h` after its header, read in full; its size in bytes.
    async fn tight(&mut self, (w, h): (u16, u16), buf: &mut [u8]) -> Result<usize, String> {
        let control = self.read(1).await?[0];
        let mut bytes = 1;
        match control >> 4 {
            // Fill: one pixel.
            0x8 => {
                self.consume(TPIXEL, buf).await?;
                return Ok(bytes + TPIXEL);
            }
            0x9 => {
                let (len, len_bytes) = self.compact_length().await?;
                self.consume(len, buf).await?;
                return Ok(bytes + len_bytes + len);
            }
            kind if kind & 0x8 != 0 => {
                return Err(format!("Tight compression {kind:#x} was not asked for"));
            }
            _ => {}
        }
        let (w, h) = (usize::from(w), usize::from(h));
        let mut size = w * h * TPIXEL;
        if control & 0x40 != 0 {
            bytes += 1;
            match self.read(1).await?[0] {
                // Copy and gradient: a pixel each.
                0 | 2 => {}
                1 => {
                    let colors = usize::from(self.read(1).await?[0]) + 1;
                    self.consume(colors * TPIXEL, buf).await?;
                    bytes += 1 + colors * TPIXEL;
                    size = if colors == 2 {
                        w.div_ceil(8) * h
                    } else {
                        w * h
                    };
                }
                filter => return Err(format!("Tight filter {filter} is not one of 0, 1, 2")),
            }
        }
        // Less than 12 bytes are sent as they are, more compressed behind their length.
        if size < 12 {
            self.consume(size, buf).await?;
            return Ok(bytes + size);
        }
        let (len, len_bytes) = self.compact_length().await?;
        self.consume(len, buf).await?;
        Ok(bytes + len_bytes + len)
    }

    /// Tight's length of 1 to 3 bytes, 7 bits each (8 in the third); and how many bytes.
    async fn compact_length(&mut self) -> Result<(usize, usize), String> {
        let mut len = 0;
        for i in 0..2 {
            let b = self.read(1).await?[0];
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((len, i + 1));
            }
        }
        Ok((len | usize::from(self.read(1).await?[0]) << 14, 3))
    }
}

async fn direct(port: u16) -> Result<Link, String> {
    let s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(Link::Direct(s))
}

/// A WebSocket at `path` holding `cookie`.
pub(super) async fn relayed(addr: SocketAddr, path: &str, cookie: &str) -> Result<Link, String> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "cookie",
        cookie.parse().map_err(|_| "a bad cookie".to_owned())?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(answer) => format!(
                "WebSocket refused with {}: {}",
                answer.status(),
                String::from_utf8_lossy(answer.body().as_deref().unwrap_or_default())
            ),
            e => format!("WebSocket: {e}"),
        })?;
    Ok(Link::Relayed {
        ws: Box::new(ws),
        pending: Vec::new(),
    })
}

/// Claims a browser seat as participant `n`; the claim cookie.
pub(super) async fn claim(
    http: &reqwest::Client,
    addr: SocketAddr,
    n: usize,
) -> Result<String, String> {
    let resp = http
        .post(format!("http://{addr}/api/request_vm"))
        .form(&[
            ("email", format!("desk-{n}@example.org")),
            ("desktop", "browser".into()),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let cookie = resp
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    cookie.ok_or_else(|| format!("claim {n} answered {status} without a claim cookie"))
}

/// Throughput in MB/s of full frames for `secs`.
async fn throughput(
    link: &mut Link,
    (w, h): (u16, u16),
    secs: Duration,
    buf: &mut [u8],
) -> Result<f64, String> {
    let t = Instant::now();
    let mut bytes = 0usize;
    while t.elapsed() < secs {
        bytes += link.update(w, h, buf).await?;
    }
    Ok(bytes as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// p50 and p99 of a 1×1 update's round trip, in ms.
async fn latency(link: &mut Link, buf: &mut [u8]) -> Result<(f64, f64), String> {
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        link.update(1, 1, buf).await?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    Ok((at(0.5), at(0.99)))
}

/// Opens a relayed stream for `cookie`'s seat, trying until its VM's agent channel is up.
async fn relayed_when_ready(addr: SocketAddr, cookie: &str) -> Result<Link, String> {
    let mut last = String::new();
    for _ in 0..100 {
        match relayed(addr, "/desktop/ws", cookie).await {
            Ok(mut link) => {
                link.handshake().await?;
                return Ok(link);
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "no relayed desktop stream opened within 10 s: {last}"
    ))
}

/// Full frames per second and small round trips, straight and through the relay.
/// `what` names the lines, `key` the figures (`desktop_{key}_…`).
async fn compare(
    (what, key): (&str, &str),
    straight: &mut Link,
    through: &mut Link,
    (w, h): (u16, u16),
    secs: Duration,
    record: &Record,
) -> Result<(), String> {
    let mut buf = vec![0u8; 256 * 1024];
    let direct_rate = throughput(straight, (w, h), secs, &mut buf).await?;
    let relay_rate = throughput(through, (w, h), secs, &mut buf).await?;
    record.say(format_args!(
        "{:<28} {:>10.0} MB/s direct   {:.0} MB/s relayed   = {:.0} % of direct   ({what}, {w}×{h} frames)",
        "desktop relay throughput",
        direct_rate,
        relay_rate,
        relay_rate / direct_rate * 100.0,
    ));
    record.figure(&format!("desktop_{key}_direct_mb_s"), direct_rate);
    record.figure(&format!("desktop_{key}_relayed_mb_s"), relay_rate);
    record.figure(
        &format!("desktop_{key}_relayed_pct"),
        relay_rate / direct_rate * 100.0,
    );
    let (d50, d99) = latency(straight, &mut buf).await?;
    let (r50, r99) = latency(through, &mut buf).await?;
    record.say(format_args!(
        "{:<28} p50 {d50:.3} → {r50:.3} ms   p99 {d99:.3} → {r99:.3} ms   added p99 {:.3} ms   ({what}, {ROUND_TRIPS} round trips)",
        "desktop relay latency",
        r99 - d99
    ));
    record.figure(&format!("desktop_{key}_added_p99_ms"), r99 - d99);
    Ok(())
}

/// Starts one in-process agent desktop channel per VM name, each on a credential of its
/// own (browser desktops refuse the shared token), all serving `source`, reaching the
/// allocator at `base` (its own address, or a proxy in front of it).
pub(super) async fn agents(
    server: &Server,
    base: &str,
    names: Vec<String>,
    source: &Arc<dyn DesktopSource>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let credentials = super::heartbeat::admin_api(server)?.mint(&names).await?;
    for (name, credential) in names.into_iter().zip(credentials) {
        let alloc =
            Arc::new(Allocator::new(base.to_owned(), credential, name).map_err(|e| e.to_string())?);
        tokio::spawn(desktop_channel::run(
            alloc,
            source.clone(),
            Default::default(),
            stop.clone(),
        ));
    }
    Ok(())
}

pub async fn relay(
    server: &Server,
    streams: usize,
    secs: Duration,
    record: &Record,
) -> Result<(), String> {
    let stop = CancellationToken::new();
    let port = synthetic_server(stop.clone(), None).await?;
    let vms = streams.max(1);
    register(server, "desk", vms as u64, "running", 16).await?;
    let source: Arc<dyn DesktopSource> = Arc::new(Synthetic(port));
    agents(
        server,
        &format!("http://{}", server.addr),
        (1..=vms).map(|n| format!("desk-vm-{n}")).collect(),
        &source,
        &stop,
    )
    .await?;
    let http = reqwest::Client::new();
    let mut cookies = Vec::with_capacity(vms);
    for n in 1..=vms {
        cookies.push(claim(&http, server.addr, n).await?);
    }

    let mut straight = direct(port).await?;
    straight.handshake().await?;
    let mut through = relayed_when_ready(server.addr, &cookies[0]).await?;
    compare(
        ("synthetic server, Raw", "synthetic_raw"),
        &mut straight,
        &mut through,
        (WIDTH, HEIGHT),
        secs,
        record,
    )
    .await?;
    drop(through);
    drop(straight);
    if let Err(e) = against_xvnc(server, &http, vms + 1, secs, &stop, record).await {
        record.say(format_args!(
            "{:<28} skipped: {e}",
            "desktop relay, real Xvnc"
        ));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_mib(server.pid).0;
    let mut idle = Vec::with_capacity(vms);
    for cookie in &cookies {
        idle.push(relayed_when_ready(server.addr, cookie).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_mib(server.pid).0;
    let cpu_before = cpu_time(server.pid);
    let t = Instant::now();
    tokio::time::sleep(secs).await;
    let cpu = cpu_share(cpu_before, cpu_time(server.pid), t.elapsed());
    let per = (after - before) * 1024.0 / idle.len().max(1) as f64;
    record.say(format_args!(
        "{:<28} {:>10} open   RSS {before:.1} → {after:.1} MiB   {per:.1} KiB each   CPU {cpu:.2} % of a core while idle",
        "idle desktop streams",
        idle.len(),
    ));
    record.figure("desktop_idle_stream_kib", per);
    record.figure("desktop_idle_cpu_pct", cpu);
    drop(idle);
    stop.cancel();
    Ok(())
}

/// Tiles the display's background with a `w`×`h` picture of random pixels (`w` a multiple
/// of 8): a screen that compresses badly, so its updates are as large as a busy desktop's.
/// A picture as large as the screen does not repeat at all.
pub(super) fn paint_noise(display: u32, (w, h): (u16, u16)) -> Result<(), String> {
    let bits: Vec<String> = (0..usize::from(w) * usize::from(h) / 8)
        .map(|_| format!("0x{:02x}", rand::random::<u8>()))
        .collect();
    let xbm = format!(
        "#define noise_width {w}\n#define noise_height {h}\nstatic unsigned char noise_bits[] = {{\n{}\n}};\n",
        bits.join(",")
    );
    let path = std::env::temp_dir().join(format!("lablink-bench-noise-{}.xbm", std::process::id()));
    std::fs::write(&path, xbm).map_err(|e| e.to_string())?;
    let painted = std::process::Command::new("xsetroot")
        .arg("-bitmap")
        .arg(&path)
        .args(["-fg", "#224466", "-bg", "#ddeeff"])
        .env("DISPLAY", format!(":{display}"))
        .status();
    let _ = std::fs::remove_file(&path);
    match painted {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("xsetroot failed ({status})")),
        Err(e) => Err(format!("xsetroot: {e} (install x11-xserver-utils)")),
    }
}

/// TigerVNC's Xvnc started as the agent starts it (loopback, a fresh password) on a free
/// display, and that display's number; stop it with `VncServer::stop`.
pub(super) async fn start_xvnc() -> Result<(Arc<VncServer>, u32), String> {
    let display: u32 = (150..400)
        .find(|d| crate::provision::local::x_display_free(*d))
        .ok_or("no free X display number")?;
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let xvnc = Arc::new(VncServer::new(
        VncKind::Xvnc,
        "Xvnc".into(),
        format!(":{display}"),
        port,
        None,
        std::env::temp_dir(),
        None,
    ));
    xvnc.start()
        .await
        .map_err(|e| format!("Xvnc did not start ({e}); install tigervnc-standalone-server"))?;
    Ok((xvnc, display))
}

/// The same comparison against a real VNC server, Xvnc, when it is installed.
async fn against_xvnc(
    server: &Server,
    http: &reqwest::Client,
    n: usize,
    secs: Duration,
    stop: &CancellationToken,
    record: &Record,
) -> Result<(), String> {
    let (xvnc, display) = start_xvnc().await?;
    let result = async {
        let endpoint = VncServer::endpoint(&xvnc).ok_or("Xvnc has no endpoint")?;
        register(server, "deskx", 1, "running", 1).await?;
        let source: Arc<dyn DesktopSource> = xvnc.clone();
        let base = format!("http://{}", server.addr);
        agents(server, &base, vec!["deskx-vm-1".to_owned()], &source, stop).await?;
        let cookie = claim(http, server.addr, n).await?;
        let mut s = TcpStream::connect(("127.0.0.1", endpoint.port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        crate::rfb::authenticate(&mut s, &endpoint.password)
            .await
            .map_err(|e| e.to_string())?;
        let mut straight = Link::Direct(s);
        straight.init().await?;
        let mut through = relayed_when_ready(server.addr, &cookie).await?;
        compare(
            ("Xvnc, Raw", "xvnc_raw"),
            &mut straight,
            &mut through,
            XVNC_SIZE,
            secs,
            record,
        )
        .await?;
        paint_noise(display, (256, 256))?;
        straight.encodings(&[ZRLE]).await?;
        through.encodings(&[ZRLE]).await?;
        compare(
            ("Xvnc, busy screen, ZRLE", "xvnc_zrle"),
            &mut straight,
            &mut through,
            XVNC_SIZE,
            secs,
            record,
        )
        .await
    }
    .await;
    xvnc.stop().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(w: u16, h: u16, encoding: i32) -> Vec<u8> {
        let mut r = vec![0, 0, 0, 0];
        r.extend_from_slice(&w.to_be_bytes());
        r.extend_from_slice(&h.to_be_bytes());
        r.extend_from_slice(&encoding.to_be_bytes());
        r
    }

    #[tokio::test]
    async fn updates_are_read_whole_in_every_encoding_asked_for() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut link = Link::Direct(TcpStream::connect(addr).await.expect("connect"));
        let (mut server, _) = listener.accept().await.expect("accept");
        // A bell before the update, then five rectangles.
        let mut bytes = vec![2, 0, 0, 0, 5];
        // Tight fill: one pixel.
        bytes.extend(rect(4, 4, TIGHT));
        bytes.extend([0x80, 1, 2, 3]);
        // Tight JPEG of 200 bytes (a two-byte length).
        bytes.extend(rect(16, 16, TIGHT));
        bytes.extend([0x90, 0xc8, 0x01]);
        bytes.extend([7; 200]);
        // Tight with a two-colour palette: 16×2 at one bit a pixel is 4 bytes, sent as is.
        bytes.extend(rect(16, 2, TIGHT));
        bytes.extend([0x40, 1, 1, 9, 9, 9, 8, 8, 8, 1, 2, 3, 4]);
        // Tight copy, compressed to 20,000 bytes (a three-byte length).
        bytes.extend(rect(100, 100, TIGHT));
        bytes.extend([0x00, 0xa0, 0x9c, 0x01]);
        bytes.extend(vec![5; 20_000]);
        bytes.extend(rect(10, 10, COPY_RECT));
        bytes.extend([0, 1, 0, 2]);
        // And the next update: one Raw pixel.
        bytes.extend([0, 0, 0, 1]);
        bytes.extend(rect(1, 1, RAW));
        bytes.extend([0xff; 4]);
        server.write_all(&bytes).await.expect("write");
        let mut buf = vec![0; 4096];
        let first = link.read_update(&mut buf).await.expect("first update");
        assert_eq!(first, 4 + 16 + 215 + 25 + 20_016 + 16);
        assert_eq!(link.read_update(&mut buf).await, Ok(4 + 12 + 4));
    }
}
