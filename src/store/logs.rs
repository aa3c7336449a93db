//! Shipped VM logs, kept per VM and kind as a queue of batches with a size cap: appending
//! writes one small record, and trimming drops whole batches from the front (cutting the
//! oldest remaining one at a line boundary), so the text is never rewritten as a whole.

use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::tables::{LOG_CHUNKS, LOG_HEADS};
use super::{StoreError, codec};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    CloudInit = 0,
    Container = 1,
}

impl LogKind {
    /// Upstream's rule: a log group ending in `-docker` is the container log.
    pub fn from_log_group(group: &str) -> LogKind {
        if group.ends_with("-docker") {
            LogKind::Container
        } else {
            LogKind::CloudInit
        }
    }

    pub const ALL: [LogKind; 2] = [LogKind::CloudInit, LogKind::Container];

    /// The name in URLs.
    pub fn slug(self) -> &'static str {
        match self {
            LogKind::CloudInit => "cloud-init",
            LogKind::Container => "container",
        }
    }

    pub fn from_slug(slug: &str) -> Option<LogKind> {
        LogKind::ALL.into_iter().find(|k| k.slug() == slug)
    }

    pub fn title(self) -> &'static str {
        match self {
            LogKind::CloudInit => "Boot (cloud-init)",
            LogKind::Container => "Container",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct LogHead {
    first: u64,
    next: u64,
    bytes: u64,
}

fn head_key(host: &str, kind: LogKind) -> String {
    format!("{host}/{}", kind as u8)
}

/// Appends `lines` (already cleaned) and trims the log to `cap` bytes.
pub fn append(
    tx: &WriteTransaction,
    host: &str,
    kind: LogKind,
    lines: &[String],
    cap: u64,
) -> Result<(), StoreError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut heads = tx.open_table(LOG_HEADS)?;
    let mut chunks = tx.open_table(LOG_CHUNKS)?;
    let k = kind as u8;
    let mut head: LogHead = match heads.get((host, k))? {
        Some(v) => codec::decode(LOG_HEADS.name(), &head_key(host, kind), v.value())?,
        None => LogHead::default(),
    };

    let mut text = lines.join("\n");
    text.push('\n');
    chunks.insert((host, k, head.next), text.as_bytes())?;
    head.next += 1;
    head.bytes += text.len() as u64;

    while head.bytes > cap && head.first < head.next {
        let excess = (head.bytes - cap) as usize;
        let oldest = chunks
            .get((host, k, head.first))?
            .map(|v| v.value().to_vec())
            .unwrap_or_default();
        if oldest.len() <= excess {
            chunks.remove((host, k, head.first))?;
            head.first += 1;
            head.bytes -= oldest.len() as u64;
            continue;
        }
        // Keep the newest bytes of this batch, starting at a whole line.
        let tail = &oldest[excess..];
        let kept = if oldest[excess - 1] == b'\n' {
            tail
        } else {
            match tail.iter().position(|&b| b == b'\n') {
                Some(nl) => &tail[nl + 1..],
                None => &[],
            }
        };
        head.bytes -= (oldest.len() - kept.len()) as u64;
        if kept.is_empty() {
            chunks.remove((host, k, head.first))?;
            head.first += 1;
        } else {
            let kept = kept.to_vec();
            chunks.insert((host, k, head.first), kept.as_slice())?;
        }
        break;
    }
    heads.insert((host, k), codec::encode(&head).as_slice())?;
    Ok(())
}

/// The whole log of one kind, or `None` when nothing was shipped.
pub fn read(tx: &ReadTransaction, host: &str, kind: LogKind) -> Result<Option<String>, StoreError> {
    let heads = tx.open_table(LOG_HEADS)?;
    let chunks = tx.open_table(LOG_CHUNKS)?;
    let k = kind as u8;
    let head: LogHead = match heads.get((host, k))? {
        Some(v) => codec::decode(LOG_HEADS.name(), &head_key(host, kind), v.value())?,
        None => return Ok(None),
    };
    let mut bytes = Vec::with_capacity(head.bytes as usize);
    for entry in chunks.range((host, k, head.first)..(host, k, head.next))? {
        let (_, v) = entry?;
        bytes.extend_from_slice(v.value());
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Ok(None);
    }
    // Batches are built from `String`s and cut only after '\n', so this is UTF-8.
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            table: LOG_CHUNKS.name().to_owned(),
            key: head_key(host, kind),
            reason: e.to_string(),
        })
}

/// Which end of the log a bounded read keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The oldest batches from `from` on: a follower reads on from the last one it got.
    Oldest,
    /// The newest batches: what a page shows first.
    Newest,
}

/// Batches with sequence ≥ `from` (from the oldest kept, if `from` was trimmed away), about
/// `max_bytes` of them (at least one) from the `keep` end; returned oldest first.
pub fn chunks(
    tx: &ReadTransaction,
    host: &str,
    kind: LogKind,
    from: u64,
    max_bytes: usize,
    keep: Keep,
) -> Result<Vec<(u64, String)>, StoreError> {
    let table = tx.open_table(LOG_CHUNKS)?;
    let k = kind as u8;
    let range = table.range((host, k, from)..=(host, k, u64::MAX))?;
    let entries: Box<dyn Iterator<Item = _>> = match keep {
        Keep::Oldest => Box::new(range),
        Keep::Newest => Box::new(range.rev()),
    };
    let mut out = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        if bytes >= max_bytes {
            break;
        }
        let (key, value) = entry?;
        bytes += value.value().len();
        out.push((
            key.value().2,
            String::from_utf8_lossy(value.value()).into_owned(),
        ));
    }
    if keep == Keep::Newest {
        out.reverse();
    }
    Ok(out)
}

/// Drops both logs of a VM. Reads no stored value, so an unreadable one cannot stop it.
pub fn delete(tx: &WriteTransaction, host: &str) -> Result<(), StoreError> {
    let mut heads = tx.open_table(LOG_HEADS)?;
    let mut chunks = tx.open_table(LOG_CHUNKS)?;
    for kind in [LogKind::CloudInit, LogKind::Container] {
        let k = kind as u8;
        heads.remove((host, k))?;
        let keys: Vec<u64> = chunks
            .range((host, k, 0)..=(host, k, u64::MAX))?
            .map(|entry| entry.map(|(key, _)| key.value().2))
            .collect::<Result<_, _>>()?;
        for seq in keys {
            chunks.remove((host, k, seq))?;
        }
    }
    Ok(())
}
