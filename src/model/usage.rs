//! How much one seat (a participant on a VM, from the claim on) used its GPU, from the
//! agent's heartbeats. Kept apart from the VM record, which goes with the VM.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One heartbeat's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UsageSample {
    pub at: DateTime<Utc>,
    /// `None`: the agent could not tell (no GPU tooling, or a probe failing).
    pub gpu_utilization_pct: Option<f64>,
    pub gpu_memory_used_mib: Option<u64>,
    /// The participant was doing something (software running, a desktop open, the GPU
    /// busy).
    pub active: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeatUsage {
    pub email: String,
    pub hostname: String,
    pub assigned_at: DateTime<Utc>,
    /// Heartbeats received during the seat.
    pub heartbeats: u64,
    /// Of those, heartbeats that carried GPU figures.
    pub gpu_samples: u64,
    pub gpu_util_sum: f64,
    pub gpu_util_max: f64,
    pub gpu_memory_max_mib: u64,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The last heartbeat that found the participant active.
    pub last_active_at: Option<DateTime<Utc>>,
}

impl SeatUsage {
    pub fn new(email: &str, hostname: &str, assigned_at: DateTime<Utc>, at: DateTime<Utc>) -> Self {
        SeatUsage {
            email: email.to_owned(),
            hostname: hostname.to_owned(),
            assigned_at,
            heartbeats: 0,
            gpu_samples: 0,
            gpu_util_sum: 0.0,
            gpu_util_max: 0.0,
            gpu_memory_max_mib: 0,
            first_seen_at: at,
            last_seen_at: at,
            last_active_at: None,
        }
    }

    pub fn record(mut self, sample: &UsageSample) -> Self {
        self.heartbeats += 1;
        self.last_seen_at = self.last_seen_at.max(sample.at);
        if let Some(util) = sample.gpu_utilization_pct {
            self.gpu_samples += 1;
            self.gpu_util_sum += util;
            self.gpu_util_max = self.gpu_util_max.max(util);
        }
        if let Some(mem) = sample.gpu_memory_used_mib {
            self.gpu_memory_max_mib = self.gpu_memory_max_mib.max(mem);
        }
        if sample.active {
            self.last_active_at = Some(sample.at);
        }
        self
    }

    /// Mean GPU utilisation over the heartbeats that carried one.
    pub fn gpu_util_avg(&self) -> Option<f64> {
        (self.gpu_samples > 0).then(|| self.gpu_util_sum / self.gpu_samples as f64)
    }

    /// Whether the seat was held at some moment in `from..=to`.
    pub fn overlaps(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.assigned_at <= to && self.last_seen_at >= from
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn averages_count_only_heartbeats_with_figures() {
        let t0 = Utc::now();
        let beat = |secs: i64, util: Option<f64>, active: bool| UsageSample {
            at: t0 + Duration::seconds(secs),
            gpu_utilization_pct: util,
            gpu_memory_used_mib: util.map(|u| u as u64 * 10),
            active,
        };
        let usage = SeatUsage::new("ada@example.org", "vm-1", t0, t0)
            .record(&beat(5, Some(20.0), true))
            .record(&beat(10, None, false))
            .record(&beat(15, Some(60.0), false));
        assert_eq!(usage.heartbeats, 3);
        assert_eq!(usage.gpu_samples, 2);
        assert_eq!(usage.gpu_util_avg(), Some(40.0));
        assert_eq!(usage.gpu_util_max, 60.0);
        assert_eq!(usage.gpu_memory_max_mib, 600);
        assert_eq!(usage.last_active_at, Some(t0 + Duration::seconds(5)));
        assert_eq!(usage.last_seen_at, t0 + Duration::seconds(15));
        assert!(usage.overlaps(t0 + Duration::seconds(15), t0 + Duration::hours(1)));
        assert!(!usage.overlaps(t0 + Duration::seconds(16), t0 + Duration::hours(1)));
        assert!(!usage.overlaps(t0 - Duration::hours(1), t0 - Duration::seconds(1)));
        let empty = SeatUsage::new("ada@example.org", "vm-1", t0, t0);
        assert_eq!(empty.gpu_util_avg(), None);
    }
}
