//! How often participants may ask for a VM: per client network (IPv6 per /64, so one
//! host cannot rotate addresses) and per e-mail address. A classroom shares one NAT
//! address, so the network limit must stay generous; the e-mail limit catches scripts.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct ClaimLimits {
    by_network: Option<DefaultKeyedRateLimiter<IpAddr>>,
    by_email: Option<DefaultKeyedRateLimiter<String>>,
}

fn per_minute<K: std::hash::Hash + Eq + Clone>(n: u64) -> Option<DefaultKeyedRateLimiter<K>> {
    let n = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))?;
    Some(RateLimiter::keyed(Quota::per_minute(n)))
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64 (one host can
/// rotate addresses within it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl ClaimLimits {
    /// Limits per minute; 0 turns one off.
    pub fn new(per_network: u64, per_email: u64) -> ClaimLimits {
        ClaimLimits {
            by_network: per_minute(per_network),
            by_email: per_minute(per_email),
        }
    }

    /// `Err(wait)` when this client network has used up its claims for now.
    pub fn check_network(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.by_network else {
            return Ok(());
        };
        limiter
            .check_key(&client_key(ip))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// `Err(wait)` when this (normalised) address has used up its claims for now.
    pub fn check_email(&self, email: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.by_email else {
            return Ok(());
        };
        limiter
            .check_key(&email.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops the state of clients that are back to a full allowance.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.by_network {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.by_email {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_network_and_address_has_its_own_allowance() {
        let limits = ClaimLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(limits.check_network(a).is_ok());
        }
        let wait = limits
            .check_network(a)
            .expect_err("fourth within the minute");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limits.check_network(b).is_ok());

        assert!(limits.check_email("ada@example.org").is_ok());
        assert!(limits.check_email("ada@example.org").is_ok());
        assert!(limits.check_email("ada@example.org").is_err());
        assert!(limits.check_email("bob@example.org").is_ok());
    }

    #[test]
    fn ipv6_clients_share_their_64_and_zero_means_off() {
        let limits = ClaimLimits::new(1, 0);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:2::ffff".parse().expect("ip");
        assert!(limits.check_network(one).is_ok());
        assert!(limits.check_network(other).is_err(), "same /64");
        for _ in 0..100 {
            assert!(limits.check_email("ada@example.org").is_ok());
        }
        let off = ClaimLimits::new(0, 0);
        for _ in 0..100 {
            assert!(off.check_network(one).is_ok());
        }
    }
}
