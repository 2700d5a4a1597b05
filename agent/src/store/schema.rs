//! The store's tables, keys and value encodings, schema version 2.
//!
//! `docs/store-format.md` documents every table byte by byte. Keys are
//! fixed-width redb tuples of little-endian integers; values are prost
//! messages, so fields can be added without a schema change.

use std::fmt;
use std::path::Path;

use prost::Message;
use redb::{ReadableTable, TableDefinition};
use sentineld_proto::v1::{InstanceRef, ProcessRecord, Sample, ScanStats};

use crate::store::{RedbResultExt, StoreError};

/// The schema this build writes and the newest one it reads. Version 2
/// moved staged samples into `sample_blocks`; a version 1 store is read
/// as it is (its `samples` stay readable until retention removes them)
/// and marked version 2 when the agent opens it.
pub(crate) const SCHEMA_VERSION: u64 = 2;

/// `meta["magic"]`: names the product, so a foreign redb file is refused.
pub(crate) const MAGIC: &[u8] = b"sentineld-store";

pub(crate) const META_MAGIC: &str = "magic";
pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
pub(crate) const META_CREATED_MS: &str = "created_ms";
pub(crate) const META_CREATED_BY: &str = "created_by";

/// (boot id, start time in unix seconds, pid): one process instance.
pub(crate) type InstanceKey = (u128, i64, u32);
/// (pid, boot id, start time): the `by_pid` index.
pub(crate) type PidKey = (u32, u128, i64);
/// (boot id, start time, pid, sample time in unix milliseconds).
pub(crate) type SampleKey = (u128, i64, u32, i64);
/// (sample time in unix milliseconds, boot id, start time, pid): the
/// `recent_samples` staging table, in arrival order.
pub(crate) type RecentKey = (i64, u128, i64, u32);
/// (boot id, scan time in unix milliseconds, collector scan_seq).
pub(crate) type ScanKey = (u128, i64, u64);

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const INSTANCES: TableDefinition<InstanceKey, &[u8]> = TableDefinition::new("instances");
pub(crate) const BY_PID: TableDefinition<PidKey, ()> = TableDefinition::new("by_pid");
pub(crate) const LIVE: TableDefinition<InstanceKey, ()> = TableDefinition::new("live");
pub(crate) const LATEST: TableDefinition<InstanceKey, &[u8]> = TableDefinition::new("latest");
pub(crate) const EXITS: TableDefinition<InstanceKey, i64> = TableDefinition::new("exits");
/// Schema 1's sample history, one entry per sample. Not written any more;
/// read and pruned until retention has emptied it.
pub(crate) const SAMPLES: TableDefinition<SampleKey, &[u8]> = TableDefinition::new("samples");
/// The sample history: each entry a [`SampleBlock`] of one instance's
/// samples, keyed by the time of its oldest. An instance's blocks do not
/// overlap in time.
pub(crate) const SAMPLE_BLOCKS: TableDefinition<SampleKey, &[u8]> =
    TableDefinition::new("sample_blocks");
/// Samples as they arrive, keyed by time first so a batch's samples land
/// together at the end of the table; moved into `sample_blocks` in bulk by
/// `Store::compact_samples` (see `docs/store-format.md`).
pub(crate) const RECENT: TableDefinition<RecentKey, &[u8]> = TableDefinition::new("recent_samples");
pub(crate) const SCANS: TableDefinition<u64, &[u8]> = TableDefinition::new("scans");
pub(crate) const SCAN_KEYS: TableDefinition<ScanKey, u64> = TableDefinition::new("scan_keys");

