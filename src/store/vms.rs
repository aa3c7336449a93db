//! The VM aggregate: records, the free-VM index and the e-mail index, always changed
//! together in one transaction.

use chrono::{DateTime, Utc};
use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableHandle, WriteTransaction,
};

use super::tables::{FREE_VMS, VM_BY_EMAIL, VMS};
use super::{StoreError, codec};
use crate::model::{Assignment, DesktopKind, Vm, VmStatus};

fn decode_vm(host: &str, bytes: &[u8]) -> Result<Vm, StoreError> {
    codec::decode(VMS.name(), host, bytes)
}

fn load(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    host: &str,
) -> Result<Option<Vm>, StoreError> {
    match table.get(host)? {
        Some(bytes) => Ok(Some(decode_vm(host, bytes.value())?)),
        None => Ok(None),
    }
}

/// Writes `after` and keeps the free index in step with it.
fn save(
    vms: &mut Table<&'static str, &'static [u8]>,
    free: &mut Table<(u64, &'static str), ()>,
    before: Option<&Vm>,
    after: &Vm,
) -> Result<(), StoreError> {
    let order = Vm::pick_order(&after.hostname);
    let was_free = before.is_some_and(Vm::is_available);
    if was_free && !after.is_available() {
        free.remove((order, after.hostname.as_str()))?;
    } else if !was_free && after.is_available() {
        free.insert((order, after.hostname.as_str()), ())?;
    }
    vms.insert(after.hostname.as_str(), codec::encode(after).as_slice())?;
    Ok(())
}

pub fn get(tx: &ReadTransaction, host: &str) -> Result<Option<Vm>, StoreError> {
    load(&tx.open_table(VMS)?, host)
}

/// The VM `host`, read inside a write.
pub fn get_in(tx: &WriteTransaction, host: &str) -> Result<Option<Vm>, StoreError> {
    load(&tx.open_table(VMS)?, host)
}

/// All VMs in pick order (lowest VM number first).
pub fn list(tx: &ReadTransaction) -> Result<Vec<Vm>, StoreError> {
    let table = tx.open_table(VMS)?;
    let mut vms = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        vms.push(decode_vm(k.value(), v.value())?);
    }
    vms.sort_by(|a, b| {
        (Vm::pick_order(&a.hostname), &a.hostname).cmp(&(Vm::pick_order(&b.hostname), &b.hostname))
    });
    Ok(vms)
}

pub fn count_free(tx: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(tx.open_table(FREE_VMS)?.len()?)
}

/// A status report. Creates the VM on first contact (upstream user_data relies on it).
/// `status` is `None` for a value outside the five known ones: the row is still created,
/// the status left as it was.
pub fn report_status(
    tx: &WriteTransaction,
    host: &str,
    status: Option<VmStatus>,
    now: DateTime<Utc>,
) -> Result<Vm, StoreError> {
    let mut vms = tx.open_table(VMS)?;
    let mut free = tx.open_table(FREE_VMS)?;
    let before = load(&vms, host)?;
    let base = before.clone().unwrap_or_else(|| Vm::new(host, now));
    let after = match status {
        Some(s) => base.with_status(s, now),
        None => base,
    };
    if before.as_ref() != Some(&after) {
        save(&mut vms, &mut free, before.as_ref(), &after)?;
    }
    Ok(after)
}

/// Applies `change` to an existing VM; `Ok(None)` when there is no such VM.
pub fn update(
    tx: &WriteTransaction,
    host: &str,
    change: impl FnOnce(Vm) -> Vm,
) -> Result<Option<Vm>, StoreError> {
    let mut vms = tx.open_table(VMS)?;
    let mut free = tx.open_table(FREE_VMS)?;
    let Some(before) = load(&vms, host)? else {
        return Ok(None);
    };
    let after = change(before.clone());
    if after != before {
        save(&mut vms, &mut free, Some(&before), &after)?;
    }
    Ok(Some(after))
}

#[derive(Clone, Debug, PartialEq)]
pub enum ClaimOutcome {
    /// A free VM was handed to this participant.
    Assigned(Vm),
    /// This e-mail already holds this VM. `proven` when the browser presented the
    /// assignment's token (only then is a new code taken: `rotated`).
    Rejoined {
        vm: Vm,
        rotated: bool,
        proven: bool,
    },
    /// This browser's VM stopped responding: it was given another one.
    Reseated {
        from: String,
        vm: Vm,
    },
    NoneFree,
}

