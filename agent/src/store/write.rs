//! The writer: applies the collector's batches, one write transaction each.

mod space;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use redb::{
    ConcurrencyMode, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableHandle, WriteTransaction,
};
use sentineld_proto::audit::ScanDigest;
use sentineld_proto::v1::{Sample, ScanBatch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::stats::AgentStats;
use crate::store::alerts::{self, AlertWriter};
use crate::store::schema::{
    self, BY_PID, EXITS, INSTANCES, InstanceKey, LATEST, LIVE, META, RECENT, SAMPLES, SCAN_KEYS,
    SCANS, ScanRecord, ShowKey,
};
use crate::store::{RedbResultExt, StoreError};

/// Page cache of the writer. redb's default is 1 GiB; the agent is meant to
/// stay small, and its writes touch the recent end of each table.
const WRITER_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Samples `recent_samples` holds before they are moved into `samples`
/// (about 6 MiB of redb pages). A batch appends its samples at the end of
/// the time-ordered staging table, touching a few pages; moving them in
/// bulk then touches each instance's page of `samples` once for all its
/// staged samples instead of once per scan. Readers scan the staging table
/// whole, so it stays this small.
pub(crate) const COMPACT_AT: u64 = 65_536;

/// Staged samples one transaction of [`Store::compact_samples`] moves at
/// most: at 10,000 instances about 1,300 pages of `samples` (5 MiB) dirty
/// at once, as many as one 1,000-sample batch written straight into
/// `samples` made.
const COMPACT_CHUNK: usize = 8_192;

/// Most instance keys one snapshot may collect for reconciliation. Far above
/// any real host's process count; past it the snapshot is stored but does
/// not mark missing instances exited.
const MAX_SNAPSHOT_KEYS: usize = 1 << 20;

/// What storing one batch chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The scan's id, on the scan's last chunk (its row is written then).
    pub scan_id: Option<u64>,
    /// Entries the chunk carried (started + updated + exited + samples),
    /// skipped ones included, so credit accounting matches what was sent.
    pub records: u64,
}

/// The writer. Exactly one per store: the agent's storage thread.
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    next_scan_id: u64,
    /// The scan whose chunks are arriving, until its last chunk.
    pending: Option<PendingScan>,
    /// Whether writes wait for space when the disk is full.
    space: Arc<space::SpaceWatch>,
    /// Entries in `recent_samples` after the last commit.
    recent: u64,
    /// Staged samples that start a move into `samples` ([`COMPACT_AT`];
    /// tests set it lower).
    pub(crate) compact_at: u64,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("next_scan_id", &self.next_scan_id)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// Totals of a scan's chunks so far.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    chunks: u32,
    started: u32,
    updated: u32,
    exited: u32,
    samples: u32,
    skipped: u32,
    /// Samples the collector's write-ahead log dropped from these chunks.
    samples_dropped: u32,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.chunks = self.chunks.saturating_add(other.chunks);
        self.started = self.started.saturating_add(other.started);
        self.updated = self.updated.saturating_add(other.updated);
        self.exited = self.exited.saturating_add(other.exited);
        self.samples = self.samples.saturating_add(other.samples);
        self.skipped = self.skipped.saturating_add(other.skipped);
        self.samples_dropped = self.samples_dropped.saturating_add(other.samples_dropped);
    }
}

/// A scan whose last chunk has not arrived yet.
#[derive(Debug)]
struct PendingScan {
    boot: u128,
    scan_seq: u64,
    time_ms: i64,
    snapshot: bool,
    /// The chunk number expected next (chunks count from 0).
    next_chunk: u32,
    counts: Counts,
    /// For a snapshot received whole so far: every instance it listed.
    /// `None` when the scan is not a snapshot, or one of its chunks is
    /// missing (then nothing is marked exited by absence).
    seen: Option<HashSet<InstanceKey>>,
    /// The audit ledger's digest over the chunks received so far.
    digest: ScanDigest,
}

impl PendingScan {
    fn new(boot: u128, batch: &ScanBatch) -> PendingScan {
        let seen = if !batch.snapshot {
            None
        } else if batch.chunk == 0 {
            Some(HashSet::new())
        } else {
            warn!(
                scan_seq = batch.scan_seq,
                chunk = batch.chunk,
                "snapshot received from the middle: absent instances are not marked exited"
            );
            None
        };
        PendingScan {
            boot,
            scan_seq: batch.scan_seq,
            time_ms: batch.time_ms,
            snapshot: batch.snapshot,
            next_chunk: batch.chunk,
            counts: Counts::default(),
            seen,
            digest: ScanDigest::new(),
        }
    }

