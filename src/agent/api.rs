//! The allocator's agent API, as upstream 0.1.2 defines it, so the agent works against
//! either allocator; plus LabLink's heartbeat and reset report, which an allocator without
//! them answers 404 (the agent then does without).

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(
        "the allocator refused the API token (401); check API_TOKEN against `lablink token` on the allocator"
    )]
    Unauthorized,
    #[error("the allocator does not know this VM yet (404)")]
    NotFound,
    #[error("the allocator answered {0}")]
    Status(StatusCode),
    #[error("cannot reach the allocator: {0}")]
    Transport(String),
}

impl CallError {
    /// Nothing will change by asking again: stop.
    pub fn is_fatal(&self) -> bool {
        matches!(self, CallError::Unauthorized)
    }
}

/// What `/vm_startup` said.
#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    Assigned {
        pin: String,
        command: String,
        /// The participant's desktop is in their browser (VNC relayed by the allocator),
        /// not Chrome Remote Desktop.
        browser: bool,
    },
    /// Our allocator's bounded wait ended (408): ask again at once.
    NotYet,
    /// 200 with a status other than "success": upstream clients give up on this.
    Rejected(String),
}

#[derive(Deserialize)]
struct StartupBody {
    status: Option<String>,
    pin: Option<Value>,
    command: Option<String>,
    message: Option<String>,
    desktop: Option<String>,
}

/// What a heartbeat's answer says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Beat {
    /// How often the allocator wants them.
    pub interval: Option<Duration>,
    /// The last participant left: this reset (its number) is to be done.
    pub reset: Option<u32>,
    /// A message for the participant's desktop (the workshop's countdown): its id changes
    /// with each new message.
    pub notice: Option<Notice>,
    /// The console's latest announcement, to show once on the desktop.
    pub announcement: Option<Notice>,
    /// Their files are to be rescued first.
    pub rescue: Option<RescueAsk>,
    /// How often to sample the seat's session metrics.
    pub sample_every: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Notice {
    pub id: String,
    pub text: String,
}

/// A rescue the allocator asks for: pack the files matching `patterns` (at most
/// `max_bytes` of them) and upload them within `seconds_left`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RescueAsk {
    pub id: u64,
    pub patterns: Vec<String>,
    pub max_bytes: u64,
    pub seconds_left: u64,
}

#[derive(Deserialize)]
struct BeatBody {
    interval_seconds: Option<u64>,
    reset_requested: Option<bool>,
    reset_id: Option<u32>,
    notice: Option<Notice>,
    announcement: Option<Notice>,
    rescue: Option<RescueAsk>,
    metrics_sample_seconds: Option<u64>,
}

/// The participant's hand as the allocator has it.
#[derive(Debug, Deserialize)]
pub struct HandState {
    pub raised: bool,
    pub taken_by: Option<String>,
}

#[derive(Debug)]
pub enum HandRefused {
    /// The allocator refused, saying why (no participant, too soon again, …).
    Said(String),
    Call(CallError),
}

