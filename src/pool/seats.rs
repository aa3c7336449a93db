//! Seat control: the instructor fixes a seat in one action. Release a seat, move a
//! participant to another VM, clear a false alarm, revoke a VM; and mint the credentials
//! of the manual provider's machines. Every action is audited.

use super::claim::{random_pin, wake_assigned};
use super::waiters::Wake;
use super::{Actor, Pool, PoolError, stored_vm};
use crate::model::{Assignment, JournalKind, Vm};
use crate::store::vms::{self, MoveOutcome};
use crate::store::{StoreError, identities};

/// Most names minted in one request.
pub const MAX_MINT: usize = 10_000;

/// The participant of `host` loses the seat; the VM is handed out again once its agent
/// has reset the desktop.
pub async fn release(pool: &Pool, actor: &Actor, host: &str) -> Result<Vm, PoolError> {
    let before = stored_vm(pool, host, "Failed to release the seat.").await?;
    let Some(held) = before.assignment else {
        return Err(PoolError::Conflict(format!(
            "{host} has no participant; nothing to release."
        )));
    };
    let vm = release_seat(pool, host, &held).await?.ok_or_else(|| {
        PoolError::Conflict(format!("{host} changed hands meanwhile; look again."))
    })?;
    pool.audit_by(
        actor,
        "release",
        format!("{host} (participant {})", held.email),
    )
    .await;
    super::event::journal(
        pool,
        JournalKind::Released,
        Some(host),
        Some(&held.email),
        None,
        format!("by {}", actor.user),
    )
    .await;
    Ok(vm)
}

/// Releases `host`'s seat if `held` still holds it: the files are rescued before the
/// reset, the participant's streams end. `None` when the seat changed hands meanwhile.
async fn release_seat(pool: &Pool, host: &str, held: &Assignment) -> Result<Option<Vm>, PoolError> {
    let (h, at, rescues) = (host.to_owned(), pool.clock.now(), pool.rescues.clone());
    let (email, since) = (held.email.clone(), held.assigned_at);
    let vm = pool
        .store
        .write(move |tx| {
            let same = vms::get_in(tx, &h)?
                .and_then(|vm| vm.assignment)
                .is_some_and(|a| a.email == email && a.assigned_at == since);
            if same {
                rescues.release(tx, &h, at)
            } else {
                Ok(None)
            }
        })
        .await
        .map_err(PoolError::store("Failed to release the seat."))?;
    if vm.is_some() {
        pool.rescues.requested();
        pool.seat_ended(host);
    }
    Ok(vm)
}

/// The allocator takes back `host`'s seat, idle for `idle_minutes` (`pool::idle`), if
/// `email`'s seat claimed at `assigned_at` is still there. Audited as "idle-reclaim".
pub async fn reclaim_idle(
    pool: &Pool,
    host: &str,
    email: &str,
    assigned_at: chrono::DateTime<chrono::Utc>,
    idle_minutes: i64,
) -> Result<bool, PoolError> {
    let before = stored_vm(pool, host, "Failed to release the seat.").await?;
    let Some(held) = before
        .assignment
        .filter(|a| a.email == email && a.assigned_at == assigned_at)
    else {
        return Ok(false);
    };
    if release_seat(pool, host, &held).await?.is_none() {
        return Ok(false);
    }
    let actor = Actor::new("idle-reclaim", None);
    pool.audit_by(
        &actor,
        "release",
        format!(
            "{host} (participant {}, idle {idle_minutes} min)",
            held.email
        ),
    )
    .await;
    super::event::journal(
        pool,
        JournalKind::Reclaimed,
        Some(host),
        Some(&held.email),
        Some((idle_minutes * 60) as f64),
        format!("idle {idle_minutes} min"),
    )
    .await;
    tracing::info!(vm = %host, email = %held.email, idle_minutes, "idle seat released");
    Ok(true)
}

