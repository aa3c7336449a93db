//! Whether each VM's agent is alive, in memory (a heartbeat every few seconds from
//! thousands of VMs must not cost a disk write each). An agent that has sent a heartbeat
//! is judged by its heartbeats; one that never has (the 0.1.2 client) by its requests,
//! and it counts as alive while a `/vm_startup` long-poll of its is parked.
//!
//! The sweep turns changes into store writes: a running VM silent past the limit is
//! marked unresponsive (out of the free pool, auto-reboot takes it), and unmarked when it
//! is heard again. The claim asks `is_alive` at the moment it picks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
struct Seen {
    /// Last completed request or heartbeat (for a VM not heard since the allocator
    /// started: that start).
    last: Instant,
    /// Heard from since the allocator started. Until then it gets one staleness limit of
    /// grace before it is marked, but is never handed out.
    heard: bool,
    heartbeats: bool,
    /// `/vm_startup` requests parked right now.
    parked: u32,
    disk_free_pct: Option<f64>,
    /// What the store was last told: unresponsive or not.
    marked: bool,
}

pub struct Liveness {
    seen: Mutex<HashMap<String, Seen>>,
    stale: Duration,
    /// Poked when an agent is heard for the first time since the allocator started: its
    /// VM may be handed out from now on (the waiting list's job waits on it).
    newly_heard: tokio::sync::Notify,
}

/// What a sweep found changed.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Hosts that went silent: how long ago they were last heard, and whether their agent
    /// sends heartbeats (a 0.1.2 client is silent by nature once it has its participant).
    pub silent: Vec<(String, Duration, bool)>,
    pub back: Vec<String>,
}

/// What the console and the JSON API show of one VM.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Report {
    pub last_seen_ago: Duration,
    pub alive: bool,
    pub heartbeats: bool,
    pub disk_free_pct: Option<f64>,
}