/// One row of `scans`: what one complete scan carried.
///
/// Tags 1-8 are the scan's identity and totals; new fields are only ever
/// added.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ScanRecord {
    /// When the scan started, unix milliseconds (the batch's `time_ms`).
    #[prost(int64, tag = "1")]
    pub time_ms: i64,
    /// Live processes in the scan (last chunk's `process_count`).
    #[prost(uint32, tag = "2")]
    pub process_count: u32,
    /// How long collection took, microseconds (last chunk's `duration_us`).
    #[prost(uint64, tag = "3")]
    pub duration_us: u64,
    /// Started records stored, all chunks.
    #[prost(uint32, tag = "4")]
    pub started: u32,
    /// Instances marked exited: listed in `exited`, plus for a snapshot
    /// those live in the store but missing from the snapshot.
    #[prost(uint32, tag = "5")]
    pub exited: u32,
    #[prost(bool, tag = "6")]
    pub snapshot: bool,
    /// Boot id of the collector's host, 16 bytes.
    #[prost(bytes = "vec", tag = "7")]
    pub boot_id: Vec<u8>,
    /// The collector's scan number in its session.
    #[prost(uint64, tag = "8")]
    pub scan_seq: u64,
    /// Chunks the scan arrived in.
    #[prost(uint32, tag = "9")]
    pub chunks: u32,
    /// Updated records stored.
    #[prost(uint32, tag = "10")]
    pub updated: u32,
    /// Samples stored.
    #[prost(uint32, tag = "11")]
    pub samples: u32,
    /// Entries skipped: samples or exits naming an instance the store does
    /// not hold, records or samples without an instance.
    #[prost(uint32, tag = "12")]
    pub skipped: u32,
    /// The collector's own counters (last chunk's `stats`).
    #[prost(message, optional, tag = "13")]
    pub stats: Option<ScanStats>,
    /// The audit ledger's scan digest over the chunks as received, 32
    /// bytes (`docs/audit-ledger.md`); empty in rows from before it.
    #[prost(bytes = "vec", tag = "14")]
    pub digest: Vec<u8>,
    /// Samples the collector's write-ahead log dropped from this scan's
    /// chunks because it was full (then the digest cannot match the
    /// ledger's).
    #[prost(uint32, tag = "15")]
    pub samples_dropped: u32,
    /// Chunks the collector sent (the last chunk's number + 1); more than
    /// `chunks` when some never arrived.
    #[prost(uint32, tag = "16")]
    pub chunks_sent: u32,
}

/// The times of a `sample_blocks` value, read without decoding its
/// samples (they are stepped over): what appending to a block needs.
#[derive(Debug, Default)]
pub(crate) struct BlockTimes {
    pub(crate) times_ms: Vec<i64>,
}

impl Message for BlockTimes {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        prost::encoding::int64::encode_packed(1, &self.times_ms, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == 1 {
            prost::encoding::int64::merge_repeated(wire_type, &mut self.times_ms, buf, ctx)
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::int64::encoded_len_packed(1, &self.times_ms)
    }

    fn clear(&mut self) {
        self.times_ms.clear();
    }
}

/// Appends to `out` the encoding of a [`SampleBlock`] holding `times_ms`
/// and `samples` (each an encoded `Sample`, copied as they are). A block's
/// value followed by such an encoding is the block with these samples
/// added: protobuf merges repeated fields that occur more than once.
pub(crate) fn encode_block_part<'a>(
    times_ms: &[i64],
    samples: impl Iterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) {
    prost::encoding::int64::encode_packed(1, times_ms, out);
    for sample in samples {
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, out);
        prost::encoding::encode_varint(sample.len() as u64, out);
        out.extend_from_slice(sample);
    }
}

/// Samples one [`SampleBlock`] holds at most (about 4 KiB, a page).
pub(crate) const BLOCK_SAMPLES: usize = 64;

/// One value of `sample_blocks`: an instance's samples, oldest first.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SampleBlock {
    /// When each sample was taken, unix milliseconds, ascending; one per
    /// sample.
    #[prost(int64, repeated, tag = "1")]
    pub times_ms: Vec<i64>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

impl SampleBlock {
    /// Decodes a `sample_blocks` value, checking that it pairs every
    /// sample with a time, in ascending order.
    pub(crate) fn decode_at(
        path: &Path,
        bytes: &[u8],
        key: SampleKey,
    ) -> Result<SampleBlock, StoreError> {
        let (boot, start, pid, first) = key;
        let at = || {
            format!(
                "table sample_blocks, key {} time {first}",
                ShowKey((boot, start, pid))
            )
        };
        let block: SampleBlock = decode(path, bytes, "sample_blocks", format_args!("{}", at()))?;
        if block.times_ms.len() != block.samples.len()
            || block.times_ms.first() != Some(&first)
            || !block.times_ms.is_sorted_by(|a, b| a < b)
        {
            return Err(StoreError::corrupt(
                path,
                format!(
                    "{}: {} times for {} samples, not ascending from the key's time",
                    at(),
                    block.times_ms.len(),
                    block.samples.len()
                ),
            ));
        }
        Ok(block)
    }
}

