//! An admin launches VMs or destroys them: the run starts in the background and is audited.

use super::provisioner::ProvisionError;
use super::{Actor, Pool, PoolError};
use crate::model::{Run, RunAction};

/// Starts `action` as a run; one run at a time.
pub async fn start(pool: &Pool, actor: &Actor, action: RunAction) -> Result<Run, PoolError> {
    let verb = match &action {
        RunAction::Launch { .. } => "launch",
        RunAction::DestroyAll => "destroy-all",
        RunAction::DestroyVm { .. } => "destroy-vm",
    };
    if let RunAction::Launch { count } = &action {
        super::budget::check_launch(pool, *count).await?;
    }
    let what = action.describe();
    let run = pool
        .provisioner
        .start(action, &actor.user, actor.from.clone())
        .await
        .map_err(|e| match e {
            ProvisionError::Busy(_) => PoolError::Conflict(e.to_string()),
            ProvisionError::Unsupported(why) => PoolError::Invalid(why.to_owned()),
            ProvisionError::NoSuchVm => PoolError::VmNotFound,
            ProvisionError::NothingToDestroy => PoolError::NotFound(e.to_string()),
            ProvisionError::Store(source) => PoolError::Store {
                message: "Failed to start the run.",
                source,
            },
        })?;
    pool.audit_by(actor, verb, format!("{what} (run #{})", run.id))
        .await;
    Ok(run)
}
