//! The seat wall under a full room: `seats` browser seats whose simulated agents each send
//! a thumbnail (a JPEG of a busy 320×180 desktop, the size the real agent sends) every
//! `desktop.thumbnail_seconds` (5 s), every one changed, and one console watching the wall
//! as a browser does: the live stream, and each tile's new picture fetched when its event
//! names it (six connections, as browsers allow per site). Measured over `secs`: the
//! allocator's CPU share and RSS growth, the bytes per seat and second from the agents and
//! to the console, and the agents' request latency.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{Conn, Samples};
use super::heartbeat::{admin_api, cpu_share, cpu_time};
use super::report::Record;
use super::{ADMIN_PASSWORD, Server, register, rss_mib};
use crate::agent::thumbnail::{WIDTH, jpeg};
use crate::rfb::Screen;

/// How often each agent sends (the allocator's default `desktop.thumbnail_seconds`).
pub const EVERY: Duration = Duration::from_secs(5);
/// Distinct pictures each agent cycles through, so every one it sends is new.
const PICTURES: usize = 8;
/// The console's connections for pictures.
const CONSOLE_CONNECTIONS: usize = 6;

/// A busy desktop's thumbnail: windows of text-like noise on a gradient, `seed` making each
/// one different. Some 15 KB as JPEG, like a real desktop with a terminal and an
/// editor open.
fn busy_desktop(seed: u64) -> Result<Vec<u8>, String> {
    let (w, h) = (usize::from(WIDTH), usize::from(WIDTH) * 9 / 16);
    // A glyph pixel is a 2×2 block, on or off by a hash of where it is and of `seed`.
    let ink = |x: usize, y: usize| {
        let mut v =
            (x / 2 * 7919 + y / 2 * 104_729) as u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        v ^= v >> 33;
        v = v.wrapping_mul(0xff51_afd7_ed55_8ccd);
        v ^= v >> 33;
        v.is_multiple_of(4) && (x + y / 10 * 37) % 130 < 90
    };
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            // Two "windows" of text lines on light backgrounds.
            let in_window = (20..150).contains(&x) && (15..160).contains(&y)
                || (170..300).contains(&x) && (30..170).contains(&y);
            let pixel = if in_window {
                if y % 10 < 5 && ink(x, y) {
                    [30, 30, 40]
                } else {
                    [235, 235, 230]
                }
            } else {
                [(x / 3) as u8, (y / 2) as u8, 120]
            };
            rgb.extend_from_slice(&pixel);
        }
    }
    jpeg(&Screen {
        width: WIDTH,
        height: h as u16,
        rgb,
    })
}

/// Counts what one direction carried.
#[derive(Default)]
struct Traffic {
    bytes: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

impl Traffic {
    fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// One simulated agent: its picture every `EVERY`, starting at `offset` (the fleet spread
/// over the interval), until `stop`; its request latencies.
async fn agent(
    addr: SocketAddr,
    host: String,
    credential: String,
    pictures: Arc<Vec<Bytes>>,
    offset: Duration,
    sent: Arc<Traffic>,
    stop: CancellationToken,
) -> Samples {
    let mut samples = Samples::default();
    let path = format!("/api/desktop/thumbnail?hostname={host}");
    let auth = format!("Bearer {credential}");
    let mut conn = None;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, EVERY);
    for n in 0.. {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let picture = pictures[n % pictures.len()].clone();
        if conn.is_none() {
            conn = Conn::open(addr).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            samples.errors += 1;
            continue;
        };
        let t = Instant::now();
        let len = picture.len();
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "image/jpeg"),
        ];
        match c.send(Method::PUT, &path, &headers, picture).await {
            Ok(StatusCode::OK) => {
                samples.ok += 1;
                samples.micros.push(t.elapsed().as_micros() as u32);
                sent.add(len);
            }
            Ok(_) => samples.errors += 1,
            Err(_) => {
                samples.errors += 1;
                conn = None;
            }
        }
    }
    samples
}

