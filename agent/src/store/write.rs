//! The writer: applies the collector's batches, one write transaction per
//! group of them (`Store::apply_batches`), and moves staged samples into
//! the history.

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
    self, BY_PID, EXITS, INSTANCES, InstanceKey, LATEST, LIVE, META, RECENT, SAMPLE_BLOCKS,
    SAMPLES, SCAN_KEYS, SCANS, SampleBlock, ScanRecord, ShowKey,
};
use crate::store::{RedbResultExt, StoreError};

/// Page cache of the writer. redb's default is 1 GiB; the agent is meant to
/// stay small, and its writes touch the recent end of each table.
const WRITER_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Samples `recent_samples` holds before they are moved into `sample_blocks`
/// (about 6 MiB of redb pages). A batch appends its samples at the end of
/// the time-ordered staging table, touching a few pages; moving them in
/// bulk then touches each instance's page of `samples` once for all its
/// staged samples instead of once per scan. Readers scan the staging table
/// whole, so it stays this small.
pub(crate) const COMPACT_AT: u64 = 65_536;

/// What one transaction of [`Store::compact_samples`] makes dirty at most
/// (redb holds a transaction's dirty pages in memory until it commits),
/// estimated as a page per instance (the leaf its new blocks go into)
/// and the blocks' bytes. A move of 65,536 samples takes two transactions
/// at 1,000 instances, about seven at 10,000; each commit is an
/// `fdatasync`, most of a move's time.
const MOVE_DIRTY_BYTES: usize = 6 * 1024 * 1024;

/// redb's page size.
const PAGE_BYTES: usize = 4096;

/// Most instance keys one snapshot may collect for reconciliation. Far above
/// any real host's process count; past it the snapshot is stored but does
/// not mark missing instances exited.
const MAX_SNAPSHOT_KEYS: usize = 1 << 20;

