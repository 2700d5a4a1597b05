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
    self, BY_PID, EXITS, INSTANCES, InstanceKey, LATEST, LIVE, META, PidKey, RECENT, SAMPLE_BLOCKS,
    SAMPLES, SCANS, SampleBlock, ScanRecord, ShowKey,
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

    /// One consistent read of the store: what is read through it sees one
    /// commit, however long the read takes and whatever the agent writes
    /// meanwhile.
    pub fn snapshot(&self) -> Result<Snapshot<'_>, StoreError> {
        let txn = self.begin()?;
        Ok(Snapshot {
            path: &self.path,
            instances: self.table(&txn, INSTANCES)?,
            latest: self.table(&txn, LATEST)?,
            exits: self.table(&txn, EXITS)?,
            live: self.table(&txn, LIVE)?,
            by_pid: self.table(&txn, BY_PID)?,
        })
    }

    /// Every instance alive at the latest scan, with its latest sample,
    /// sorted by pid (then start time).
    pub fn live(&self) -> Result<Vec<StoredProcess>, StoreError> {
        self.snapshot()?.live()
    }

    /// The samples of every stored instance that had `pid`, oldest first;
    /// `limit` keeps the newest N.
    pub fn history(&self, pid: u32, limit: Option<usize>) -> Result<Vec<HistoryPoint>, StoreError> {
        fn at((boot, start, pid): InstanceKey, time_ms: i64, sample: Sample) -> HistoryPoint {
            HistoryPoint {
                boot_id: schema::boot_bytes(boot),
                pid,
                start_time: start,
                time_ms,
                sample,
            }
        }
        let path = self.path.as_path();
        let txn = self.begin()?;
        let by_pid = self.table(&txn, BY_PID)?;
        let keep = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if keep == 0 {
            return Ok(out);
        }
        // A one-sample row (staged, or schema 1's) as a point.
        let point = |table: &str, instance: InstanceKey, time_ms: i64, bytes: &[u8]| {
            let sample = schema::decode(
                path,
                bytes,
                table,
                format_args!("{} time {time_ms}", ShowKey(instance)),
            )?;
            Ok::<_, StoreError>(at(instance, time_ms, sample))
        };
        let range = (pid, u128::MIN, i64::MIN)..=(pid, u128::MAX, i64::MAX);
        let mut instances = Vec::new();
        for entry in by_pid.range(range).in_store(path)? {
            let (key, _) = entry.in_store(path)?;
            let (pid, boot, start) = key.value();
            instances.push((boot, start, pid));
        }
        // The samples still staged (a bounded table, read whole). A batch
        // stored again after its samples moved has them in both: they are
        // read once (below).
        let mut staged = 0;
        if let Some(recent) = self.optional_table(&txn, RECENT)? {
            for row in recent.iter().in_store(path)? {
                let (key, value) = row.in_store(path)?;
                let (time_ms, boot, start, of) = key.value();
                if of == pid && instances.contains(&(boot, start, of)) {
                    out.push(point(
                        "recent_samples",
                        (boot, start, of),
                        time_ms,
                        value.value(),
                    )?);
                    staged += 1;
                }
            }
        }
        // Newest first, so a limit reads at most `keep` (and as many as
        // may be read twice) per instance.
        let want = keep.saturating_add(staged);
        let blocks = self.optional_table(&txn, SAMPLE_BLOCKS)?;
        let legacy = self.table(&txn, SAMPLES)?;
        for &instance in &instances {
            let (boot, start, pid) = instance;
            let range = (boot, start, pid, i64::MIN)..=(boot, start, pid, i64::MAX);
            let mut read = 0;
            if let Some(blocks) = &blocks {
                'blocks: for row in blocks.range(range.clone()).in_store(path)?.rev() {
                    let (key, value) = row.in_store(path)?;
                    let block = SampleBlock::decode_at(path, value.value(), key.value())?;
                    for (time_ms, sample) in block.times_ms.into_iter().zip(block.samples).rev() {
                        if read == want {
                            break 'blocks;
                        }
                        out.push(at(instance, time_ms, sample));
                        read += 1;
                    }
                }
            }
            // Schema 1's history: older than the blocks, except what a
            // replay stored in both; its newest `want`, with the blocks',
            // hold the newest `keep` distinct times of the two. Once the
            // blocks gave `want`, older rows cannot be among them.
            let oldest = (read == want).then(|| out.last().map(|p: &HistoryPoint| p.time_ms));
            for row in legacy.range(range).in_store(path)?.rev().take(want) {
                let (key, value) = row.in_store(path)?;
                let (_, _, _, time_ms) = key.value();
                if oldest.flatten().is_some_and(|oldest| time_ms < oldest) {
                    break;
                }
                out.push(point("samples", instance, time_ms, value.value())?);
            }
        }
        out.sort_by_key(|p| (p.time_ms, p.start_time, p.boot_id));
        out.dedup_by_key(|p| (p.time_ms, p.start_time, p.boot_id));
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
        f: impl FnMut(StoredInstance) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.snapshot()?.each_instance(f)
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