/// Moves the participant of `from` to `to` (or the first free VM whose agent is alive)
/// with a new PIN; their page follows. `from` waits for its reset.
pub async fn move_participant(
    pool: &Pool,
    actor: &Actor,
    from: &str,
    to: Option<&str>,
) -> Result<(Vm, Vm), PoolError> {
    let pin = random_pin();
    let (f, t, at, liveness, rescues) = (
        from.to_owned(),
        to.map(str::to_owned),
        pool.clock.now(),
        pool.liveness.clone(),
        pool.rescues.clone(),
    );
    let outcome = pool
        .store
        .write(move |tx| {
            let moved =
                vms::move_participant(tx, &f, t.as_deref(), &pin, at, &|h| liveness.is_alive(h))?;
            if let Some(MoveOutcome::Moved { to, .. }) = &moved
                && let Some(held) = &to.assignment
            {
                rescues.on_vacate(tx, &f, held)?;
            }
            Ok(moved)
        })
        .await
        .map_err(PoolError::store("Failed to move the participant."))?
        .ok_or(PoolError::VmNotFound)?;
    let (old, new) = match outcome {
        MoveOutcome::Moved { from, to } => (*from, *to),
        MoveOutcome::NotAssigned => {
            return Err(PoolError::Conflict(format!(
                "{from} has no participant; nothing to move."
            )));
        }
        MoveOutcome::NoTarget => {
            return Err(PoolError::Conflict(match to {
                Some(to) => format!(
                    "{to} cannot take the participant: it must be running, free, healthy and its agent alive."
                ),
                None => "No other VM is free (running, unassigned, healthy, agent alive); launch more or release one.".into(),
            }));
        }
    };
    pool.rescues.requested();
    pool.seat_ended(from);
    wake_assigned(pool, &new);
    if let Some(a) = &new.assignment {
        pool.audit_by(
            actor,
            "move",
            format!("{} from {from} to {}", a.email, new.hostname),
        )
        .await;
        super::event::journal(
            pool,
            JournalKind::Moved,
            Some(&new.hostname),
            Some(&a.email),
            None,
            format!("from {from}, by {}", actor.user),
        )
        .await;
    }
    Ok((old, new))
}

/// Takes back an unhealthy GPU report (the next report decides again) and waives a reset
/// the VM's agent cannot do.
pub async fn clear(pool: &Pool, actor: &Actor, host: &str) -> Result<Vm, PoolError> {
    let (h, at) = (host.to_owned(), pool.clock.now());
    let beating = pool.liveness.report(host).is_some_and(|r| r.heartbeats);
    let vm = pool
        .store
        .write(move |tx| {
            vms::update(tx, &h, |vm| {
                let can_reset = beating || vm.boot_id.is_some();
                vm.cleared(can_reset, at)
            })
        })
        .await
        .map_err(PoolError::store("Failed to clear the VM."))?
        .ok_or(PoolError::VmNotFound)?;
    pool.waitlist.offer(&vm);
    pool.audit_by(actor, "clear", host.to_owned()).await;
    Ok(vm)
}

/// The VM's credential stops working at once and its record goes; its participant may
/// claim another VM. (The machine itself is not stopped: destroy it, or with the manual
/// provider switch it off.) `false` if there was neither a record nor an identity.
pub async fn revoke(pool: &Pool, actor: &Actor, host: &str) -> Result<(), PoolError> {
    let h = host.to_owned();
    let found = pool
        .store
        .write(move |tx| {
            let had_row = vms::delete(tx, &h)?;
            let had_identity = identities::remove(tx, &h)?;
            Ok::<_, StoreError>(had_row || had_identity)
        })
        .await
        .map_err(PoolError::store("Failed to revoke the VM."))?;
    pool.identities
        .reload()
        .await
        .map_err(PoolError::store("Failed to revoke the VM."))?;
    if !found {
        return Err(PoolError::VmNotFound);
    }
    pool.liveness.forget(host);
    pool.waiters.notify(host, Wake::Deleted);
    pool.seat_ended(host);
    pool.audit_by(actor, "revoke", host.to_owned()).await;
    Ok(())
}

/// New credentials for `hosts` (any earlier credential of these names stops working).
pub async fn mint(
    pool: &Pool,
    actor: &Actor,
    hosts: &[String],
) -> Result<Vec<(String, String)>, PoolError> {
    let mut minted = Vec::with_capacity(hosts.len());
    for host in hosts {
        let credential = pool
            .identities
            .reissue(host, &format!("minted by {}", actor.user))
            .await
            .map_err(PoolError::store("Failed to mint the credential."))?;
        minted.push((host.clone(), credential));
    }
    let names = if hosts.len() > 5 {
        format!("{} … ({} names)", hosts[..5].join(", "), hosts.len())
    } else {
        hosts.join(", ")
    };
    pool.audit_by(actor, "mint", names).await;
    Ok(minted)
}
