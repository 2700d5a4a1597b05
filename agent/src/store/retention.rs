//! Retention: removes what is older than the retention period, in bounded
//! write transactions beside the batch writer.
//!
//! What goes: samples taken before the cutoff (stored or still staged); instances that exited before
//! it, with everything kept about them (record, latest sample, pid index,
//! exit); scans that ran before it. Live instances stay however old, with
//! their latest sample. Alerts and their delivery records stay: they are
//! few (one per rule and instance) and are the record an investigation
//! starts from.
//!
//! Each transaction touches at most [`Pruner::batch`] entries, so the batch
//! writer (redb serialises writers) waits for one small transaction at most.
//! A pass walks the instances in key order; it costs a read of every
//! instance key plus the removals, and is resumable: an interrupted pass
//! loses nothing, the next one removes what is left.

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable};

use crate::store::schema::{
    self, BY_PID, EXITS, INSTANCES, InstanceKey, LATEST, LIVE, RECENT, SAMPLE_BLOCKS, SAMPLES,
    SCAN_KEYS, SCANS, SampleBlock, SampleKey, ScanRecord,
};
use crate::store::{RedbResultExt, StoreError};

/// Removes from `instance`'s sample blocks every sample taken before
/// `cutoff_ms` (all of them when `whole`), handling at most `room` blocks:
/// a block older than the cutoff goes, one that straddles it is written
/// again with its newer samples only. Returns the samples removed, the
/// blocks handled, and whether blocks to handle are left.
fn prune_blocks(
    blocks: &mut redb::Table<'_, SampleKey, &'static [u8]>,
    path: &Path,
    (boot, start, pid): InstanceKey,
    whole: bool,
    cutoff_ms: i64,
    room: usize,
) -> Result<(u64, usize, bool), StoreError> {
    let lower = Bound::Included((boot, start, pid, i64::MIN));
    let upper = if whole {
        Bound::Included((boot, start, pid, i64::MAX))
    } else {
        // Blocks that start before the cutoff.
        Bound::Excluded((boot, start, pid, cutoff_ms))
    };
    let mut found: Vec<SampleKey> = blocks
        .range::<SampleKey>((lower, upper))
        .in_store(path)?
        .take(room.saturating_add(1))
        .map(|entry| entry.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()
        .in_store(path)?;
    let more = found.len() > room;
    found.truncate(room);
    let mut removed = 0_u64;
    for &key in &found {
        let Some(value) = blocks.remove(key).in_store(path)? else {
            continue;
        };
        let mut block = SampleBlock::decode_at(path, value.value(), key)?;
        drop(value);
        let old = if whole {
            block.times_ms.len()
        } else {
            block.times_ms.partition_point(|&t| t < cutoff_ms)
        };
        removed += old as u64;
        if old < block.times_ms.len() {
            block.times_ms.drain(..old);
            block.samples.drain(..old);
            let at = (boot, start, pid, block.times_ms[0]);
            blocks
                .insert(at, prost::Message::encode_to_vec(&block).as_slice())
                .in_store(path)?;
        }
    }
    Ok((removed, found.len(), more))
}

/// Entries one retention transaction removes or inspects at most.
pub const DEFAULT_BATCH: usize = 1_000;

/// What a pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub samples: u64,
    pub instances: u64,
    pub scans: u64,
    /// Write transactions committed.
    pub transactions: u64,
    /// The pass was stopped before it finished.
    pub interrupted: bool,
}

impl Pruned {
    /// Nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.samples == 0 && self.instances == 0 && self.scans == 0
    }
}

/// Removes entries older than a cutoff from a store the batch writer holds
/// open (it shares the writer's database).
#[derive(Clone)]
pub struct Pruner {
    db: Arc<Database>,
    path: PathBuf,
    batch: usize,
}

