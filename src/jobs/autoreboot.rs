//! Reboots failed VMs (status error, unhealthy GPU not in use, stuck initializing or
//! rebooting), within limits: a few attempts per VM, a cooldown between them. A VM that
//! has used up its attempts gives its participant back, who may then claim another VM.

use std::collections::HashMap;
use std::time::Duration;

use crate::model::{RebootDecision, UNRESPONSIVE};
use std::sync::Arc;

use crate::pool::{Pool, report};
use crate::store::vms;

pub async fn run(pool: Arc<Pool>) {
    let config = &pool.config.provision;
    if !config.auto_reboot || !pool.provisioner.can_reboot() {
        return;
    }
    let every = Duration::from_secs(config.reboot_check_seconds);
    let policy = pool.config.reboot_policy();
    // Failed attempts, per VM: retried only after the cooldown (and logged then).
    let mut failed_at: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
    loop {
        let now = pool.clock.now();
        let listed = match pool.store.read(vms::list).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::error!(error = %e, "auto-reboot: cannot read the pool");
                Vec::new()
            }
        };
        for vm in listed {
            if pool.shutdown.is_cancelled() {
                return;
            }
            let host = vm.hostname.clone();
            match vm.reboot_decision(now, &policy) {
                RebootDecision::Leave => {}
                RebootDecision::ResetAttempts => {
                    let h = host.clone();
                    let reset = pool
                        .store
                        .write(move |tx| {
                            vms::update(tx, &h, |mut vm| {
                                vm.reboot_count = 0;
                                vm
                            })
                        })
                        .await;
                    if let Err(e) = reset {
                        tracing::error!(vm = %host, error = %e, "cannot reset reboot attempts");
                    }
                }
                RebootDecision::Reboot(_)
                    if failed_at
                        .get(&host)
                        .is_some_and(|t| now - *t < policy.cooldown) => {}
                // The pool was read a while ago (reboots take time): heard since, it stays.
                RebootDecision::Reboot(UNRESPONSIVE) if pool.liveness.is_alive(&host) => {}
                RebootDecision::Reboot(reason) => match pool.provisioner.reboot(&host).await {
                    Ok(()) => {
                        failed_at.remove(&host);
                        let at = pool.clock.now();
                        let h = host.clone();
                        let saved = pool
                            .store
                            .write(move |tx| vms::update(tx, &h, |vm| vm.rebooted(at)))
                            .await;
                        match saved {
                            Ok(Some(vm)) => {
                                tracing::warn!(vm = %host, %reason, attempt = vm.reboot_count, "VM rebooted");
                                let how = format!("{}: {reason}", report::REBOOT_AUTO);
                                report::rebooted(&pool, &host, how).await;
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::error!(vm = %host, error = %e, "cannot record the reboot")
                            }
                        }
                    }
                    Err(why) => {
                        tracing::warn!(vm = %host, %reason, %why, "VM needs a reboot but it could not be done; trying again after the cooldown");
                        failed_at.insert(host.clone(), pool.clock.now());
                    }
                },
                RebootDecision::ReleaseParticipant => {
                    let (h, rescues) = (host.clone(), pool.rescues.clone());
                    let at = pool.clock.now();
                    match pool
                        .store
                        .write(move |tx| rescues.release(tx, &h, at))
                        .await
                    {
                        Ok(_) => {
                            pool.rescues.requested();
                            pool.seat_ended(&host);
                            tracing::warn!(
                                vm = %host,
                                "VM still failing after its reboot attempts; its participant may claim another VM"
                            )
                        }
                        Err(e) => {
                            tracing::error!(vm = %host, error = %e, "cannot release the participant")
                        }
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = pool.shutdown.cancelled() => return,
        }
    }
}
