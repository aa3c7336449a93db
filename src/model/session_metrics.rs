//! A seat's session metrics: the agent's samples (GPU utilisation and memory, software in
//! use, desktop connected) as a bounded series. The seat is the one `SeatUsage` names
//! (VM, participant, claim time). When the series is full, neighbouring points are merged
//! (half the resolution), so a whole day keeps its shape in bounded space; each point
//! keeps how many samples it stands for, so means stay exact.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One sample the agent took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SessionSample {
    pub at: DateTime<Utc>,
    /// `None`: the agent could not tell (no GPU tooling, a probe failing).
    pub gpu_utilization_pct: Option<f64>,
    pub gpu_memory_used_mib: Option<u64>,
    pub in_use: Option<bool>,
    /// `None` for a Chrome Remote Desktop seat: nobody here can tell.
    pub desktop_connected: Option<bool>,
    /// The time the sample stands for (the sampling interval).
    pub seconds: f64,
}

/// Samples merged into one point of the series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Its first sample's time.
    pub at: DateTime<Utc>,
    pub samples: u32,
    /// Of those, the samples with GPU figures.
    pub gpu_samples: u32,
    pub gpu_util_mean: Option<f64>,
    pub gpu_util_max: Option<f64>,
    pub gpu_memory_max_mib: Option<u64>,
    /// Whether the software ran at some sample.
    pub in_use: Option<bool>,
    pub desktop_connected: Option<bool>,
    pub seconds: f64,
    #[serde(default)]
    pub in_use_seconds: f64,
    #[serde(default)]
    pub connected_seconds: f64,
}

fn any(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a || b),
        (a, None) => a,
        (None, b) => b,
    }
}

