//! The simulated VMs: each registers as running, sends heartbeats at the allocator's
//! interval and long-polls `/vm_startup` for a participant, as `lablink agent` does, and
//! dies or freezes on cue.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

/// What happens to a simulated agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The VM is gone: no more heartbeats, its parked request dropped (its connection
    /// closed).
    Die,
    /// SIGSTOP: the connection of its parked `/vm_startup` stays open, nothing else
    /// happens (no heartbeat, no answer read, no new poll).
    Freeze,
}

/// What the waiting agents saw: hostname → (code they were given, when).
pub type Wakes = Arc<Mutex<HashMap<String, (String, Instant)>>>;

/// What all simulated agents share.
pub struct Fleet {
    pub http: reqwest::Client,
    pub base: String,
    pub deadline: Instant,
    /// How often each agent sends a heartbeat.
    pub every: Duration,
    pub wakes: Wakes,
    /// Long-polls in flight right now.
    pub parked: AtomicUsize,
    pub heartbeats: AtomicU64,
    pub errors: Mutex<BTreeMap<String, usize>>,
}

impl Fleet {
    fn error(&self, kind: String) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind).or_default() += 1;
        }
    }

    fn parked_now(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// Waits until `count` agents have been given their participant, or `until`.
    pub async fn until_woken(&self, count: usize, until: Instant) {
        let woken = || self.wakes.lock().map(|w| w.len()).unwrap_or(0);
        while woken() < count && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (at most `limit`) until `count` long-polls are parked; returns how many are.
    pub async fn settle(&self, count: usize, limit: Duration) -> usize {
        let until = Instant::now() + limit;
        while self.parked_now() < count && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.parked_now()
    }
}

/// A random boot id, as `/proc/sys/kernel/random/boot_id` gives one.
fn boot_id() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

pub fn kind_of(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "transport error".into()
    }
}

/// One simulated VM, registered.
pub struct Agent {
    pub host: String,
    credential: String,
    boot_id: String,
}

impl Agent {
    pub fn new(host: String, credential: String) -> Agent {
        Agent {
            host,
            credential,
            boot_id: boot_id(),
        }
    }

    /// Reports the VM running and sends its first heartbeat; returns the interval the
    /// allocator's answer asks for.
    pub async fn register(
        &self,
        http: &reqwest::Client,
        base: &str,
    ) -> Result<Option<u64>, String> {
        let answer = http
            .post(format!("{base}/api/vm-status"))
            .bearer_auth(&self.credential)
            .json(&json!({"hostname": self.host, "status": "running"}))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => return Err(format!("registration: HTTP {}", r.status().as_u16())),
            Err(e) => return Err(format!("registration: {}", kind_of(&e))),
        }
        let beat = self
            .beat(http, base)
            .await
            .map_err(|e| format!("first {e}"))?;
        Ok(beat["interval_seconds"].as_u64())
    }

    async fn beat(&self, http: &reqwest::Client, base: &str) -> Result<Value, String> {
        let answer = http
            .post(format!("{base}/api/heartbeat"))
            .bearer_auth(&self.credential)
            .json(&json!({
                "hostname": self.host,
                "boot_id": self.boot_id,
                "disk_free_pct": 61.5,
            }))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => Ok(r.json().await.unwrap_or_default()),
            Ok(r) => Err(format!("heartbeat: HTTP {}", r.status().as_u16())),
            Err(e) => Err(format!("heartbeat: {}", kind_of(&e))),
        }
    }

    /// The registered agent's life: heartbeats, and a wait for a participant, until it
    /// is faulted or the run ends.
    pub async fn live(self: Arc<Self>, fleet: Arc<Fleet>, fault: watch::Receiver<Fault>) {
        tokio::join!(
            heartbeats(&fleet, &self, fault.clone()),
            wait_for_participant(&fleet, &self, fault),
        );
    }
}

/// Resolves once the agent is faulted (or its controller is gone).
async fn faulted(fault: &mut watch::Receiver<Fault>) {
    let _ = fault.wait_for(|f| *f != Fault::None).await;
}

/// A heartbeat every `fleet.every` until the agent is faulted or the run ends. The first
/// one after registration comes after a random part of the interval: VMs do not boot in
/// step, so neither do their heartbeats.
async fn heartbeats(fleet: &Fleet, agent: &Agent, mut fault: watch::Receiver<Fault>) {
    let every = fleet.every;
    let offset = rand::random_range(0..=every.as_millis() as u64);
    let mut next = tokio::time::Instant::now() + Duration::from_millis(offset);
    while Instant::now() < fleet.deadline {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = faulted(&mut fault) => return,
        }
        // A faulted agent's heartbeat in flight is cut off with it.
        let sent = tokio::select! {
            sent = agent.beat(&fleet.http, &fleet.base) => sent,
            () = faulted(&mut fault) => return,
        };
        match sent {
            Ok(_) => {
                fleet.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => fleet.error(kind),
        }
        next += every;
    }
}

/// Long-polls until the agent is given a participant (or the deadline). A frozen agent
/// keeps its parked request open and does nothing more; a dead one drops it.
async fn wait_for_participant(fleet: &Fleet, agent: &Agent, mut fault: watch::Receiver<Fault>) {
    while Instant::now() < fleet.deadline {
        if *fault.borrow() != Fault::None {
            return;
        }
        fleet.parked.fetch_add(1, Ordering::Relaxed);
        let request = fleet
            .http
            .post(format!("{}/vm_startup", fleet.base))
            .bearer_auth(&agent.credential)
            .json(&json!({"hostname": agent.host}))
            .timeout(fleet.deadline.saturating_duration_since(Instant::now()))
            .send();
        tokio::pin!(request);
        let answer = tokio::select! {
            answer = &mut request => Some(answer),
            () = faulted(&mut fault) => None,
        };
        fleet.parked.fetch_sub(1, Ordering::Relaxed);
        let Some(answer) = answer else {
            if *fault.borrow() == Fault::Freeze {
                // Stopped: the request stays open (its connection is driven elsewhere),
                // and nobody reads its answer. The run's end aborts this task.
                std::future::pending::<()>().await;
            }
            return;
        };
        let at = Instant::now();
        match answer {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await.unwrap_or_default();
                let code = body["command"]
                    .as_str()
                    .and_then(|c| crate::crd::extract_code(c).ok())
                    .unwrap_or_default();
                if let Ok(mut w) = fleet.wakes.lock() {
                    w.insert(agent.host.clone(), (code, at));
                }
                return;
            }
            // 408: the hold time ended; ask again, as a real agent does.
            Ok(r) if r.status().as_u16() == 408 => continue,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_look_like_the_kernels() {
        let id = boot_id();
        assert_eq!(id.len(), 36);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
        assert_ne!(id, boot_id());
    }
}