/// Picks the first free VM and assigns it, or returns the one this e-mail already holds —
/// read and write in the same transaction, so no VM is ever handed out twice.
/// What a participant presents with a claim.
pub struct ClaimRequest<'a> {
    pub email: &'a str,
    pub crd_code: &'a str,
    /// How the participant reaches a new seat's desktop.
    pub desktop: DesktopKind,
    /// PIN for a new assignment.
    pub pin: &'a str,
    /// Token digest for a new assignment.
    pub new_token_sha256: &'a str,
    /// Digest of the token the browser presented, if any.
    pub presented_sha256: Option<&'a str>,
    /// The seat page asks for another VM because this one stopped responding.
    pub reseat: bool,
}

/// `alive` says whether a VM's agent is demonstrably alive right now: free VMs that are not
/// are passed over (and stay free: the liveness sweep takes them out of the pool).
pub fn claim(
    tx: &WriteTransaction,
    req: &ClaimRequest<'_>,
    now: DateTime<Utc>,
    alive: &dyn Fn(&str) -> bool,
) -> Result<ClaimOutcome, StoreError> {
    let (email, crd_code, pin) = (req.email, req.crd_code, req.pin);
    let mut vms = tx.open_table(VMS)?;
    let mut free = tx.open_table(FREE_VMS)?;
    let mut by_email = tx.open_table(VM_BY_EMAIL)?;

    let held = by_email.get(email)?.map(|h| h.value().to_owned());
    if let Some(host) = held {
        if let Some(vm) = load(&vms, &host)?
            && vm.assignment.as_ref().is_some_and(|a| a.email == email)
        {
            let proven = vm.assignment.as_ref().is_some_and(|a| {
                match (&a.claim_token_sha256, req.presented_sha256) {
                    (Some(kept), Some(presented)) => bool::from(subtle::ConstantTimeEq::ct_eq(
                        kept.as_bytes(),
                        presented.as_bytes(),
                    )),
                    _ => false,
                }
            });
            if req.reseat && proven && vm.unresponsive_since.is_some() {
                // Their VM died: a new seat, found the same way as a first claim; the dead
                // VM is reset before anyone else gets it.
                let held = vm.assignment.clone().unwrap_or_else(|| unreachable!());
                let assignment = Assignment {
                    crd_code: crd_code.to_owned(),
                    pin: pin.to_owned(),
                    assigned_at: now,
                    desktop_ready_at: None,
                    ..held
                };
                return match assign_first_free(&mut vms, &mut free, assignment, Some(&host), alive)?
                {
                    Some(to) => {
                        let vacated = vm.clone().vacated(now);
                        save(&mut vms, &mut free, Some(&vm), &vacated)?;
                        by_email.insert(email, to.hostname.as_str())?;
                        Ok(ClaimOutcome::Reseated { from: host, vm: to })
                    }
                    None => Ok(ClaimOutcome::NoneFree),
                };
            }
            let rotated = proven
                && vm
                    .assignment
                    .as_ref()
                    .is_some_and(|a| a.desktop == DesktopKind::Crd && a.crd_code != crd_code);
            if !rotated {
                return Ok(ClaimOutcome::Rejoined {
                    vm,
                    rotated,
                    proven,
                });
            }
            let after = vm.clone().with_rotated_code(crd_code, now);
            save(&mut vms, &mut free, Some(&vm), &after)?;
            return Ok(ClaimOutcome::Rejoined {
                vm: after,
                rotated,
                proven,
            });
        }
        // The VM this e-mail held is gone or was released: they may claim a new one.
        by_email.remove(email)?;
    }

    // First come, first served: nobody takes a free VM ahead of those waiting for one.
    if !super::waitlist::is_empty(tx)? {
        return Ok(ClaimOutcome::NoneFree);
    }
    let assignment = Assignment {
        email: email.to_owned(),
        crd_code: crd_code.to_owned(),
        pin: pin.to_owned(),
        assigned_at: now,
        claim_token_sha256: Some(req.new_token_sha256.to_owned()),
        desktop: req.desktop,
        desktop_ready_at: None,
    };
    match assign_first_free(&mut vms, &mut free, assignment, None, alive)? {
        Some(vm) => {
            by_email.insert(email, vm.hostname.as_str())?;
            Ok(ClaimOutcome::Assigned(vm))
        }
        None => Ok(ClaimOutcome::NoneFree),
    }
}

/// What `seat` did.
#[derive(Clone, Debug, PartialEq)]
pub enum Seat {
    Given(Box<Vm>),
    /// The assignment's e-mail holds a VM already: nothing was changed.
    AlreadyHolds(String),
    NoneFree,
}

