//! Each seat's GPU use, one row per seat (VM, participant, claim time), written by the
//! heartbeats of assigned VMs.

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::SEAT_USAGE;
use super::{StoreError, codec};
use crate::model::{SeatUsage, UsageSample};

fn key_text(at: i64, host: &str, email: &str) -> String {
    format!("{at}/{host}/{email}")
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
    let found = match table.get((at, host, email))? {
        Some(v) => Some(codec::decode::<SeatUsage>(
            SEAT_USAGE.name(),
            &key_text(at, host, email),
            v.value(),
        )?),
        None => None,
    };
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
