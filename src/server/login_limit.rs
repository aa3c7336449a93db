//! Failed sign-ins per client address: after `MAX_FAILURES` within `WINDOW`, that address
//! waits until the window ends. Counts both the login form and HTTP Basic.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(300);
/// Addresses remembered at most; beyond it, expired entries go, then the oldest window.
const TRACKED: usize = 10_000;

#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginLimiter {
    /// `Err(wait)` while `ip` is locked out.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&ip) {
            Some((count, since)) if *count >= MAX_FAILURES && since.elapsed() < WINDOW => {
                Err(WINDOW
                    .saturating_sub(since.elapsed())
                    .max(Duration::from_secs(1)))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= TRACKED && !failures.contains_key(&ip) {
            failures.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if failures.len() >= TRACKED
                && let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, (_, s))| *s)
                    .map(|(k, _)| *k)
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_the_limit_and_only_that_address() {
        let limiter = LoginLimiter::default();
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        for _ in 0..MAX_FAILURES - 1 {
            limiter.failed(a);
            assert!(limiter.check(a).is_ok());
        }
        limiter.failed(a);
        let wait = limiter.check(a).expect_err("locked out");
        assert!(wait <= WINDOW && wait >= Duration::from_secs(1));
        assert!(limiter.check(b).is_ok());
        limiter.succeeded(a);
        assert!(limiter.check(a).is_ok());
    }
}
