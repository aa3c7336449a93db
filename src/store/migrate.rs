//! Schema version and the ordered migrations that bring an older store up to date.

use redb::{ReadableTable, TableHandle, WriteTransaction};

use super::tables::{
    ACCOUNTS, ADMIN_TOKENS, AUDIT, EVENT_JOURNAL, EVENTS, FREE_VMS, LOG_CHUNKS, LOG_HEADS, META,
    RESCUES, RUN_LINES, RUNS, SCHEDULE_NAMES, SCHEDULES, SEAT_SERIES, SEAT_USAGE, SESSIONS,
    VM_BY_EMAIL, VM_IDENTITIES, VMS, WAITLIST, WAITLIST_BY_EMAIL,
};
use super::{StoreError, codec};

/// The schema this binary writes. Bump it and append a step to `MIGRATIONS` together.
pub const SCHEMA_VERSION: u64 = 12;

const VERSION_KEY: &str = "schema_version";

type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[n]` takes a store from version n to n + 1. Version 0 is an empty file.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [
    create_tables_v1,
    add_runs_v2,
    add_schedules_v3,
    add_sessions_and_audit_v4,
    add_vm_identities_v5,
    add_events_v6,
    add_waitlist_v7,
    add_rescues_v8,
    add_seat_usage_v9,
    add_seat_series_v10,
    add_admin_tokens_v11,
    add_accounts_v12,
];

fn create_tables_v1(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(META)?;
    tx.open_table(VMS)?;
    tx.open_table(FREE_VMS)?;
    tx.open_table(VM_BY_EMAIL)?;
    tx.open_table(LOG_HEADS)?;
    tx.open_table(LOG_CHUNKS)?;
    Ok(())
}

/// Provisioning runs and their output.
fn add_runs_v2(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(RUNS)?;
    tx.open_table(RUN_LINES)?;
    Ok(())
}

/// Scheduled destructions.
fn add_schedules_v3(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(SCHEDULES)?;
    tx.open_table(SCHEDULE_NAMES)?;
    Ok(())
}

/// Admin sessions and the audit log.
fn add_sessions_and_audit_v4(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(SESSIONS)?;
    tx.open_table(AUDIT)?;
    Ok(())
}

/// Launch-bound VM identities. VMs already in the store keep working with the
/// credential they were given (which names no nonce) until they are destroyed.
fn add_vm_identities_v5(tx: &WriteTransaction) -> Result<(), StoreError> {
    let hosts = super::vms::hostnames(tx)?;
    tx.open_table(VM_IDENTITIES)?;
    let now = chrono::Utc::now();
    for host in hosts {
        super::identities::put(tx, &host, &crate::model::Identity::legacy(now))?;
    }
    Ok(())
}

/// Events and their journals.
fn add_events_v6(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(EVENTS)?;
    tx.open_table(EVENT_JOURNAL)?;
    Ok(())
}

/// The waiting list.
fn add_waitlist_v7(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(WAITLIST)?;
    tx.open_table(WAITLIST_BY_EMAIL)?;
    Ok(())
}

/// Rescued participants' files.
fn add_rescues_v8(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(RESCUES)?;
    Ok(())
}

/// Each seat's GPU use.
fn add_seat_usage_v9(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(SEAT_USAGE)?;
    Ok(())
}

/// Each seat's session metrics.
fn add_seat_series_v10(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(SEAT_SERIES)?;
    Ok(())
}

/// Admin API tokens.
fn add_admin_tokens_v11(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(ADMIN_TOKENS)?;
    Ok(())
}

/// Console accounts (helpers). Nothing older changes: the configured admin stays as it is.
fn add_accounts_v12(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(ACCOUNTS)?;
    Ok(())
}

/// Reads the recorded version, refuses a newer one, and applies what is missing in one
/// transaction (a failed migration leaves the file as it was).
pub fn run(tx: &WriteTransaction) -> Result<u64, StoreError> {
    let found = read_version(tx)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for step in &MIGRATIONS[found as usize..] {
        step(tx)?;
    }
    let mut meta = tx.open_table(META)?;
    meta.insert(VERSION_KEY, codec::encode(&SCHEMA_VERSION).as_slice())?;
    Ok(found)
}

fn read_version(tx: &WriteTransaction) -> Result<u64, StoreError> {
    let meta = tx.open_table(META)?;
    let version = match meta.get(VERSION_KEY)? {
        Some(v) => codec::decode(META.name(), VERSION_KEY, v.value())?,
        None => 0,
    };
    Ok(version)
}