    fn continues(&self, boot: u128, batch: &ScanBatch) -> bool {
        self.boot == boot
            && self.scan_seq == batch.scan_seq
            && self.time_ms == batch.time_ms
            && self.snapshot == batch.snapshot
            && batch.chunk >= self.next_chunk
    }
}

/// What one chunk's transaction did, merged into the pending scan on commit.
struct ChunkDone {
    counts: Counts,
    seen: HashSet<InstanceKey>,
    scan_id: Option<u64>,
    /// Entries in `recent_samples` with this chunk's.
    recent: u64,
}

/// The tables a batch writes, open in one write transaction.
struct Tables<'txn> {
    instances: Table<'txn, InstanceKey, &'static [u8]>,
    by_pid: Table<'txn, schema::PidKey, ()>,
    live: Table<'txn, InstanceKey, ()>,
    latest: Table<'txn, InstanceKey, &'static [u8]>,
    exits: Table<'txn, InstanceKey, i64>,
    recent: Table<'txn, schema::RecentKey, &'static [u8]>,
    scans: Table<'txn, u64, &'static [u8]>,
    scan_keys: Table<'txn, schema::ScanKey, u64>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Tables<'txn>, redb::TableError> {
        Ok(Tables {
            instances: txn.open_table(INSTANCES)?,
            by_pid: txn.open_table(BY_PID)?,
            live: txn.open_table(LIVE)?,
            latest: txn.open_table(LATEST)?,
            exits: txn.open_table(EXITS)?,
            recent: txn.open_table(RECENT)?,
            scans: txn.open_table(SCANS)?,
            scan_keys: txn.open_table(SCAN_KEYS)?,
        })
    }

    /// Makes `sample` the instance's latest and stages it for the history
    /// at `time_ms`. Returns whether the instance had a latest sample
    /// already (then it is stored: the caller needs no lookup).
    fn put_sample(
        &mut self,
        key: InstanceKey,
        time_ms: i64,
        sample: &Sample,
    ) -> Result<bool, redb::StorageError> {
        let bytes = sample.encode_to_vec();
        let had_latest = self.latest.insert(key, bytes.as_slice())?.is_some();
        self.recent
            .insert(schema::recent_key(key, time_ms), bytes.as_slice())?;
        Ok(had_latest)
    }

    /// Takes back a [`Tables::put_sample`] for an instance the store does
    /// not hold.
    fn unput_sample(&mut self, key: InstanceKey, time_ms: i64) -> Result<(), redb::StorageError> {
        self.latest.remove(key)?;
        self.recent.remove(schema::recent_key(key, time_ms))?;
        Ok(())
    }

    /// Records the exit unless one is recorded: a replay keeps the first time.
    fn mark_exited(&mut self, key: InstanceKey, time_ms: i64) -> Result<(), redb::StorageError> {
        self.live.remove(key)?;
        if self.exits.get(key)?.is_none() {
            self.exits.insert(key, time_ms)?;
        }
        Ok(())
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Store {
    /// Creates or opens the store at `path` (the file; its directory must
    /// exist), creates every table, and writes or checks `meta`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let space = Arc::new(space::SpaceWatch::new(path));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::from_open(path, e.into(), false))?;
        let file = redb::backends::FileBackend::new(file)
            .map_err(|e| StoreError::from_open(path, e, false))?;
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .set_cache_size(WRITER_CACHE_BYTES)
            .create_with_backend(space::SpaceWaitingFile::new(file, Arc::clone(&space)))
            .map_err(|e| StoreError::from_open(path, e, false))?;
        let txn = db.begin_write().in_store(path)?;
        let names: Vec<String> = txn
            .list_tables()
            .in_store(path)?
            .map(|t| t.name().to_owned())
            .collect();
        let has_multimap = txn.list_multimap_tables().in_store(path)?.next().is_some();
        if names.is_empty() && !has_multimap {
            let mut meta = txn.open_table(META).in_store(path)?;
            meta.insert(schema::META_MAGIC, schema::MAGIC)
                .in_store(path)?;
            meta.insert(
                schema::META_SCHEMA_VERSION,
                schema::SCHEMA_VERSION.to_le_bytes().as_slice(),
            )
            .in_store(path)?;
            meta.insert(
                schema::META_CREATED_MS,
                sentineld_common::time::now_millis()
                    .to_le_bytes()
                    .as_slice(),
            )
            .in_store(path)?;
            meta.insert(
                schema::META_CREATED_BY,
                format!("sentinelagent {}", sentineld_common::VERSION).as_bytes(),
            )
            .in_store(path)?;
        } else if !names.iter().any(|n| n == META.name()) {
            return Err(StoreError::not_a_store(
                path,
                "it is a redb database without a meta table",
            ));
        } else {
            let meta = txn.open_table(META).map_err(|e| match e {
                redb::TableError::TableTypeMismatch { .. } => {
                    StoreError::not_a_store(path, "its meta table has other types")
                }
                e => StoreError::redb(path, e),
            })?;
            schema::check_meta(path, &meta)?;
        }
        let (next_scan_id, recent) = {
            let tables = Tables::open(&txn).map_err(|e| match e {
                redb::TableError::TableTypeMismatch { table, .. } => StoreError::corrupt(
                    path,
                    format!("table {table} has other key or value types than schema 1"),
                ),
                e => StoreError::redb(path, e),
            })?;
            let last = tables.scans.last().in_store(path)?;
            (
                last.map_or(1, |(id, _)| id.value().saturating_add(1)),
                tables.recent.len().in_store(path)?,
            )
        };
        // Only moves write `samples`: created here for a new store (and
        // `recent_samples`, by `Tables::open`, for one older than it).
        txn.open_table(SAMPLES).in_store(path)?;
        alerts::create_tables(&txn).in_store(path)?;
        txn.commit().in_store(path)?;
        debug!(path = %path.display(), next_scan_id, "store open");
        Ok(Store {
            db: Arc::new(db),
            path: path.to_path_buf(),
            next_scan_id,
            pending: None,
            space,
            recent,
            compact_at: COMPACT_AT,
        })
    }

    /// From now on a write that finds the disk full waits for space instead
    /// of failing (which would leave the database unusable until reopened),
    /// and reports the outage to `stats`; at shutdown `stop` ends the wait.
    pub(crate) fn wait_for_space(&self, stats: Arc<AgentStats>, stop: CancellationToken) {
        self.space.arm(stats, stop);
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shared database handle, for readers inside the agent.
    pub(crate) fn database(&self) -> Arc<Database> {
        Arc::clone(&self.db)
    }

    /// Retention over this store, sharing its database.
    pub fn pruner(&self) -> crate::store::Pruner {
        crate::store::Pruner::new(Arc::clone(&self.db), &self.path)
    }

    /// A writer for detection's tables, sharing this store's database.
    pub fn alert_writer(&self) -> AlertWriter {
        AlertWriter::new(Arc::clone(&self.db), &self.path)
    }

    /// Applies one `ScanBatch` chunk in one write transaction (default,
    /// immediate durability: committed means on disk). `boot_id` comes from
    /// the collector's handshake. Returns the scan id on the scan's last
    /// chunk, when the scan row is written.
    ///
    /// Replaying a stored batch changes nothing: records, latest samples and
    /// samples (keyed by the batch's time) are overwritten with the same
    /// values, an exit keeps its first time, and a scan already stored under
    /// the same (boot id, time, scan_seq) keeps its row and id.
    pub fn apply_batch(
        &mut self,
        boot_id: [u8; 16],
        batch: &ScanBatch,
    ) -> Result<BatchOutcome, StoreError> {
        let boot = schema::boot_key(boot_id);
        let mut pending = match self.pending.take() {
            Some(p) if p.continues(boot, batch) => p,
            previous => {
                if let Some(p) = previous {
                    debug!(
                        scan_seq = p.scan_seq,
                        chunks = p.counts.chunks,
                        "scan ended without its last chunk: no scan row written"
                    );
                }
                PendingScan::new(boot, batch)
            }
        };
        if batch.chunk > pending.next_chunk && pending.seen.is_some() {
            warn!(
                scan_seq = batch.scan_seq,
                expected = pending.next_chunk,
                chunk = batch.chunk,
                "snapshot chunk missing: absent instances are not marked exited"
            );
            pending.seen = None;
        }
        let records = [
            batch.started.len(),
            batch.updated.len(),
            batch.exited.len(),
            batch.samples.len(),
        ]
        .iter()
        .map(|&n| n as u64)
        .sum();

        // The digest as procmond computed it for its audit ledger, over
        // what arrived; stored with the scan for `sentinelcli audit verify`.
        let mut digest = pending.digest.clone();
        digest.update(batch);
        let summary = batch.last_chunk.then(|| digest.clone().finish().digest);
        match self.write(boot, batch, &pending, summary) {
            Ok(done) => {
                if done.counts.skipped > 0 {
                    debug!(
                        scan_seq = batch.scan_seq,
                        skipped = done.counts.skipped,
                        "entries naming unknown instances skipped"
                    );
                }
                self.recent = done.recent;
                if let Some(id) = done.scan_id {
                    self.next_scan_id = self.next_scan_id.max(id.saturating_add(1));
                } else {
                    pending.counts.add(done.counts);
                    pending.digest = digest;
                    pending.next_chunk = batch.chunk.saturating_add(1);
                    if let Some(seen) = &mut pending.seen {
                        if seen.len() + done.seen.len() > MAX_SNAPSHOT_KEYS {
                            warn!(
                                scan_seq = batch.scan_seq,
                                max = MAX_SNAPSHOT_KEYS,
                                "snapshot too large to reconcile: absent instances are not marked exited"
                            );
                            pending.seen = None;
                        } else {
                            seen.extend(done.seen);
                        }
                    }
                    self.pending = Some(pending);
                }
                if self.recent >= self.compact_at
                    && let Err(e) = self.compact_samples()
                {
                    // The batch is stored; the samples stay staged and
                    // readable, and the next batch tries again.
                    warn!(error = %e, "cannot move staged samples into the samples table");
                }
                Ok(BatchOutcome {
                    scan_id: done.scan_id,
                    records,
                })
            }
            Err(e) => {
                // The chunk is lost unless it is sent again; without it a
                // snapshot cannot tell absent from unsent.
                pending.seen = None;
                self.pending = Some(pending);
                Err(e)
            }
        }
    }

    /// Moves every staged sample from `recent_samples` into `samples`,
    /// leaving out those of instances no longer stored (retention removed
    /// them meanwhile). Runs by itself once [`COMPACT_AT`] samples are
    /// staged; returns how many were moved.
    ///
    /// The samples are moved in instance order, [`COMPACT_CHUNK`] a
    /// transaction, so a transaction's dirty pages (kept in memory until
    /// it commits) stay few; a last transaction drops the staging table's
    /// pages at once. In between, a sample is in both tables, which
    /// readers count once; a crash in between leaves them staged, and the
    /// next move writes the same rows again.
    pub fn compact_samples(&mut self) -> Result<u64, StoreError> {
        let path = self.path.as_path();
        let mut keys: Vec<schema::SampleKey> = {
            let txn = self.db.begin_read().in_store(path)?;
            let recent = txn.open_table(RECENT).in_store(path)?;
            recent
                .iter()
                .in_store(path)?
                .map(|entry| entry.map(|(k, _)| schema::recent_to_sample(k.value())))
                .collect::<Result<_, _>>()
                .in_store(path)?
        };
        keys.sort_unstable();
        let mut moved = 0_u64;
        for chunk in keys.chunks(COMPACT_CHUNK) {
            let txn = self.db.begin_write().in_store(path)?;
            {
                let recent = txn.open_table(RECENT).in_store(path)?;
                let instances = txn.open_table(INSTANCES).in_store(path)?;
                let mut samples = txn.open_table(SAMPLES).in_store(path)?;
                // The instance of the previous key, and whether it is stored.
                let mut last: Option<(InstanceKey, bool)> = None;
                for &key in chunk {
                    let (boot, start, pid, time_ms) = key;
                    let instance = (boot, start, pid);
                    let stored = match last {
                        Some((i, stored)) if i == instance => stored,
                        _ => {
                            let stored = instances.get(instance).in_store(path)?.is_some();
                            last = Some((instance, stored));
                            stored
                        }
                    };
                    if !stored {
                        continue;
                    }
                    let staged = (time_ms, boot, start, pid);
                    if let Some(value) = recent.get(staged).in_store(path)? {
                        samples.insert(key, value.value()).in_store(path)?;
                        moved += 1;
                    }
                }
            }
            txn.commit().in_store(path)?;
        }
        let txn = self.db.begin_write().in_store(path)?;
        txn.delete_table(RECENT).in_store(path)?;
        txn.open_table(RECENT).in_store(path)?;
        txn.commit().in_store(path)?;
        debug!(moved, "staged samples moved into the samples table");
        self.recent = 0;
        Ok(moved)
    }

    fn write(
        &self,
        boot: u128,
        batch: &ScanBatch,
        pending: &PendingScan,
        digest: Option<[u8; 32]>,
    ) -> Result<ChunkDone, StoreError> {
        let path = self.path.as_path();
        let txn = self.db.begin_write().in_store(path)?;
        let done = {
            let mut t = Tables::open(&txn).in_store(path)?;
            self.write_tables(&mut t, boot, batch, pending, digest)
                .in_store(path)?
        };
        txn.commit().in_store(path)?;
        Ok(done)
    }

    fn write_tables(
        &self,
        t: &mut Tables<'_>,
        boot: u128,
        batch: &ScanBatch,
        pending: &PendingScan,
        digest: Option<[u8; 32]>,
    ) -> Result<ChunkDone, redb::StorageError> {
        let time_ms = batch.time_ms;
        let track = pending.seen.is_some();
        let mut seen = HashSet::new();
        let mut counts = Counts {
            chunks: 1,
            samples_dropped: batch.samples_dropped,
            ..Counts::default()
        };

        for record in &batch.started {
            let Some(key) = schema::instance_key(boot, record.instance.as_ref()) else {
                counts.skipped += 1;
                continue;
            };
            t.instances.insert(key, record.encode_to_vec().as_slice())?;
            t.by_pid.insert(schema::pid_key(key), ())?;
            t.live.insert(key, ())?;
            // Seen alive again (a snapshot after one that missed it): the
            // newest information wins.
            t.exits.remove(key)?;
            if let Some(sample) = &record.sample {
                t.put_sample(key, time_ms, sample)?;
            }
            counts.started += 1;
            if track {
                seen.insert(key);
            }
        }

        for record in &batch.updated {
            let Some(key) = schema::instance_key(boot, record.instance.as_ref()) else {
                counts.skipped += 1;
                continue;
            };
            let known = t
                .instances
                .insert(key, record.encode_to_vec().as_slice())?
                .is_some();
            if !known {
                // Its start was never stored: store it as a start would.
                t.by_pid.insert(schema::pid_key(key), ())?;
                if t.exits.get(key)?.is_none() {
                    t.live.insert(key, ())?;
                    if let Some(sample) = &record.sample {
                        t.put_sample(key, time_ms, sample)?;
                    }
                }
            }
            counts.updated += 1;
            if track {
                seen.insert(key);
            }
        }

        for sample in &batch.samples {
            let Some(key) = schema::instance_key(boot, sample.instance.as_ref()) else {
                counts.skipped += 1;
                continue;
            };
            // An instance with a latest sample is stored: one lookup fewer
            // per sample in the common case.
            let had_latest = t.put_sample(key, time_ms, sample)?;
            if !had_latest && t.instances.get(key)?.is_none() {
                t.unput_sample(key, time_ms)?;
                counts.skipped += 1;
                continue;
            }
            counts.samples += 1;
            if track {
                seen.insert(key);
            }
        }

        for instance in &batch.exited {
            let key = (boot, instance.start_time, instance.pid);
            if t.instances.get(key)?.is_none() {
                counts.skipped += 1;
                continue;
            }
            t.mark_exited(key, time_ms)?;
            seen.remove(&key);
            counts.exited += 1;
        }

        let mut scan_id = None;
        if batch.last_chunk {
            if let Some(before) = &pending.seen {
                let mut gone = Vec::new();
                t.live.retain(|key, ()| {
                    let keep = before.contains(&key) || seen.contains(&key);
                    if !keep {
                        gone.push(key);
                    }
                    keep
                })?;
                for &key in &gone {
                    t.mark_exited(key, time_ms)?;
                    debug!(instance = %ShowKey(key), "absent from snapshot: marked exited");
                }
                counts.exited = counts.exited.saturating_add(count(gone.len()));
            }
            let mut total = pending.counts;
            total.add(counts);
            let scan_key = (boot, time_ms, batch.scan_seq);
            let existing = t.scan_keys.get(scan_key)?.map(|id| id.value());
            let id = match existing {
                // A replayed scan keeps the row stored first.
                Some(id) => id,
                None => {
                    let id = self.next_scan_id;
                    let row = ScanRecord {
                        time_ms,
                        process_count: batch.process_count,
                        duration_us: batch.duration_us,
                        started: total.started,
                        exited: total.exited,
                        snapshot: batch.snapshot,
                        boot_id: schema::boot_bytes(boot).to_vec(),
                        scan_seq: batch.scan_seq,
                        chunks: total.chunks,
                        updated: total.updated,
                        samples: total.samples,
                        skipped: total.skipped,
                        stats: batch.stats.clone(),
                        digest: digest.map(Vec::from).unwrap_or_default(),
                        samples_dropped: total.samples_dropped,
                        chunks_sent: batch.chunk.saturating_add(1),
                    };
                    t.scans.insert(id, row.encode_to_vec().as_slice())?;
                    t.scan_keys.insert(scan_key, id)?;
                    id
                }
            };
            scan_id = Some(id);
        }

        Ok(ChunkDone {
            counts,
            seen,
            scan_id,
            recent: t.recent.len()?,
        })
    }
}