impl Liveness {
    pub fn new(stale: Duration) -> Liveness {
        Liveness {
            seen: Mutex::new(HashMap::new()),
            stale,
            newly_heard: tokio::sync::Notify::new(),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stale_after(&self) -> Duration {
        self.stale
    }

    /// VMs in the store when the allocator starts: (host, marked unresponsive, its agent
    /// sends heartbeats). Each has one staleness limit from now to be heard (a restart must
    /// not make every VM unresponsive at once) and is handed out only once it has been.
    pub fn watch(&self, hosts: impl IntoIterator<Item = (String, bool, bool)>) {
        let now = Instant::now();
        let mut map = self.map();
        for (host, marked, heartbeats) in hosts {
            map.entry(host).or_insert(Seen {
                last: now,
                heard: false,
                heartbeats,
                parked: 0,
                disk_free_pct: None,
                marked,
            });
        }
    }

    fn touch(&self, host: &str, f: impl FnOnce(&mut Seen)) {
        let now = Instant::now();
        let mut map = self.map();
        // Every agent request comes here: no key allocated for a VM already watched.
        if !map.contains_key(host) {
            map.insert(
                host.to_owned(),
                Seen {
                    last: now,
                    heard: true,
                    heartbeats: false,
                    parked: 0,
                    disk_free_pct: None,
                    marked: false,
                },
            );
        }
        let Some(seen) = map.get_mut(host) else {
            return;
        };
        let first = !seen.heard;
        seen.last = now;
        seen.heard = true;
        f(seen);
        drop(map);
        if first {
            self.newly_heard.notify_one();
        }
    }

    /// Returns once an agent has been heard for the first time since the allocator
    /// started (at once for one heard while nobody waited).
    pub async fn newly_heard(&self) {
        self.newly_heard.notified().await;
    }

    /// Any request from the VM's agent.
    pub fn contact(&self, host: &str) {
        self.touch(host, |_| {});
    }

    pub fn heartbeat(&self, host: &str, disk_free_pct: Option<f64>) {
        self.touch(host, |s| {
            s.heartbeats = true;
            if disk_free_pct.is_some() {
                s.disk_free_pct = disk_free_pct;
            }
        });
    }

    /// A `/vm_startup` long-poll parks; the guard unparks it.
    pub fn park(self: &Arc<Self>, host: &str) -> Parked {
        self.touch(host, |s| s.parked += 1);
        Parked {
            liveness: self.clone(),
            host: host.to_owned(),
        }
    }

    fn alive(&self, seen: &Seen, now: Instant) -> bool {
        let recent = now.saturating_duration_since(seen.last) <= self.stale;
        recent || (!seen.heartbeats && seen.parked > 0)
    }

    /// Whether the agent is demonstrably alive now: heard within the limit (or, for an
    /// agent that never sent a heartbeat, waiting in a long-poll). Unknown hosts are not.
    pub fn is_alive(&self, host: &str) -> bool {
        let now = Instant::now();
        self.map()
            .get(host)
            .is_some_and(|s| s.heard && self.alive(s, now))
    }

    pub fn report(&self, host: &str) -> Option<Report> {
        let now = Instant::now();
        self.map().get(host).map(|s| Report {
            last_seen_ago: now.saturating_duration_since(s.last),
            alive: s.heard && self.alive(s, now),
            heartbeats: s.heartbeats,
            disk_free_pct: s.disk_free_pct,
        })
    }

    /// Hosts whose liveness changed since the store was last told (and records that it
    /// now is).
    pub fn sweep(&self) -> Changes {
        let now = Instant::now();
        let mut changes = Changes::default();
        let mut map = self.map();
        for (host, seen) in map.iter_mut() {
            let alive = self.alive(seen, now);
            if !alive && !seen.marked {
                seen.marked = true;
                changes.silent.push((
                    host.clone(),
                    now.saturating_duration_since(seen.last),
                    seen.heartbeats,
                ));
            } else if alive && seen.marked && seen.heard {
                seen.marked = false;
                changes.back.push(host.clone());
            }
        }
        changes
    }

    /// The store could not be told about `changes`: the next sweep reports them again.
    pub fn unsweep(&self, changes: &Changes) {
        let mut map = self.map();
        for (host, _, _) in &changes.silent {
            if let Some(seen) = map.get_mut(host) {
                seen.marked = false;
            }
        }
        for host in &changes.back {
            if let Some(seen) = map.get_mut(host) {
                seen.marked = true;
            }
        }
    }

    /// The VM is gone: stop watching it.
    pub fn forget(&self, host: &str) {
        self.map().remove(host);
    }

    pub fn forget_all(&self) {
        self.map().clear();
    }

    /// (watched, alive, heartbeating) for `/metrics`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let now = Instant::now();
        let map = self.map();
        let alive = map
            .values()
            .filter(|s| s.heard && self.alive(s, now))
            .count();
        let beating = map.values().filter(|s| s.heartbeats).count();
        (map.len(), alive, beating)
    }
}

/// One parked long-poll; dropping it (answered, timed out, client gone) unparks it.
pub struct Parked {
    liveness: Arc<Liveness>,
    host: String,
}

impl Drop for Parked {
    fn drop(&mut self) {
        let mut map = self.liveness.map();
        if let Some(seen) = map.get_mut(&self.host) {
            seen.parked = seen.parked.saturating_sub(1);
            // For a client without heartbeats the open poll was its sign of life until
            // now; it asks again at once.
            if !seen.heartbeats {
                seen.last = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_agent_goes_stale_and_comes_back() {
        let l = Liveness::new(Duration::from_millis(30));
        l.heartbeat("vm-1", Some(50.0));
        assert!(l.is_alive("vm-1"));
        assert!(!l.is_alive("vm-2"), "never heard: not alive");
        assert_eq!(l.sweep(), Changes::default());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!l.is_alive("vm-1"));
        let changes = l.sweep();
        assert_eq!(changes.silent.len(), 1);
        assert_eq!(l.sweep(), Changes::default(), "reported once");
        l.heartbeat("vm-1", None);
        assert_eq!(l.sweep().back, vec!["vm-1".to_string()]);
        assert_eq!(l.report("vm-1").and_then(|r| r.disk_free_pct), Some(50.0));
    }

    #[test]
    fn after_a_restart_a_vm_is_handed_out_only_once_heard() {
        let l = Liveness::new(Duration::from_millis(30));
        l.watch([
            ("was-fine".to_string(), false, true),
            ("was-silent".to_string(), true, true),
        ]);
        assert!(!l.is_alive("was-fine"), "not heard since the start");
        assert_eq!(
            l.sweep(),
            Changes::default(),
            "grace, and no unmarking unheard"
        );
        std::thread::sleep(Duration::from_millis(40));
        let changes = l.sweep();
        assert_eq!(changes.silent.len(), 1);
        assert_eq!(changes.silent[0].0, "was-fine");
        assert!(changes.back.is_empty());
        l.heartbeat("was-silent", None);
        assert_eq!(l.sweep().back, vec!["was-silent".to_string()]);
    }

    #[test]
    fn a_parked_poll_keeps_only_a_client_without_heartbeats_alive() {
        let l = Arc::new(Liveness::new(Duration::from_millis(20)));
        let parked = l.park("legacy");
        l.heartbeat("modern", None);
        let frozen = l.park("modern");
        std::thread::sleep(Duration::from_millis(30));
        assert!(l.is_alive("legacy"), "a 0.1.2 client waiting in its poll");
        assert!(
            !l.is_alive("modern"),
            "a frozen agent's open poll proves nothing"
        );
        drop(parked);
        assert!(l.is_alive("legacy"), "its poll ended just now");
        drop(frozen);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!l.is_alive("legacy"), "and it did not ask again");
        assert!(!l.is_alive("modern"));
    }
}