pub struct Allocator {
    http: Client,
    base: String,
    token: String,
    pub vm_name: String,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

impl Allocator {
    pub fn new(base: String, token: String, vm_name: String) -> Result<Allocator, String> {
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(30))
            // A long-poll against upstream blocks for hours: keep-alive probes find a dead
            // peer where a read timeout would abandon a live request.
            .tcp_keepalive(Duration::from_secs(60))
            .tcp_keepalive_interval(Duration::from_secs(15))
            .tcp_keepalive_retries(4)
            .user_agent(concat!("lablink-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Allocator {
            http,
            base,
            token,
            vm_name,
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.post(format!("{}{path}", self.base));
        if self.token.is_empty() {
            req
        } else {
            req.bearer_auth(&self.token)
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CallError> {
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Transport(error_chain(&e)))?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::UNAUTHORIZED => Err(CallError::Unauthorized),
            StatusCode::NOT_FOUND => Err(CallError::NotFound),
            s => Err(CallError::Status(s)),
        }
    }

    async fn post_json(&self, path: &str, body: Value) -> Result<(), CallError> {
        self.send(self.post(path).timeout(CALL_TIMEOUT).json(&body))
            .await
            .map(|_| ())
    }

    pub async fn report_status(&self, status: &str) -> Result<(), CallError> {
        self.post_json(
            "/api/vm-status",
            json!({"hostname": self.vm_name, "status": status}),
        )
        .await
    }

    pub async fn report_gpu(&self, gpu_status: &str) -> Result<(), CallError> {
        self.post_json(
            "/api/gpu_health",
            json!({"hostname": self.vm_name, "gpu_status": gpu_status}),
        )
        .await
    }

    /// The participant's desktop started (for the event report's time to desktop).
    pub async fn desktop_started(&self) -> Result<(), CallError> {
        self.post_json("/api/desktop-started", json!({"hostname": self.vm_name}))
            .await
    }

    pub async fn report_in_use(&self, in_use: bool) -> Result<(), CallError> {
        self.post_json(
            "/api/update_inuse_status",
            json!({"hostname": self.vm_name, "status": in_use}),
        )
        .await
    }

    pub async fn ship_logs(&self, group: &str, lines: &[String]) -> Result<(), CallError> {
        self.post_json(
            "/api/vm-logs",
            json!({"log_group": group, "log_stream": self.vm_name, "messages": lines}),
        )
        .await
    }

    pub async fn report_metrics(&self, metrics: Value) -> Result<(), CallError> {
        self.post_json(&format!("/api/vm-metrics/{}", self.vm_name), metrics)
            .await
    }

    pub async fn heartbeat(
        &self,
        boot_id: Option<&str>,
        disk_free_pct: Option<f64>,
        gpu: Option<super::gpu::GpuUse>,
    ) -> Result<Beat, CallError> {
        let body = json!({
            "hostname": self.vm_name,
            "boot_id": boot_id,
            "disk_free_pct": disk_free_pct,
            "gpu_utilization_pct": gpu.map(|g| g.utilization_pct),
            "gpu_memory_used_mib": gpu.map(|g| g.memory_used_mib),
        });
        let resp = self
            .send(
                self.post("/api/heartbeat")
                    .timeout(CALL_TIMEOUT)
                    .json(&body),
            )
            .await?;
        let answer: BeatBody = resp
            .json()
            .await
            .map_err(|e| CallError::Transport(format!("unreadable heartbeat answer: {e}")))?;
        Ok(Beat {
            interval: answer
                .interval_seconds
                .filter(|s| (1..=3600).contains(s))
                .map(Duration::from_secs),
            reset: answer
                .reset_requested
                .unwrap_or(false)
                .then_some(answer.reset_id.unwrap_or(0)),
            notice: answer
                .notice
                .filter(|n| !n.id.is_empty() && n.id.len() <= 128 && n.text.len() <= 1024),
            announcement: answer
                .announcement
                .filter(|n| !n.id.is_empty() && n.id.len() <= 128 && n.text.len() <= 4096),
            rescue: answer.rescue,
            sample_every: answer
                .metrics_sample_seconds
                .filter(|s| (1..=3600).contains(s))
                .map(Duration::from_secs),
        })
    }

    /// A batch of session-metrics samples (`super::metrics::Sample` as JSON), taken every
    /// `interval`.
    pub async fn send_session_metrics(
        &self,
        interval: Duration,
        samples: &[Value],
    ) -> Result<(), CallError> {
        self.post_json(
            "/api/session-metrics",
            json!({
                "hostname": self.vm_name,
                "interval_seconds": interval.as_secs_f64(),
                "samples": samples,
            }),
        )
        .await
    }

    /// Uploads the archive of rescue `id`, streamed from `file`.
    pub async fn upload_rescue(
        &self,
        id: u64,
        file: tokio::fs::File,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        self.send(
            self.post(&format!("/api/rescue/{id}"))
                .header(reqwest::header::CONTENT_TYPE, "application/zip")
                .timeout(timeout)
                .body(body),
        )
        .await
        .map(|_| ())
    }

    /// Rescue `id` found no file to save.
    pub async fn rescue_empty(&self, id: u64) -> Result<(), CallError> {
        self.post_json(&format!("/api/rescue/{id}/empty"), json!({}))
            .await
    }

    /// Rescue `id` could not be done, because of `reason`.
    pub async fn rescue_failed(&self, id: u64, reason: &str) -> Result<(), CallError> {
        self.post_json(
            &format!("/api/rescue/{id}/failed"),
            json!({ "reason": reason }),
        )
        .await
    }

    pub async fn reset_done(&self, reset_id: u32) -> Result<(), CallError> {
        self.post_json(
            "/api/vm-reset-done",
            json!({"hostname": self.vm_name, "reset_id": reset_id}),
        )
        .await
    }

    /// Sends the latest picture of the desktop; how many seconds until the next one, as the
    /// allocator wants it.
    pub async fn put_thumbnail(&self, jpeg: Vec<u8>) -> Result<Option<u64>, CallError> {
        #[derive(Deserialize)]
        struct Answer {
            thumbnail_seconds: Option<u64>,
        }
        let url = format!("{}/api/desktop/thumbnail", self.base);
        let mut req = self.http.put(url);
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        let resp = self
            .send(
                req.query(&[("hostname", &self.vm_name)])
                    .header(reqwest::header::CONTENT_TYPE, "image/jpeg")
                    .timeout(CALL_TIMEOUT)
                    .body(jpeg),
            )
            .await?;
        Ok(resp
            .json::<Answer>()
            .await
            .ok()
            .and_then(|a| a.thumbnail_seconds))
    }

    /// Raises (`raised`) or lowers the participant's hand, from the desktop's launcher; the
    /// hand as the allocator has it afterwards, or why not.
    pub async fn set_hand(&self, raised: bool) -> Result<HandState, HandRefused> {
        let resp = self
            .post("/api/desktop/hand")
            .timeout(CALL_TIMEOUT)
            .json(&json!({"hostname": self.vm_name, "raised": raised}))
            .send()
            .await
            .map_err(|e| HandRefused::Call(CallError::Transport(error_chain(&e))))?;
        let status = resp.status();
        if status.is_success() {
            return resp.json().await.map_err(|e| {
                HandRefused::Call(CallError::Transport(format!("unreadable answer: {e}")))
            });
        }
        match status {
            StatusCode::UNAUTHORIZED => return Err(HandRefused::Call(CallError::Unauthorized)),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                return Err(HandRefused::Call(CallError::NotFound));
            }
            _ => {}
        }
        #[derive(Deserialize)]
        struct Said {
            error: String,
        }
        match resp.json::<Said>().await {
            Ok(said) if !said.error.trim().is_empty() => Err(HandRefused::Said(said.error)),
            _ => Err(HandRefused::Call(CallError::Status(status))),
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.base));
        if self.token.is_empty() {
            req
        } else {
            req.bearer_auth(&self.token)
        }
    }

