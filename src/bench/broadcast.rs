//! The broadcast's bandwidth: one seat's desktop on air to `viewers` participants. The
//! allocator holds one view-only stream to the seat (one tunnel, one VNC connection) and
//! fans its updates out to every viewer, so the broadcast VM uploads the screen once
//! however many watch.
//!
//! The seat's screen is TigerVNC's Xvnc when it is installed, all of it repainted with new
//! two-colour noise every `CHANGE` (a busy desktop: every update a full screen that
//! compresses badly); otherwise the synthetic RFB server, which answers an incremental request one
//! `CHANGE` later with a full Raw frame. Its agent is this executable's desktop channel
//! code, run in-process, reaching the allocator through a counting proxy: what passes the
//! proxy towards the allocator (the channel and every tunnel) is what leaves the VM. Each
//! viewer holds a claimed seat's cookie, opens `/broadcast/ws`, sends noVNC's pixel format
//! and the encodings noVNC asks for (which the fan-out ignores: it serves Raw, CopyRect and
//! Hextile) and asks for the next update as soon as one arrived;
//! a refused open is tried again 2 s later, as the participant's page does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::desktop::{self, COPY_RECT, RAW, Synthetic, TIGHT, ZRLE};
use super::heartbeat::{cpu_share, cpu_time};
use super::report::Record;
use super::{ADMIN_PASSWORD, Server, register, rss_mib};
use crate::agent::desktop_channel::DesktopSource;
use crate::agent::vnc::{VncServer, XVNC_SIZE};
use crate::rfb::fanout::NOVNC_SET_PIXEL_FORMAT;

/// How often the broadcast screen changes, all of it.
const CHANGE: Duration = Duration::from_millis(500);
/// How long the participant's page waits before it opens the broadcast again
/// (assets/classroom.js).
const RETRY: Duration = Duration::from_secs(2);
/// noVNC's defaults: JPEG quality 6 and compression level 2, as pseudo-encodings.
const QUALITY_6: i32 = -32 + 6;
const COMPRESS_2: i32 = -256 + 2;
/// What noVNC asks for, in its order (less the pseudo-encodings the bench cannot parse).
const ENCODINGS: [i32; 6] = [COPY_RECT, TIGHT, ZRLE, RAW, QUALITY_6, COMPRESS_2];
const SOURCE: &str = "bsource-vm-1";
/// A viewer without its first frame this long after the start gives up: it is counted
/// unserved, and the rates are those of the viewers served.
const FIRST_FRAME_LIMIT: Duration = Duration::from_secs(60);

/// What one viewer received.
#[derive(Default)]
struct Watched {
    bytes: AtomicU64,
    updates: AtomicU64,
}

impl Watched {
    fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.updates.fetch_add(1, Ordering::Relaxed);
    }
}

/// The seat's screen: Xvnc on a display, or the synthetic server.
struct Screen {
    source: Arc<dyn DesktopSource>,
    xvnc: Option<(Arc<VncServer>, u32)>,
    what: String,
    /// Xvnc's repaints so far.
    repaints: Arc<AtomicU64>,
}

async fn screen(stop: &CancellationToken) -> Result<Screen, String> {
    let why = match desktop::start_xvnc().await {
        Ok((xvnc, display)) => match desktop::paint_noise(display, XVNC_SIZE) {
            Ok(()) => {
                return Ok(Screen {
                    source: xvnc.clone(),
                    xvnc: Some((xvnc, display)),
                    what: format!(
                        "Xvnc {}×{}, all of it repainted every {} ms",
                        XVNC_SIZE.0,
                        XVNC_SIZE.1,
                        CHANGE.as_millis()
                    ),
                    repaints: Arc::default(),
                });
            }
            Err(e) => {
                xvnc.stop().await;
                e
            }
        },
        Err(e) => e,
    };
    let port = desktop::synthetic_server(stop.clone(), Some(CHANGE)).await?;
    Ok(Screen {
        source: Arc::new(Synthetic(port)),
        xvnc: None,
        what: format!(
            "synthetic RFB server, a full-HD Raw frame every {} ms (no Xvnc: {why})",
            CHANGE.as_millis()
        ),
        repaints: Arc::default(),
    })
}

