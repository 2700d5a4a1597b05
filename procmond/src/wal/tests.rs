#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message as _;
use sentineld_proto::v1::{InstanceRef, ProcessRecord, Sample, ScanBatch};
use tempfile::TempDir;

use crate::wal::format::{self, encode_entry, frame_len, reclaimable};
use crate::wal::{RecoveryReport, SyncPolicy, Wal, WalConfig, WalError};

/// A tiny deterministic generator (xorshift64).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn instance(pid: u32) -> InstanceRef {
    InstanceRef {
        pid,
        start_time: 1_700_000_000 + i64::from(pid),
    }
}

fn sample(pid: u32) -> Sample {
    Sample {
        instance: Some(instance(pid)),
        cpu_percent: 1.5,
        rss_bytes: 4096 * u64::from(pid),
        vms_bytes: 8192 * u64::from(pid),
        threads: 3,
        open_fds: Some(12),
        status: "S".to_owned(),
        listening_ports: Vec::new(),
        swap_bytes: None,
    }
}

fn record(pid: u32) -> ProcessRecord {
    ProcessRecord {
        instance: Some(instance(pid)),
        ppid: 1,
        name: format!("proc-{pid}"),
        exe: format!("/usr/bin/proc-{pid}"),
        cmdline: vec![format!("proc-{pid}"), "--flag".to_owned()],
        sample: Some(sample(pid)),
        ..ProcessRecord::default()
    }
}

/// A batch of scan `scan` with `started` starts, `exited` exits and
/// `samples` samples, pids drawn from `scan` so batches differ.
fn batch(scan: u64, started: u32, exited: u32, samples: u32, last_chunk: bool) -> ScanBatch {
    let base = u32::try_from(scan).unwrap() * 1000;
    ScanBatch {
        scan_seq: scan,
        chunk: 0,
        last_chunk,
        time_ms: 1_700_000_000_000 + i64::try_from(scan).unwrap(),
        started: (0..started).map(|i| record(base + i)).collect(),
        exited: (0..exited).map(|i| instance(base + 100 + i)).collect(),
        samples: (0..samples).map(|i| sample(base + 200 + i)).collect(),
        ..ScanBatch::default()
    }
}

fn config(segment_bytes: u64, max_bytes: u64) -> WalConfig {
    WalConfig {
        segment_bytes,
        max_bytes,
        sync: SyncPolicy::EveryBatch,
    }
}

fn open(dir: &Path, config: WalConfig) -> (Wal, RecoveryReport) {
    Wal::open(dir, config).unwrap()
}

fn replay(wal: &Wal) -> Vec<(u64, ScanBatch)> {
    wal.unacked().collect::<Result<Vec<_>, _>>().unwrap()
}

/// Segment files on disk, in order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| format::parse_segment_name(n).is_some())
        })
        .collect();
    files.sort();
    files
}

fn frame_size(id: u64, b: &ScanBatch) -> u64 {
    encode_entry(id, b).unwrap().len() as u64
}

#[test]
fn segment_names_round_trip() {
    assert_eq!(format::segment_name(1), "wal-00000000000000000001.log");
    assert_eq!(
        format::parse_segment_name(&format::segment_name(u64::MAX)),
        Some(u64::MAX)
    );
    assert_eq!(format::parse_segment_name("wal-1.log"), None);
    assert_eq!(
        format::parse_segment_name("wal-0000000000000000000x.log"),
        None
    );
    assert_eq!(format::parse_segment_name("ack"), None);
}

#[test]
fn computed_frame_sizes_match_the_codec() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..200u64 {
        let id = rng.next() >> rng.below(64);
        let b = batch(
            round + 1,
            u32::try_from(rng.below(4)).unwrap(),
            u32::try_from(rng.below(4)).unwrap(),
            u32::try_from(rng.below(300)).unwrap(),
            rng.below(2) == 0,
        );
        let full = encode_entry(id, &b).unwrap().len();
        assert_eq!(frame_len(id, b.encoded_len()), full, "id {id}");
        let stripped = ScanBatch {
            samples: Vec::new(),
            samples_dropped: b.samples.len() as u32,
            ..b.clone()
        };
        let expected = if b.samples.is_empty() {
            0
        } else if format::droppable_without_samples(&b) {
            full
        } else {
            full - encode_entry(id, &stripped).unwrap().len()
        };
        assert_eq!(reclaimable(id, &b), expected, "id {id}");
    }
}