/// Entries a batch carries (started + updated + exited + samples),
/// skipped ones included: what it counts against the collector's credit.
pub(crate) fn batch_records(batch: &ScanBatch) -> u64 {
    (batch.started.len() + batch.updated.len() + batch.exited.len() + batch.samples.len()) as u64
}

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
    /// Staged samples that start a move into `sample_blocks` ([`COMPACT_AT`];
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

    /// The same scan without the instances seen so far: what a failed
    /// transaction leaves (the chunk it lost makes reconciliation unsafe).
    fn without_seen(&self) -> PendingScan {
        PendingScan {
            boot: self.boot,
            scan_seq: self.scan_seq,
            time_ms: self.time_ms,
            snapshot: self.snapshot,
            next_chunk: self.next_chunk,
            counts: self.counts,
            seen: None,
            digest: self.digest.clone(),
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

/// One instance's staged samples, ascending by time, as stored (encoded).
#[derive(Default)]
struct Staged<'a> {
    times_ms: Vec<i64>,
    samples: Vec<&'a [u8]>,
}

/// The block of `instance` with the newest first time at or before
/// `until`, and its first time.
fn block_before<T>(
    blocks: &Table<'_, schema::SampleKey, &'static [u8]>,
    path: &Path,
    (boot, start, pid): InstanceKey,
    until: i64,
    read: impl FnOnce(&[u8], schema::SampleKey) -> Result<T, StoreError>,
) -> Result<Option<(i64, T)>, StoreError> {
    let mut range = blocks
        .range((boot, start, pid, i64::MIN)..=(boot, start, pid, until))
        .in_store(path)?;
    match range.next_back() {
        Some(entry) => {
            let (key, value) = entry.in_store(path)?;
            let key = key.value();
            Ok(Some((key.3, read(value.value(), key)?)))
        }
        None => Ok(None),
    }
}

/// Adds `staged` (one instance's samples) to its blocks in
/// `sample_blocks`. Samples newer than its newest block make new blocks of
/// up to [`schema::BLOCK_SAMPLES`], copied as they were staged: existing
/// blocks are not written again, so a move writes about one page per
/// instance, however many instances there are. An older sample (a
/// replay's, one moved before a crash, or one taken after the clock
/// stepped back) goes into the block whose time range it falls in (or
/// the newest one before it), replacing a sample of the same time; a
/// block that grows past [`schema::BLOCK_SAMPLES`] is split in two.
/// Blocks that do not decode do not stop the move: they are reported, and
/// its samples stored beside them.
fn append_samples(
    blocks: &mut Table<'_, schema::SampleKey, &'static [u8]>,
    path: &Path,
    instance: InstanceKey,
    staged: Staged<'_>,
) -> Result<(), StoreError> {
    let (boot, start, pid) = instance;
    // The newest block's newest time. A block that does not decode is
    // reported, and every sample then takes the careful path below.
    let newest = block_before(blocks, path, instance, i64::MAX, |bytes, key| {
        let times: schema::BlockTimes = schema::decode(
            path,
            bytes,
            "sample_blocks",
            format_args!("{} time {}", ShowKey(instance), key.3),
        )?;
        Ok(times.times_ms.last().copied())
    });
    let end = match newest {
        Ok(newest) => newest.and_then(|(_, last)| last).unwrap_or(i64::MIN),
        Err(e @ StoreError::Corrupt { .. }) => {
            warn!(error = %e, "sample block undecodable: samples moved one by one");
            i64::MAX
        }
        Err(e) => return Err(e),
    };
    let split = staged.times_ms.partition_point(|&t| t <= end);
    for (i, &time_ms) in staged.times_ms[..split].iter().enumerate() {
        let bytes = staged.samples[i];
        let sample: Sample = match schema::decode(
            path,
            bytes,
            "recent_samples",
            format_args!("{} time {time_ms}", ShowKey(instance)),
        ) {
            Ok(sample) => sample,
            Err(e) => {
                warn!(error = %e, "staged sample undecodable: not moved");
                continue;
            }
        };
        let covering = match block_before(blocks, path, instance, time_ms, |bytes, key| {
            SampleBlock::decode_at(path, bytes, key)
        }) {
            Ok(covering) => covering,
            Err(e @ StoreError::Corrupt { .. }) => {
                // The sample gets a block of its own (replacing the bad
                // one if it starts at the same time): later samples of
                // the move find that one.
                warn!(error = %e, "sample block undecodable: a sample stored beside it");
                None
            }
            Err(e) => return Err(e),
        };
        let (at, mut block) = match covering {
            Some((at, mut block)) => {
                match block.times_ms.binary_search(&time_ms) {
                    Ok(i) => block.samples[i] = sample,
                    Err(i) => {
                        block.times_ms.insert(i, time_ms);
                        block.samples.insert(i, sample);
                    }
                }
                (at, block)
            }
            // Older than every block: a block of its own.
            None => (
                time_ms,
                SampleBlock {
                    times_ms: vec![time_ms],
                    samples: vec![sample],
                },
            ),
        };
        if block.samples.len() > schema::BLOCK_SAMPLES {
            // Full: its newer half becomes a block of its own, so a run of
            // late samples (a clock stepped back) keeps blocks small.
            let half = block.samples.len() / 2;
            let newer = SampleBlock {
                times_ms: block.times_ms.split_off(half),
                samples: block.samples.split_off(half),
            };
            blocks
                .insert(
                    (boot, start, pid, newer.times_ms[0]),
                    newer.encode_to_vec().as_slice(),
                )
                .in_store(path)?;
        }
        blocks
            .insert((boot, start, pid, at), block.encode_to_vec().as_slice())
            .in_store(path)?;
    }
    let mut next = split;
    let total = staged.times_ms.len();
    let mut bytes = Vec::new();
    while next < total {
        let range = next..(next + schema::BLOCK_SAMPLES).min(total);
        bytes.clear();
        schema::encode_block_part(
            &staged.times_ms[range.clone()],
            staged.samples[range.clone()].iter().copied(),
            &mut bytes,
        );
        blocks
            .insert((boot, start, pid, staged.times_ms[next]), bytes.as_slice())
            .in_store(path)?;
        next = range.end;
    }
    Ok(())
}

/// The pending scan `batch` continues, or a new one it starts.
fn resume(pending: Option<PendingScan>, boot: u128, batch: &ScanBatch) -> PendingScan {
    match pending {
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
    }
}

/// What one chunk's writes did, merged into the pending scan.
struct ChunkDone {
    counts: Counts,
    seen: HashSet<InstanceKey>,
    scan_id: Option<u64>,
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
            let found = schema::check_meta(path, &meta)?;
            drop(meta);
            if found < schema::SCHEMA_VERSION {
                // Schema 1 differs only by `samples`, which stays readable:
                // from now on moves write `sample_blocks`.
                txn.open_table(META)
                    .in_store(path)?
                    .insert(
                        schema::META_SCHEMA_VERSION,
                        schema::SCHEMA_VERSION.to_le_bytes().as_slice(),
                    )
                    .in_store(path)?;
                debug!(path = %path.display(), from = found, "store marked schema {}", schema::SCHEMA_VERSION);
            }
        }
        let (next_scan_id, recent) = {
            let tables = Tables::open(&txn).map_err(|e| match e {
                redb::TableError::TableTypeMismatch { table, .. } => StoreError::corrupt(
                    path,
                    format!(
                        "table {table} has other key or value types than schema {}",
                        schema::SCHEMA_VERSION
                    ),
                ),
                e => StoreError::redb(path, e),
            })?;
            let last = tables.scans.last().in_store(path)?;
            (
                last.map_or(1, |(id, _)| id.value().saturating_add(1)),
                tables.recent.len().in_store(path)?,
            )
        };
        // Only moves write `sample_blocks`: created here for a new store
        // (and `recent_samples`, by `Tables::open`, for one older than it).
        // Schema 1's `samples` is read wherever it is: created empty.
        txn.open_table(SAMPLE_BLOCKS).in_store(path)?;
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
        let mut outcomes = self.apply_batches(&[(boot_id, batch)])?;
        Ok(outcomes.pop().expect("one outcome per batch"))
    }

    /// Applies several chunks, in order, in one write transaction: one
    /// commit (one `fdatasync`) for all of them, and a page two of them
    /// change is copied once. Stores exactly what applying them one at a
    /// time would; either all are stored or none is. Returns one outcome
    /// per chunk, in order.
    pub fn apply_batches(
        &mut self,
        batches: &[([u8; 16], &ScanBatch)],
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let path = self.path.as_path();
        // What to go back to if the transaction fails: the scan the first
        // chunk belongs to, as it was before it.
        let mut rollback: Option<PendingScan> = None;
        let mut state = self.pending.take();
        let mut next_scan_id = self.next_scan_id;
        let mut outcomes = Vec::with_capacity(batches.len());
        let written = (|| {
            let txn = self.db.begin_write()?;
            let recent = {
                let mut t = Tables::open(&txn)?;
                for &(boot_id, batch) in batches {
                    let boot = schema::boot_key(boot_id);
                    let pending = resume(state.take(), boot, batch);
                    if rollback.is_none() {
                        rollback = Some(pending.without_seen());
                    }
                    let (outcome, after) =
                        self.write_chunk(&mut t, boot, batch, pending, &mut next_scan_id)?;
                    outcomes.push(outcome);
                    state = after;
                }
                t.recent.len()?
            };
            txn.commit()?;
            Ok::<u64, redb::Error>(recent)
        })();
        match written {
            Ok(recent) => {
                self.pending = state;
                self.next_scan_id = next_scan_id;
                self.recent = recent;
                if self.recent >= self.compact_at
                    && let Err(e) = self.compact_samples()
                {
                    // The batches are stored; the samples stay staged and
                    // readable, and the next batch tries again.
                    warn!(error = %e, "cannot move staged samples into the sample history");
                }
                Ok(outcomes)
            }
            Err(e) => {
                // The chunks are lost unless they are sent again; without
                // them a snapshot cannot tell absent from unsent. (Failing
                // before the first chunk leaves the scan as it was.)
                self.pending = rollback.or_else(|| state.map(|p| p.without_seen()));
                Err(StoreError::redb(path, e))
            }
        }
    }

    /// Writes one chunk into the open transaction and returns its outcome
    /// and the pending scan after it (`None` once the scan is complete).
    fn write_chunk(
        &self,
        t: &mut Tables<'_>,
        boot: u128,
        batch: &ScanBatch,
        mut pending: PendingScan,
        next_scan_id: &mut u64,
    ) -> Result<(BatchOutcome, Option<PendingScan>), redb::StorageError> {
        if batch.chunk > pending.next_chunk && pending.seen.is_some() {
            warn!(
                scan_seq = batch.scan_seq,
                expected = pending.next_chunk,
                chunk = batch.chunk,
                "snapshot chunk missing: absent instances are not marked exited"
            );
            pending.seen = None;
        }
        let records = batch_records(batch);

        // The digest as procmond computed it for its audit ledger, over
        // what arrived; stored with the scan for `sentinelcli audit verify`.
        pending.digest.update(batch);
        let summary = batch
            .last_chunk
            .then(|| pending.digest.clone().finish().digest);
        let done = self.write_tables(t, boot, batch, &pending, summary, *next_scan_id)?;
        if done.counts.skipped > 0 {
            debug!(
                scan_seq = batch.scan_seq,
                skipped = done.counts.skipped,
                "entries naming unknown instances skipped"
            );
        }
        let outcome = BatchOutcome {
            scan_id: done.scan_id,
            records,
        };
        if let Some(id) = done.scan_id {
            *next_scan_id = (*next_scan_id).max(id.saturating_add(1));
            return Ok((outcome, None));
        }
        pending.counts.add(done.counts);
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
        Ok((outcome, Some(pending)))
    }

    /// Moves every staged sample from `recent_samples` into
    /// `sample_blocks`, leaving out those of instances no longer stored
    /// (retention removed them meanwhile). Runs by itself once
    /// [`COMPACT_AT`] samples are staged; returns how many were moved.
    ///
    /// The staged samples are read in one pass, then moved in instance
    /// order, transactions of [`MOVE_DIRTY_BYTES`] at most, so a
    /// transaction's dirty pages (kept in memory until it commits) stay
    /// few; the last one also drops the staging table's pages at once.
    /// Each instance's samples become new blocks of up to
    /// [`schema::BLOCK_SAMPLES`]: one write per instance and move instead
    /// of one per sample. In between, a sample is in both tables, which
    /// readers count once; a crash in between leaves them staged, and the
    /// next move finds them stored already (a sample no newer than an
    /// instance's newest block goes into the block that covers its time,
    /// once).
    pub fn compact_samples(&mut self) -> Result<u64, StoreError> {
        let path = self.path.as_path();
        // Every staged sample, read in one pass in the table's (time)
        // order: its key, and where its bytes are in `bytes`. At most
        // COMPACT_AT and a batch: a few MiB while the move runs.
        let mut entries: Vec<(schema::SampleKey, u32, u32)> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        {
            let txn = self.db.begin_read().in_store(path)?;
            let recent = txn.open_table(RECENT).in_store(path)?;
            for entry in recent.iter().in_store(path)? {
                let (key, value) = entry.in_store(path)?;
                let value = value.value();
                let (Ok(at), Ok(len)) = (u32::try_from(bytes.len()), u32::try_from(value.len()))
                else {
                    // Past 4 GiB staged: the rest waits for the next move.
                    break;
                };
                entries.push((schema::recent_to_sample(key.value()), at, len));
                bytes.extend_from_slice(value);
            }
        }
        entries.sort_unstable_by_key(|&(key, _, _)| key);
        let mut moved = 0_u64;
        let mut runs = entries
            .chunk_by(|(a, _, _), (b, _, _)| (a.0, a.1, a.2) == (b.0, b.1, b.2))
            .peekable();
        loop {
            let txn = self.db.begin_write().in_store(path)?;
            {
                let instances = txn.open_table(INSTANCES).in_store(path)?;
                let mut blocks = txn.open_table(SAMPLE_BLOCKS).in_store(path)?;
                let mut dirty = 0_usize;
                while dirty < MOVE_DIRTY_BYTES {
                    let Some(run) = runs.next() else { break };
                    let ((boot, start, pid, _), _, _) = run[0];
                    let instance = (boot, start, pid);
                    if instances.get(instance).in_store(path)?.is_none() {
                        continue;
                    }
                    let mut staged = Staged::default();
                    let mut staged_bytes = 0;
                    for &((_, _, _, time_ms), at, len) in run {
                        let at = at as usize;
                        staged.times_ms.push(time_ms);
                        staged.samples.push(&bytes[at..at + len as usize]);
                        staged_bytes += len as usize;
                    }
                    moved += staged.times_ms.len() as u64;
                    // The leaf the new blocks go into, and the blocks.
                    dirty += PAGE_BYTES + staged_bytes;
                    append_samples(&mut blocks, path, instance, staged)?;
                }
            }
            if runs.peek().is_some() {
                txn.commit().in_store(path)?;
                continue;
            }
            // The last transaction drops the staging table's pages too.
            txn.delete_table(RECENT).in_store(path)?;
            txn.open_table(RECENT).in_store(path)?;
            txn.commit().in_store(path)?;
            break;
        }
        debug!(moved, "staged samples moved into sample blocks");
        self.recent = 0;
        Ok(moved)
    }

    fn write_tables(
        &self,
        t: &mut Tables<'_>,
        boot: u128,
        batch: &ScanBatch,
        pending: &PendingScan,
        digest: Option<[u8; 32]>,
        next_scan_id: u64,
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
                    let id = next_scan_id;
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
        })
    }
}
