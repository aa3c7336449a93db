//! Rescues of participants' files, and the pending rescue on the VM record beside them
//! (changed in the same transaction: the VM's reset waits for it).

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::tables::RESCUES;
use super::{StoreError, codec, vms};
use crate::model::{PendingRescue, Rescue, RescueOutcome, RescueReason};

fn decode(id: u64, bytes: &[u8]) -> Result<Rescue, StoreError> {
    codec::decode(RESCUES.name(), &id.to_string(), bytes)
}

fn put(tx: &WriteTransaction, rescue: &Rescue) -> Result<(), StoreError> {
    tx.open_table(RESCUES)?
        .insert(rescue.id, codec::encode(rescue).as_slice())?;
    Ok(())
}

/// How long a rescue may take, and how long its archive is kept.
#[derive(Clone, Copy, Debug)]
pub struct Terms {
    pub wait: chrono::Duration,
    pub keep: chrono::Duration,
}

/// Asks `host`'s agent to rescue the files of its participant; `None` when the VM has no
/// participant (or no record). An agent that cannot (`agent_can` false) gets a record
/// that is already `unsupported` and nothing pending.
pub fn request(
    tx: &WriteTransaction,
    host: &str,
    reason: RescueReason,
    agent_can: bool,
    terms: Terms,
    now: DateTime<Utc>,
) -> Result<Option<Rescue>, StoreError> {
    let Some(vm) = vms::get_in(tx, host)? else {
        return Ok(None);
    };
    let Some(assignment) = &vm.assignment else {
        return Ok(None);
    };
    create_for(tx, host, assignment, reason, agent_can, terms, now).map(Some)
}

/// As [`request`], for an assignment the VM has just lost (a release, a move): call it in
/// the same transaction as the release.
pub fn create_for(
    tx: &WriteTransaction,
    host: &str,
    assignment: &crate::model::Assignment,
    reason: RescueReason,
    agent_can: bool,
    terms: Terms,
    now: DateTime<Utc>,
) -> Result<Rescue, StoreError> {
    let mut rescue = Rescue::new(
        host, assignment, reason, agent_can, now, terms.wait, terms.keep,
    );
    rescue.id = tx
        .open_table(RESCUES)?
        .last()?
        .map_or(1, |(k, _)| k.value() + 1);
    put(tx, &rescue)?;
    if rescue.outcome.is_pending() {
        let pending = PendingRescue {
            id: rescue.id,
            deadline: rescue.deadline,
        };
        vms::update(tx, host, |vm| vm.with_rescue(Some(pending), now))?;
    }
    Ok(rescue)
}

pub fn get(tx: &ReadTransaction, id: u64) -> Result<Option<Rescue>, StoreError> {
    let table = tx.open_table(RESCUES)?;
    let value = table.get(id)?;
    value.map(|v| decode(id, v.value())).transpose()
}

/// Every rescue, newest first.
pub fn list(tx: &ReadTransaction) -> Result<Vec<Rescue>, StoreError> {
    let table = tx.open_table(RESCUES)?;
    let mut out = Vec::new();
    for entry in table.iter()?.rev() {
        let (k, v) = entry?;
        out.push(decode(k.value(), v.value())?);
    }
    Ok(out)
}

/// The rescues of `email` whose assignment had the token of digest `token_sha256`.
pub fn of_participant(
    tx: &ReadTransaction,
    email: &str,
    token_sha256: &str,
) -> Result<Vec<Rescue>, StoreError> {
    Ok(list(tx)?
        .into_iter()
        .filter(|r| {
            r.email == email
                && r.claim_token_sha256.as_deref().is_some_and(|kept| {
                    bool::from(subtle::ConstantTimeEq::ct_eq(
                        kept.as_bytes(),
                        token_sha256.as_bytes(),
                    ))
                })
        })
        .collect())
}

/// Ends rescue `id` with `outcome` (if it is still pending) and lifts it from its VM, so
/// the VM's reset may go on. The rescue as it is now; `None` if there is no such rescue.
pub fn finish(
    tx: &WriteTransaction,
    id: u64,
    outcome: RescueOutcome,
    now: DateTime<Utc>,
) -> Result<Option<Rescue>, StoreError> {
    let current = {
        let table = tx.open_table(RESCUES)?;
        let value = table.get(id)?;
        match value {
            Some(v) => decode(id, v.value())?,
            None => return Ok(None),
        }
    };
    let after = current.clone().finished(outcome, now);
    if after != current {
        put(tx, &after)?;
    }
    let host = after.hostname.clone();
    match vms::update(tx, &host, |vm| {
        if vm.rescue.as_ref().is_some_and(|p| p.id == id) {
            vm.with_rescue(None, now)
        } else {
            vm
        }
    }) {
        // An unreadable VM record is left for the destroy that removes it.
        Err(StoreError::Corrupt { .. }) | Ok(_) => {}
        Err(e) => return Err(e),
    }
    Ok(Some(after))
}

/// Pending rescues past their deadline become `timed_out`; returns them.
pub fn time_out_overdue(
    tx: &WriteTransaction,
    now: DateTime<Utc>,
) -> Result<Vec<Rescue>, StoreError> {
    let overdue: Vec<u64> = pending_in(tx)?
        .into_iter()
        .filter(|r| r.deadline <= now)
        .map(|r| r.id)
        .collect();
    let mut ended = Vec::new();
    for id in overdue {
        if let Some(r) = finish(tx, id, RescueOutcome::TimedOut, now)? {
            ended.push(r);
        }
    }
    Ok(ended)
}

fn pending_in(tx: &WriteTransaction) -> Result<Vec<Rescue>, StoreError> {
    let table = tx.open_table(RESCUES)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let r = decode(k.value(), v.value())?;
        if r.outcome.is_pending() {
            out.push(r);
        }
    }
    Ok(out)
}

/// When something is next due: the earliest deadline of a pending rescue, and the
/// earliest expiry of a kept archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextTimes {
    pub deadline: Option<DateTime<Utc>>,
    pub expiry: Option<DateTime<Utc>>,
}

pub fn next_times(tx: &ReadTransaction) -> Result<NextTimes, StoreError> {
    let all = list(tx)?;
    Ok(NextTimes {
        deadline: all
            .iter()
            .filter(|r| r.outcome.is_pending())
            .map(|r| r.deadline)
            .min(),
        expiry: all
            .iter()
            .filter(|r| r.has_archive())
            .map(|r| r.expires_at)
            .min(),
    })
}

/// Marks the kept archives past their expiry as expired; returns their ids (the caller
/// deletes the files once this is committed).
pub fn expire(tx: &WriteTransaction, now: DateTime<Utc>) -> Result<Vec<u64>, StoreError> {
    let due: Vec<Rescue> = {
        let table = tx.open_table(RESCUES)?;
        let mut due = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let r = decode(k.value(), v.value())?;
            if r.has_archive() && r.expires_at <= now {
                due.push(r);
            }
        }
        due
    };
    let mut ids = Vec::with_capacity(due.len());
    for mut r in due {
        r.expired = true;
        put(tx, &r)?;
        ids.push(r.id);
    }
    Ok(ids)
}
