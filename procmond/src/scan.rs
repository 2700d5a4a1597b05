//! One scan's output and its wire form.
//!
//! A [`Scan`] is what one scan has to say: new instances in full, exited
//! instances, a sample of every other live instance, and records that
//! changed after they were sent. [`Scan::into_batches`] splits it into
//! `ScanBatch` chunks; [`Scan::merge`] folds a newer scan into one that
//! could not be sent yet, so an agent that falls behind receives the latest
//! state rather than a growing queue.

use std::collections::HashMap;

use prost::Message as _;
use sentineld_proto::audit::{ScanDigest, ScanSummary};
use sentineld_proto::v1::{InstanceRef, ProcessRecord, Sample, ScanBatch, ScanStats};

/// Default largest number of records (started + exited + samples +
/// updated) in one chunk.
pub const DEFAULT_CHUNK_RECORDS: usize = 1000;

/// Largest encoded size of the records of one chunk. A chunk is cut early
/// when the next record would pass it, so chunks stay well below the
/// frame limit whatever the command lines hold.
pub const MAX_CHUNK_BYTES: usize = sentineld_proto::MAX_FRAME_LEN / 2;

/// What one scan reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    pub scan_seq: u64,
    /// When the scan started, unix milliseconds.
    pub time_ms: i64,
    /// How long the scan took, microseconds.
    pub duration_us: u64,
    /// `started` lists every live instance.
    pub snapshot: bool,
    /// Live instances after the scan.
    pub process_count: u32,
    pub stats: ScanStats,
    /// Full records, each with its sample inside, by pid.
    pub started: Vec<ProcessRecord>,
    pub exited: Vec<InstanceRef>,
    pub samples: Vec<Sample>,
    pub updated: Vec<ProcessRecord>,
}

fn key_of(instance: Option<InstanceRef>) -> (u32, i64) {
    instance.map_or((0, 0), |i| (i.pid, i.start_time))
}

impl Scan {
    /// Records in the scan (each list entry counts one).
    pub fn records(&self) -> usize {
        self.started.len() + self.exited.len() + self.samples.len() + self.updated.len()
    }

    /// Splits the scan into chunks of at most `max_records` records (and at
    /// most [`MAX_CHUNK_BYTES`] of them), in the order started, updated,
    /// samples, exited. Every chunk carries `scan_seq`, `time_ms` and
    /// `snapshot`; only the last has `last_chunk`, `duration_us`,
    /// `process_count` and `stats`. A scan with nothing to say is one empty
    /// last chunk.
    pub fn into_batches(self, max_records: usize) -> Vec<ScanBatch> {
        let mut done = Vec::with_capacity(self.records() / max_records.max(1) + 1);
        self.for_each_batch(max_records, std::iter::empty(), |b| done.push(b));
        done
    }

