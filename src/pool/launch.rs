//! An admin launches VMs or destroys them: the run starts in the background and is audited.

use super::provisioner::{CancelError, ProvisionError};
use super::{Actor, Pool, PoolError};
use crate::model::{Run, RunAction};

/// Starts `action` as a run; one run at a time.
pub async fn start(pool: &Pool, actor: &Actor, action: RunAction) -> Result<Run, PoolError> {
    let verb = match &action {
        RunAction::Launch { .. } => "launch",
        RunAction::DestroyAll => "destroy-all",
        RunAction::DestroyVm { .. } => "destroy-vm",
    };
    let what = action.describe();
    let started = begin(pool, actor, action).await;
    if let Err(e) = &started {
        tracing::warn!(by = %actor.user, action = %what, reason = %e, "run refused");
    }
    let run = started?;
    pool.audit_by(actor, verb, format!("{what} (run #{})", run.id))
        .await;
    Ok(run)
}

async fn begin(pool: &Pool, actor: &Actor, action: RunAction) -> Result<Run, PoolError> {
    if let RunAction::Launch { count } = &action {
        super::budget::check_launch(pool, *count).await?;
    }
    pool.provisioner
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
        })
}

/// Cancels run `id` (audited); the run ends as `cancelled` once its processes stopped.
pub async fn cancel(pool: &Pool, actor: &Actor, id: u64) -> Result<Run, PoolError> {
    let run = pool
        .provisioner
        .cancel(id, &actor.user)
        .await
        .map_err(|e| match e {
            CancelError::NoSuchRun(_) => PoolError::NotFound(e.to_string()),
            CancelError::Finished(_) | CancelError::Finishing(_) => {
                PoolError::Conflict(e.to_string())
            }
            CancelError::Store(source) => PoolError::Store {
                message: "Failed to read the run.",
                source,
            },
        })?;
    tracing::info!(run = id, by = %actor.user, "run cancel requested");
    pool.audit_by(
        actor,
        "cancel-run",
        format!("run #{id} ({})", run.action.describe()),
    )
    .await;
    Ok(run)
}