#[test]
fn ack_file_round_trip_and_rejects_damage() {
    let bytes = format::encode_ack(u64::MAX - 3).unwrap();
    assert_eq!(format::decode_ack(&bytes), Some(u64::MAX - 3));
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        assert_eq!(format::decode_ack(&bad), None, "byte {i} flipped");
    }
    assert_eq!(format::decode_ack(&bytes[..bytes.len() - 1]), None);
    assert_eq!(format::decode_ack(&[]), None);
}

#[test]
fn append_and_replay_in_order_across_reopen() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("wal");
    let (mut wal, report) = open(&dir, WalConfig::default());
    assert!(report.is_clean());
    assert_eq!(report.unacked, 0);
    let batches: Vec<ScanBatch> = (1..=10).map(|s| batch(s, 2, 1, 5, true)).collect();
    let ids: Vec<u64> = batches.iter().map(|b| wal.append(b).unwrap()).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    let expected: Vec<(u64, ScanBatch)> = ids.iter().copied().zip(batches).collect();
    assert_eq!(replay(&wal), expected);
    assert_eq!(wal.read_after(7, 2).unwrap(), expected[7..9].to_vec());
    let stats = wal.stats();
    assert_eq!(stats.appended, 10);
    assert_eq!(stats.entries_unacked, 10);
    assert_eq!(
        stats.bytes,
        fs::metadata(&segment_files(&dir)[0]).unwrap().len()
    );
    drop(wal);

    let (wal, report) = open(&dir, WalConfig::default());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        (report.segments, report.entries, report.unacked),
        (1, 10, 10)
    );
    assert_eq!(replay(&wal), expected);
    assert_eq!(wal.next_id(), 11);
}