    /// The audit ledger's summary of the scan with `more_started` after
    /// its `started`: what [`ScanDigest`] gives over its chunks, computed
    /// from the records in place, without making the chunks.
    pub fn summary<'a>(
        &self,
        more_started: impl Iterator<Item = &'a ProcessRecord>,
    ) -> ScanSummary {
        let mut d = ScanDigest::new();
        self.started.iter().for_each(|r| d.started(r));
        more_started.for_each(|r| d.started(r));
        self.updated.iter().for_each(|r| d.updated(r));
        self.samples.iter().for_each(|s| d.sample(s));
        self.exited.iter().for_each(|e| d.exited(e));
        d.finish_with(ScanBatch {
            scan_seq: self.scan_seq,
            time_ms: self.time_ms,
            snapshot: self.snapshot,
            duration_us: self.duration_us,
            process_count: self.process_count,
            stats: Some(self.stats.clone()),
            ..ScanBatch::default()
        })
    }

    /// [`into_batches`](Scan::into_batches), handing each chunk to `f` as
    /// soon as it is full, so that only one is built at a time (a snapshot
    /// of 10,000 processes is ten of them). `more_started` follow
    /// `started` (a snapshot's records, taken one at a time).
    pub fn for_each_batch(
        self,
        max_records: usize,
        more_started: impl Iterator<Item = ProcessRecord>,
        f: impl FnMut(ScanBatch),
    ) {
        let head = ScanBatch {
            scan_seq: self.scan_seq,
            time_ms: self.time_ms,
            snapshot: self.snapshot,
            ..ScanBatch::default()
        };
        let mut chunks = Chunks {
            current: head.clone(),
            head,
            max_records: max_records.max(1),
            sent: 0,
            f,
            records: 0,
            bytes: 0,
        };
        for r in self.started.into_iter().chain(more_started) {
            let len = r.encoded_len();
            chunks.push(len, |b| b.started.push(r));
        }
        for r in self.updated {
            let len = r.encoded_len();
            chunks.push(len, |b| b.updated.push(r));
        }
        for s in self.samples {
            let len = s.encoded_len();
            chunks.push(len, |b| b.samples.push(s));
        }
        for e in self.exited {
            let len = e.encoded_len();
            chunks.push(len, |b| b.exited.push(e));
        }
        let Chunks {
            current: mut last,
            sent,
            mut f,
            ..
        } = chunks;
        last.chunk = sent;
        last.last_chunk = true;
        last.duration_us = self.duration_us;
        last.process_count = self.process_count;
        last.stats = Some(self.stats);
        f(last);
    }

    /// Folds `newer` (the next scan) into this unsent one, so that sending
    /// the result tells the receiver what sending both would have. The
    /// result takes the newer scan's number, time and totals.
    pub fn merge(&mut self, newer: Scan) {
        if newer.snapshot {
            *self = newer;
            return;
        }
        let mut started: HashMap<(u32, i64), usize> = self
            .started
            .iter()
            .enumerate()
            .map(|(i, r)| (key_of(r.instance), i))
            .collect();
        let mut updated: HashMap<(u32, i64), usize> = self
            .updated
            .iter()
            .enumerate()
            .map(|(i, r)| (key_of(r.instance), i))
            .collect();
        let mut samples: HashMap<(u32, i64), usize> = self
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| (key_of(s.instance), i))
            .collect();

        for r in newer.started {
            started.insert(key_of(r.instance), self.started.len());
            self.started.push(r);
        }
        for r in newer.updated {
            let key = key_of(r.instance);
            if let Some(&i) = started.get(&key) {
                // Not sent yet: send the newer record as the start.
                let first = self.started[i].sample.take();
                self.started[i] = r;
                if self.started[i].sample.is_none() {
                    self.started[i].sample = first;
                }
            } else if let Some(&i) = updated.get(&key) {
                self.updated[i] = r;
            } else {
                updated.insert(key, self.updated.len());
                self.updated.push(r);
            }
        }
        for s in newer.samples {
            let key = key_of(s.instance);
            if let Some(&i) = started.get(&key) {
                self.started[i].sample = Some(s);
            } else if let Some(&i) = samples.get(&key) {
                self.samples[i] = s;
            } else {
                samples.insert(key, self.samples.len());
                self.samples.push(s);
            }
        }
        self.exited.extend(newer.exited);

        self.scan_seq = newer.scan_seq;
        self.time_ms = newer.time_ms;
        self.duration_us = newer.duration_us;
        self.process_count = newer.process_count;
        self.stats = ScanStats {
            vanished: self.stats.vanished.saturating_add(newer.stats.vanished),
            unreadable: self.stats.unreadable.saturating_add(newer.stats.unreadable),
            hash_pending: newer.stats.hash_pending,
            ..newer.stats
        };
    }
}

struct Chunks<F> {
    head: ScanBatch,
    max_records: usize,
    /// Chunks handed to `f` so far.
    sent: u32,
    f: F,
    current: ScanBatch,
    records: usize,
    bytes: usize,
}

