//! The scan digest of the audit ledger: a SHA-256 over a canonical
//! encoding of one scan's batches, computed the same way by procmond (for
//! its ledger) and by the agent (over the batches it received), so
//! `sentinelcli audit verify` can tell a stored scan that differs from what
//! was collected. Layout: `docs/audit-ledger.md`.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::v1::{InstanceRef, ProcessRecord, Sample, ScanBatch};

/// Domain-separation prefix of the scan digest, version 1.
pub const SCAN_DIGEST_TAG: &[u8] = b"sentineld-scan-digest-v1";

const TAG_STARTED: u8 = 0x01;
const TAG_UPDATED: u8 = 0x02;
const TAG_SAMPLE: u8 = 0x03;
const TAG_EXITED: u8 = 0x04;
const TAG_TRAILER: u8 = 0xff;

/// What a scan said, summed over its chunks, with its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanSummary {
    pub scan_seq: u64,
    pub time_ms: i64,
    pub snapshot: bool,
    pub process_count: u32,
    pub started: u64,
    pub updated: u64,
    pub exited: u64,
    pub samples: u64,
    pub digest: [u8; 32],
}

/// Computes the digest of one scan chunk by chunk, as the chunks are sent
/// or received. Feed the chunks of one scan, in order, then [`finish`].
///
/// [`finish`]: ScanDigest::finish
#[derive(Debug, Clone)]
pub struct ScanDigest {
    hasher: Sha256,
    buf: Vec<u8>,
    last: Option<ScanBatch>,
    started: u64,
    updated: u64,
    exited: u64,
    samples: u64,
}

impl Default for ScanDigest {
    fn default() -> ScanDigest {
        ScanDigest::new()
    }
}

impl ScanDigest {
    pub fn new() -> ScanDigest {
        let mut hasher = Sha256::new();
        hasher.update(SCAN_DIGEST_TAG);
        ScanDigest {
            hasher,
            buf: Vec::new(),
            last: None,
            started: 0,
            updated: 0,
            exited: 0,
            samples: 0,
        }
    }

    /// Hashes the records of the next chunk.
    pub fn update(&mut self, batch: &ScanBatch) {
        batch.started.iter().for_each(|r| self.started(r));
        batch.updated.iter().for_each(|r| self.updated(r));
        batch.samples.iter().for_each(|s| self.sample(s));
        batch.exited.iter().for_each(|e| self.exited(e));
        // Only the header fields are needed from the last chunk.
        self.last = Some(ScanBatch {
            scan_seq: batch.scan_seq,
            time_ms: batch.time_ms,
            snapshot: batch.snapshot,
            duration_us: batch.duration_us,
            process_count: batch.process_count,
            stats: batch.stats.clone(),
            ..ScanBatch::default()
        });
    }

    /// Hashes one started record. The records of a scan may be fed one at
    /// a time instead of as chunks (all started, then updated, samples and
    /// exits), then [`finish_with`](Self::finish_with): the digest does not
    /// depend on how the scan is cut into chunks.
    pub fn started(&mut self, r: &ProcessRecord) {
        self.item(TAG_STARTED, r);
        self.started += 1;
    }

    /// Hashes one updated record (see [`started`](Self::started)).
    pub fn updated(&mut self, r: &ProcessRecord) {
        self.item(TAG_UPDATED, r);
        self.updated += 1;
    }

    /// Hashes one sample (see [`started`](Self::started)).
    pub fn sample(&mut self, s: &Sample) {
        self.item(TAG_SAMPLE, s);
        self.samples += 1;
    }

    /// Hashes one exit (see [`started`](Self::started)).
    pub fn exited(&mut self, e: &InstanceRef) {
        self.item(TAG_EXITED, e);
        self.exited += 1;
    }

    /// [`finish`](Self::finish) with the header fields (`scan_seq`,
    /// `time_ms`, `snapshot`, `duration_us`, `process_count`, `stats`) of
    /// `trailer`, for records fed one at a time.
    pub fn finish_with(mut self, trailer: ScanBatch) -> ScanSummary {
        self.last = Some(trailer);
        self.finish()
    }

    fn item(&mut self, tag: u8, message: &impl Message) {
        self.buf.clear();
        message
            .encode(&mut self.buf)
            .expect("a Vec grows to hold any message");
        // One record is far below the frame limit, itself far below 4 GiB.
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.hasher.update([tag]);
        self.hasher.update(len.to_le_bytes());
        self.hasher.update(&self.buf);
    }

    /// Hashes the trailer (from the last chunk fed) and returns the digest
    /// with the scan's counts. A scan with no chunk at all hashes zeros.
    pub fn finish(mut self) -> ScanSummary {
        let last = self.last.take().unwrap_or_default();
        let stats = last.stats.unwrap_or_default();
        let h = &mut self.hasher;
        h.update([TAG_TRAILER]);
        h.update(last.scan_seq.to_le_bytes());
        h.update(last.time_ms.to_le_bytes());
        h.update([u8::from(last.snapshot)]);
        h.update(last.process_count.to_le_bytes());
        h.update(last.duration_us.to_le_bytes());
        h.update(stats.vanished.to_le_bytes());
        h.update(stats.unreadable.to_le_bytes());
        h.update(stats.hash_pending.to_le_bytes());
        ScanSummary {
            scan_seq: last.scan_seq,
            time_ms: last.time_ms,
            snapshot: last.snapshot,
            process_count: last.process_count,
            started: self.started,
            updated: self.updated,
            exited: self.exited,
            samples: self.samples,
            digest: self.hasher.finalize().into(),
        }
    }
}

/// The digest and counts of a whole scan, given as its chunks in order.
pub fn scan_summary(batches: &[ScanBatch]) -> ScanSummary {
    let mut d = ScanDigest::new();
    for b in batches {
        d.update(b);
    }
    d.finish()
}

/// The digest of a whole scan, given as its chunks in order.
pub fn scan_digest(batches: &[ScanBatch]) -> [u8; 32] {
    scan_summary(batches).digest
}