impl fmt::Debug for Pruner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pruner")
            .field("path", &self.path)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Pruner {
    pub(crate) fn new(db: Arc<Database>, path: &Path) -> Pruner {
        Pruner {
            db,
            path: path.to_path_buf(),
            batch: DEFAULT_BATCH,
        }
    }

    /// Entries one transaction handles at most (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Pruner {
        self.batch = batch.max(1);
        self
    }

    /// The entries one transaction handles at most.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Removes every sample taken, instance exited and scan run before
    /// `cutoff_ms` (unix milliseconds). `stop` is asked between
    /// transactions; when it says so the pass ends early, with what it
    /// committed kept.
    pub fn prune(&self, cutoff_ms: i64, stop: impl Fn() -> bool) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let mut cursor = Bound::Unbounded;
        let done = each_step(&stop, || {
            Ok(match self.instances_step(cutoff_ms, cursor, &mut pruned)? {
                Some(next) => {
                    cursor = next;
                    true
                }
                None => false,
            })
        })? && each_step(&stop, || self.recent_step(cutoff_ms, &mut pruned))?
            && each_step(&stop, || self.scans_step(cutoff_ms, &mut pruned))?;
        pruned.interrupted = !done;
        Ok(pruned)
    }

    /// One transaction over the instances from `cursor`: returns where the
    /// next one starts, or `None` when every instance has been visited.
    fn instances_step(
        &self,
        cutoff_ms: i64,
        cursor: Bound<InstanceKey>,
        pruned: &mut Pruned,
    ) -> Result<Option<Bound<InstanceKey>>, StoreError> {
        let path = self.path.as_path();
        let txn = self.db.begin_write().in_store(path)?;
        let next = {
            let mut instances = txn.open_table(INSTANCES).in_store(path)?;
            let mut by_pid = txn.open_table(BY_PID).in_store(path)?;
            let mut live = txn.open_table(LIVE).in_store(path)?;
            let mut latest = txn.open_table(LATEST).in_store(path)?;
            let mut exits = txn.open_table(EXITS).in_store(path)?;
            let mut samples = txn.open_table(SAMPLES).in_store(path)?;
            let mut blocks = txn.open_table(SAMPLE_BLOCKS).in_store(path)?;

            let keys = instances
                .range::<InstanceKey>((cursor, Bound::Unbounded))
                .in_store(path)?
                .take(self.batch)
                .map(|entry| entry.map(|(k, _)| k.value()))
                .collect::<Result<Vec<_>, _>>()
                .in_store(path)?;
            let mut next = (keys.len() == self.batch).then_some(cursor);
            let mut work = 0;
            for key in keys {
                let (boot, start, pid) = key;
                let exited = exits.get(key).in_store(path)?.map(|t| t.value());
                let whole = exited.is_some_and(|t| t < cutoff_ms);
                let upper = if whole {
                    Bound::Included((boot, start, pid, i64::MAX))
                } else {
                    Bound::Excluded((boot, start, pid, cutoff_ms))
                };
                let room = self.batch.saturating_sub(work);
                let mut removed = 0;
                for entry in samples
                    .extract_from_if::<SampleKey, _>(
                        (Bound::Included((boot, start, pid, i64::MIN)), upper),
                        |_, _| true,
                    )
                    .in_store(path)?
                    .take(room)
                {
                    entry.in_store(path)?;
                    removed += 1;
                }
                pruned.samples += removed as u64;
                work += removed;
                if removed == room {
                    // Samples may be left: this instance again, next time.
                    next = Some(Bound::Included(key));
                    break;
                }
                let room = self.batch.saturating_sub(work);
                let (removed, blocks_done, more) =
                    prune_blocks(&mut blocks, path, key, whole, cutoff_ms, room)?;
                pruned.samples += removed;
                work += blocks_done;
                if more {
                    next = Some(Bound::Included(key));
                    break;
                }
                if whole {
                    instances.remove(key).in_store(path)?;
                    by_pid.remove(schema::pid_key(key)).in_store(path)?;
                    live.remove(key).in_store(path)?;
                    latest.remove(key).in_store(path)?;
                    exits.remove(key).in_store(path)?;
                    pruned.instances += 1;
                }
                work += 1;
                if next.is_some() {
                    next = Some(Bound::Excluded(key));
                }
            }
            next
        };
        txn.commit().in_store(path)?;
        pruned.transactions += 1;
        Ok(next)
    }

    /// One transaction removing staged samples (`recent_samples`, ordered
    /// by time) taken before the cutoff. Returns whether there may be more.
    fn recent_step(&self, cutoff_ms: i64, pruned: &mut Pruned) -> Result<bool, StoreError> {
        let path = self.path.as_path();
        let txn = self.db.begin_write().in_store(path)?;
        let removed = {
            let mut recent = txn.open_table(RECENT).in_store(path)?;
            let mut removed = 0;
            let before = Bound::Excluded((cutoff_ms, u128::MIN, i64::MIN, u32::MIN));
            for entry in recent
                .extract_from_if::<schema::RecentKey, _>((Bound::Unbounded, before), |_, _| true)
                .in_store(path)?
                .take(self.batch)
            {
                entry.in_store(path)?;
                removed += 1;
            }
            removed
        };
        txn.commit().in_store(path)?;
        pruned.samples += removed as u64;
        pruned.transactions += 1;
        Ok(removed == self.batch)
    }

    /// One transaction removing the oldest scans run before the cutoff, in
    /// id (arrival) order, stopping at the first newer one. Returns whether
    /// there may be more.
    fn scans_step(&self, cutoff_ms: i64, pruned: &mut Pruned) -> Result<bool, StoreError> {
        let path = self.path.as_path();
        let txn = self.db.begin_write().in_store(path)?;
        let more = {
            let mut scans = txn.open_table(SCANS).in_store(path)?;
            let mut scan_keys = txn.open_table(SCAN_KEYS).in_store(path)?;
            let mut old = Vec::new();
            let mut newer = false;
            for entry in scans.iter().in_store(path)?.take(self.batch) {
                let (id, bytes) = entry.in_store(path)?;
                let row: ScanRecord = schema::decode(path, bytes.value(), "scans", id.value())?;
                if row.time_ms >= cutoff_ms {
                    newer = true;
                    break;
                }
                let boot = <[u8; 16]>::try_from(row.boot_id.as_slice())
                    .map(schema::boot_key)
                    .unwrap_or_default();
                old.push((id.value(), (boot, row.time_ms, row.scan_seq)));
            }
            for (id, key) in &old {
                scans.remove(id).in_store(path)?;
                scan_keys.remove(key).in_store(path)?;
            }
            pruned.scans += old.len() as u64;
            !newer && old.len() == self.batch
        };
        txn.commit().in_store(path)?;
        pruned.transactions += 1;
        Ok(more)
    }
}

/// Runs `step` (one transaction; true while there may be more) until it is
/// done, asking `stop` before each. Returns false when stopped early.
fn each_step(
    stop: &impl Fn() -> bool,
    mut step: impl FnMut() -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    loop {
        if stop() {
            return Ok(false);
        }
        if !step()? {
            return Ok(true);
        }
    }
}