#[cfg(unix)]
#[test]
fn directory_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("state").join("wal");
    let (_wal, _) = open(&dir, WalConfig::default());
    let mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_second_wal_on_the_same_directory_is_refused() {
    let tmp = TempDir::new().unwrap();
    let (_wal, _) = open(tmp.path(), WalConfig::default());
    let err = Wal::open(tmp.path(), WalConfig::default()).unwrap_err();
    assert!(matches!(err, WalError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another procmond"), "{err}");
}

#[test]
fn invalid_settings_are_refused() {
    let tmp = TempDir::new().unwrap();
    let err = Wal::open(tmp.path(), config(0, 100)).unwrap_err();
    assert!(matches!(err, WalError::Config { .. }), "{err}");
    let err = Wal::open(tmp.path(), config(100, 0)).unwrap_err();
    assert!(err.to_string().contains("--wal-max-bytes"), "{err}");
}

#[test]
fn rotation_by_size_makes_segments_named_after_their_first_id() {
    let tmp = TempDir::new().unwrap();
    let b = batch(1, 1, 0, 3, true);
    let one = frame_size(5, &b);
    let segment_bytes = one * 3;
    let (mut wal, _) = open(tmp.path(), config(segment_bytes, u64::MAX));
    for s in 1..=10 {
        wal.append(&batch(s, 1, 0, 3, true)).unwrap();
    }
    let files = segment_files(tmp.path());
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(wal.segment_count(), files.len());
    let mut total = 0;
    for file in &files {
        let len = fs::metadata(file).unwrap().len();
        assert!(len <= segment_bytes, "{} is {len} bytes", file.display());
        total += len;
        // The first entry's id is the file's name.
        let first = format::parse_segment_name(file.file_name().unwrap().to_str().unwrap());
        let mut reader = fs::File::open(file).unwrap();
        let entry = format::read_entry(&mut reader).unwrap().unwrap();
        assert_eq!(Some(entry.id), first);
    }
    assert_eq!(wal.bytes(), total);
    let ids: Vec<u64> = replay(&wal).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
}

#[test]
fn ack_deletes_segments_and_survives_reopen() {
    let tmp = TempDir::new().unwrap();
    let one = frame_size(5, &batch(1, 1, 1, 2, true));
    let cfg = config(one * 2, u64::MAX);
    let (mut wal, _) = open(tmp.path(), cfg);
    let batches: Vec<ScanBatch> = (1..=20).map(|s| batch(s, 1, 1, 2, true)).collect();
    for b in &batches {
        wal.append(b).unwrap();
    }
    let before = segment_files(tmp.path());
    assert!(before.len() >= 8, "{before:?}");

    wal.ack(11).unwrap();
    let after = segment_files(tmp.path());
    assert!(after.len() < before.len());
    for gone in before.iter().filter(|f| !after.contains(f)) {
        assert!(!gone.exists());
    }
    // Every file left holds an unacknowledged entry, or is the one that
    // holds the watermark.
    let first_left = format::parse_segment_name(after[0].file_name().unwrap().to_str().unwrap());
    assert!(first_left.unwrap() <= 12);
    let expected: Vec<(u64, ScanBatch)> = (12..=20).zip(batches[11..].iter().cloned()).collect();
    assert_eq!(replay(&wal), expected);
    assert_eq!(wal.stats().acked, 11);
    assert_eq!(wal.stats().entries_unacked, 9);
    // A stale or repeated ack changes nothing.
    wal.ack(3).unwrap();
    assert_eq!(wal.acked_through(), 11);
    drop(wal);

    let (mut wal, report) = open(tmp.path(), cfg);
    assert_eq!(report.acked_through, 11);
    assert_eq!(report.unacked, 9);
    assert_eq!(replay(&wal), expected);

    // Beyond the last id is clamped, so later appends are not hidden.
    wal.ack(1_000).unwrap();
    assert_eq!(wal.acked_through(), 20);
    assert!(replay(&wal).is_empty());
    assert_eq!(segment_files(tmp.path()).len(), 1);
    assert_eq!(
        wal.bytes(),
        0,
        "the fully acknowledged active segment is reset"
    );
    drop(wal);

    let (mut wal, report) = open(tmp.path(), cfg);
    assert_eq!((report.unacked, report.acked_through), (0, 20));
    assert_eq!(wal.append(&batches[0]).unwrap(), 21);
    assert_eq!(replay(&wal), vec![(21, batches[0].clone())]);
}

#[test]
fn acks_persist_under_the_interval_policy_on_sync_and_close() {
    let tmp = TempDir::new().unwrap();
    let cfg = WalConfig {
        sync: SyncPolicy::Interval(Duration::from_secs(3600)),
        ..WalConfig::default()
    };
    let (mut wal, _) = open(tmp.path(), cfg);
    for s in 1..=5 {
        wal.append(&batch(s, 1, 0, 1, true)).unwrap();
    }
    wal.ack(2).unwrap();
    assert!(
        !tmp.path().join("ack").exists(),
        "the watermark waits for the sync"
    );
    wal.sync_now().unwrap();
    assert!(tmp.path().join("ack").exists());
    wal.ack(3).unwrap();
    drop(wal);
    let (wal, report) = open(tmp.path(), cfg);
    assert_eq!(report.acked_through, 3);
    let ids: Vec<u64> = replay(&wal).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![4, 5]);
}

#[test]
fn an_invalid_ack_file_replays_everything() {
    let tmp = TempDir::new().unwrap();
    let (mut wal, _) = open(tmp.path(), WalConfig::default());
    for s in 1..=3 {
        wal.append(&batch(s, 1, 0, 1, true)).unwrap();
    }
    wal.ack(2).unwrap();
    drop(wal);
    fs::write(tmp.path().join("ack"), b"garbage").unwrap();
    let (wal, report) = open(tmp.path(), WalConfig::default());
    assert!(report.ack_file_invalid);
    assert!(!report.is_clean());
    assert_eq!(replay(&wal).len(), 3);
}

#[test]
fn leftover_temporary_files_are_removed() {
    let tmp = TempDir::new().unwrap();
    let (mut wal, _) = open(tmp.path(), WalConfig::default());
    wal.append(&batch(1, 1, 0, 1, true)).unwrap();
    drop(wal);
    let leftover = tmp.path().join("wal-00000000000000000001.log.tmp");
    fs::write(&leftover, b"half a rewrite").unwrap();
    let (wal, report) = open(tmp.path(), WalConfig::default());
    assert!(report.is_clean());
    assert!(!leftover.exists());
    assert_eq!(replay(&wal).len(), 1);
}

#[test]
fn torn_tail_is_truncated_reported_and_appends_continue() {
    let tmp = TempDir::new().unwrap();
    let (mut wal, _) = open(tmp.path(), WalConfig::default());
    let batches: Vec<ScanBatch> = (1..=5).map(|s| batch(s, 1, 1, 4, true)).collect();
    for b in &batches {
        wal.append(b).unwrap();
    }
    drop(wal);
    let file = segment_files(tmp.path()).pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    let last = frame_size(5, &batches[4]);
    // Cut the last entry short: a write the crash interrupted.
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let (mut wal, report) = open(tmp.path(), WalConfig::default());
    assert_eq!(report.truncated_bytes, last - 3);
    assert_eq!(report.corrupt_segment.as_deref(), Some(file.as_path()));
    assert_eq!(report.unacked, 4);
    assert_eq!(wal.stats().torn_tail_truncations, 1);
    assert_eq!(fs::metadata(&file).unwrap().len(), len - last);
    let expected: Vec<(u64, ScanBatch)> = (1..=4).zip(batches[..4].iter().cloned()).collect();
    assert_eq!(replay(&wal), expected);

    let id = wal.append(&batches[4]).unwrap();
    assert_eq!(id, 5);
    drop(wal);
    let (wal, report) = open(tmp.path(), WalConfig::default());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(replay(&wal).len(), 5);
}

#[test]
fn garbage_after_the_last_entry_is_truncated() {
    let tmp = TempDir::new().unwrap();
    let (mut wal, _) = open(tmp.path(), WalConfig::default());
    for s in 1..=3 {
        wal.append(&batch(s, 1, 0, 2, true)).unwrap();
    }
    drop(wal);
    let file = segment_files(tmp.path()).pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    let mut bytes = fs::read(&file).unwrap();
    // A huge length prefix: refused before anything is allocated.
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5, 6, 7]);
    fs::write(&file, &bytes).unwrap();

    let (mut wal, report) = open(tmp.path(), WalConfig::default());
    assert_eq!(report.truncated_bytes, 11);
    assert_eq!(report.unacked, 3);
    assert_eq!(fs::metadata(&file).unwrap().len(), len);
    assert_eq!(wal.append(&batch(4, 1, 0, 2, true)).unwrap(), 4);
    assert_eq!(replay(&wal).len(), 4);
}

