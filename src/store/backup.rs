//! Backups: a copy of every table as one read transaction sees it, written into a fresh
//! store file (so a backup is itself a store, and a restore is putting the file in place),
//! and the check a file must pass before it is restored.
//!
//! A read transaction is a snapshot: every write transaction (a claim, a status report, an
//! admin action) is either wholly in it or not at all, however long the copy takes and
//! whatever is committed meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use redb::{
    Database, Key, MultimapTableHandle, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, TableError, TableHandle, Value, WriteTransaction,
};

use super::tables::{self, TableVisitor};
use super::{StoreError, meta, migrate, vms};

/// What a backup holds: its schema version and the number of entries of each table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub schema_version: u64,
    /// Table name → entries; tables the file does not have are absent.
    pub entries: BTreeMap<String, u64>,
}

impl Summary {
    pub fn count(&self, table: TableDefinition<'static, impl Key, impl Value>) -> u64 {
        self.entries.get(table.name()).copied().unwrap_or(0)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "schema {}; {} VM(s) ({} assigned), {} schedule(s), {} run(s), {} audit entries",
            self.schema_version,
            self.count(tables::VMS),
            self.count(tables::VM_BY_EMAIL),
            self.count(tables::SCHEDULES),
            self.count(tables::RUNS),
            self.count(tables::AUDIT),
        )
    }
}

/// Writes every table as `from` sees it into a new store file at `path` (created with mode
/// 0600; it must not exist). On error the caller removes whatever was written.
pub fn snapshot(from: &ReadTransaction, path: &Path) -> Result<Summary, StoreError> {
    create_private_file(path)?;
    let db = Database::create(path)
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    let tx = db.begin_write()?;
    let mut copy = Copy {
        from,
        to: &tx,
        entries: BTreeMap::new(),
    };
    tables::visit_all(&mut copy)?;
    let entries = copy.entries;
    ensure_complete(from, &entries)?;
    tx.commit()?;
    drop(db);
    Ok(Summary {
        schema_version: meta::schema_version(from)?.unwrap_or(0),
        entries,
    })
}

fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", path.display())))
}

struct Copy<'a> {
    from: &'a ReadTransaction,
    to: &'a WriteTransaction,
    entries: BTreeMap<String, u64>,
}

impl TableVisitor for Copy<'_> {
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), StoreError> {
        let source = match self.from.open_table(table) {
            Ok(source) => source,
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut target = self.to.open_table(table)?;
        let mut n = 0;
        for entry in source.iter()? {
            let (k, v) = entry?;
            target.insert(k.value(), v.value())?;
            n += 1;
        }
        self.entries.insert(table.name().to_owned(), n);
        Ok(())
    }
}

/// Refuses a backup that would leave out a table the store has (one missing from
/// `tables::visit_all`).
fn ensure_complete(
    from: &ReadTransaction,
    copied: &BTreeMap<String, u64>,
) -> Result<(), StoreError> {
    let mut missing: Vec<String> = from
        .list_tables()?
        .map(|t| t.name().to_owned())
        .filter(|name| !copied.contains_key(name))
        .collect();
    missing.extend(from.list_multimap_tables()?.map(|t| t.name().to_owned()));
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "the store has table(s) {} that the backup does not know (tables::visit_all); no backup written",
            missing.join(", ")
        )))
    }
}

/// The names `tables::visit_all` hands out.
pub fn known_tables() -> BTreeSet<String> {
    struct Names(BTreeSet<String>);
    impl TableVisitor for Names {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: TableDefinition<'static, K, V>,
        ) -> Result<(), StoreError> {
            self.0.insert(table.name().to_owned());
            Ok(())
        }
    }
    let mut names = Names(BTreeSet::new());
    // Collecting names cannot fail.
    let _ = tables::visit_all(&mut names);
    names.0
}

/// Reads every entry of every table of `tx`; a table the store does not have is allowed
/// only when `all_required` is false.
struct ReadAll<'a> {
    tx: &'a ReadTransaction,
    all_required: bool,
    entries: BTreeMap<String, u64>,
}

impl TableVisitor for ReadAll<'_> {
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), StoreError> {
        let source = match self.tx.open_table(table) {
            Ok(source) => source,
            Err(TableError::TableDoesNotExist(_)) if !self.all_required => return Ok(()),
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "table {}: {e}",
                    table.name()
                )));
            }
        };
        let mut n = 0;
        for entry in source.iter()? {
            let (k, v) = entry?;
            // Make redb decode both sides, not only hand out the bytes.
            let _ = (K::as_bytes(&k.value()), V::as_bytes(&v.value()));
            n += 1;
        }
        self.entries.insert(table.name().to_owned(), n);
        Ok(())
    }
}

