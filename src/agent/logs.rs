//! Ships log files to the allocator in batches. The file itself is the buffer: the agent
//! holds at most one batch, advances its position only when the allocator acknowledged
//! the batch, and remembers that position across restarts, so an outage or a reboot does
//! not lose lines still in the file, and acknowledged lines are not shipped again.
//! Delivery is at least once: a batch whose acknowledgement was lost is sent again. Lines
//! left unshipped in a file that was rotated away are not followed.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::api::{Allocator, CallError};
use super::retry::{Gave, until_acknowledged};

/// Upstream's shipper sends at most 50 lines a batch.
const BATCH_LINES: usize = 50;
const BATCH_BYTES: usize = 256 * 1024;
const POLL: Duration = Duration::from_millis(250);

pub struct Source {
    pub path: PathBuf,
    /// Sent as `log_group`; the allocator files groups ending in `-docker` as container logs.
    pub group: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    inode: u64,
    offset: u64,
}

/// Shipped positions, one per file, saved after every acknowledged batch.
pub struct Positions {
    file: Option<PathBuf>,
    map: Mutex<BTreeMap<String, Position>>,
}

impl Positions {
    pub fn load(state_dir: Option<&Path>) -> Positions {
        let file = state_dir.map(|d| d.join("log-positions.json"));
        let map = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Positions {
            file,
            map: Mutex::new(map),
        }
    }

    fn get(&self, path: &Path) -> Position {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&path.display().to_string())
            .copied()
            .unwrap_or_default()
    }

    fn set(&self, path: &Path, pos: Position) {
        let snapshot = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.insert(path.display().to_string(), pos);
            serde_json::to_vec(&*map).unwrap_or_default()
        };
        if let Some(file) = &self.file {
            let tmp = file.with_extension("json.tmp");
            let saved = std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))
                .and_then(|()| {
                    use std::io::Write;
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(&snapshot)?;
                    f.sync_all()
                })
                .and_then(|()| std::fs::rename(&tmp, file));
            if let Err(e) = saved {
                tracing::warn!(error = %e, file = %file.display(), "cannot save log positions");
            }
        }
    }
}

/// Complete lines from `offset` on, at most one batch. Returns the lines and the bytes
/// they span. A final line without its newline waits, unless it alone fills a batch.
fn read_batch(path: &Path, pos: Position) -> std::io::Result<(Vec<String>, u64, Position)> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut pos = pos;
    if meta.ino() != pos.inode || meta.len() < pos.offset {
        // A new file (rotated or recreated) or a truncated one: start from its beginning.
        pos = Position {
            inode: meta.ino(),
            offset: 0,
        };
    }
    file.seek(SeekFrom::Start(pos.offset))?;
    let mut buf = Vec::with_capacity(8192.min(BATCH_BYTES));
    file.by_ref()
        .take(BATCH_BYTES as u64)
        .read_to_end(&mut buf)?;
    let mut lines = Vec::new();
    let mut consumed = 0usize;
    for chunk in buf.split_inclusive(|&b| b == b'\n') {
        if lines.len() == BATCH_LINES {
            break;
        }
        // A line longer than a whole batch is shipped in pieces; otherwise wait for '\n'.
        let complete = chunk.ends_with(b"\n") || (lines.is_empty() && buf.len() == BATCH_BYTES);
        if !complete {
            break;
        }
        consumed += chunk.len();
        let text = String::from_utf8_lossy(chunk);
        lines.push(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    Ok((lines, consumed as u64, pos))
}

pub async fn ship(
    alloc: Arc<Allocator>,
    source: Source,
    positions: Arc<Positions>,
    flush: Duration,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let mut pos = positions.get(&source.path);
    let mut waiting_since: Option<Instant> = None;
    let mut missing_logged = false;
    loop {
        let path = source.path.clone();
        let read = tokio::task::spawn_blocking(move || read_batch(&path, pos)).await;
        match read {
            Ok(Ok((lines, consumed, at))) => {
                missing_logged = false;
                pos = at;
                let full = lines.len() == BATCH_LINES || consumed as usize >= BATCH_BYTES / 2;
                if lines.is_empty() {
                    waiting_since = None;
                } else {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if full || since.elapsed() >= flush {
                        match until_acknowledged("log batch", &cancel, || {
                            alloc.ship_logs(&source.group, &lines)
                        })
                        .await
                        {
                            Gave::Acknowledged => {
                                pos.offset += consumed;
                                positions.set(&source.path, pos);
                                waiting_since = None;
                                continue; // there may be more right away
                            }
                            Gave::Fatal(e) => return Err(e),
                            Gave::Cancelled => return Ok(()),
                        }
                    }
                }
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                if !missing_logged {
                    tracing::info!(file = %source.path.display(), "log file not there yet; waiting");
                    missing_logged = true;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, file = %source.path.display(), "cannot read log file")
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = cancel.cancelled() => {
                final_flush(&alloc, &source, &positions, pos).await;
                return Ok(());
            }
        }
    }
}

/// On stop: one attempt, bounded, for the lines not shipped yet.
async fn final_flush(alloc: &Allocator, source: &Source, positions: &Positions, pos: Position) {
    let path = source.path.clone();
    let Ok(Ok((lines, consumed, mut pos))) =
        tokio::task::spawn_blocking(move || read_batch(&path, pos)).await
    else {
        return;
    };
    if lines.is_empty() {
        return;
    }
    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        alloc.ship_logs(&source.group, &lines),
    )
    .await;
    if matches!(sent, Ok(Ok(()))) {
        pos.offset += consumed;
        positions.set(&source.path, pos);
    } else {
        tracing::warn!(file = %source.path.display(), lines = lines.len(), "last log lines not shipped before stop");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stop_at_the_last_complete_line_and_at_fifty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("log");
        std::fs::write(&f, "one\r\ntwo\npartial").expect("write");
        let (lines, used, pos) = read_batch(&f, Position::default()).expect("read");
        assert_eq!(lines, vec!["one", "two"]);
        assert_eq!(used, 9);
        let text: String = (0..120).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&f, &text).expect("write");
        let (lines, used, _) = read_batch(
            &f,
            Position {
                inode: pos.inode,
                offset: 0,
            },
        )
        .expect("read");
        assert_eq!(lines.len(), 50);
        let (next, _, _) = read_batch(
            &f,
            Position {
                inode: pos.inode,
                offset: used,
            },
        )
        .expect("read");
        assert_eq!(next[0], "line 50");
    }

    #[test]
    fn a_truncated_or_replaced_file_is_read_from_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("log");
        std::fs::write(&f, "a\nb\n").expect("write");
        let (_, used, pos) = read_batch(&f, Position::default()).expect("read");
        let shipped = Position {
            inode: pos.inode,
            offset: used,
        };
        std::fs::write(&f, "c\n").expect("truncate");
        let (lines, _, _) = read_batch(&f, shipped).expect("read");
        assert_eq!(lines, vec!["c"]);
        std::fs::remove_file(&f).expect("rm");
        std::fs::write(dir.path().join("other"), "x\n").expect("write");
        std::fs::write(&f, "new\n").expect("write");
        let (lines, _, _) = read_batch(&f, shipped).expect("read");
        assert_eq!(lines, vec!["new"]);
    }

    #[test]
    fn positions_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Positions::load(Some(dir.path()));
        p.set(
            Path::new("/var/log/x"),
            Position {
                inode: 7,
                offset: 42,
            },
        );
        let again = Positions::load(Some(dir.path()));
        assert_eq!(
            again.get(Path::new("/var/log/x")),
            Position {
                inode: 7,
                offset: 42
            }
        );
    }
}