#[test]
fn a_flipped_byte_in_the_last_segment_is_caught_by_the_crc() {
    let tmp = TempDir::new().unwrap();
    let (mut wal, _) = open(tmp.path(), WalConfig::default());
    let batches: Vec<ScanBatch> = (1..=5).map(|s| batch(s, 2, 1, 4, true)).collect();
    for b in &batches {
        wal.append(b).unwrap();
    }
    drop(wal);
    let file = segment_files(tmp.path()).pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    let third_at = frame_size(1, &batches[0]) + frame_size(2, &batches[1]);
    let mut bytes = fs::read(&file).unwrap();
    // Inside the third entry's payload, past its header.
    let at = usize::try_from(third_at).unwrap() + 30;
    bytes[at] ^= 0x40;
    fs::write(&file, &bytes).unwrap();

    let (wal, report) = open(tmp.path(), WalConfig::default());
    assert_eq!(report.corrupt_segment.as_deref(), Some(file.as_path()));
    assert_eq!(report.truncated_bytes, len - third_at);
    assert_eq!(report.entries, 2);
    let expected: Vec<(u64, ScanBatch)> = (1..=2).zip(batches[..2].iter().cloned()).collect();
    assert_eq!(replay(&wal), expected);
}

#[test]
fn a_corrupt_earlier_segment_keeps_its_valid_entries_and_its_file() {
    let tmp = TempDir::new().unwrap();
    let b = batch(1, 1, 1, 2, true);
    let one = frame_size(5, &b);
    let cfg = config(one * 3, u64::MAX);
    let (mut wal, _) = open(tmp.path(), cfg);
    for s in 1..=9 {
        wal.append(&batch(s, 1, 1, 2, true)).unwrap();
    }
    drop(wal);
    let files = segment_files(tmp.path());
    assert!(files.len() >= 3, "{files:?}");
    let first = &files[0];
    let len = fs::metadata(first).unwrap().len();
    let mut bytes = fs::read(first).unwrap();
    let second_at = usize::try_from(frame_size(1, &batch(1, 1, 1, 2, true))).unwrap();
    bytes[second_at + 20] ^= 0x01;
    fs::write(first, &bytes).unwrap();

    let (mut wal, report) = open(tmp.path(), cfg);
    assert_eq!(report.corrupt_segment.as_ref(), Some(first));
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(fs::metadata(first).unwrap().len(), len, "nothing deleted");
    let ids: Vec<u64> = replay(&wal).into_iter().map(|(id, _)| id).collect();
    let lost = len / one - 1;
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.len() as u64, 9 - lost);
    assert!(!ids.contains(&2));
    assert_eq!(ids.last(), Some(&9));
    // Once the entries before the damage are acknowledged, the file goes.
    wal.ack(1).unwrap();
    assert!(!first.exists());
}