/// Which processes a query sees, and so which instance can be a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The instances alive at the latest scan.
    Live,
    /// Every stored instance, live or exited.
    All,
}

/// Where a process's parent is: its boot, the parent pid and, when the
/// collector recorded it, the parent's start time (else 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParentRef {
    pub boot_id: [u8; 16],
    pub ppid: u32,
    pub start_time: i64,
}

impl StoredProcess {
    /// Where this process's parent is.
    pub fn parent_ref(&self) -> ParentRef {
        ParentRef {
            boot_id: self.boot_id,
            ppid: self.record.ppid,
            start_time: self.record.parent_start_time,
        }
    }
}

/// Which parts of a stored process to decode (the instance, ppid, uid and
/// parent start time always are); what is left out stays empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Parts {
    pub name: bool,
    pub exe: bool,
    pub cmdline: bool,
    pub user: bool,
    /// Hash, hash status, deleted flag.
    pub exe_info: bool,
    pub container_id: bool,
    /// The latest sample (or the record's first one when there is none).
    pub sample: bool,
}

impl Parts {
    /// Everything.
    pub const ALL: Parts = Parts {
        name: true,
        exe: true,
        cmdline: true,
        user: true,
        exe_info: true,
        container_id: true,
        sample: true,
    };

    /// What either decodes.
    #[must_use]
    pub fn union(self, other: Parts) -> Parts {
        Parts {
            name: self.name || other.name,
            exe: self.exe || other.exe,
            cmdline: self.cmdline || other.cmdline,
            user: self.user || other.user,
            exe_info: self.exe_info || other.exe_info,
            container_id: self.container_id || other.container_id,
            sample: self.sample || other.sample,
        }
    }
}

/// One stored instance as read, not yet decoded ([`Snapshot::each_stored`]).
#[derive(Debug)]
pub struct StoredBytes<'a> {
    path: &'a Path,
    key: InstanceKey,
    record: &'a [u8],
    latest: Option<&'a [u8]>,
}

impl StoredBytes<'_> {
    /// Decodes `parts` of the instance (the latest sample only if it was
    /// read: see [`Snapshot::each_stored`]).
    pub fn decode(&self, parts: Parts) -> Result<StoredProcess, StoreError> {
        let latest: Option<Sample> = match self.latest {
            Some(bytes) if parts.sample => Some(schema::decode(
                self.path,
                bytes,
                "latest",
                ShowKey(self.key),
            )?),
            _ => None,
        };
        // Field numbers of `ProcessRecord` (proto/sentineld/v1).
        let mut skip = 0_u64;
        for (tag, wanted) in [
            (3, parts.name),
            (4, parts.exe),
            (5, parts.cmdline),
            (7, parts.user),
            (8, parts.exe_info),
            (9, parts.container_id),
            (11, parts.sample && latest.is_none()),
        ] {
            if !wanted {
                skip |= 1 << tag;
            }
        }
        Ok(StoredProcess {
            boot_id: schema::boot_bytes(self.key.0),
            record: schema::decode_record(self.path, self.record, skip, self.key)?,
            latest,
        })
    }
}

/// One consistent read of the store ([`StoreReader::snapshot`]).
pub struct Snapshot<'r> {
    path: &'r Path,
    instances: ReadOnlyTable<InstanceKey, &'static [u8]>,
    latest: ReadOnlyTable<InstanceKey, &'static [u8]>,
    exits: ReadOnlyTable<InstanceKey, i64>,
    live: ReadOnlyTable<InstanceKey, ()>,
    by_pid: ReadOnlyTable<PidKey, ()>,
}

