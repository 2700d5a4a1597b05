//! Detection's tables: alerts, their delivery attempts, the rule sets that
//! were loaded, and the last seen hash of each system executable.
//!
//! The detection thread writes them through [`AlertWriter`], which shares the
//! store's `Database` with the batch writer (redb serialises the two writers'
//! transactions). Alerts and delivery records are stored as the JSON users
//! see (the alert shape is documented in `docs/alerts.md`), so the CLI prints
//! exactly what the sinks delivered.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::store::{RedbResultExt, StoreError};

/// Alert sequence number (1, 2, ...) → the alert's JSON.
pub(crate) const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
/// Stable alert id (hex; one per rule and process instance) → sequence
/// number. A rule fires once per instance because this key is checked first.
pub(crate) const ALERT_IDS: TableDefinition<&str, u64> = TableDefinition::new("alert_ids");
/// (alert sequence number, attempt record number) → the delivery record's
/// JSON.
pub(crate) const ALERT_DELIVERIES: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("alert_deliveries");
/// Rule set load number → JSON of the loaded set (time, digest, rule ids).
pub(crate) const RULES: TableDefinition<u64, &[u8]> = TableDefinition::new("rules");
/// Executable path → the SHA-256 it had when last seen (32 bytes).
pub(crate) const EXE_HASHES: TableDefinition<&str, &[u8]> = TableDefinition::new("exe_hashes");

/// Creates detection's tables if this store predates them.
pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(ALERTS)?;
    txn.open_table(ALERT_IDS)?;
    txn.open_table(ALERT_DELIVERIES)?;
    txn.open_table(RULES)?;
    txn.open_table(EXE_HASHES)?;
    Ok(())
}

/// A new alert to store.
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    /// The stable id (rule and instance): a second alert with it is refused.
    pub id: &'a str,
    /// The alert as JSON.
    pub json: &'a [u8],
}

/// One delivery attempt to store.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub alert_id: &'a str,
    /// The record as JSON.
    pub json: &'a [u8],
}

/// Writes detection's tables. Cheap to clone; shares the store's database.
#[derive(Clone)]
pub struct AlertWriter {
    db: Arc<Database>,
    path: PathBuf,
}

impl fmt::Debug for AlertWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AlertWriter {
    pub(crate) fn new(db: Arc<Database>, path: &Path) -> AlertWriter {
        AlertWriter {
            db,
            path: path.to_path_buf(),
        }
    }

    /// Stores the alerts whose id is not stored yet, in one transaction.
    /// Returns, for each input, its new sequence number, or `None` when an
    /// alert with that id was already stored (it is not stored again).
    pub fn insert_alerts(&self, alerts: &[NewAlert<'_>]) -> Result<Vec<Option<u64>>, StoreError> {
        let path = self.path.as_path();
        let txn = self.db.begin_write().in_store(path)?;
        let mut out = Vec::with_capacity(alerts.len());
        {
            let mut table = txn.open_table(ALERTS).in_store(path)?;
            let mut ids = txn.open_table(ALERT_IDS).in_store(path)?;
            let mut next = table
                .last()
                .in_store(path)?
                .map_or(1, |(k, _)| k.value().saturating_add(1));
            for alert in alerts {
                if ids.get(alert.id).in_store(path)?.is_some() {
                    out.push(None);
                    continue;
                }
                table.insert(next, alert.json).in_store(path)?;
                ids.insert(alert.id, next).in_store(path)?;
                out.push(Some(next));
                next = next.saturating_add(1);
            }
        }
        txn.commit().in_store(path)?;
        Ok(out)
    }

    /// Whether an alert with this stable id is stored.
    pub fn has_alert(&self, id: &str) -> Result<bool, StoreError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().in_store(path)?;
        let ids = txn.open_table(ALERT_IDS).in_store(path)?;
        Ok(ids.get(id).in_store(path)?.is_some())
    }

    /// Stores delivery attempts. An attempt naming an alert that is not
    /// stored is skipped (returned count excludes it).
    pub fn insert_deliveries(&self, records: &[NewDelivery<'_>]) -> Result<usize, StoreError> {
        let path = self.path.as_path();
        let txn = self.db.begin_write().in_store(path)?;
        let mut stored = 0;
        {
            let ids = txn.open_table(ALERT_IDS).in_store(path)?;
            let mut table = txn.open_table(ALERT_DELIVERIES).in_store(path)?;
            for record in records {
                let Some(seq) = ids.get(record.alert_id).in_store(path)?.map(|v| v.value()) else {
                    continue;
                };
                let range = (seq, 0)..=(seq, u64::MAX);
                let next = table
                    .range(range)
                    .in_store(path)?
                    .next_back()
                    .transpose()
                    .in_store(path)?
                    .map_or(1, |(k, _)| k.value().1.saturating_add(1));
                table.insert((seq, next), record.json).in_store(path)?;
                stored += 1;
            }
        }
        txn.commit().in_store(path)?;
        Ok(stored)
    }

    /// Records a loaded rule set.
    pub fn insert_rule_set(&self, json: &[u8]) -> Result<u64, StoreError> {
        let path = self.path.as_path();
        let txn = self.db.begin_write().in_store(path)?;
        let id = {
            let mut table = txn.open_table(RULES).in_store(path)?;
            let id = table
                .last()
                .in_store(path)?
                .map_or(1, |(k, _)| k.value().saturating_add(1));
            table.insert(id, json).in_store(path)?;
            id
        };
        txn.commit().in_store(path)?;
        Ok(id)
    }

    /// Every executable hash remembered, for the detector's start-up.
    pub fn exe_hashes(&self) -> Result<Vec<(String, [u8; 32])>, StoreError> {
        let path = self.path.as_path();
        let txn = self.db.begin_read().in_store(path)?;
        let table = txn.open_table(EXE_HASHES).in_store(path)?;
        let mut out = Vec::new();
        for entry in table.iter().in_store(path)? {
            let (k, v) = entry.in_store(path)?;
            if let Ok(hash) = <[u8; 32]>::try_from(v.value()) {
                out.push((k.value().to_owned(), hash));
            }
        }
        Ok(out)
    }

    /// Remembers the hashes executables were last seen with.
    pub fn put_exe_hashes(&self, entries: &[(&str, [u8; 32])]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let path = self.path.as_path();
        let txn = self.db.begin_write().in_store(path)?;
        {
            let mut table = txn.open_table(EXE_HASHES).in_store(path)?;
            for (exe, hash) in entries {
                table.insert(*exe, hash.as_slice()).in_store(path)?;
            }
        }
        txn.commit().in_store(path)?;
        Ok(())
    }
}