pub(crate) fn boot_key(boot_id: [u8; 16]) -> u128 {
    u128::from_le_bytes(boot_id)
}

pub(crate) fn boot_bytes(boot: u128) -> [u8; 16] {
    boot.to_le_bytes()
}

/// The key of the instance `instance` names on boot `boot`.
pub(crate) fn instance_key(boot: u128, instance: Option<&InstanceRef>) -> Option<InstanceKey> {
    instance.map(|i| (boot, i.start_time, i.pid))
}

pub(crate) fn pid_key((boot, start, pid): InstanceKey) -> PidKey {
    (pid, boot, start)
}

pub(crate) fn recent_key((boot, start, pid): InstanceKey, time_ms: i64) -> RecentKey {
    (time_ms, boot, start, pid)
}

/// The sample key of a `recent_samples` key.
pub(crate) fn recent_to_sample((time_ms, boot, start, pid): RecentKey) -> SampleKey {
    (boot, start, pid, time_ms)
}

/// An instance key as errors and logs show it.
pub(crate) struct ShowKey(pub(crate) InstanceKey);

impl fmt::Display for ShowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (boot, start, pid) = self.0;
        write!(f, "pid {pid} start {start} boot ")?;
        for byte in boot_bytes(boot) {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Decodes a prost value, naming the table and key when it is not one.
pub(crate) fn decode<M: Message + Default>(
    path: &Path,
    bytes: &[u8],
    table: &str,
    key: impl fmt::Display,
) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| {
        StoreError::corrupt(
            path,
            format!("table {table}, key {key}: undecodable value ({e})"),
        )
    })
}

/// A `ProcessRecord` decoded without the fields whose tag numbers are set
/// in `skip` (bit `1 << tag`): they are stepped over, not decoded, and
/// stay empty. Readers that need a few columns of a million instances
/// save the allocations of the rest.
#[derive(Debug)]
struct PartialRecord {
    record: ProcessRecord,
    skip: u64,
}

impl Message for PartialRecord {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        self.record.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag < 64 && self.skip & (1 << tag) != 0 {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        } else {
            self.record.merge_field(tag, wire_type, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        self.record.encoded_len()
    }

    fn clear(&mut self) {
        self.record.clear();
    }
}

/// Decodes a stored `ProcessRecord` without the fields whose tags are set
/// in `skip` (see [`PartialRecord`]), naming the key when it is not one.
pub(crate) fn decode_record(
    path: &Path,
    bytes: &[u8],
    skip: u64,
    key: InstanceKey,
) -> Result<ProcessRecord, StoreError> {
    if skip == 0 {
        return decode(path, bytes, "instances", ShowKey(key));
    }
    let mut partial = PartialRecord {
        record: ProcessRecord::default(),
        skip,
    };
    partial.merge(bytes).map_err(|e| {
        StoreError::corrupt(
            path,
            format!(
                "table instances, key {}: undecodable value ({e})",
                ShowKey(key)
            ),
        )
    })?;
    Ok(partial.record)
}

/// Checks that `meta` says this is a SentinelD store this build can read.
pub(crate) fn check_meta<T>(path: &Path, meta: &T) -> Result<u64, StoreError>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let magic = meta.get(META_MAGIC).in_store(path)?;
    match magic {
        None => {
            return Err(StoreError::not_a_store(path, "its meta table has no magic"));
        }
        Some(m) if m.value() != MAGIC => {
            return Err(StoreError::not_a_store(
                path,
                format!(
                    "its meta magic is {:?}, not {:?}",
                    String::from_utf8_lossy(m.value()),
                    String::from_utf8_lossy(MAGIC)
                ),
            ));
        }
        Some(_) => {}
    }
    let version = meta
        .get(META_SCHEMA_VERSION)
        .in_store(path)?
        .ok_or_else(|| StoreError::not_a_store(path, "its meta table has no schema version"))?;
    let found = <[u8; 8]>::try_from(version.value())
        .map(u64::from_le_bytes)
        .map_err(|_| {
            StoreError::corrupt(
                path,
                format!(
                    "table meta, key {META_SCHEMA_VERSION}: {} bytes, expected 8",
                    version.value().len()
                ),
            )
        })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaVersion {
            path: path.to_path_buf(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        return Err(StoreError::corrupt(
            path,
            "table meta, key schema_version: 0 is not a schema version",
        ));
    }
    Ok(found)
}