impl fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Snapshot<'_> {
    /// The stored record of one instance.
    fn record(&self, key: InstanceKey) -> Result<Option<ProcessRecord>, StoreError> {
        match self.instances.get(key).in_store(self.path)? {
            Some(v) => Ok(Some(schema::decode_record(self.path, v.value(), 0, key)?)),
            None => Ok(None),
        }
    }

    /// Every instance alive at the latest scan, with its latest sample,
    /// sorted by pid (then start time).
    pub fn live(&self) -> Result<Vec<StoredProcess>, StoreError> {
        let path = self.path;
        let mut out = Vec::new();
        for entry in self.live.iter().in_store(path)? {
            let (key, _) = entry.in_store(path)?;
            let key = key.value();
            let record = self.record(key)?.ok_or_else(|| {
                StoreError::corrupt(
                    path,
                    format!("table live, key {}: no record in instances", ShowKey(key)),
                )
            })?;
            let latest = match self.latest.get(key).in_store(path)? {
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

    /// Calls `f` with every stored instance in key order (boot, start time,
    /// pid) until `f` breaks.
    pub fn each_instance(
        &self,
        mut f: impl FnMut(StoredInstance) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let path = self.path;
        // `exits` has the same keys as `instances`: walk it alongside.
        let mut exits = self.exits.iter().in_store(path)?.peekable();
        let mut failed = None;
        self.each_stored(true, |stored| {
            let read = stored.decode(Parts::ALL).and_then(|process| {
                let exited_ms = value_at(&mut exits, stored.key, path)?.map(|v| v.value());
                Ok(StoredInstance { process, exited_ms })
            });
            match read {
                Ok(instance) => f(instance),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        failed.map_or(Ok(()), Err)
    }

    /// Calls `f` with every stored instance in key order (boot, start time,
    /// pid), undecoded, until `f` breaks: the caller decodes the parts it
    /// needs ([`StoredBytes::decode`]). With `samples` false the latest
    /// samples are not read at all.
    pub fn each_stored(
        &self,
        samples: bool,
        mut f: impl FnMut(&StoredBytes<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let path = self.path;
        // `latest` has the same keys as `instances`: walk it alongside
        // instead of looking each key up.
        let mut latest = if samples {
            Some(self.latest.iter().in_store(path)?.peekable())
        } else {
            None
        };
        for entry in self.instances.iter().in_store(path)? {
            let (key, value) = entry.in_store(path)?;
            let key = key.value();
            let latest = match &mut latest {
                Some(rows) => value_at(rows, key, path)?,
                None => None,
            };
            let stored = StoredBytes {
                path,
                key,
                record: value.value(),
                latest: latest.as_ref().map(AccessGuard::value),
            };
            if f(&stored).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The record of the parent `parent` names, among the instances of
    /// `scope`: the instance with the recorded start time or, when none
    /// was recorded, the latest-started instance with the parent pid on
    /// that boot. `None` when no such instance is stored (or, for
    /// [`Scope::Live`], none is alive).
    pub fn parent(
        &self,
        parent: ParentRef,
        scope: Scope,
    ) -> Result<Option<ProcessRecord>, StoreError> {
        let path = self.path;
        let boot = schema::boot_key(parent.boot_id);
        let key = if parent.start_time != 0 {
            let key = (boot, parent.start_time, parent.ppid);
            if scope == Scope::Live && !self.is_live(key)? {
                return Ok(None);
            }
            key
        } else {
            // The newest instance of the pid on this boot (in scope).
            let range = (parent.ppid, boot, i64::MIN)..=(parent.ppid, boot, i64::MAX);
            let mut found = None;
            for entry in self.by_pid.range(range).in_store(path)?.rev() {
                let (key, _) = entry.in_store(path)?;
                let (pid, boot, start) = key.value();
                let key = (boot, start, pid);
                if scope == Scope::All || self.is_live(key)? {
                    found = Some(key);
                    break;
                }
            }
            let Some(key) = found else { return Ok(None) };
            key
        };
        self.record(key)
    }

    fn is_live(&self, key: InstanceKey) -> Result<bool, StoreError> {
        Ok(self.live.get(key).in_store(self.path)?.is_some())
    }
}
