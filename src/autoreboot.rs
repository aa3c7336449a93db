//! Reboots failed VMs (status error, unhealthy GPU not in use, stuck initializing or
//! rebooting), within limits: a few attempts per VM, a cooldown between them. A VM that
//! has used up its attempts gives its participant back, who may then claim another VM.

use std::time::Duration;

use crate::model::RebootDecision;
use crate::server::App;
use crate::store::vms;

pub async fn run(app: App) {
    let config = &app.config.provision;
    if !config.auto_reboot {
        return;
    }
    let every = Duration::from_secs(config.reboot_check_seconds);
    let policy = app.config.reboot_policy();
    let mut unsupported_logged = false;
    loop {
        let now = app.clock.now();
        let pool = match app.store.read(vms::list).await {
            Ok(pool) => pool,
            Err(e) => {
                tracing::error!(error = %e, "auto-reboot: cannot read the pool");
                Vec::new()
            }
        };
        for vm in pool {
            if app.shutdown.is_cancelled() {
                return;
            }
            let host = vm.hostname.clone();
            match vm.reboot_decision(now, &policy) {
                RebootDecision::Leave => {}
                RebootDecision::Reboot(reason) => match app.provisioner.reboot(&host).await {
                    Ok(()) => {
                        let at = app.clock.now();
                        let h = host.clone();
                        let saved = app
                            .store
                            .write(move |tx| vms::update(tx, &h, |vm| vm.rebooted(at)))
                            .await;
                        match saved {
                            Ok(Some(vm)) => tracing::warn!(
                                vm = %host, %reason, attempt = vm.reboot_count, "VM rebooted"
                            ),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::error!(vm = %host, error = %e, "cannot record the reboot")
                            }
                        }
                    }
                    Err(why) => {
                        if !unsupported_logged {
                            tracing::warn!(vm = %host, %reason, %why, "VM needs a reboot but it cannot be done");
                            unsupported_logged = true;
                        }
                    }
                },
                RebootDecision::ReleaseParticipant => {
                    let h = host.clone();
                    let at = app.clock.now();
                    match app.store.write(move |tx| vms::release(tx, &h, at)).await {
                        Ok(_) => tracing::warn!(
                            vm = %host,
                            "VM still failing after its reboot attempts; its participant may claim another VM"
                        ),
                        Err(e) => {
                            tracing::error!(vm = %host, error = %e, "cannot release the participant")
                        }
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = app.shutdown.cancelled() => return,
        }
    }
}