impl<F: FnMut(ScanBatch)> Chunks<F> {
    fn push(&mut self, len: usize, add: impl FnOnce(&mut ScanBatch)) {
        if self.records >= self.max_records
            || (self.records > 0 && self.bytes + len > MAX_CHUNK_BYTES)
        {
            let mut full = std::mem::replace(&mut self.current, self.head.clone());
            full.chunk = self.sent;
            self.sent = self.sent.saturating_add(1);
            (self.f)(full);
            self.records = 0;
            self.bytes = 0;
        }
        add(&mut self.current);
        self.records += 1;
        // Tag and length prefix of the repeated field, at most 6 bytes.
        self.bytes += len + 6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(pid: u32) -> InstanceRef {
        InstanceRef {
            pid,
            start_time: 1000 + i64::from(pid),
        }
    }

    fn sample(pid: u32, rss: u64) -> Sample {
        Sample {
            instance: Some(instance(pid)),
            rss_bytes: rss,
            status: "S".into(),
            ..Sample::default()
        }
    }

    fn record(pid: u32) -> ProcessRecord {
        ProcessRecord {
            instance: Some(instance(pid)),
            name: format!("p{pid}"),
            sample: Some(sample(pid, 1)),
            ..ProcessRecord::default()
        }
    }

    fn scan(seq: u64, started: &[u32], exited: &[u32], samples: &[u32], updated: &[u32]) -> Scan {
        Scan {
            scan_seq: seq,
            time_ms: 5_000 + seq as i64,
            duration_us: 77,
            process_count: 9,
            stats: ScanStats {
                vanished: 1,
                unreadable: 2,
                hash_pending: 3,
                ..ScanStats::default()
            },
            started: started.iter().map(|&p| record(p)).collect(),
            exited: exited.iter().map(|&p| instance(p)).collect(),
            samples: samples.iter().map(|&p| sample(p, 2)).collect(),
            updated: updated.iter().map(|&p| record(p)).collect(),
            ..Scan::default()
        }
    }

    #[test]
    fn chunks_hold_at_most_n_records() {
        let s = scan(4, &[1, 2, 3], &[20, 21], &[10, 11, 12], &[30]);
        assert_eq!(s.records(), 9);
        let batches = s.into_batches(4);
        assert_eq!(batches.len(), 3);
        let counts: Vec<usize> = batches
            .iter()
            .map(|b| b.started.len() + b.exited.len() + b.samples.len() + b.updated.len())
            .collect();
        assert_eq!(counts, vec![4, 4, 1]);
        for (i, b) in batches.iter().enumerate() {
            assert_eq!(b.chunk, i as u32);
            assert_eq!(b.scan_seq, 4);
            assert_eq!(b.time_ms, 5_004);
            let last = i == batches.len() - 1;
            assert_eq!(b.last_chunk, last);
            assert_eq!(b.duration_us, if last { 77 } else { 0 });
            assert_eq!(b.process_count, if last { 9 } else { 0 });
            assert_eq!(b.stats.is_some(), last);
        }
        // Order: started, updated, samples, exited.
        assert_eq!(batches[0].started.len(), 3);
        assert_eq!(batches[0].updated.len(), 1);
        assert_eq!(batches[1].samples.len(), 3);
        assert_eq!(batches[1].exited.len(), 1);
        assert_eq!(batches[2].exited, vec![instance(21)]);
    }

    #[test]
    fn exact_multiple_and_empty_scans() {
        let batches = scan(1, &[1, 2], &[], &[3, 4], &[]).into_batches(2);
        assert_eq!(batches.len(), 2);
        assert!(batches[1].last_chunk);
        assert_eq!(batches[1].samples.len(), 2);

        let mut empty = scan(2, &[], &[], &[], &[]);
        empty.snapshot = true;
        let batches = empty.into_batches(1000);
        assert_eq!(batches.len(), 1);
        assert!(batches[0].last_chunk && batches[0].snapshot);
        assert_eq!(batches[0].chunk, 0);

        let batches = scan(3, &[1, 2, 3], &[], &[], &[]).into_batches(0);
        assert_eq!(batches.len(), 3, "a zero limit means one record per chunk");
    }

    #[test]
    fn chunks_are_cut_by_size() {
        let mut s = scan(1, &[1, 2, 3], &[], &[], &[]);
        for r in &mut s.started {
            r.cmdline = vec!["x".repeat(MAX_CHUNK_BYTES / 2)];
        }
        let batches = s.into_batches(1000);
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| b.started.len() == 1));
    }

    #[test]
    fn snapshot_flag_on_every_chunk() {
        let mut s = scan(1, &[1, 2, 3], &[], &[], &[]);
        s.snapshot = true;
        assert!(s.into_batches(1).iter().all(|b| b.snapshot));
    }

    #[test]
    fn merge_keeps_what_both_said() {
        let mut older = scan(1, &[1, 2], &[9], &[5, 6], &[7]);
        let mut newer = scan(2, &[3], &[2, 6], &[1, 5], &[1, 7, 8]);
        newer.samples[0].rss_bytes = 42; // pid 1
        newer.updated[0].name = "renamed".into(); // pid 1
        newer.stats.hash_pending = 0;
        older.merge(newer);

        assert_eq!(older.scan_seq, 2);
        assert_eq!(older.time_ms, 5_002);
        let started: Vec<u32> = older
            .started
            .iter()
            .map(|r| r.instance.map_or(0, |i| i.pid))
            .collect();
        assert_eq!(started, vec![1, 2, 3]);
        // The unsent start of pid 1 carries its newer record and sample.
        assert_eq!(older.started[0].name, "renamed");
        assert_eq!(
            older.started[0].sample.as_ref().map(|s| s.rss_bytes),
            Some(42)
        );
        // Updates of instances already sent are kept, the newest wins.
        let updated: Vec<u32> = older
            .updated
            .iter()
            .map(|r| r.instance.map_or(0, |i| i.pid))
            .collect();
        assert_eq!(updated, vec![7, 8]);
        let samples: Vec<(u32, u64)> = older
            .samples
            .iter()
            .map(|s| (s.instance.map_or(0, |i| i.pid), s.rss_bytes))
            .collect();
        assert_eq!(samples, vec![(5, 2), (6, 2)]);
        let exited: Vec<u32> = older.exited.iter().map(|i| i.pid).collect();
        assert_eq!(exited, vec![9, 2, 6]);
        assert_eq!(
            older.stats,
            ScanStats {
                vanished: 2,
                unreadable: 4,
                hash_pending: 0,
                ..ScanStats::default()
            }
        );
    }

    #[test]
    fn a_snapshot_replaces_what_was_pending() {
        let mut older = scan(1, &[1], &[2], &[3], &[4]);
        let mut snap = scan(2, &[1, 3, 5], &[], &[], &[]);
        snap.snapshot = true;
        older.merge(snap.clone());
        assert_eq!(older, snap);
    }

    #[test]
    fn the_summary_in_place_is_the_summary_of_the_chunks() {
        let more: Vec<ProcessRecord> = [7, 8, 9].map(record).to_vec();
        let mut with_more = scan(4, &[1, 2], &[3], &[4, 5, 6], &[10]);
        with_more.snapshot = true;
        let in_place = with_more.summary(more.iter());
        for chunk in [1, 2, 1000] {
            let mut chunks = Vec::new();
            with_more
                .clone()
                .for_each_batch(chunk, more.iter().cloned(), |b| chunks.push(b));
            assert_eq!(
                sentineld_proto::audit::scan_summary(&chunks),
                in_place,
                "{chunk} per chunk"
            );
        }
        assert_eq!(in_place.started, 5);
        assert_ne!(in_place, with_more.summary(std::iter::empty()));
    }
}
