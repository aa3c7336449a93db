//! A lean HTTP/1.1 load client: one kept-alive hyper connection per simulated client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    /// Sends one request and reads the whole answer; returns its status.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<StatusCode, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}

/// Latency samples of one phase, in microseconds.
#[derive(Default)]
pub struct Samples {
    pub micros: Vec<u32>,
    pub ok: u64,
    pub refused: u64,
    pub errors: u64,
}

impl Samples {
    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.ok += other.ok;
        self.refused += other.refused;
        self.errors += other.errors;
    }

    pub fn record(&mut self, started: Instant) {
        self.micros
            .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }

    /// The q-quantile (0..=1) in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        self.micros.sort_unstable();
        let i = ((self.micros.len() - 1) as f64 * q).round() as usize;
        f64::from(self.micros[i]) / 1000.0
    }
}

/// When a load phase stops: after `count` requests in all, at `deadline`, or both.
#[derive(Clone, Copy)]
pub struct Budget {
    pub count: Option<u64>,
    pub deadline: Option<Instant>,
}

/// Runs `clients` connections sending `next(seq)` back to back (seq counts across all
/// clients) until the budget is spent. A 2xx counts as ok, the `refused` status as a
/// refusal, anything else as an error.
pub async fn run_load<F>(
    addr: SocketAddr,
    clients: usize,
    budget: Budget,
    refused: StatusCode,
    next: F,
) -> Samples
where
    F: Fn(u64) -> (Method, String, Vec<(&'static str, String)>, Bytes) + Send + Sync + 'static,
{
    let next = Arc::new(next);
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (next, seq) = (next.clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let Ok(mut conn) = Conn::open(addr).await else {
                samples.errors += 1;
                return samples;
            };
            loop {
                if budget.deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = seq.fetch_add(1, Ordering::Relaxed);
                if budget.count.is_some_and(|c| i >= c) {
                    break;
                }
                let (method, path, headers, body) = next(i);
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let started = Instant::now();
                match conn.send(method, &path, &headers, body).await {
                    Ok(s) if s.is_success() => {
                        samples.ok += 1;
                        samples.record(started);
                    }
                    Ok(s) if s == refused => {
                        samples.refused += 1;
                        samples.record(started);
                    }
                    Ok(_) => samples.errors += 1,
                    Err(_) => {
                        samples.errors += 1;
                        match Conn::open(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.merge(s);
        }
    }
    all
}
