//! Each seat's GPU use, one row per seat (VM, participant, claim time), written by the
//! heartbeats of assigned VMs; and, under the same key, its session metrics, written by the
//! agent's sample batches. Nothing prunes either yet: a seat's rows outlive its VM.

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::{SEAT_SERIES, SEAT_USAGE};
use super::{StoreError, codec};
use crate::model::{SeatSeries, SeatUsage, SessionSample, UsageSample};

fn key_text(at: i64, host: &str, email: &str) -> String {
    format!("{at}/{host}/{email}")
}

/// The row of the seat claimed at `at` (ms) by `email` on `host` in `table` (named `name`),
/// decoded.
fn seat_row<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<(i64, &'static str, &'static str), &'static [u8]>,
    name: &str,
    at: i64,
    host: &str,
    email: &str,
) -> Result<Option<T>, StoreError> {
    table
        .get((at, host, email))?
        .map(|v| codec::decode(name, &key_text(at, host, email), v.value()))
        .transpose()
}

/// Adds `sample` to the seat of `email` on `host` claimed at `assigned_at` (created at its
/// first heartbeat).
pub fn record(
    tx: &WriteTransaction,
    host: &str,
    email: &str,
    assigned_at: DateTime<Utc>,
    sample: &UsageSample,
) -> Result<SeatUsage, StoreError> {
    let mut table = tx.open_table(SEAT_USAGE)?;
    let at = assigned_at.timestamp_millis();
    let found: Option<SeatUsage> = seat_row(&table, SEAT_USAGE.name(), at, host, email)?;
    let usage = found
        .unwrap_or_else(|| SeatUsage::new(email, host, assigned_at, sample.at))
        .record(sample);
    table.insert((at, host, email), codec::encode(&usage).as_slice())?;
    Ok(usage)
}

/// The seats held at some moment in `from..=to`, by claim time.
pub fn overlapping(
    tx: &ReadTransaction,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<SeatUsage>, StoreError> {
    let table = tx.open_table(SEAT_USAGE)?;
    let mut out = Vec::new();
    for entry in table.range((i64::MIN, "", "")..=(to.timestamp_millis(), "\u{10FFFF}", ""))? {
        let (k, v) = entry?;
        let (at, host, email) = k.value();
        let usage: SeatUsage =
            codec::decode(SEAT_USAGE.name(), &key_text(at, host, email), v.value())?;
        if usage.overlaps(from, to) {
            out.push(usage);
        }
    }
    Ok(out)
}

/// Takes `samples` into the session metrics of the seat of `email` on `host` claimed at
/// `assigned_at` (created at its first sample), keeping at most `max_points` points;
/// how many were taken (see `SeatSeries::record`).
pub fn record_samples(
    tx: &WriteTransaction,
    host: &str,
    email: &str,
    assigned_at: DateTime<Utc>,
    samples: &[SessionSample],
    max_points: usize,
    min_gap: chrono::Duration,
) -> Result<usize, StoreError> {
    let mut table = tx.open_table(SEAT_SERIES)?;
    let at = assigned_at.timestamp_millis();
    let found: Option<SeatSeries> = seat_row(&table, SEAT_SERIES.name(), at, host, email)?;
    let mut series = found.unwrap_or_else(|| SeatSeries::new(email, host, assigned_at));
    let taken = samples
        .iter()
        .filter(|s| series.record(s, max_points, min_gap))
        .count();
    if taken > 0 {
        table.insert((at, host, email), codec::encode(&series).as_slice())?;
    }
    Ok(taken)
}

/// Every seat's session metrics, by claim time.
pub fn all_series(tx: &ReadTransaction) -> Result<Vec<SeatSeries>, StoreError> {
    let table = tx.open_table(SEAT_SERIES)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let (at, host, email) = k.value();
        out.push(codec::decode(
            SEAT_SERIES.name(),
            &key_text(at, host, email),
            v.value(),
        )?);
    }
    Ok(out)
}

/// The session metrics of each seat in `seats` (claim time, host, e-mail) that has some.
pub fn series_of(
    tx: &ReadTransaction,
    seats: &[(DateTime<Utc>, String, String)],
) -> Result<Vec<SeatSeries>, StoreError> {
    let table = tx.open_table(SEAT_SERIES)?;
    let mut out = Vec::new();
    for (assigned_at, host, email) in seats {
        let at = assigned_at.timestamp_millis();
        out.extend(seat_row(&table, SEAT_SERIES.name(), at, host, email)?);
    }
    Ok(out)
}
