//! The read-only view: what `sentinelcli` (and the agent's API) query.

use std::cmp::Ordering;
use std::fmt;
use std::iter::Peekable;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use redb::{
    AccessGuard, ConcurrencyMode, Database, Key, Range, ReadOnlyDatabase, ReadOnlyTable,
    ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, Value,
};
use sentineld_proto::v1::{ProcessRecord, Sample};
use sentineld_proto::view::ProcessView;

use crate::store::alerts::{ALERT_DELIVERIES, ALERT_IDS, ALERTS};
use crate::store::schema::{
    self, BY_PID, EXITS, INSTANCES, InstanceKey, LATEST, LIVE, META, SAMPLES, SCANS, ScanRecord,
    ShowKey,
};
use crate::store::{RedbResultExt, StoreError};

/// Page cache of a reader (redb's default is 1 GiB).
const READER_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Read-only view of a store. Opened in redb's `SingleWriter` mode with
/// `open_read_only`, so it works while the agent writes and cannot write
/// itself. Each call reads in a fresh transaction: it sees the latest commit.
pub struct StoreReader {
    db: Db,
    path: PathBuf,
}

impl fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The value stored at `key` in a table walked in key order, skipping the
/// smaller keys; the walk stays before the next larger key. redb orders
/// integer-tuple keys as Rust's `Ord` does.
fn value_at<'a, V: Value + 'static>(
    rows: &mut Peekable<Range<'a, InstanceKey, V>>,
    key: InstanceKey,
    path: &Path,
) -> Result<Option<AccessGuard<'a, V>>, StoreError> {
    loop {
        let ahead = match rows.peek() {
            None => return Ok(None),
            Some(Ok((k, _))) => k.value().cmp(&key),
            // Taken (and returned) below.
            Some(Err(_)) => Ordering::Less,
        };
        match ahead {
            Ordering::Greater => return Ok(None),
            Ordering::Less => {
                rows.next().transpose().in_store(path)?;
            }
            Ordering::Equal => {
                return Ok(rows.next().transpose().in_store(path)?.map(|(_, v)| v));
            }
        }
    }
}

/// A live instance with its record and latest sample.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProcess {
    pub boot_id: [u8; 16],
    pub record: ProcessRecord,
    pub latest: Option<Sample>,
}

impl StoredProcess {
    /// The process as users see it, with the latest sample's figures.
    pub fn view(&self) -> ProcessView {
        ProcessView::new(&self.record, self.latest.as_ref())
    }
}

/// One stored sample of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPoint {
    pub boot_id: [u8; 16],
    pub pid: u32,
    /// Start time of the instance, unix seconds.
    pub start_time: i64,
    /// When the sample was taken (its scan's time), unix milliseconds.
    pub time_ms: i64,
    pub sample: Sample,
}

/// A stored instance, live or exited, for queries over the whole history.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInstance {
    pub process: StoredProcess,
    /// When the instance was seen gone, unix milliseconds; `None` while live.
    pub exited_ms: Option<i64>,
}

/// One stored alert.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    /// Sequence number in the store (1, 2, ...).
    pub seq: u64,
    /// The alert as JSON, exactly as the sinks received it.
    pub json: Vec<u8>,
}

/// One stored scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRow {
    pub scan_id: u64,
    /// When the scan started, unix milliseconds.
    pub time_ms: i64,
    pub process_count: u32,
    pub duration_us: u64,
    pub started: u32,
    pub exited: u32,
    pub snapshot: bool,
    pub boot_id: [u8; 16],
    /// The collector's scan number in its session.
    pub scan_seq: u64,
    /// Chunks stored, and chunks the collector sent.
    pub chunks: u32,
    pub chunks_sent: u32,
    /// Samples the collector's write-ahead log dropped from the scan.
    pub samples_dropped: u32,
    /// The audit ledger's scan digest over what the agent received; `None`
    /// in rows stored before digests were kept.
    pub digest: Option<[u8; 32]>,
}

impl ScanRow {
    /// Whether the scan arrived as collected: every chunk, every sample.
    /// Only then can its digest match the ledger's.
    pub fn is_whole(&self) -> bool {
        self.samples_dropped == 0 && self.chunks >= self.chunks_sent
    }
}

/// The database a reader reads: its own read-only handle (the CLI), or the
/// agent's writer handle (the agent's API), both in `SingleWriter` mode.
enum Db {
    ReadOnly(ReadOnlyDatabase),
    Writer(std::sync::Arc<Database>),
}

impl StoreReader {
    /// A reader over the agent's own open store: the agent's API reads with
    /// it while the storage thread writes.
    pub fn from_writer(store: &crate::store::Store) -> StoreReader {
        StoreReader {
            db: Db::Writer(store.database()),
            path: store.path().to_path_buf(),
        }
    }