#[test]
fn a_full_wal_drops_samples_oldest_first_and_counts_exactly() {
    let tmp = TempDir::new().unwrap();
    // Every scan: a chunk of samples only, then a last chunk with a start,
    // an exit and some samples.
    let mut all = Vec::new();
    for s in 1..=40 {
        all.push(batch(s, 0, 0, 30, false));
        all.push(batch(s, 1, 1, 10, true));
    }
    let full_size: u64 = all
        .iter()
        .enumerate()
        .map(|(i, b)| frame_size(i as u64 + 1, b))
        .sum();
    let max_bytes = full_size / 3;
    let cfg = config(max_bytes / 4, max_bytes);
    let (mut wal, _) = open(tmp.path(), cfg);
    let mut ids = Vec::new();
    for b in &all {
        ids.push(wal.append(b).unwrap());
        assert!(wal.bytes() <= max_bytes, "{} > {max_bytes}", wal.bytes());
        let on_disk: u64 = segment_files(tmp.path())
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum();
        assert_eq!(wal.bytes(), on_disk);
    }
    let kept = replay(&wal);
    let stats = wal.stats();
    assert!(stats.samples_dropped > 0);
    assert!(stats.batches_dropped > 0);

    // Every start and exit is still there, in order.
    let starts: Vec<_> = kept.iter().flat_map(|(_, b)| b.started.clone()).collect();
    let expected_starts: Vec<_> = all.iter().flat_map(|b| b.started.clone()).collect();
    assert_eq!(starts, expected_starts);
    let exits: Vec<_> = kept.iter().flat_map(|(_, b)| b.exited.clone()).collect();
    let expected_exits: Vec<_> = all.iter().flat_map(|b| b.exited.clone()).collect();
    assert_eq!(exits, expected_exits);
    // Every last chunk is kept.
    assert_eq!(kept.iter().filter(|(_, b)| b.last_chunk).count(), 40);

    // The counts are exact.
    let samples_in = all.iter().map(|b| b.samples.len() as u64).sum::<u64>();
    let samples_kept = kept
        .iter()
        .map(|(_, b)| b.samples.len() as u64)
        .sum::<u64>();
    assert_eq!(stats.samples_dropped, samples_in - samples_kept);
    assert_eq!(stats.batches_dropped, all.len() as u64 - kept.len() as u64);
    assert_eq!(stats.entries_unacked, kept.len() as u64);
    assert_eq!(stats.appends_refused, 0);

    // Oldest first: the kept entries that still have samples are the
    // newest, and they are exactly what was appended.
    let first_whole = kept
        .iter()
        .position(|(_, b)| !b.samples.is_empty())
        .unwrap();
    for (id, b) in &kept[first_whole..] {
        let i = ids.iter().position(|x| x == id).unwrap();
        assert_eq!(b, &all[i]);
    }
    for (_, b) in &kept[..first_whole] {
        assert!(b.samples.is_empty());
    }
    let count_before = kept.len();
    drop(wal);

    // The coalesced backlog survives a reopen.
    let (wal, report) = open(tmp.path(), cfg);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(replay(&wal).len(), count_before);
    assert_eq!(replay(&wal), kept);
}