fn max_of<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b > a { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

impl SeriesPoint {
    fn of(s: &SessionSample) -> SeriesPoint {
        SeriesPoint {
            at: s.at,
            samples: 1,
            gpu_samples: u32::from(s.gpu_utilization_pct.is_some()),
            gpu_util_mean: s.gpu_utilization_pct,
            gpu_util_max: s.gpu_utilization_pct,
            gpu_memory_max_mib: s.gpu_memory_used_mib,
            in_use: s.in_use,
            desktop_connected: s.desktop_connected,
            seconds: s.seconds,
            in_use_seconds: if s.in_use == Some(true) {
                s.seconds
            } else {
                0.0
            },
            connected_seconds: if s.desktop_connected == Some(true) {
                s.seconds
            } else {
                0.0
            },
        }
    }

    /// `self` followed by `next`: mean utilisation (weighted by samples), the highest
    /// memory, in use or connected at any of them.
    fn merge(&self, next: &SeriesPoint) -> SeriesPoint {
        let gpu_samples = self.gpu_samples + next.gpu_samples;
        let weighted = |p: &SeriesPoint| p.gpu_util_mean.unwrap_or(0.0) * f64::from(p.gpu_samples);
        SeriesPoint {
            at: self.at.min(next.at),
            samples: self.samples + next.samples,
            gpu_samples,
            gpu_util_mean: (gpu_samples > 0)
                .then(|| (weighted(self) + weighted(next)) / f64::from(gpu_samples)),
            gpu_util_max: max_of(self.gpu_util_max, next.gpu_util_max),
            gpu_memory_max_mib: max_of(self.gpu_memory_max_mib, next.gpu_memory_max_mib),
            in_use: any(self.in_use, next.in_use),
            desktop_connected: any(self.desktop_connected, next.desktop_connected),
            seconds: self.seconds + next.seconds,
            in_use_seconds: self.in_use_seconds + next.in_use_seconds,
            connected_seconds: self.connected_seconds + next.connected_seconds,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeatSeries {
    pub email: String,
    pub hostname: String,
    pub assigned_at: DateTime<Utc>,
    /// Samples a full point stands for: 1, then doubled at every halving.
    pub per_point: u32,
    /// The newest sample taken in (a sample sent again after a lost answer is not).
    pub last_at: Option<DateTime<Utc>>,
    pub points: Vec<SeriesPoint>,
}

/// What a series says of the whole seat.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesSummary {
    pub samples: u64,
    pub first_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
    pub gpu_util_mean: Option<f64>,
    pub gpu_util_peak: Option<f64>,
    pub gpu_memory_peak_mib: Option<u64>,
    pub in_use_seconds: f64,
    /// `None` when no sample could tell (Chrome Remote Desktop seats).
    pub connected_seconds: Option<f64>,
    pub sampled_seconds: f64,
}

impl SeatSeries {
    pub fn new(email: &str, hostname: &str, assigned_at: DateTime<Utc>) -> SeatSeries {
        SeatSeries {
            email: email.to_owned(),
            hostname: hostname.to_owned(),
            assigned_at,
            per_point: 1,
            last_at: None,
            points: Vec::new(),
        }
    }

    /// Takes `sample` in, keeping at most `max_points` points; `false` when it is not
    /// taken: from before the claim, or closer than `min_gap` after the newest sample (the
    /// same sample sent again, or one out of order).
    pub fn record(
        &mut self,
        sample: &SessionSample,
        max_points: usize,
        min_gap: chrono::Duration,
    ) -> bool {
        if sample.at < self.assigned_at || self.last_at.is_some_and(|l| sample.at < l + min_gap) {
            return false;
        }
        self.last_at = Some(sample.at);
        let point = SeriesPoint::of(sample);
        match self.points.last_mut() {
            Some(last) if last.samples < self.per_point => *last = last.merge(&point),
            _ => self.points.push(point),
        }
        if self.points.len() > max_points.max(2) {
            self.halve();
        }
        true
    }

    /// The same series at most `max_points` long (neighbours merged as when it fills up):
    /// what a small picture needs.
    pub fn reduced_to(&self, max_points: usize) -> SeatSeries {
        let mut reduced = self.clone();
        while reduced.points.len() > max_points.max(2) {
            reduced.halve();
        }
        reduced
    }

    fn halve(&mut self) {
        self.points = self
            .points
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => a.merge(b),
                [a] => a.clone(),
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
        self.per_point = self.per_point.saturating_mul(2);
    }

    pub fn summary(&self) -> SeriesSummary {
        let mut s = SeriesSummary {
            samples: 0,
            first_at: self.points.first().map(|p| p.at),
            last_at: self.last_at,
            gpu_util_mean: None,
            gpu_util_peak: None,
            gpu_memory_peak_mib: None,
            in_use_seconds: 0.0,
            connected_seconds: None,
            sampled_seconds: 0.0,
        };
        let (mut util_sum, mut util_n) = (0.0, 0u64);
        for p in &self.points {
            s.samples += u64::from(p.samples);
            if let Some(mean) = p.gpu_util_mean {
                util_sum += mean * f64::from(p.gpu_samples);
                util_n += u64::from(p.gpu_samples);
            }
            s.gpu_util_peak = max_of(s.gpu_util_peak, p.gpu_util_max);
            s.gpu_memory_peak_mib = max_of(s.gpu_memory_peak_mib, p.gpu_memory_max_mib);
            s.in_use_seconds += p.in_use_seconds;
            if p.desktop_connected.is_some() {
                s.connected_seconds =
                    Some(s.connected_seconds.unwrap_or(0.0) + p.connected_seconds);
            }
            s.sampled_seconds += p.seconds;
        }
        s.gpu_util_mean = (util_n > 0).then(|| util_sum / util_n as f64);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn sample(t0: DateTime<Utc>, i: i64, util: Option<f64>, in_use: bool) -> SessionSample {
        SessionSample {
            at: t0 + Duration::seconds(15 * i),
            gpu_utilization_pct: util,
            gpu_memory_used_mib: util.map(|u| u as u64 * 100),
            in_use: Some(in_use),
            desktop_connected: None,
            seconds: 15.0,
        }
    }

    #[test]
    fn a_reduced_series_keeps_its_means_in_fewer_points() {
        let t0 = Utc::now();
        let mut series = SeatSeries::new("a@b.org", "vm-1", t0);
        for i in 0..500 {
            let sample = SessionSample {
                at: t0 + chrono::Duration::seconds(15 * (i + 1)),
                gpu_utilization_pct: Some(if i % 2 == 0 { 20.0 } else { 60.0 }),
                gpu_memory_used_mib: Some(100),
                in_use: Some(true),
                desktop_connected: None,
                seconds: 15.0,
            };
            assert!(series.record(&sample, 720, chrono::Duration::seconds(7)));
        }
        let small = series.reduced_to(120);
        assert!(small.points.len() <= 120 && small.points.len() > 60);
        assert_eq!(small.summary(), series.summary());
    }

    #[test]
    fn a_full_series_halves_and_keeps_mean_peak_and_time() {
        let t0 = Utc::now();
        let mut series = SeatSeries::new("ada@example.org", "vm-1", t0);
        let gap = Duration::seconds(7);
        let mut util_sum = 0.0;
        for i in 0..1000 {
            let util = (i % 10) as f64 * 10.0;
            util_sum += util;
            assert!(series.record(&sample(t0, i, Some(util), i % 4 == 0), 64, gap));
            assert!(series.points.len() <= 64, "{} points", series.points.len());
        }
        let s = series.summary();
        assert_eq!(s.samples, 1000);
        assert!((s.gpu_util_mean.expect("a mean") - util_sum / 1000.0).abs() < 1e-9);
        assert_eq!(s.gpu_util_peak, Some(90.0));
        assert_eq!(s.gpu_memory_peak_mib, Some(9000));
        assert_eq!(s.in_use_seconds, 250.0 * 15.0);
        assert_eq!(s.connected_seconds, None);
        assert_eq!(s.sampled_seconds, 15_000.0);
        assert_eq!(s.first_at, Some(t0));
        assert!(series.per_point >= 16);
        // Points are in time order and each stands for at most `per_point` samples.
        assert!(series.points.windows(2).all(|w| w[0].at < w[1].at));
        assert!(series.points.iter().all(|p| p.samples <= series.per_point));
        assert!(series.points.iter().any(|p| p.in_use == Some(true)));
    }

    #[test]
    fn samples_sent_again_or_before_the_claim_are_not_taken() {
        let t0 = Utc::now();
        let mut series = SeatSeries::new("ada@example.org", "vm-1", t0);
        let gap = Duration::seconds(7);
        assert!(!series.record(&sample(t0, -1, Some(5.0), false), 16, gap));
        assert!(series.record(&sample(t0, 0, Some(5.0), false), 16, gap));
        let mut again = sample(t0, 0, Some(5.0), false);
        again.at += Duration::milliseconds(40);
        assert!(!series.record(&again, 16, gap));
        assert!(series.record(&sample(t0, 1, None, true), 16, gap));
        let s = series.summary();
        assert_eq!((s.samples, s.gpu_util_mean), (2, Some(5.0)));
        assert_eq!(series.points[1].gpu_util_mean, None);
    }

    #[test]
    fn connection_time_counts_only_known_samples() {
        let t0 = Utc::now();
        let mut series = SeatSeries::new("ada@example.org", "vm-1", t0);
        for (i, connected) in [Some(true), Some(false), None, Some(true)]
            .iter()
            .enumerate()
        {
            let mut s = sample(t0, i as i64, None, false);
            s.desktop_connected = *connected;
            series.record(&s, 16, Duration::zero());
        }
        assert_eq!(series.summary().connected_seconds, Some(30.0));
        assert_eq!(series.summary().gpu_util_mean, None);
    }
}