/// Checks that `path` is a LabLink store this binary can use: it opens (read-only, never
/// repaired), has a schema version no newer than `migrate::SCHEMA_VERSION`, no table this
/// binary does not know, every table of its version, and every entry reads; the VMs
/// decode. Does not change the file.
pub fn verify(path: &Path) -> Result<Summary, StoreError> {
    let not_a_store = |why: String| {
        StoreError::Unavailable(format!("{} is not a LabLink store: {why}", path.display()))
    };
    let db = redb::Builder::new()
        .open_read_only(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen(path.into()),
            other => not_a_store(other.to_string()),
        })?;
    let tx = db.begin_read()?;
    let names: BTreeSet<String> = tx.list_tables()?.map(|t| t.name().to_owned()).collect();
    if !names.contains(tables::META.name()) {
        return Err(not_a_store("it has no meta table".into()));
    }
    let version = meta::schema_version(&tx)?
        .filter(|v| *v > 0)
        .ok_or_else(|| not_a_store("it has no schema version".into()))?;
    if version > migrate::SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: migrate::SCHEMA_VERSION,
        });
    }
    let known = known_tables();
    let mut unknown: Vec<String> = names.difference(&known).cloned().collect();
    unknown.extend(tx.list_multimap_tables()?.map(|t| t.name().to_owned()));
    if !unknown.is_empty() {
        return Err(not_a_store(format!(
            "unknown table(s) {} (written by another LabLink?)",
            unknown.join(", ")
        )));
    }
    let mut read = ReadAll {
        tx: &tx,
        all_required: version == migrate::SCHEMA_VERSION,
        entries: BTreeMap::new(),
    };
    tables::visit_all(&mut read)?;
    vms::list(&tx)?;
    Ok(Summary {
        schema_version: version,
        entries: read.entries,
    })
}

/// Whether a running allocator holds the store file at `path`. `Ok(Some(handle))` keeps
/// allocators from opening it while the handle lives; `Ok(None)` when the file cannot be
/// opened at all (absent, or damaged: nothing holds it either way).
pub fn hold_if_free(path: &Path) -> Result<Option<redb::ReadOnlyDatabase>, StoreError> {
    match redb::Builder::new().open_read_only(path) {
        Ok(db) => Ok(Some(db)),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::AlreadyOpen(
            path.parent().unwrap_or(path).into(),
        )),
        Err(_) => Ok(None),
    }
}

/// Name prefix of a backup's scratch file in the data directory.
pub const SCRATCH_PREFIX: &str = ".backup-";