/// A loopback proxy to `to`; the bytes it carries towards `to` are added to `up`.
async fn counting_proxy(
    to: SocketAddr,
    up: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = stop.cancelled() => return,
            };
            let Ok((agent, _)) = accepted else { continue };
            let up = up.clone();
            tokio::spawn(async move {
                let Ok(allocator) = TcpStream::connect(to).await else {
                    return;
                };
                let _ = (agent.set_nodelay(true), allocator.set_nodelay(true));
                let (agent_in, agent_out) = agent.into_split();
                let (allocator_in, allocator_out) = allocator.into_split();
                tokio::join!(
                    pipe(agent_in, allocator_out, Some(up)),
                    pipe(allocator_in, agent_out, None)
                );
            });
        }
    });
    Ok(addr)
}

async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, counted: Option<Arc<AtomicU64>>) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if let Some(c) = &counted {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The process id of the Xvnc serving `display`, for its CPU time.
fn xvnc_pid(display: u32) -> Option<u32> {
    let wanted = format!(":{display}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0);
            let program = args.next()?;
            (program.ends_with(b"Xvnc") && args.next()? == wanted.as_bytes()).then_some(pid)
        })
}

/// Repaints `display` every `CHANGE` until `stop`, counting the repaints; the task ends
/// after its last repaint (before Xvnc may be stopped).
fn repaint(
    display: u32,
    repaints: Arc<AtomicU64>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHANGE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let painted =
                tokio::task::spawn_blocking(move || desktop::paint_noise(display, XVNC_SIZE)).await;
            match painted {
                Ok(Ok(())) => {
                    repaints.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot repaint the broadcast screen"),
                Err(e) => tracing::warn!(error = %e, "the repaint task failed"),
            }
        }
    })
}