#[test]
fn a_wal_that_cannot_make_room_refuses_the_append() {
    let tmp = TempDir::new().unwrap();
    // Starts only: nothing can be dropped.
    let b = batch(1, 3, 1, 0, true);
    let one = frame_size(9, &b);
    let max_bytes = one * 4 + one / 2;
    let (mut wal, _) = open(tmp.path(), config(one * 2, max_bytes));
    for s in 1..=4 {
        wal.append(&batch(s, 3, 1, 0, true)).unwrap();
    }
    let before = replay(&wal);
    let bytes = wal.bytes();
    let err = wal.append(&batch(5, 3, 1, 0, true)).unwrap_err();
    assert!(matches!(err, WalError::Full { .. }), "{err}");
    assert_eq!(err.reason(), "full");
    assert!(err.to_string().contains("--wal-max-bytes"), "{err}");
    assert_eq!(replay(&wal), before, "nothing changed");
    assert_eq!(wal.bytes(), bytes);
    let stats = wal.stats();
    assert_eq!(stats.appends_refused, 1);
    assert_eq!((stats.samples_dropped, stats.batches_dropped), (0, 0));

    // Acknowledging makes room again.
    wal.ack(2).unwrap();
    assert_eq!(wal.append(&batch(5, 3, 1, 0, true)).unwrap(), 5);
}

#[test]
fn the_new_batch_loses_its_samples_last() {
    let tmp = TempDir::new().unwrap();
    let small = batch(1, 1, 0, 0, true);
    let big = batch(2, 1, 0, 50, true);
    let max_bytes = frame_size(1, &small) * 2 + frame_size(3, &big) / 2;
    let (mut wal, _) = open(tmp.path(), config(u64::MAX, max_bytes));
    wal.append(&small).unwrap();
    wal.append(&batch(2, 1, 0, 0, true)).unwrap();
    let id = wal.append(&big).unwrap();
    let kept = replay(&wal);
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[2].0, id);
    assert_eq!(kept[2].1.started, big.started);
    assert!(kept[2].1.samples.is_empty());
    assert_eq!(wal.stats().samples_dropped, 50);
    assert_eq!(wal.stats().batches_dropped, 0);
}

#[test]
fn the_interval_policy_groups_syncs() {
    let tmp = TempDir::new().unwrap();
    let cfg = WalConfig {
        sync: SyncPolicy::Interval(Duration::from_secs(3600)),
        ..WalConfig::default()
    };
    let (mut wal, _) = open(&tmp.path().join("interval"), cfg);
    for s in 1..=50 {
        wal.append(&batch(s, 1, 0, 2, true)).unwrap();
    }
    assert_eq!(wal.stats().syncs, 0);
    assert!(!wal.needs_sync(), "the interval has not passed");
    wal.sync_now().unwrap();
    assert_eq!(wal.stats().syncs, 1);
    wal.sync_now().unwrap();
    assert_eq!(wal.stats().syncs, 1, "nothing new to sync");

    let (mut wal, _) = open(&tmp.path().join("every"), config(u64::MAX, u64::MAX));
    for s in 1..=50 {
        wal.append(&batch(s, 1, 0, 2, true)).unwrap();
    }
    assert_eq!(wal.stats().syncs, 50);
    assert!(!wal.needs_sync());

    let cfg = WalConfig {
        sync: SyncPolicy::Interval(Duration::ZERO),
        ..WalConfig::default()
    };
    let (mut wal, _) = open(&tmp.path().join("zero"), cfg);
    wal.append(&batch(1, 1, 0, 2, true)).unwrap();
    assert_eq!(wal.stats().syncs, 1, "an elapsed interval syncs on append");
}

