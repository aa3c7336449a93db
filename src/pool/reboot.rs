//! An admin reboots one VM now. Manual reboots ignore the auto-reboot limits but count as
//! attempts.

use super::{Actor, Pool, PoolError, stored_vm};
use crate::model::Vm;
use crate::store::vms;

/// Reboots `host` through the provider and records it; the audit log names `actor`.
pub async fn reboot_now(pool: &Pool, actor: &Actor, host: &str) -> Result<Vm, PoolError> {
    stored_vm(pool, host, "Failed to reboot VM.").await?;
    if !pool.provisioner.can_reboot() {
        return Err(PoolError::Conflict(format!(
            "Failed to initiate reboot: the `{}` provider cannot reboot VMs; restart {host} yourself.",
            pool.config.provision.provider
        )));
    }
    if let Err(why) = pool.provisioner.reboot(host).await {
        tracing::warn!(vm = %host, %why, "manual reboot failed");
        pool.audit_by(actor, "reboot-failed", format!("{host}: {why}"))
            .await;
        return Err(PoolError::Failed(format!(
            "Failed to initiate reboot: {why}"
        )));
    }
    let at = pool.clock.now();
    let h = host.to_owned();
    let vm = pool
        .store
        .write(move |tx| vms::update(tx, &h, |vm| vm.rebooted(at)))
        .await
        .map_err(PoolError::store("Failed to reboot VM."))?
        .ok_or(PoolError::VmNotFound)?;
    pool.audit_by(actor, "reboot", host.to_owned()).await;
    Ok(vm)
}