/// Gives `assignment` (a participant who waited) the first free VM whose agent is alive,
/// as `claim` gives a new claim one.
pub fn seat(
    tx: &WriteTransaction,
    assignment: Assignment,
    alive: &dyn Fn(&str) -> bool,
) -> Result<Seat, StoreError> {
    let mut vms = tx.open_table(VMS)?;
    let mut free = tx.open_table(FREE_VMS)?;
    let mut by_email = tx.open_table(VM_BY_EMAIL)?;
    let email = assignment.email.clone();
    let held = by_email.get(email.as_str())?.map(|h| h.value().to_owned());
    if let Some(host) = held
        && load(&vms, &host)?.is_some_and(|vm| vm.assignment.is_some_and(|a| a.email == email))
    {
        return Ok(Seat::AlreadyHolds(host));
    }
    match assign_first_free(&mut vms, &mut free, assignment, None, alive)? {
        Some(vm) => {
            by_email.insert(email.as_str(), vm.hostname.as_str())?;
            Ok(Seat::Given(Box::new(vm)))
        }
        None => Ok(Seat::NoneFree),
    }
}

/// Gives `assignment` to the first free VM whose agent is alive (other than `except`).
/// Entries are only ever free VMs; one that is not (an index out of step after a crash in
/// an older version) is dropped and the next one tried.
fn assign_first_free(
    vms: &mut Table<&'static str, &'static [u8]>,
    free: &mut Table<(u64, &'static str), ()>,
    assignment: Assignment,
    except: Option<&str>,
    alive: &dyn Fn(&str) -> bool,
) -> Result<Option<Vm>, StoreError> {
    let mut stale = Vec::new();
    let mut picked = None;
    for entry in free.iter()? {
        let (order, host) = {
            let (k, _) = entry?;
            let (order, host) = k.value();
            (order, host.to_owned())
        };
        if except == Some(host.as_str()) || !alive(&host) {
            continue;
        }
        // An unreadable record is treated like a stale entry: never handed out.
        let candidate = match load(vms, &host) {
            Err(StoreError::Corrupt { .. }) => None,
            other => other?,
        };
        match candidate.map(|vm| (vm.clone(), vm.assign(assignment.clone()))) {
            Some((before, Ok(after))) => {
                picked = Some((before, after));
                break;
            }
            _ => stale.push((order, host)),
        }
    }
    for (order, host) in stale {
        tracing::warn!(host, "free-VM index entry was stale; dropped");
        free.remove((order, host.as_str()))?;
    }
    match picked {
        Some((before, after)) => {
            save(vms, free, Some(&before), &after)?;
            Ok(Some(after))
        }
        None => Ok(None),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum MoveOutcome {
    /// The participant now holds `to`; `from` waits for its reset.
    Moved {
        from: Box<Vm>,
        to: Box<Vm>,
    },
    NotAssigned,
    /// The named target (or, with none named, every VM) cannot take them.
    NoTarget,
}

/// Moves the participant of `from` to `to` (or the first free live VM), with a new PIN;
/// their e-mail, code and browser token go with them. One transaction: they are never
/// without a seat, and never hold two.
pub fn move_participant(
    tx: &WriteTransaction,
    from: &str,
    to: Option<&str>,
    pin: &str,
    now: DateTime<Utc>,
    alive: &dyn Fn(&str) -> bool,
) -> Result<Option<MoveOutcome>, StoreError> {
    let mut vms = tx.open_table(VMS)?;
    let mut free = tx.open_table(FREE_VMS)?;
    let mut by_email = tx.open_table(VM_BY_EMAIL)?;
    let Some(before) = load(&vms, from)? else {
        return Ok(None);
    };
    let Some(held) = before.assignment.clone() else {
        return Ok(Some(MoveOutcome::NotAssigned));
    };
    let assignment = Assignment {
        pin: pin.to_owned(),
        assigned_at: now,
        desktop_ready_at: None,
        ..held.clone()
    };
    let target = match to {
        Some(host) if host == from => None,
        Some(host) => match load(&vms, host)? {
            Some(vm) if alive(host) => match vm.clone().assign(assignment) {
                Ok(after) => {
                    save(&mut vms, &mut free, Some(&vm), &after)?;
                    Some(after)
                }
                Err(_) => None,
            },
            _ => None,
        },
        None => assign_first_free(&mut vms, &mut free, assignment, Some(from), alive)?,
    };
    let Some(target) = target else {
        return Ok(Some(MoveOutcome::NoTarget));
    };
    let vacated = before.clone().vacated(now);
    save(&mut vms, &mut free, Some(&before), &vacated)?;
    by_email.insert(held.email.as_str(), target.hostname.as_str())?;
    Ok(Some(MoveOutcome::Moved {
        from: Box::new(vacated),
        to: Box::new(target),
    }))
}

pub fn exists(tx: &WriteTransaction, host: &str) -> Result<bool, StoreError> {
    Ok(tx.open_table(VMS)?.get(host)?.is_some())
}

/// Removes a VM and everything hanging off it (indexes, logs). `false` if it was not
/// there. A record that cannot be read is removed all the same (its e-mail entry, if
/// any, is left for `claim`, which drops entries pointing at missing VMs).
pub fn delete(tx: &WriteTransaction, host: &str) -> Result<bool, StoreError> {
    let mut vms = tx.open_table(VMS)?;
    let mut free = tx.open_table(FREE_VMS)?;
    let mut by_email = tx.open_table(VM_BY_EMAIL)?;
    let vm = match load(&vms, host) {
        Ok(None) => return Ok(false),
        Ok(Some(vm)) => Some(vm),
        Err(StoreError::Corrupt { .. }) => None,
        Err(e) => return Err(e),
    };
    free.remove((Vm::pick_order(host), host))?;
    if let Some(a) = vm.as_ref().and_then(|vm| vm.assignment.as_ref()) {
        let holder = by_email.get(a.email.as_str())?.map(|h| h.value() == host);
        if holder == Some(true) {
            by_email.remove(a.email.as_str())?;
        }
    }
    vms.remove(host)?;
    drop((vms, free, by_email));
    super::logs::delete(tx, host)?;
    super::identities::remove(tx, host)?;
    Ok(true)
}

/// Every VM's hostname, read inside a write.
pub fn hostnames(tx: &WriteTransaction) -> Result<Vec<String>, StoreError> {
    let vms = tx.open_table(VMS)?;
    let mut hosts = Vec::new();
    for entry in vms.iter()? {
        hosts.push(entry?.0.value().to_owned());
    }
    Ok(hosts)
}

/// Removes every VM; returns their hostnames.
pub fn delete_all(tx: &WriteTransaction) -> Result<Vec<String>, StoreError> {
    let hosts = hostnames(tx)?;
    for host in &hosts {
        delete(tx, host)?;
    }
    // Also the identities of VMs launched or minted that never reported.
    super::identities::remove_all(tx)?;
    Ok(hosts)
}

/// How long creating the VM took (Terraform's timing), creating its row if needed — as
/// upstream does after an apply, so a VM shows up before it first reports.
pub fn record_creation(
    tx: &WriteTransaction,
    host: &str,
    phase: crate::model::Phase,
    now: DateTime<Utc>,
) -> Result<Vm, StoreError> {
    let mut vms = tx.open_table(VMS)?;
    let mut free = tx.open_table(FREE_VMS)?;
    // An unreadable record is replaced: Terraform says this VM exists.
    let before = match load(&vms, host) {
        Err(StoreError::Corrupt { .. }) => None,
        other => other?,
    };
    let mut after = before.clone().unwrap_or_else(|| Vm::new(host, now));
    after.timings.terraform_apply = phase;
    after.updated_at = now;
    save(&mut vms, &mut free, before.as_ref(), &after)?;
    Ok(after)
}

/// Frees a VM's participant (they may claim another VM); the VM keeps its history and is
/// handed out again only after its agent has reset the desktop.
pub fn release(
    tx: &WriteTransaction,
    host: &str,
    now: DateTime<Utc>,
) -> Result<Option<Vm>, StoreError> {
    let mut vms = tx.open_table(VMS)?;
    let mut free = tx.open_table(FREE_VMS)?;
    let mut by_email = tx.open_table(VM_BY_EMAIL)?;
    let Some(before) = load(&vms, host)? else {
        return Ok(None);
    };
    let Some(a) = before.assignment.clone() else {
        return Ok(Some(before));
    };
    if by_email
        .get(a.email.as_str())?
        .is_some_and(|h| h.value() == host)
    {
        by_email.remove(a.email.as_str())?;
    }
    let after = before.clone().vacated(now);
    save(&mut vms, &mut free, Some(&before), &after)?;
    Ok(Some(after))
}

/// The VM `email` holds now, if any.
pub fn held_by(tx: &ReadTransaction, email: &str) -> Result<Option<Vm>, StoreError> {
    let host = tx
        .open_table(VM_BY_EMAIL)?
        .get(email)?
        .map(|h| h.value().to_owned());
    let Some(host) = host else {
        return Ok(None);
    };
    Ok(get(tx, &host)?.filter(|vm| vm.assignment.as_ref().is_some_and(|a| a.email == email)))
}