    /// The standing desktop channel: a response whose body is one JSON line per stream to
    /// open (and empty keep-alive lines). No timeout: it lasts until either side closes.
    pub async fn desktop_channel(&self) -> Result<reqwest::Response, CallError> {
        self.send(
            self.get("/api/desktop/channel")
                .query(&[("hostname", &self.vm_name)]),
        )
        .await
    }

    /// Dials back the tunnel of stream `id`: the connection becomes the stream's bytes.
    pub async fn desktop_tunnel(&self, id: &str) -> Result<reqwest::Upgraded, CallError> {
        let resp = self
            .get(&format!("/api/desktop/tunnel/{id}"))
            .query(&[("hostname", &self.vm_name)])
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, "lablink-rfb")
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| CallError::Transport(error_chain(&e)))?;
        match resp.status() {
            StatusCode::SWITCHING_PROTOCOLS => resp
                .upgrade()
                .await
                .map_err(|e| CallError::Transport(format!("tunnel upgrade failed: {e}"))),
            StatusCode::UNAUTHORIZED => Err(CallError::Unauthorized),
            StatusCode::NOT_FOUND => Err(CallError::NotFound),
            s => Err(CallError::Status(s)),
        }
    }

    /// Stream `id` cannot be opened; the viewer is told `reason`.
    pub async fn refuse_desktop(&self, id: &str, reason: &str) -> Result<(), CallError> {
        self.post_json(
            &format!("/api/desktop/tunnel/{id}/refuse"),
            json!({"hostname": self.vm_name, "reason": reason}),
        )
        .await
    }

    /// One long-poll. No read timeout: our allocator answers 408 on its own; upstream's
    /// holds the request until an assignment exists.
    pub async fn wait_for_assignment(&self) -> Result<Startup, CallError> {
        let req = self
            .post("/vm_startup")
            .json(&json!({"hostname": self.vm_name}));
        let resp = match self.send(req).await {
            Err(CallError::Status(StatusCode::REQUEST_TIMEOUT)) => return Ok(Startup::NotYet),
            other => other?,
        };
        let body: StartupBody = resp
            .json()
            .await
            .map_err(|e| CallError::Transport(format!("unreadable /vm_startup answer: {e}")))?;
        match (body.status.as_deref(), body.pin, body.command) {
            (Some("success"), Some(pin), Some(command)) => Ok(Startup::Assigned {
                // Upstream stores the PIN as text; accept a number too.
                pin: match pin {
                    Value::String(s) => s,
                    other => other.to_string(),
                },
                command,
                browser: body.desktop.as_deref() == Some("browser"),
            }),
            (status, _, _) => Ok(Startup::Rejected(
                body.message
                    .or(status.map(str::to_owned))
                    .unwrap_or_else(|| "no status".into()),
            )),
        }
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); name it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