/// Removes scratch files a backup left behind when the allocator died during it. Call
/// with the store open (its lock keeps any other allocator out of the directory).
pub fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SCRATCH_PREFIX) && name.ends_with(".redb") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %name, "removed an interrupted backup's scratch file")
                }
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "cannot remove an interrupted backup's scratch file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_backups_scratch_file_is_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            ".backup-abc.redb",
            "lablink.redb",
            ".backup-notes.txt",
            "api-token",
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        remove_leftovers(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".backup-notes.txt", "api-token", "lablink.redb"]);
    }
    use crate::store::{Store, audit};

    fn open(dir: &Path) -> Store {
        Store::open(dir).expect("open store")
    }

    /// The names of every `TableDefinition::new("…")` in tables.rs.
    fn defined_in_source() -> BTreeSet<String> {
        let source = include_str!("tables.rs");
        source
            .split("TableDefinition::new(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn backup_covers_every_table_of_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let in_store: BTreeSet<String> = store
            .read(|tx| Ok(tx.list_tables()?.map(|t| t.name().to_owned()).collect()))
            .await
            .expect("list tables");
        store.close();
        let known = known_tables();
        assert_eq!(
            in_store, known,
            "a migrated store's tables and tables::visit_all differ: add the table to visit_all"
        );
        assert_eq!(
            defined_in_source(),
            known,
            "tables.rs defines a table that tables::visit_all leaves out"
        );
    }

    async fn fill(store: &Store) {
        let now = chrono::Utc::now();
        store
            .write(move |tx| {
                meta::api_token_or_create(tx)?;
                for host in ["vm-1", "vm-2", "vm-3"] {
                    vms::report_status(tx, host, Some(crate::model::VmStatus::Running), now)?;
                }
                audit::record(tx, "admin", None, "launch", "3 VMs", now)?;
                Ok(())
            })
            .await
            .expect("write");
    }

    #[tokio::test]
    async fn a_snapshot_is_a_store_with_the_same_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        fill(&store).await;
        let file = dir.path().join("backup.redb");
        let target = file.clone();
        let summary = store
            .read(move |tx| snapshot(tx, &target))
            .await
            .expect("snapshot");
        assert_eq!(summary.schema_version, migrate::SCHEMA_VERSION);
        assert_eq!(summary.count(tables::VMS), 3);
        assert_eq!(summary.count(tables::FREE_VMS), 3);
        assert_eq!(summary.count(tables::AUDIT), 1);
        assert_eq!(
            summary.entries.keys().cloned().collect::<BTreeSet<_>>(),
            known_tables()
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).expect("metadata").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(verify(&file).expect("verify"), summary);

        let (original, token) = store
            .read(|tx| Ok((vms::list(tx)?, meta::api_token(tx)?)))
            .await
            .expect("read");
        store.close();
        let restored_dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(&file, restored_dir.path().join(crate::store::FILE_NAME)).expect("copy");
        let restored = open(restored_dir.path());
        let (vms_back, token_back, audit_back) = restored
            .read(|tx| Ok((vms::list(tx)?, meta::api_token(tx)?, audit::recent(tx, 10)?)))
            .await
            .expect("read");
        restored.close();
        assert_eq!(vms_back, original);
        assert_eq!(token_back, token);
        assert_eq!(audit_back.len(), 1);
    }

    #[tokio::test]
    async fn a_snapshot_sees_one_moment_however_much_is_written_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        fill(&store).await;
        let db = store.database().expect("database");
        let before = db.begin_read().expect("read transaction");
        let now = chrono::Utc::now();
        store
            .write(move |tx| {
                vms::report_status(tx, "vm-4", Some(crate::model::VmStatus::Running), now)?;
                audit::record(tx, "admin", None, "launch", "1 VM", now)?;
                Ok(())
            })
            .await
            .expect("write");
        let file = dir.path().join("backup.redb");
        let summary = snapshot(&before, &file).expect("snapshot");
        drop(before);
        drop(db);
        store.close();
        assert_eq!(summary.count(tables::VMS), 3);
        assert_eq!(summary.count(tables::FREE_VMS), 3);
        assert_eq!(summary.count(tables::AUDIT), 1);
    }

    #[tokio::test]
    async fn snapshot_refuses_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let file = dir.path().join("taken.redb");
        std::fs::write(&file, b"keep me").expect("write");
        let target = file.clone();
        let result = store.read(move |tx| snapshot(tx, &target)).await;
        store.close();
        assert!(result.is_err());
        assert_eq!(std::fs::read(&file).expect("read"), b"keep me");
    }

    #[test]
    fn verify_refuses_what_is_not_a_usable_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = dir.path().join("garbage.redb");
        std::fs::write(&garbage, vec![0x5a; 8192]).expect("write");
        let e = verify(&garbage).expect_err("garbage");
        assert!(e.to_string().contains("is not a LabLink store"), "{e}");

        let empty = dir.path().join("empty.redb");
        std::fs::write(&empty, b"").expect("write");
        assert!(verify(&empty).is_err());

        // A redb file, but not a LabLink store.
        let foreign = dir.path().join("foreign.redb");
        {
            let db = Database::create(&foreign).expect("create");
            let tx = db.begin_write().expect("write");
            tx.open_table(TableDefinition::<u64, u64>::new("other"))
                .expect("table")
                .insert(1, 2)
                .expect("insert");
            tx.commit().expect("commit");
        }
        let e = verify(&foreign).expect_err("foreign");
        assert!(e.to_string().contains("no meta table"), "{e}");
    }

    #[tokio::test]
    async fn verify_refuses_a_newer_schema_and_unknown_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let path = store.path().to_path_buf();
        store.close();
        {
            let db = Database::open(&path).expect("open");
            let tx = db.begin_write().expect("write");
            tx.open_table(TableDefinition::<u64, u64>::new("from_the_future_v1"))
                .expect("table");
            tx.commit().expect("commit");
        }
        let e = verify(&path).expect_err("unknown table");
        assert!(e.to_string().contains("from_the_future_v1"), "{e}");
        {
            let db = Database::open(&path).expect("open");
            let tx = db.begin_write().expect("write");
            tx.open_table(tables::META)
                .expect("meta")
                .insert("schema_version", b"99".as_slice())
                .expect("insert");
            tx.commit().expect("commit");
        }
        assert!(matches!(
            verify(&path),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[tokio::test]
    async fn a_running_store_is_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let path = store.path().to_path_buf();
        // Same process: redb refuses a second open here as well.
        assert!(matches!(
            hold_if_free(&path),
            Err(StoreError::AlreadyOpen(_))
        ));
        store.close();
        assert!(hold_if_free(&path).expect("free").is_some());
        assert!(
            hold_if_free(&dir.path().join("absent"))
                .expect("absent")
                .is_none()
        );
    }
}