/// Puts the source seat on air as the instructor does through the API, trying while its
/// agent's desktop channel is not attached yet; when the successful request was sent.
async fn start_broadcast(http: &reqwest::Client, addr: SocketAddr) -> Result<Instant, String> {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let sent = Instant::now();
        let resp = http
            .post(format!("http://{addr}/api/broadcast"))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .json(&serde_json::json!({ "hostname": SOURCE }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.is_success() {
            return Ok(sent);
        }
        let body = resp.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::SERVICE_UNAVAILABLE || Instant::now() > give_up {
            return Err(format!("POST /api/broadcast answered {status}: {body}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One participant's page watching the broadcast: its first frame's arrival goes to
/// `first`, then every update is counted in `seen` until `stop`.
async fn viewer(
    addr: SocketAddr,
    cookie: String,
    seen: Arc<Watched>,
    first: mpsc::UnboundedSender<Instant>,
    refused: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Result<(), String> {
    let started = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut link, size) = loop {
        let attempt = async {
            let mut link = desktop::relayed(addr, "/broadcast/ws", &cookie).await?;
            let size = link.handshake().await?;
            link.send(&NOVNC_SET_PIXEL_FORMAT).await?;
            link.encodings(&ENCODINGS).await?;
            link.request(false, size).await?;
            let bytes = link.read_update(&mut buf).await?;
            Ok::<_, String>((link, size, bytes))
        };
        match attempt.await {
            Ok((link, size, bytes)) => {
                let _ = first.send(Instant::now());
                seen.add(bytes);
                break (link, size);
            }
            Err(e) if started.elapsed() + RETRY > FIRST_FRAME_LIMIT => {
                return Err(format!("no first frame within {FIRST_FRAME_LIMIT:?}: {e}"));
            }
            Err(_) => {
                refused.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    () = stop.cancelled() => return Ok(()),
                }
            }
        }
    };
    loop {
        link.request(true, size).await?;
        tokio::select! {
            bytes = link.read_update(&mut buf) => seen.add(bytes?),
            () = stop.cancelled() => return Ok(()),
        }
    }
}

pub async fn load(
    server: &Server,
    viewers: usize,
    secs: Duration,
    record: &Record,
) -> Result<(), String> {
    register(server, "bview", viewers as u64, "running", 16).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let mut cookies = Vec::with_capacity(viewers);
    for n in 1..=viewers {
        cookies.push(desktop::claim(&http, server.addr, n).await?);
    }
    // Registered after the claims, so that none of them took it.
    register(server, "bsource", 1, "running", 1).await?;
    let stop = CancellationToken::new();
    let screen = screen(&stop).await?;
    let painter = screen
        .xvnc
        .as_ref()
        .map(|(_, display)| repaint(*display, screen.repaints.clone(), stop.clone()));
    let result = on_air(server, &http, cookies, &screen, secs, &stop, record).await;
    stop.cancel();
    if let Some(painter) = painter {
        let _ = painter.await;
    }
    if let Some((xvnc, _)) = &screen.xvnc {
        xvnc.stop().await;
    }
    result
}

async fn on_air(
    server: &Server,
    http: &reqwest::Client,
    cookies: Vec<String>,
    screen: &Screen,
    secs: Duration,
    stop: &CancellationToken,
    record: &Record,
) -> Result<(), String> {
    let viewers = cookies.len();
    let up = Arc::new(AtomicU64::new(0));
    let proxy = counting_proxy(server.addr, up.clone(), stop.clone()).await?;
    let base = format!("http://{proxy}");
    desktop::agents(server, &base, vec![SOURCE.to_owned()], &screen.source, stop).await?;
    let xvnc = screen
        .xvnc
        .as_ref()
        .and_then(|(_, display)| xvnc_pid(*display));

    let rss_before = rss_mib(server.pid).0;
    let started = start_broadcast(http, server.addr).await?;
    let (first_tx, mut first_rx) = mpsc::unbounded_channel();
    let refused = Arc::new(AtomicU64::new(0));
    let seen: Vec<Arc<Watched>> = (0..viewers).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = cookies
        .into_iter()
        .zip(&seen)
        .map(|(cookie, seen)| {
            tokio::spawn(viewer(
                server.addr,
                cookie,
                seen.clone(),
                first_tx.clone(),
                refused.clone(),
                stop.clone(),
            ))
        })
        .collect();
    drop(first_tx);
    let mut last_first = started;
    let mut firsts = 0;
    while firsts < viewers {
        match tokio::time::timeout(FIRST_FRAME_LIMIT, first_rx.recv()).await {
            Ok(Some(at)) => {
                last_first = last_first.max(at);
                firsts += 1;
            }
            // Every viewer task ended or hangs: their errors say why.
            Ok(None) | Err(_) => break,
        }
    }
    let first_ms = last_first.duration_since(started).as_secs_f64() * 1000.0;

    if firsts == 0 {
        stop.cancel();
        let mut why = String::from("no viewer said why");
        for task in tasks {
            if let Ok(Err(e)) = task.await {
                why = e;
            }
        }
        return Err(format!("no broadcast viewer had a first frame: {why}"));
    }
    // One change on every stream before measuring: all of them past their first frame.
    tokio::time::sleep(CHANGE).await;
    let totals = || {
        let viewed: Vec<(u64, u64)> = seen
            .iter()
            .map(|s| {
                (
                    s.bytes.load(Ordering::Relaxed),
                    s.updates.load(Ordering::Relaxed),
                )
            })
            .collect();
        let counted = (
            up.load(Ordering::Relaxed),
            screen.repaints.load(Ordering::Relaxed),
        );
        (viewed, counted)
    };
    let before = totals();
    let cpu_before = (cpu_time(server.pid), xvnc.and_then(cpu_time));
    let t = Instant::now();
    tokio::time::sleep(secs).await;
    let wall = t.elapsed();
    let after = totals();
    let cpu = cpu_share(cpu_before.0, cpu_time(server.pid), wall);
    let xvnc_cpu = cpu_share(cpu_before.1, xvnc.and_then(cpu_time), wall);
    let rss_after = rss_mib(server.pid).0;
    stop.cancel();
    let mut failed = Vec::new();
    for (n, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("viewer {}: {e}", n + 1)),
            Err(e) => failed.push(format!("viewer {}: {e}", n + 1)),
        }
    }
    if let Some(first) = failed.first() {
        record.say(format_args!(
            "{:<28} {} of {viewers} viewers failed, the first: {first}",
            "broadcast viewer errors",
            failed.len()
        ));
    }

    let rate = |from: u64, to: u64| (to - from) as f64 / wall.as_secs_f64();
    let upload = rate(before.1.0, after.1.0);
    // The viewers that had their first frame: the rates are theirs.
    let served: Vec<(f64, f64)> = before
        .0
        .iter()
        .zip(&after.0)
        .filter(|(b, _)| b.1 > 0)
        .map(|(b, a)| (rate(b.0, a.0), rate(b.1, a.1)))
        .collect();
    let n = served.len() as f64;
    let delivered = served.iter().map(|v| v.0).sum::<f64>() / n;
    let slowest = served.iter().map(|v| v.0).fold(f64::INFINITY, f64::min);
    let updates = served.iter().map(|v| v.1).sum::<f64>() / n;
    let changes = rate(before.1.1, after.1.1);
    let refused = refused.load(Ordering::Relaxed);
    let unserved = viewers - served.len();
    record.say(format_args!(
        "{:<28} {viewers:>10} viewers   start → first frame on {} of them {first_ms:.0} ms   refused opens {refused} (tried again after {} s)   screen: {}",
        "broadcast viewers",
        served.len(),
        RETRY.as_secs(),
        screen.what,
    ));
    let real = screen.xvnc.is_some();
    let vnc_cpu = if real {
        format!("   Xvnc {xvnc_cpu:.0} % of a core, {changes:.1} screen changes/s")
    } else {
        String::new()
    };
    record.say(format_args!(
        "{:<28} {:>10.2} MB/s total   {:.0} kB/s per viewer{vnc_cpu}",
        "broadcast VM upload",
        upload / 1e6,
        upload / n / 1e3,
    ));
    record.say(format_args!(
        "{:<28} {:>10.0} kB/s per viewer   slowest {:.0} kB/s   {updates:.2} updates/s each",
        "broadcast delivered",
        delivered / 1e3,
        slowest / 1e3,
    ));
    record.say(format_args!(
        "{:<28} CPU {cpu:.1} % of a core   RSS {rss_before:.1} → {rss_after:.1} MiB ({:+.1} MiB)",
        "broadcast allocator",
        rss_after - rss_before,
    ));
    record.figure("broadcast_first_frame_all_ms", first_ms);
    record.figure("broadcast_refused_opens", refused as f64);
    record.figure("broadcast_unserved_viewers", unserved as f64);
    record.figure("broadcast_viewer_errors", failed.len() as f64);
    record.figure("broadcast_vm_upload_bytes_s", upload);
    record.figure("broadcast_vm_upload_bytes_s_per_viewer", upload / n);
    record.figure("broadcast_delivered_bytes_s_per_viewer", delivered);
    record.figure("broadcast_delivered_slowest_bytes_s", slowest);
    record.figure("broadcast_updates_per_s", updates);
    record.figure("broadcast_cpu_pct", cpu);
    record.figure("broadcast_rss_growth_mib", rss_after - rss_before);
    record.figure("broadcast_real_vnc", f64::from(u8::from(real)));
    if real {
        record.figure("broadcast_xvnc_cpu_pct", xvnc_cpu);
        record.figure("broadcast_screen_changes_per_s", changes);
    }
    Ok(())
}