    /// Opens the store at `path` read-only and checks that it is a SentinelD
    /// store of a schema this build reads.
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .set_cache_size(READER_CACHE_BYTES)
            .open_read_only(path)
            .map_err(|e| StoreError::from_open(path, e, true))?;
        let txn = db.begin_read().in_store(path)?;
        let names: Vec<String> = txn
            .list_tables()
            .in_store(path)?
            .map(|t| t.name().to_owned())
            .collect();
        if names.is_empty() {
            return Err(StoreError::not_a_store(
                path,
                "it is a redb database without tables (if sentinelagent is starting, retry)",
            ));
        }
        if !names.iter().any(|n| n == META.name()) {
            return Err(StoreError::not_a_store(
                path,
                "it is a redb database without a meta table",
            ));
        }
        let meta = txn.open_table(META).map_err(|e| match e {
            redb::TableError::TableTypeMismatch { .. } => {
                StoreError::not_a_store(path, "its meta table has other types")
            }
            e => StoreError::redb(path, e),
        })?;
        schema::check_meta(path, &meta)?;
        drop(meta);
        drop(txn);
        Ok(StoreReader {
            db: Db::ReadOnly(db),
            path: path.to_path_buf(),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn begin(&self) -> Result<ReadTransaction, StoreError> {
        match &self.db {
            Db::ReadOnly(db) => db.begin_read(),
            Db::Writer(db) => db.begin_read(),
        }
        .in_store(&self.path)
    }

    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        txn: &ReadTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>, StoreError> {
        txn.open_table(def).map_err(|e| match e {
            redb::TableError::TableDoesNotExist(name) => {
                StoreError::corrupt(&self.path, format!("table {name} is missing"))
            }
            e => StoreError::redb(&self.path, e),
        })
    }

    /// Every instance alive at the latest scan, with its latest sample,
    /// sorted by pid (then start time).
    pub fn live(&self) -> Result<Vec<StoredProcess>, StoreError> {
        let path = self.path.as_path();
        let txn = self.begin()?;
        let live = self.table(&txn, LIVE)?;
        let instances = self.table(&txn, INSTANCES)?;
        let latest = self.table(&txn, LATEST)?;
        let mut out = Vec::new();
        for entry in live.iter().in_store(path)? {
            let (key, _) = entry.in_store(path)?;
            let key = key.value();
            let record = instances.get(key).in_store(path)?.ok_or_else(|| {
                StoreError::corrupt(
                    path,
                    format!("table live, key {}: no record in instances", ShowKey(key)),
                )
            })?;
            let record: ProcessRecord =
                schema::decode(path, record.value(), "instances", ShowKey(key))?;
            let latest = match latest.get(key).in_store(path)? {
                Some(v) => Some(schema::decode(path, v.value(), "latest", ShowKey(key))?),
                None => None,
            };
            out.push(StoredProcess {
                boot_id: schema::boot_bytes(key.0),
                record,
                latest,
            });
        }
        out.sort_by_key(|p| {
            let i = p.record.instance.unwrap_or_default();
            (i.pid, i.start_time)
        });
        Ok(out)
    }

    /// The samples of every stored instance that had `pid`, oldest first;
    /// `limit` keeps the newest N.
    pub fn history(&self, pid: u32, limit: Option<usize>) -> Result<Vec<HistoryPoint>, StoreError> {
        let path = self.path.as_path();
        let txn = self.begin()?;
        let by_pid = self.table(&txn, BY_PID)?;
        let samples = self.table(&txn, SAMPLES)?;
        let keep = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if keep == 0 {
            return Ok(out);
        }
        let range = (pid, u128::MIN, i64::MIN)..=(pid, u128::MAX, i64::MAX);
        for entry in by_pid.range(range).in_store(path)? {
            let (key, _) = entry.in_store(path)?;
            let (pid, boot, start) = key.value();
            let range = (boot, start, pid, i64::MIN)..=(boot, start, pid, i64::MAX);
            // Newest first, so a limit reads at most `keep` rows per instance.
            for row in samples.range(range).in_store(path)?.rev().take(keep) {
                let (key, value) = row.in_store(path)?;
                let (_, _, _, time_ms) = key.value();
                let sample = schema::decode(
                    path,
                    value.value(),
                    "samples",
                    format_args!("{} time {time_ms}", ShowKey((boot, start, pid))),
                )?;
                out.push(HistoryPoint {
                    boot_id: schema::boot_bytes(boot),
                    pid,
                    start_time: start,
                    time_ms,
                    sample,
                });
            }
        }
        out.sort_by_key(|p| (p.time_ms, p.start_time));
        if out.len() > keep {
            out.drain(..out.len() - keep);
        }
        Ok(out)
    }

    /// Scan rows, newest first, at most `limit`.
    pub fn scans(&self, limit: Option<usize>) -> Result<Vec<ScanRow>, StoreError> {
        let path = self.path.as_path();
        let txn = self.begin()?;
        let scans = self.table(&txn, SCANS)?;
        let mut out = Vec::new();
        for entry in scans
            .iter()
            .in_store(path)?
            .rev()
            .take(limit.unwrap_or(usize::MAX))
        {
            let (key, value) = entry.in_store(path)?;
            let scan_id = key.value();
            let row: ScanRecord =
                schema::decode(path, value.value(), "scans", format_args!("{scan_id}"))?;
            let boot_id = <[u8; 16]>::try_from(row.boot_id.as_slice()).map_err(|_| {
                StoreError::corrupt(
                    path,
                    format!(
                        "table scans, key {scan_id}: boot id of {} bytes, expected 16",
                        row.boot_id.len()
                    ),
                )
            })?;
            out.push(ScanRow {
                scan_id,
                time_ms: row.time_ms,
                process_count: row.process_count,
                duration_us: row.duration_us,
                started: row.started,
                exited: row.exited,
                snapshot: row.snapshot,
                boot_id,
                scan_seq: row.scan_seq,
                chunks: row.chunks,
                chunks_sent: row.chunks_sent,
                samples_dropped: row.samples_dropped,
                digest: <[u8; 32]>::try_from(row.digest.as_slice()).ok(),
            });
        }
        Ok(out)
    }

    /// Opens a table that older stores may not have: missing means empty.
    fn optional_table<K: Key + 'static, V: Value + 'static>(
        &self,
        txn: &ReadTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<Option<ReadOnlyTable<K, V>>, StoreError> {
        match txn.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(StoreError::redb(&self.path, e)),
        }
    }

    /// Every stored instance, live or exited, with its latest sample, in key
    /// order (boot, start time, pid). Stops early, returning what it read,
    /// after `limit` instances.
    pub fn instances(&self, limit: Option<usize>) -> Result<Vec<StoredInstance>, StoreError> {
        let keep = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if keep == 0 {
            return Ok(out);
        }
        self.each_instance(|instance| {
            out.push(instance);
            if out.len() < keep {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        })?;
        Ok(out)
    }

    /// Calls `f` with every stored instance in key order (boot, start time,
    /// pid), as [`StoreReader::instances`] returns them, until `f` breaks:
    /// for callers that keep less than every decoded instance.
    pub fn each_instance(
        &self,
        mut f: impl FnMut(StoredInstance) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let path = self.path.as_path();
        let txn = self.begin()?;
        let instances = self.table(&txn, INSTANCES)?;
        let latest = self.table(&txn, LATEST)?;
        let exits = self.table(&txn, EXITS)?;
        // `latest` and `exits` have the same keys as `instances`: walk them
        // alongside instead of looking each key up.
        let mut latest = latest.iter().in_store(path)?.peekable();
        let mut exits = exits.iter().in_store(path)?.peekable();
        for entry in instances.iter().in_store(path)? {
            let (key, value) = entry.in_store(path)?;
            let key = key.value();
            let record: ProcessRecord =
                schema::decode(path, value.value(), "instances", ShowKey(key))?;
            let latest = match value_at(&mut latest, key, path)? {
                Some(v) => Some(schema::decode(path, v.value(), "latest", ShowKey(key))?),
                None => None,
            };
            let exited_ms = value_at(&mut exits, key, path)?.map(|v| v.value());
            let instance = StoredInstance {
                process: StoredProcess {
                    boot_id: schema::boot_bytes(key.0),
                    record,
                    latest,
                },
                exited_ms,
            };
            if f(instance).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Stored alerts, newest first, at most `limit`.
    pub fn alerts(&self, limit: Option<usize>) -> Result<Vec<StoredAlert>, StoreError> {
        let path = self.path.as_path();
        let txn = self.begin()?;
        let Some(alerts) = self.optional_table(&txn, ALERTS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in alerts
            .iter()
            .in_store(path)?
            .rev()
            .take(limit.unwrap_or(usize::MAX))
        {
            let (key, value) = entry.in_store(path)?;
            out.push(StoredAlert {
                seq: key.value(),
                json: value.value().to_vec(),
            });
        }
        Ok(out)
    }

    /// The delivery attempts recorded for the alert with stable id `id`,
    /// oldest first, as JSON.
    pub fn deliveries(&self, id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let path = self.path.as_path();
        let txn = self.begin()?;
        let (Some(ids), Some(deliveries)) = (
            self.optional_table(&txn, ALERT_IDS)?,
            self.optional_table(&txn, ALERT_DELIVERIES)?,
        ) else {
            return Ok(Vec::new());
        };
        let Some(seq) = ids.get(id).in_store(path)?.map(|v| v.value()) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in deliveries
            .range((seq, 0)..=(seq, u64::MAX))
            .in_store(path)?
        {
            let (_, value) = entry.in_store(path)?;
            out.push(value.value().to_vec());
        }
        Ok(out)
    }
}