/// The console: the wall's live stream, and every picture an event names that it has not
/// fetched yet (as the page's images reload when their address changes).
async fn console(
    addr: SocketAddr,
    stream: Arc<Traffic>,
    pictures: Arc<Traffic>,
    stop: CancellationToken,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let base = format!("http://{addr}");
    let (urls, fetch) = mpsc::channel::<String>(4096);
    let fetch = Arc::new(tokio::sync::Mutex::new(fetch));
    for _ in 0..CONSOLE_CONNECTIONS {
        let (http, base, fetch, pictures) =
            (http.clone(), base.clone(), fetch.clone(), pictures.clone());
        tokio::spawn(async move {
            loop {
                let Some(url) = fetch.lock().await.recv().await else {
                    return;
                };
                let got = http
                    .get(format!("{base}{url}"))
                    .basic_auth("admin", Some(ADMIN_PASSWORD))
                    .send()
                    .await;
                match got {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => match r.bytes().await {
                        Ok(b) => pictures.add(b.len()),
                        Err(_) => {
                            pictures.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    _ => {
                        pictures.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let mut events = http
        .get(format!("{base}/admin/wall/events"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if events.status() != reqwest::StatusCode::OK {
        return Err(format!("the wall's stream answered {}", events.status()));
    }
    let mut shown: HashMap<String, String> = HashMap::new();
    let mut pending = String::new();
    loop {
        let chunk = tokio::select! {
            c = events.chunk() => c.map_err(|e| e.to_string())?,
            () = stop.cancelled() => return Ok(()),
        };
        let Some(chunk) = chunk else {
            return Err("the wall's stream ended".into());
        };
        stream
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            stream.requests.fetch_add(1, Ordering::Relaxed);
            for url in picture_urls(&event) {
                let host = url.split('/').nth(3).unwrap_or_default().to_owned();
                if shown.get(&host) != Some(&url) {
                    shown.insert(host, url.clone());
                    let _ = urls.try_send(url);
                }
            }
        }
    }
}

/// The picture addresses (`/admin/wall/<host>/thumbnail?v=N`) an event names.
fn picture_urls(event: &str) -> Vec<String> {
    event
        .match_indices("/admin/wall/")
        .filter_map(|(at, _)| {
            let rest = &event[at..];
            let end = rest.find('"')?;
            let url = &rest[..end];
            url.contains("/thumbnail?v=").then(|| url.to_owned())
        })
        .collect()
}

pub async fn load(
    server: &Server,
    seats: usize,
    secs: Duration,
    record: &Record,
) -> Result<(), String> {
    register(server, "wall", seats as u64, "running", 16).await?;
    let hosts: Vec<String> = (1..=seats).map(|n| format!("wall-vm-{n}")).collect();
    let credentials = admin_api(server)?.mint(&hosts).await?;
    let http = reqwest::Client::new();
    for n in 1..=seats {
        let resp = http
            .post(format!("http://{}/api/request_vm", server.addr))
            .form(&[
                ("email", format!("wall-{n}@example.org")),
                ("desktop", "browser".into()),
            ])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("claim {n} answered {}", resp.status()));
        }
    }
    let pictures: Vec<Bytes> = (0..PICTURES as u64)
        .map(|seed| busy_desktop(seed + 1).map(Bytes::from))
        .collect::<Result<_, _>>()?;
    let mean_kib = pictures.iter().map(Bytes::len).sum::<usize>() as f64 / PICTURES as f64 / 1024.0;
    let pictures = Arc::new(pictures);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_mib(server.pid).0;
    let stop = CancellationToken::new();
    let (up, stream, down) = (
        Arc::new(Traffic::default()),
        Arc::new(Traffic::default()),
        Arc::new(Traffic::default()),
    );
    let watching = tokio::spawn(console(
        server.addr,
        stream.clone(),
        down.clone(),
        stop.clone(),
    ));
    let mut agents = Vec::with_capacity(seats);
    for (i, (host, credential)) in hosts.into_iter().zip(credentials).enumerate() {
        let offset = EVERY.mul_f64(i as f64 / seats as f64);
        agents.push(tokio::spawn(agent(
            server.addr,
            host,
            credential,
            pictures.clone(),
            offset,
            up.clone(),
            stop.clone(),
        )));
    }
    // One round of pictures before measuring: the wall filled, as in a running workshop.
    tokio::time::sleep(EVERY + Duration::from_secs(1)).await;
    let counted = |t: &Traffic| t.bytes.load(Ordering::Relaxed);
    let (up0, stream0, down0) = (counted(&up), counted(&stream), counted(&down));
    let cpu_before = cpu_time(server.pid);
    let t = Instant::now();
    tokio::time::sleep(secs).await;
    let wall = t.elapsed();
    let cpu = cpu_share(cpu_before, cpu_time(server.pid), wall);
    let (up1, stream1, down1) = (counted(&up), counted(&stream), counted(&down));
    let (rss_after, _) = rss_mib(server.pid);
    stop.cancel();
    let mut latency = Samples::default();
    for a in agents {
        latency.merge(a.await.map_err(|e| e.to_string())?);
    }
    let console_failed = match watching.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(e.to_string()),
    };
    if let Some(e) = console_failed {
        return Err(format!("the console watching the wall: {e}"));
    }

    let per_seat = |bytes: u64| bytes as f64 / seats as f64 / wall.as_secs_f64();
    let agent_rate = per_seat(up1 - up0);
    let stream_rate = per_seat(stream1 - stream0);
    let picture_rate = per_seat(down1 - down0);
    let (p50, p99) = (latency.quantile_ms(0.5), latency.quantile_ms(0.99));
    let errors = latency.errors + down.errors.load(Ordering::Relaxed);
    record.say(format_args!(
        "{:<28} {seats:>10} seats   CPU {cpu:.1} % of a core   RSS {rss_before:.1} → {rss_after:.1} MiB   ({mean_kib:.1} KiB pictures every {} s)",
        "seat wall",
        EVERY.as_secs()
    ));
    record.say(format_args!(
        "{:<28} agent→allocator {:.0} B/s per seat   allocator→console {:.0} B/s per seat ({:.0} stream + {:.0} pictures)   PUT p50 {p50:.2} ms p99 {p99:.2} ms   errors {errors}",
        "seat wall bandwidth",
        agent_rate,
        stream_rate + picture_rate,
        stream_rate,
        picture_rate,
    ));
    record.figure("wall_cpu_pct", cpu);
    record.figure("wall_rss_growth_mib", rss_after - rss_before);
    record.figure("wall_picture_kib", mean_kib);
    record.figure("wall_agent_bytes_per_seat_s", agent_rate);
    record.figure("wall_console_bytes_per_seat_s", stream_rate + picture_rate);
    record.figure("wall_stream_bytes_per_seat_s", stream_rate);
    record.figure("wall_put_p50_ms", p50);
    record.figure("wall_put_p99_ms", p99);
    record.figure("wall_errors", errors as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_pictures_weigh_what_real_desktops_do() {
        for seed in 1..=PICTURES as u64 {
            let picture = busy_desktop(seed).expect("jpeg");
            assert!(
                (10 * 1024..20 * 1024).contains(&picture.len()),
                "{} bytes",
                picture.len()
            );
        }
        assert_ne!(busy_desktop(1), busy_desktop(2));
    }

    #[test]
    fn picture_addresses_are_read_from_a_tile_event() {
        let event = "event: tile-vm-1\ndata: <a href=\"/admin/desktop/vm-1\"><img src=\"/admin/wall/vm-1/thumbnail?v=12\" loading=\"lazy\"></a>\n\n";
        assert_eq!(picture_urls(event), ["/admin/wall/vm-1/thumbnail?v=12"]);
        assert!(picture_urls("event: tile-vm-2\ndata: <span>free</span>\n\n").is_empty());
    }
}