/// Random appends, acks and reopens keep the replay equal to a model.
#[test]
fn random_operations_match_a_model() {
    let tmp = TempDir::new().unwrap();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for round in 0..6u64 {
        let dir = tmp.path().join(format!("round-{round}"));
        let segment_bytes = 200 + rng.below(3000);
        let cfg = WalConfig {
            segment_bytes,
            max_bytes: u64::MAX,
            sync: if rng.below(2) == 0 {
                SyncPolicy::EveryBatch
            } else {
                SyncPolicy::Interval(Duration::from_secs(3600))
            },
        };
        let (mut wal, _) = open(&dir, cfg);
        let mut model: VecDeque<(u64, ScanBatch)> = VecDeque::new();
        let mut last_id = 0;
        for step in 0..150u64 {
            match rng.below(10) {
                0..=5 => {
                    let b = batch(
                        step + 1,
                        u32::try_from(rng.below(3)).unwrap(),
                        u32::try_from(rng.below(3)).unwrap(),
                        u32::try_from(rng.below(40)).unwrap(),
                        rng.below(2) == 0,
                    );
                    let id = wal.append(&b).unwrap();
                    assert!(id > last_id);
                    last_id = id;
                    model.push_back((id, b));
                }
                6..=7 => {
                    let up_to = if model.is_empty() {
                        rng.below(last_id + 2)
                    } else {
                        let i = usize::try_from(rng.below(model.len() as u64)).unwrap();
                        model[i].0
                    };
                    wal.ack(up_to).unwrap();
                    while model.front().is_some_and(|(id, _)| *id <= up_to) {
                        model.pop_front();
                    }
                }
                8 => {
                    drop(wal);
                    let (reopened, report) = open(&dir, cfg);
                    assert!(report.is_clean(), "{report:?}");
                    assert_eq!(report.unacked, model.len() as u64);
                    wal = reopened;
                }
                _ => {
                    let after = model.front().map_or(0, |(id, _)| *id);
                    let rest: Vec<_> = model.iter().skip(1).take(3).cloned().collect();
                    assert_eq!(wal.read_after(after, 3).unwrap(), rest);
                }
            }
            assert_eq!(
                replay(&wal),
                Vec::from(model.clone()),
                "round {round} step {step}"
            );
            let stats = wal.stats();
            assert_eq!(stats.entries_unacked, model.len() as u64);
            let on_disk: u64 = segment_files(&dir)
                .iter()
                .map(|f| fs::metadata(f).unwrap().len())
                .sum();
            assert_eq!(stats.bytes, on_disk);
            assert_eq!(wal.segment_count(), segment_files(&dir).len());
        }
    }
}

