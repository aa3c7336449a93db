//! Sign-in attempts per client: after `MAX_FAILURES` failures within `WINDOW`, that client
//! waits until the window ends. Counts both the login form and HTTP Basic. A check in
//! progress counts against the limit until it ends, so parallel guesses cannot outrun it.
//! IPv6 clients are counted per /64 (one host usually holds the whole prefix).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pool::claim_limit::client_key;

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(300);
/// Clients remembered at most; beyond it, entries that are neither locked nor busy go.
const TRACKED: usize = 10_000;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    failures: u32,
    in_progress: u32,
    since: Option<Instant>,
}

impl Entry {
    fn expired(&self) -> bool {
        self.since.is_none_or(|s| s.elapsed() >= WINDOW)
    }

    fn locked_for(&self) -> Option<Duration> {
        let since = self.since?;
        (self.failures >= MAX_FAILURES && since.elapsed() < WINDOW).then(|| {
            WINDOW
                .saturating_sub(since.elapsed())
                .max(Duration::from_secs(1))
        })
    }
}

#[derive(Clone, Default)]
pub struct LoginLimiter {
    clients: Arc<Mutex<HashMap<IpAddr, Entry>>>,
}

/// One sign-in check in progress; `finish` says how it ended. Dropped unfinished (the
/// request went away), it counts as neither.
pub struct Attempt {
    limiter: LoginLimiter,
    key: IpAddr,
    done: bool,
}

impl Attempt {
    pub fn finish(mut self, succeeded: bool) {
        self.done = true;
        let mut clients = self.limiter.lock();
        if succeeded {
            clients.remove(&self.key);
            return;
        }
        let entry = clients.entry(self.key).or_default();
        entry.in_progress = entry.in_progress.saturating_sub(1);
        if entry.expired() {
            entry.failures = 0;
            entry.since = Some(Instant::now());
        }
        entry.failures += 1;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done
            && let Some(entry) = self.limiter.lock().get_mut(&self.key)
        {
            entry.in_progress = entry.in_progress.saturating_sub(1);
        }
    }
}

impl LoginLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a check for `ip`, or `Err(wait)` while the client is locked out (failures
    /// plus checks in progress reached the limit).
    pub fn begin(&self, ip: IpAddr) -> Result<Attempt, Duration> {
        let key = client_key(ip);
        let mut clients = self.lock();
        if clients.len() >= TRACKED && !clients.contains_key(&key) {
            clients.retain(|_, e| e.in_progress > 0 || e.locked_for().is_some());
        }
        let entry = clients.entry(key).or_default();
        if let Some(wait) = entry.locked_for() {
            return Err(wait);
        }
        if entry.expired() {
            entry.failures = 0;
            entry.since = Some(Instant::now());
        }
        if entry.failures + entry.in_progress >= MAX_FAILURES {
            // The remaining attempts are all under way: wait for them.
            return Err(Duration::from_secs(1));
        }
        entry.in_progress += 1;
        Ok(Attempt {
            limiter: self.clone(),
            key,
            done: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn locks_out_after_the_limit_and_only_that_client() {
        let limiter = LoginLimiter::default();
        for _ in 0..MAX_FAILURES {
            limiter
                .begin(ip("127.0.0.1"))
                .expect("allowed")
                .finish(false);
        }
        let wait = limiter.begin(ip("127.0.0.1")).err().expect("locked out");
        assert!(wait <= WINDOW && wait >= Duration::from_secs(1));
        assert!(limiter.begin(ip("127.0.0.2")).is_ok());
    }

    #[test]
    fn checks_in_progress_count_against_the_limit() {
        let limiter = LoginLimiter::default();
        let running: Vec<Attempt> = (0..MAX_FAILURES)
            .map(|_| limiter.begin(ip("10.0.0.1")).expect("allowed"))
            .collect();
        assert!(
            limiter.begin(ip("10.0.0.1")).is_err(),
            "a sixth parallel guess"
        );
        drop(running);
        assert!(
            limiter.begin(ip("10.0.0.1")).is_ok(),
            "abandoned checks count as none"
        );
    }

    #[test]
    fn a_success_clears_the_failures() {
        let limiter = LoginLimiter::default();
        for _ in 0..MAX_FAILURES - 1 {
            limiter
                .begin(ip("10.0.0.1"))
                .expect("allowed")
                .finish(false);
        }
        limiter.begin(ip("10.0.0.1")).expect("allowed").finish(true);
        for _ in 0..MAX_FAILURES - 1 {
            limiter
                .begin(ip("10.0.0.1"))
                .expect("allowed")
                .finish(false);
        }
        assert!(limiter.begin(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let limiter = LoginLimiter::default();
        for host in 1..=MAX_FAILURES {
            limiter
                .begin(ip(&format!("2001:db8:1:2::{host}")))
                .expect("allowed")
                .finish(false);
        }
        assert!(limiter.begin(ip("2001:db8:1:2::99")).is_err());
        assert!(limiter.begin(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(client_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }
}
