//! Faults: which simulated agents die or freeze, and the admin's view of the pool that
//! tells when the allocator noticed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::agent::Fault;
use crate::commands::remote::{Admin, Login};

/// Largest share of agents a fault flag may name: a rehearsal needs live VMs too.
pub const MAX_SHARE: f64 = 0.9;

/// `--die-share` and `--freeze-share`.
#[derive(Clone, Copy, Debug)]
pub struct Shares {
    pub die: f64,
    pub freeze: f64,
}

impl Shares {
    pub fn any(&self) -> bool {
        self.die > 0.0 || self.freeze > 0.0
    }

    /// (die, freeze) among `n` agents: a share that is not zero hits at least one.
    pub fn counts(&self, n: usize) -> (usize, usize) {
        let of = |share: f64| ((share * n as f64).ceil() as usize).min(n);
        (of(self.die), of(self.freeze))
    }

    /// Agents still alive when the participants arrive, of `agents`.
    pub fn live_at_arrival(&self, agents: usize) -> usize {
        let (die, freeze) = self.counts(agents);
        agents.saturating_sub(die + freeze)
    }

    /// The most participants `agents` VMs can seat while keeping a spare for everyone
    /// whose VM fails after the claims.
    pub fn participants_for(&self, agents: usize) -> usize {
        let live = self.live_at_arrival(agents);
        (1..=live)
            .rev()
            .find(|&m| {
                let (die, freeze) = self.counts(m);
                live - m >= die + freeze
            })
            .unwrap_or(0)
    }

    /// Which of `pool` (in its order) fail, and how: spread evenly over the pool, the first
    /// one included (the first VM is the one a claim picks first), dying and freezing
    /// interleaved.
    pub fn victims(&self, pool: &[String]) -> Vec<(String, Fault)> {
        let (die, freeze) = self.counts(pool.len());
        let count = (die + freeze).min(pool.len());
        (0..count)
            .map(|j| {
                let host = pool[j * pool.len() / count].clone();
                // Bresenham: the j-th victim dies when the running share of deaths steps up.
                let dies = (j + 1) * die / count > j * die / count;
                (host, if dies { Fault::Die } else { Fault::Freeze })
            })
            .collect()
    }
}

/// `--die-share`/`--freeze-share` problems, each naming its flag.
pub fn check_shares(shares: &Shares) -> Vec<String> {
    let mut problems = Vec::new();
    for (flag, share) in [
        ("--die-share", shares.die),
        ("--freeze-share", shares.freeze),
    ] {
        if !(0.0..=MAX_SHARE).contains(&share) {
            problems.push(format!(
                "{flag}: {share} is outside 0..={MAX_SHARE} (a share of the agents, e.g. 0.1)"
            ));
        }
    }
    if problems.is_empty() && shares.die + shares.freeze > MAX_SHARE {
        problems.push(format!(
            "--die-share + --freeze-share: {} is over {MAX_SHARE}; leave live VMs to hand out",
            shares.die + shares.freeze
        ));
    }
    problems
}

/// The admin's side of the allocator (HTTP Basic): minting credentials, reading the pool.
pub struct AdminApi(Admin);

impl AdminApi {
    pub fn new(http: &reqwest::Client, base: &str, login: &Login) -> Result<AdminApi, String> {
        Admin::with_client(http.clone(), base, login).map(AdminApi)
    }

    /// The hosts `GET /api/vms` shows unresponsive, and the allocator's staleness limit.
    pub async fn unresponsive(&self) -> Result<(Vec<String>, Duration), String> {
        self.0.unresponsive().await
    }

    pub async fn mint(&self, hosts: &[String]) -> Result<Vec<String>, String> {
        self.0.mint(hosts).await
    }

    /// Reads the pool every `every` until each of `failed` (host → when it failed) shows
    /// unresponsive, or `until`. Returns how long after its failure each was shown so.
    pub async fn until_marked(
        &self,
        failed: &HashMap<String, Instant>,
        every: Duration,
        until: Instant,
    ) -> Result<HashMap<String, Duration>, String> {
        let mut seen = HashMap::new();
        loop {
            let (marked, _) = self.unresponsive().await?;
            let now = Instant::now();
            for (host, at) in failed {
                if marked.contains(host) && !seen.contains_key(host) {
                    seen.insert(host.clone(), now.saturating_duration_since(*at));
                }
            }
            if seen.len() == failed.len() || now + every > until {
                return Ok(seen);
            }
            tokio::time::sleep(every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(die: f64, freeze: f64) -> Shares {
        Shares { die, freeze }
    }

    #[test]
    fn shares_are_checked_and_named() {
        assert!(check_shares(&shares(0.0, 0.0)).is_empty());
        assert!(check_shares(&shares(0.9, 0.0)).is_empty());
        let p = check_shares(&shares(1.5, 0.1));
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("--die-share"), "{p:?}");
        let p = check_shares(&shares(0.1, -0.1));
        assert!(p[0].starts_with("--freeze-share"), "{p:?}");
        assert!(!check_shares(&shares(f64::NAN, 0.0)).is_empty());
        let p = check_shares(&shares(0.5, 0.5));
        assert!(p[0].starts_with("--die-share + --freeze-share"), "{p:?}");
    }

    #[test]
    fn a_pool_keeps_spares_for_the_second_wave() {
        let s = shares(0.1, 0.1);
        assert_eq!(s.counts(20), (2, 2));
        assert_eq!(s.counts(4), (1, 1), "a share hits at least one");
        assert_eq!(s.live_at_arrival(20), 16);
        let m = s.participants_for(20);
        assert_eq!(m, 12);
        let (die, freeze) = s.counts(m);
        assert!(16 - m >= die + freeze);
        assert_eq!(shares(0.0, 0.0).participants_for(30), 30);
    }

    #[test]
    fn victims_are_spread_and_interleaved() {
        let pool: Vec<String> = (1..=20).map(|n| format!("vm-{n}")).collect();
        let victims = shares(0.1, 0.1).victims(&pool);
        let hosts: Vec<&str> = victims.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(hosts, ["vm-1", "vm-6", "vm-11", "vm-16"]);
        let kinds: Vec<Fault> = victims.iter().map(|(_, f)| *f).collect();
        assert_eq!(
            kinds,
            [Fault::Freeze, Fault::Die, Fault::Freeze, Fault::Die]
        );
        assert!(shares(0.0, 0.0).victims(&pool).is_empty());
        let all_die = shares(0.2, 0.0).victims(&pool);
        assert!(all_die.iter().all(|(_, f)| *f == Fault::Die));
    }
}