/// Random appends, acks and reopens under a tight bound: whatever
/// coalescing does, the replay is the model minus counted drops.
#[test]
fn random_operations_under_a_tight_bound_count_every_drop() {
    let tmp = TempDir::new().unwrap();
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let mut coalesced = 0;
    for round in 0..4u64 {
        let dir = tmp.path().join(format!("round-{round}"));
        let max_bytes = 3_000 + rng.below(20_000);
        let cfg = config(max_bytes / (2 + rng.below(6)), max_bytes);
        let (mut wal, _) = open(&dir, cfg);
        let mut model: VecDeque<(u64, ScanBatch)> = VecDeque::new();
        let (mut samples_dropped, mut batches_dropped, mut refused) = (0u64, 0u64, 0u64);
        let mut last_id = 0;
        for step in 0..200u64 {
            match rng.below(10) {
                0..=6 => {
                    let b = batch(
                        step + 1,
                        u32::try_from(rng.below(2)).unwrap(),
                        u32::try_from(rng.below(2)).unwrap(),
                        u32::try_from(rng.below(30)).unwrap(),
                        rng.below(3) == 0,
                    );
                    match wal.append(&b) {
                        Ok(id) => {
                            last_id = id;
                            model.push_back((id, b));
                        }
                        Err(WalError::Full { .. }) => refused += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                7..=8 => {
                    let up_to = last_id.saturating_sub(rng.below(6));
                    wal.ack(up_to).unwrap();
                    while model.front().is_some_and(|(id, _)| *id <= up_to) {
                        model.pop_front();
                    }
                }
                _ => {
                    drop(wal);
                    let (reopened, report) = open(&dir, cfg);
                    assert!(report.is_clean(), "{report:?}");
                    wal = reopened;
                    // Counters start again with each open.
                    (samples_dropped, batches_dropped, refused) = (0, 0, 0);
                }
            }
            // Reconcile the model with what coalescing did.
            let kept = replay(&wal);
            let mut next = kept.iter().peekable();
            let mut reconciled = VecDeque::new();
            for (id, b) in model.drain(..) {
                if let Some((kid, kb)) = next.peek()
                    && *kid == id
                {
                    if *kb != b {
                        let stripped = ScanBatch {
                            samples: Vec::new(),
                            samples_dropped: b.samples_dropped + b.samples.len() as u32,
                            ..b.clone()
                        };
                        assert_eq!(*kb, stripped, "entry {id} changed beyond its samples");
                        samples_dropped += b.samples.len() as u64;
                    }
                    reconciled.push_back((id, kb.clone()));
                    next.next();
                } else {
                    assert!(
                        format::droppable_without_samples(&b) && !b.samples.is_empty(),
                        "entry {id} with records was dropped"
                    );
                    samples_dropped += b.samples.len() as u64;
                    batches_dropped += 1;
                }
            }
            assert!(
                next.next().is_none(),
                "the log holds an entry never appended"
            );
            model = reconciled;
            let stats = wal.stats();
            assert!(stats.bytes <= max_bytes, "round {round} step {step}");
            assert_eq!(stats.entries_unacked, model.len() as u64);
            assert_eq!(
                stats.samples_dropped, samples_dropped,
                "round {round} step {step}"
            );
            assert_eq!(
                stats.batches_dropped, batches_dropped,
                "round {round} step {step}"
            );
            assert_eq!(stats.appends_refused, refused, "round {round} step {step}");
        }
        coalesced += wal.stats().samples_dropped;
    }
    assert!(coalesced > 0, "the bound was never reached");
}

#[test]
fn the_backlog_version_moves_only_when_coalescing_rewrites_unacked_entries() {
    let tmp = TempDir::new().unwrap();
    let one = frame_size(1, &batch(1, 0, 0, 30, false));
    // Room for about six such batches in segments of two.
    let (mut wal, _) = open(tmp.path(), config(2 * one + 1, 6 * one + 1));
    let v0 = wal.backlog_version();
    let first = wal.append(&batch(1, 0, 0, 30, false)).unwrap();
    wal.append(&batch(2, 1, 0, 30, true)).unwrap();
    wal.ack(first).unwrap();
    assert_eq!(
        wal.backlog_version(),
        v0,
        "appends and acks rewrite nothing"
    );
    let before = replay(&wal);
    for s in 3..=12 {
        wal.append(&batch(s, 1, 0, 30, true)).unwrap();
    }
    assert!(
        wal.stats().samples_dropped > 0,
        "the bound forced coalescing"
    );
    assert_ne!(wal.backlog_version(), v0);
    assert_ne!(replay(&wal)[0], before[0], "an entry read before changed");
}
