//! Turns changes of the agents' liveness into the store: a running VM whose agent went
//! silent is marked unresponsive (it leaves the free pool, its participant's page says so,
//! auto-reboot takes it), and unmarked when the agent is heard again.

use std::time::Duration;

use std::sync::Arc;

use crate::pool::liveness::Changes;
use crate::pool::{Pool, report};
use crate::store::vms;

pub async fn run(pool: Arc<Pool>) {
    // Often enough that a silent VM leaves the pool soon after the limit.
    let every = (pool.liveness.stale_after() / 10)
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = pool.shutdown.cancelled() => return,
        }
        let changes = pool.liveness.sweep();
        if changes == Changes::default() {
            continue;
        }
        apply(&pool, changes).await;
    }
}

async fn apply(pool: &Pool, changes: Changes) {
    let now = pool.clock.now();
    let (marked, cleared) = (changes.silent.clone(), changes.back.clone());
    let written = pool
        .store
        .write(move |tx| {
            let mut silenced = Vec::new();
            for (host, ago, heartbeats) in &marked {
                let last = now - chrono::Duration::from_std(*ago).unwrap_or_default();
                let vm = vms::update(tx, host, |vm| vm.gone_silent(last, *heartbeats, now))?;
                if let Some(vm) = vm
                    && vm.unresponsive_since == Some(now)
                {
                    silenced.push(vm);
                }
            }
            for host in &cleared {
                vms::update(tx, host, |vm| vm.heard_again(now))?;
            }
            Ok(silenced)
        })
        .await;
    match written {
        Ok(marked) => {
            for vm in marked {
                let assigned = vm.assignment.is_some();
                tracing::warn!(vm = %vm.hostname, assigned, "agent unresponsive: VM taken out of the pool");
                report::vm_failed(pool, &vm, report::FAILED_UNRESPONSIVE).await;
            }
            for host in &changes.back {
                tracing::info!(vm = %host, "agent heard again");
            }
            if !changes.back.is_empty() {
                pool.waitlist.vacancy();
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record the agents' liveness; trying again");
            pool.liveness.unsweep(&changes);
        }
    }
}
