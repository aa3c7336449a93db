//! How much of the participants' files one download may fetch: at most
//! `machine.export_max_mb_per_vm` from one VM, `machine.export_max_total_mb` in all, and
//! never more than half the free space of the data directory (the zip is written beside
//! the fetched files). VMs are fetched a few at a time: each gets its share before it
//! starts, so the disk never holds more than the budget.

use std::path::Path;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::config::Config;

pub const MIB: u64 = 1024 * 1024;

/// Bytes the current user may still write on the file system that holds `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stats = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(stats
        .blocks_available()
        .saturating_mul(stats.fragment_size()))
}

pub struct Budget {
    per_vm: u64,
    total: u64,
    /// Why `total` is what it is, for the report.
    total_reason: String,
    state: Mutex<State>,
    settled: Notify,
}

struct State {
    /// Bytes not yet handed out.
    left: u64,
    /// VMs being fetched with a share.
    in_flight: usize,
    /// A VM did not fit in what was left: the rest are skipped.
    exhausted: bool,
}

/// What one VM may fetch.
#[derive(Debug, PartialEq)]
pub enum Share {
    /// At most this many bytes.
    Fetch(u64),
    /// Nothing: the download has reached its total.
    Skip,
}

impl Budget {
    /// The budget of one download given the configuration and the free space.
    pub fn new(config: &Config, free: u64) -> Budget {
        let per_vm = config.machine.export_max_mb_per_vm.saturating_mul(MIB);
        let configured = config.machine.export_max_total_mb.saturating_mul(MIB);
        let room = free / 2;
        let (total, total_reason) = if room < configured {
            (
                room,
                format!(
                    "half the free space of {}, {} MiB free; the zip needs the other half",
                    config.data_dir().display(),
                    free / MIB
                ),
            )
        } else {
            (configured, "machine.export_max_total_mb".to_owned())
        };
        Budget {
            per_vm,
            total,
            total_reason,
            state: Mutex::new(State {
                left: total,
                in_flight: 0,
                exhausted: false,
            }),
            settled: Notify::new(),
        }
    }

    /// The share of the next VM: the per-VM cap while that much is left, else (once every
    /// other fetch has settled) what is left. Waits while other fetches may give back.
    pub async fn share(&self) -> Share {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.exhausted {
                    return Share::Skip;
                }
                if s.left >= self.per_vm || s.in_flight == 0 {
                    let share = s.left.min(self.per_vm);
                    if share == 0 {
                        s.exhausted = true;
                        return Share::Skip;
                    }
                    s.left -= share;
                    s.in_flight += 1;
                    return Share::Fetch(share);
                }
            }
            settled.await;
        }
    }

    /// A fetch with `share` ended having kept `kept` bytes (0 when its files were removed);
    /// `over` when its files did not fit in the share. Returns the report line of a VM
    /// skipped for its size.
    pub fn settle(&self, host: &str, share: u64, kept: u64, over: bool) -> Option<String> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.in_flight -= 1;
        s.left += share.saturating_sub(kept);
        let line = if !over {
            None
        } else if share >= self.per_vm {
            Some(format!(
                "{host}: skipped, its files take more than {} MiB \
                 (machine.export_max_mb_per_vm)",
                self.per_vm / MIB
            ))
        } else {
            s.exhausted = true;
            Some(self.total_line(host))
        };
        drop(s);
        self.settled.notify_waiters();
        line
    }

    /// The report line of a VM skipped because the download reached its total.
    pub fn total_line(&self, host: &str) -> String {
        format!(
            "{host}: skipped, the download reached its limit of {} MiB ({})",
            self.total / MIB,
            self.total_reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next share, which must come without waiting for a settle.
    async fn share(b: &Budget) -> Share {
        tokio::time::timeout(std::time::Duration::from_secs(5), b.share())
            .await
            .expect("a share without waiting")
    }

    fn budget(per_vm_mb: u64, total_mb: u64, free: u64) -> Budget {
        let mut config = Config::default();
        config.machine.export_max_mb_per_vm = per_vm_mb;
        config.machine.export_max_total_mb = total_mb;
        Budget::new(&config, free)
    }

    #[tokio::test]
    async fn shares_follow_the_caps_and_what_is_left() {
        let b = budget(2, 5, 1000 * MIB);
        assert_eq!(share(&b).await, Share::Fetch(2 * MIB));
        assert_eq!(share(&b).await, Share::Fetch(2 * MIB));
        // 1 MiB is left, less than a VM's cap: it waits for the others to settle.
        let waiting = b.share();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err()
        );
        assert_eq!(b.settle("vm-1", 2 * MIB, MIB, false), None);
        // 2 MiB left now: a whole share.
        assert_eq!(waiting.await, Share::Fetch(2 * MIB));
        let over = b.settle("vm-2", 2 * MIB, 0, true).expect("a line");
        assert!(over.contains("machine.export_max_mb_per_vm"), "{over}");
        assert_eq!(b.settle("vm-3", 2 * MIB, 2 * MIB, false), None);
        // 2 MiB left, nothing in flight.
        assert_eq!(share(&b).await, Share::Fetch(2 * MIB));
        assert_eq!(b.settle("vm-4", 2 * MIB, 2 * MIB, false), None);
        assert_eq!(share(&b).await, Share::Skip);
        assert!(b.total_line("vm-6").contains("machine.export_max_total_mb"));
    }

    #[tokio::test]
    async fn a_vm_that_does_not_fit_in_the_rest_ends_the_download() {
        let b = budget(4, 6, 1000 * MIB);
        assert_eq!(share(&b).await, Share::Fetch(4 * MIB));
        assert_eq!(b.settle("vm-1", 4 * MIB, 4 * MIB, false), None);
        assert_eq!(share(&b).await, Share::Fetch(2 * MIB));
        let line = b.settle("vm-2", 2 * MIB, 0, true).expect("a line");
        assert!(line.contains("limit of 6 MiB"), "{line}");
        assert_eq!(share(&b).await, Share::Skip);
    }

    #[tokio::test]
    async fn free_space_can_set_the_total() {
        let b = budget(2, 100, 6 * MIB);
        assert_eq!(share(&b).await, Share::Fetch(2 * MIB));
        assert_eq!(b.settle("vm-1", 2 * MIB, 2 * MIB, false), None);
        assert_eq!(share(&b).await, Share::Fetch(MIB));
        let line = b.settle("vm-2", MIB, 0, true).expect("a line");
        assert!(
            line.contains("limit of 3 MiB (half the free space of"),
            "{line}"
        );
        assert!(line.contains("6 MiB free"), "{line}");
    }

    #[test]
    fn free_space_of_a_real_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(free_bytes(dir.path()).expect("statvfs") > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
