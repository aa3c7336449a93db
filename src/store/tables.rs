//! Every table of the store, in one place. Names carry a version suffix: a change of key or
//! value layout gets a new name and a migration in `migrate.rs`.

use redb::TableDefinition;

/// Store-wide values: `schema_version`, `api_token`, `admin_password_hash`.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");

/// hostname → encoded `model::Vm`.
pub const VMS: TableDefinition<&str, &[u8]> = TableDefinition::new("vms_v1");

/// (pick order, hostname) → () for every VM that is available right now. Maintained in the
/// same transaction as every VM write, so the claim reads its first entry instead of
/// scanning the pool.
pub const FREE_VMS: TableDefinition<(u64, &str), ()> = TableDefinition::new("free_vms_v1");

/// participant e-mail (normalised) → hostname of the VM they hold.
pub const VM_BY_EMAIL: TableDefinition<&str, &str> = TableDefinition::new("vm_by_email_v1");

/// (hostname, log kind) → encoded `logs::LogHead`.
pub const LOG_HEADS: TableDefinition<(&str, u8), &[u8]> = TableDefinition::new("log_heads_v1");

/// (hostname, log kind, sequence) → one shipped batch of lines, each ending in '\n'.
pub const LOG_CHUNKS: TableDefinition<(&str, u8, u64), &[u8]> =
    TableDefinition::new("log_chunks_v1");

/// run id → encoded `model::Run`.
pub const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("runs_v1");

/// (run id, line number) → one line of the run's output, secrets already redacted.
pub const RUN_LINES: TableDefinition<(u64, u64), &str> = TableDefinition::new("run_lines_v1");

/// schedule id → encoded `model::Schedule`.
pub const SCHEDULES: TableDefinition<u64, &[u8]> = TableDefinition::new("schedules_v1");

/// schedule name → id (names are unique).
pub const SCHEDULE_NAMES: TableDefinition<&str, u64> = TableDefinition::new("schedule_names_v1");

/// sha256(session id) → encoded `sessions::StoredSession`. The id itself is never stored,
/// so a copy of the file does not let anyone sign in.
pub const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sessions_v1");

/// entry id → encoded `model::AuditEntry`, in the order the actions happened.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_v1");

/// hostname → encoded `model::Identity`: the VMs that may hold a credential right now
/// (launched by this allocator, or minted by the admin for the manual provider). A VM's
/// credential names its identity's nonce, so it dies with this entry.
pub const VM_IDENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("vm_identities_v1");

/// event id → encoded `model::Event`; the newest is the current event.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events_v1");

/// (event id, sequence) → encoded `model::JournalEntry`: what happened during the event.
pub const EVENT_JOURNAL: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("event_journal_v1");
/// place number → encoded `model::WaitEntry`: the waiting list, first come first served
/// (the lowest number is seated next).
pub const WAITLIST: TableDefinition<u64, &[u8]> = TableDefinition::new("waitlist_v1");

/// participant e-mail (normalised) → their place number in `WAITLIST`.
pub const WAITLIST_BY_EMAIL: TableDefinition<&str, u64> =
    TableDefinition::new("waitlist_by_email_v1");

/// rescue id → encoded `model::Rescue`: participants' files saved before their seat ended.
pub const RESCUES: TableDefinition<u64, &[u8]> = TableDefinition::new("rescues_v1");

/// (assigned_at in ms since the epoch, hostname, participant e-mail) → encoded
/// `model::SeatUsage`: each seat's GPU use, kept after its VM is gone.
pub const SEAT_USAGE: TableDefinition<(i64, &str, &str), &[u8]> =
    TableDefinition::new("seat_usage_v1");

/// The same key as `SEAT_USAGE` → encoded `model::SeatSeries`: each seat's session metrics.
pub const SEAT_SERIES: TableDefinition<(i64, &str, &str), &[u8]> =
    TableDefinition::new("seat_series_v1");

/// token id → encoded `model::AdminToken`: the admin API tokens (their SHA-256, never the
/// text). A revoked token's entry is removed.
pub const ADMIN_TOKENS: TableDefinition<u64, &[u8]> = TableDefinition::new("admin_tokens_v1");

/// account name → encoded `model::Account`: the console's accounts besides the configured
/// admin (helpers), each with an Argon2 hash of its password, never the password.
pub const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts_v1");

/// Something done to every table alike (the backup copies them, the restore checks them).
pub trait TableVisitor {
    fn visit<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), super::StoreError>;
}

/// Hands every table above to `visitor`. A table added above must be added here too:
/// `store::backup`'s tests compare this list with the tables a migrated store has, and a
/// backup refuses to leave out a table it finds in the store.
pub fn visit_all(visitor: &mut impl TableVisitor) -> Result<(), super::StoreError> {
    visitor.visit(META)?;
    visitor.visit(VMS)?;
    visitor.visit(FREE_VMS)?;
    visitor.visit(VM_BY_EMAIL)?;
    visitor.visit(LOG_HEADS)?;
    visitor.visit(LOG_CHUNKS)?;
    visitor.visit(RUNS)?;
    visitor.visit(RUN_LINES)?;
    visitor.visit(SCHEDULES)?;
    visitor.visit(SCHEDULE_NAMES)?;
    visitor.visit(SESSIONS)?;
    visitor.visit(AUDIT)?;
    visitor.visit(VM_IDENTITIES)?;
    visitor.visit(EVENTS)?;
    visitor.visit(EVENT_JOURNAL)?;
    visitor.visit(WAITLIST)?;
    visitor.visit(WAITLIST_BY_EMAIL)?;
    visitor.visit(RESCUES)?;
    visitor.visit(SEAT_USAGE)?;
    visitor.visit(SEAT_SERIES)?;

    visitor.visit(ADMIN_TOKENS)?;
    visitor.visit(ACCOUNTS)?;
    Ok(())
}
