//! Store tests against real redb files in temporary directories.

use std::path::{Path, PathBuf};

use redb::{
    ConcurrencyMode, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use sentineld_proto::v1::{ExeInfo, HashStatus, InstanceRef, ProcessRecord, Sample, ScanBatch};
use tempfile::TempDir;

use crate::store::schema::{
    self, BY_PID, EXITS, INSTANCES, LATEST, LIVE, META, RECENT, SAMPLE_BLOCKS, SAMPLES, SCAN_KEYS,
    SCANS, SampleBlock,
};
use crate::store::{BatchOutcome, ParentRef, Scope, Store, StoreError, StoreReader};

const BOOT: [u8; 16] = [
    0x1f, 0x2e, 0x3d, 0x4c, 0x5b, 0x6a, 0x79, 0x88, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1, 0x00,
];
const OTHER_BOOT: [u8; 16] = [7; 16];
const T0: i64 = 1_790_000_000_000;

fn start_of(pid: u32) -> i64 {
    1_789_000_000 + i64::from(pid)
}

fn instance(pid: u32) -> InstanceRef {
    InstanceRef {
        pid,
        start_time: start_of(pid),
    }
}

fn sample(pid: u32, cpu: f32) -> Sample {
    Sample {
        instance: Some(instance(pid)),
        cpu_percent: cpu,
        rss_bytes: 4096 * u64::from(pid),
        vms_bytes: 65536 * u64::from(pid),
        threads: 2,
        open_fds: Some(9),
        status: "S".into(),
        listening_ports: Vec::new(),
        swap_bytes: None,
    }
}

fn record(pid: u32) -> ProcessRecord {
    ProcessRecord {
        instance: Some(instance(pid)),
        ppid: 1,
        name: format!("proc-{pid}"),
        exe: "/usr/bin/proc".into(),
        cmdline: vec!["/usr/bin/proc".into(), format!("--id={pid}")],
        uid: Some(1000),
        user: "svc".into(),
        exe_info: Some(ExeInfo {
            hash_status: HashStatus::Pending as i32,
            size: 1234,
            ..ExeInfo::default()
        }),
        container_id: String::new(),
        parent_start_time: 1_788_000_000,
        sample: Some(sample(pid, 0.5)),
    }
}

fn scan(scan_seq: u64, time_ms: i64) -> ScanBatch {
    ScanBatch {
        scan_seq,
        last_chunk: true,
        time_ms,
        duration_us: 1500,
        ..ScanBatch::default()
    }
}

fn snapshot(scan_seq: u64, time_ms: i64, pids: &[u32]) -> ScanBatch {
    ScanBatch {
        snapshot: true,
        process_count: u32::try_from(pids.len()).unwrap(),
        started: pids.iter().map(|&p| record(p)).collect(),
        ..scan(scan_seq, time_ms)
    }
}

fn store_path(dir: &TempDir) -> PathBuf {
    dir.path().join("store.redb")
}

fn live_pids(reader: &StoreReader) -> Vec<u32> {
    reader
        .live()
        .unwrap()
        .iter()
        .map(|p| p.record.instance.unwrap().pid)
        .collect()
}

fn instance_key(boot: [u8; 16], pid: u32) -> schema::InstanceKey {
    (schema::boot_key(boot), start_of(pid), pid)
}

fn exit_time(path: &Path, boot: [u8; 16], pid: u32) -> Option<i64> {
    let db = reader_db(path);
    let txn = db.begin_read().unwrap();
    let exits = txn.open_table(EXITS).unwrap();
    exits
        .get(instance_key(boot, pid))
        .unwrap()
        .map(|v| v.value())
}

fn reader_db(path: &Path) -> redb::ReadOnlyDatabase {
    Database::builder()
        .set_concurrency_mode(ConcurrencyMode::SingleWriter)
        .open_read_only(path)
        .unwrap()
}

/// Rows in every table but `meta`, by table name.
fn row_counts(path: &Path) -> Vec<(&'static str, u64)> {
    let db = reader_db(path);
    let txn = db.begin_read().unwrap();
    fn len<K: redb::Key + 'static, V: redb::Value + 'static>(
        txn: &redb::ReadTransaction,
        def: TableDefinition<K, V>,
    ) -> u64 {
        txn.open_table(def).unwrap().len().unwrap()
    }
    vec![
        ("instances", len(&txn, INSTANCES)),
        ("by_pid", len(&txn, BY_PID)),
        ("live", len(&txn, LIVE)),
        ("latest", len(&txn, LATEST)),
        ("exits", len(&txn, EXITS)),
        // Samples moved out of staging: schema 1's, one an entry, and
        // those in blocks.
        (
            "samples",
            len(&txn, SAMPLES)
                + txn
                    .open_table(SAMPLE_BLOCKS)
                    .unwrap()
                    .iter()
                    .unwrap()
                    .map(|e| {
                        let (k, v) = e.unwrap();
                        SampleBlock::decode_at(Path::new("test"), v.value(), k.value())
                            .unwrap()
                            .samples
                            .len() as u64
                    })
                    .sum::<u64>(),
        ),
        ("recent_samples", len(&txn, RECENT)),
        ("scans", len(&txn, SCANS)),
        ("scan_keys", len(&txn, SCAN_KEYS)),
    ]
}

/// Opens the file as a plain redb database for writing (no `Store` open).
fn raw_writer(path: &Path) -> Database {
    Database::builder()
        .set_concurrency_mode(ConcurrencyMode::SingleWriter)
        .create(path)
        .unwrap()
}

/// A snapshot, a diff scan and a scan with an exit.
fn three_scans() -> Vec<ScanBatch> {
    let first = snapshot(1, T0, &[10, 11, 12]);
    let mut updated = record(11);
    updated.exe_info = Some(ExeInfo {
        sha256: vec![0xab; 32],
        hash_status: HashStatus::Ok as i32,
        size: 1234,
        ..ExeInfo::default()
    });
    let second = ScanBatch {
        started: vec![record(13)],
        updated: vec![updated],
        samples: vec![
            sample(10, 10.0),
            sample(11, 11.0),
            sample(12, 12.0),
            // Never started: skipped, not an error.
            sample(99, 99.0),
        ],
        process_count: 4,
        ..scan(2, T0 + 1000)
    };
    let third = ScanBatch {
        exited: vec![instance(10)],
        samples: vec![sample(11, 21.0), sample(12, 22.0), sample(13, 23.0)],
        process_count: 3,
        ..scan(3, T0 + 2000)
    };
    vec![first, second, third]
}

#[test]
fn stores_a_snapshot_a_diff_and_exits() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    let reader = StoreReader::open(&path).unwrap();
    let batches = three_scans();

    let outcome = store.apply_batch(BOOT, &batches[0]).unwrap();
    assert_eq!(
        outcome,
        BatchOutcome {
            scan_id: Some(1),
            records: 3
        }
    );
    assert_eq!(live_pids(&reader), [10, 11, 12]);

    let outcome = store.apply_batch(BOOT, &batches[1]).unwrap();
    assert_eq!(
        outcome,
        BatchOutcome {
            scan_id: Some(2),
            records: 6
        }
    );
    let live = reader.live().unwrap();
    assert_eq!(live.len(), 4);
    assert_eq!(live[0].boot_id, BOOT);
    assert_eq!(live[0].latest.as_ref().unwrap().cpu_percent, 10.0);
    // The started instance's latest sample is its record's first one.
    assert_eq!(live[3].latest.as_ref().unwrap().cpu_percent, 0.5);
    let view = live[1].view();
    assert_eq!(view.pid, 11);
    assert_eq!(view.hash_status, "ok");
    assert_eq!(view.sha256.as_deref(), Some("ab".repeat(32).as_str()));
    assert_eq!(view.cpu_percent, 11.0);

    let outcome = store.apply_batch(BOOT, &batches[2]).unwrap();
    assert_eq!(outcome.scan_id, Some(3));
    assert_eq!(live_pids(&reader), [11, 12, 13]);
    assert_eq!(exit_time(&path, BOOT, 10), Some(T0 + 2000));
    assert_eq!(exit_time(&path, BOOT, 11), None);

    let history = reader.history(10, None).unwrap();
    let times: Vec<i64> = history.iter().map(|p| p.time_ms).collect();
    assert_eq!(times, [T0, T0 + 1000]);
    assert_eq!(history[1].sample.cpu_percent, 10.0);
    assert_eq!(history[0].start_time, start_of(10));
    assert_eq!(history[0].boot_id, BOOT);
    let history = reader.history(11, None).unwrap();
    let cpu: Vec<f32> = history.iter().map(|p| p.sample.cpu_percent).collect();
    assert_eq!(cpu, [0.5, 11.0, 21.0]);
    let newest = reader.history(11, Some(2)).unwrap();
    assert_eq!(
        newest.iter().map(|p| p.time_ms).collect::<Vec<_>>(),
        [T0 + 1000, T0 + 2000]
    );
    assert!(reader.history(11, Some(0)).unwrap().is_empty());
    assert!(reader.history(99, None).unwrap().is_empty());

    let scans = reader.scans(None).unwrap();
    let summary: Vec<_> = scans
        .iter()
        .map(|s| (s.scan_id, s.started, s.exited, s.process_count, s.snapshot))
        .collect();
    assert_eq!(
        summary,
        [(3, 0, 1, 3, false), (2, 1, 0, 4, false), (1, 3, 0, 3, true)]
    );
    assert_eq!(scans[2].time_ms, T0);
    assert_eq!(scans[2].duration_us, 1500);
    assert_eq!(scans[2].boot_id, BOOT);
    let ids: Vec<u64> = reader
        .scans(Some(2))
        .unwrap()
        .iter()
        .map(|s| s.scan_id)
        .collect();
    assert_eq!(ids, [3, 2]);

    // Scan ids continue after a restart of the writer.
    drop(store);
    let mut store = Store::open(&path).unwrap();
    let outcome = store.apply_batch(BOOT, &scan(1, T0 + 9000)).unwrap();
    assert_eq!(outcome.scan_id, Some(4));
}

#[test]
fn snapshot_marks_absent_instances_exited() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    let reader = StoreReader::open(&path).unwrap();

    // Instances left over from an earlier boot are gone after any snapshot.
    store
        .apply_batch(OTHER_BOOT, &snapshot(1, T0 - 50_000, &[1, 2]))
        .unwrap();
    // A snapshot in two chunks.
    let mut chunk0 = snapshot(1, T0, &[1, 2, 3]);
    chunk0.last_chunk = false;
    let mut chunk1 = snapshot(1, T0, &[4, 5]);
    chunk1.chunk = 1;
    chunk1.process_count = 5;
    assert_eq!(store.apply_batch(BOOT, &chunk0).unwrap().scan_id, None);
    assert_eq!(store.apply_batch(BOOT, &chunk1).unwrap().scan_id, Some(2));
    assert_eq!(live_pids(&reader), [1, 2, 3, 4, 5]);
    assert_eq!(exit_time(&path, OTHER_BOOT, 1), Some(T0));
    assert_eq!(reader.scans(Some(1)).unwrap()[0].exited, 2);
    assert_eq!(reader.scans(Some(1)).unwrap()[0].started, 5);

    // The collector reconnects: a new snapshot without 3 and 5.
    let t = T0 + 5000;
    let mut chunk0 = snapshot(1, t, &[1, 2]);
    chunk0.last_chunk = false;
    let mut chunk1 = snapshot(1, t, &[4, 6]);
    chunk1.chunk = 1;
    store.apply_batch(BOOT, &chunk0).unwrap();
    // Nothing is reconciled before the last chunk.
    assert_eq!(live_pids(&reader), [1, 2, 3, 4, 5]);
    store.apply_batch(BOOT, &chunk1).unwrap();
    assert_eq!(live_pids(&reader), [1, 2, 4, 6]);
    assert_eq!(exit_time(&path, BOOT, 3), Some(t));
    assert_eq!(exit_time(&path, BOOT, 5), Some(t));
    assert_eq!(exit_time(&path, BOOT, 4), None);
    let row = &reader.scans(Some(1)).unwrap()[0];
    assert_eq!((row.started, row.exited, row.snapshot), (4, 2, true));

    // A snapshot with a missing chunk cannot tell absent from unsent.
    let t = T0 + 9000;
    let mut chunk0 = snapshot(1, t, &[1]);
    chunk0.last_chunk = false;
    let mut chunk2 = snapshot(1, t, &[2]);
    chunk2.chunk = 2;
    store.apply_batch(BOOT, &chunk0).unwrap();
    store.apply_batch(BOOT, &chunk2).unwrap();
    assert_eq!(live_pids(&reader), [1, 2, 4, 6]);

    // Nor can a snapshot received from its middle.
    let mut late = snapshot(1, t + 1000, &[1]);
    late.chunk = 1;
    store.apply_batch(BOOT, &late).unwrap();
    assert_eq!(live_pids(&reader), [1, 2, 4, 6]);

    // An instance marked exited by absence that shows up again is live.
    store
        .apply_batch(BOOT, &snapshot(1, T0 + 20_000, &[3]))
        .unwrap();
    assert_eq!(live_pids(&reader), [3]);
    assert_eq!(exit_time(&path, BOOT, 3), None);
    assert_eq!(exit_time(&path, BOOT, 1), Some(T0 + 20_000));
}

#[test]
fn reader_beside_the_writer_sees_each_commit() {
    // redb's range locks are per open file description, so a reader in the
    // same process shares the file with the writer as another process would.
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    let reader = StoreReader::open(&path).unwrap();
    assert!(reader.live().unwrap().is_empty());
    assert!(reader.scans(None).unwrap().is_empty());
    for (i, batch) in three_scans().iter().enumerate() {
        store.apply_batch(BOOT, batch).unwrap();
        assert_eq!(reader.scans(None).unwrap().len(), i + 1);
    }
    assert_eq!(live_pids(&reader), [11, 12, 13]);
    // A second reader, and the reader after the writer closed.
    assert_eq!(
        StoreReader::open(&path).unwrap().scans(None).unwrap().len(),
        3
    );
    drop(store);
    assert_eq!(reader.scans(None).unwrap().len(), 3);
}

#[test]
fn a_second_writer_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let _store = Store::open(&path).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("--state-dir"), "{err}");
}

#[test]
fn a_missing_store_is_not_found() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let err = StoreReader::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { path: p } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("--state-dir"), "{err}");
    // Opening for reading did not create it.
    assert!(!path.exists());
}

#[test]
fn a_file_that_is_not_redb_is_not_a_store() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let junk: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &junk).unwrap();

    let err = StoreReader::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is not a SentinelD store"),
        "{err}"
    );
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    // The writer left the file as it was.
    assert_eq!(std::fs::read(&path).unwrap(), junk);

    std::fs::write(&path, b"").unwrap();
    let err = StoreReader::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
}

#[test]
fn a_foreign_redb_file_is_not_a_store() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    {
        let db = raw_writer(&path);
        let txn = db.begin_write().unwrap();
        let other: TableDefinition<u64, u64> = TableDefinition::new("other");
        txn.open_table(other).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let err = StoreReader::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");

    // A meta table that names another product.
    {
        let db = raw_writer(&path);
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("magic", b"other-product".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = StoreReader::open(&path).unwrap_err();
    assert!(err.to_string().contains("other-product"), "{err}");
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    drop(Store::open(&path).unwrap());
    {
        let db = raw_writer(&path);
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 3u64.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    for err in [
        StoreReader::open(&path).unwrap_err(),
        Store::open(&path).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                StoreError::SchemaVersion {
                    found: 3,
                    expected: 2,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn an_undecodable_value_is_corrupt_not_a_panic() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    {
        let mut store = Store::open(&path).unwrap();
        for batch in three_scans() {
            store.apply_batch(BOOT, &batch).unwrap();
        }
        store.compact_samples().unwrap();
    }
    // 0xff is a field key with wire type 7, which protobuf does not have.
    let garbage = [0xffu8, 0xff, 0xff];
    {
        let db = raw_writer(&path);
        let txn = db.begin_write().unwrap();
        txn.open_table(INSTANCES)
            .unwrap()
            .insert(instance_key(BOOT, 12), garbage.as_slice())
            .unwrap();
        txn.open_table(SCANS)
            .unwrap()
            .insert(2, garbage.as_slice())
            .unwrap();
        txn.open_table(SAMPLES)
            .unwrap()
            .insert(
                (schema::boot_key(BOOT), start_of(11), 11, T0),
                garbage.as_slice(),
            )
            .unwrap();
        txn.commit().unwrap();
    }
    let reader = StoreReader::open(&path).unwrap();
    let err = reader.live().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("table instances") && text.contains("pid 12"),
        "{text}"
    );
    let err = reader.scans(None).unwrap_err();
    assert!(err.to_string().contains("table scans, key 2"), "{err}");
    // The newest row decodes; reading back to the bad one fails.
    assert_eq!(reader.scans(Some(1)).unwrap()[0].scan_id, 3);
    let err = reader.history(11, None).unwrap_err();
    assert!(err.to_string().contains("table samples"), "{err}");
    assert_eq!(reader.history(11, Some(2)).unwrap().len(), 2);
}

#[test]
fn replaying_batches_stores_nothing_twice() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    let batches = three_scans();
    let first: Vec<BatchOutcome> = batches
        .iter()
        .map(|b| store.apply_batch(BOOT, b).unwrap())
        .collect();
    let counts = row_counts(&path);
    assert_eq!(
        counts,
        [
            ("instances", 4),
            ("by_pid", 4),
            ("live", 3),
            ("latest", 4),
            ("exits", 1),
            // 3 first samples, 3 + 1 in scan 2, 3 in scan 3, all staged.
            ("samples", 0),
            ("recent_samples", 10),
            ("scans", 3),
            ("scan_keys", 3),
        ]
    );
    let before = StoreReader::open(&path).unwrap().scans(None).unwrap();

    // The whole sequence again, then one batch on its own again.
    let again: Vec<BatchOutcome> = batches
        .iter()
        .map(|b| store.apply_batch(BOOT, b).unwrap())
        .collect();
    assert_eq!(again, first);
    assert_eq!(store.apply_batch(BOOT, &batches[1]).unwrap(), first[1]);
    assert_eq!(row_counts(&path), counts);
    let reader = StoreReader::open(&path).unwrap();
    assert_eq!(reader.scans(None).unwrap(), before);
    assert_eq!(exit_time(&path, BOOT, 10), Some(T0 + 2000));
    assert_eq!(live_pids(&reader), [11, 12, 13]);

    // Once moved out of staging, a replay stages its samples again; they
    // are read once, and moved once more without adding rows.
    let history = reader.history(11, None).unwrap();
    assert_eq!(store.compact_samples().unwrap(), 10);
    let moved: Vec<(&str, u64)> = counts
        .iter()
        .map(|&(t, n)| match t {
            "samples" => (t, 10),
            "recent_samples" => (t, 0),
            _ => (t, n),
        })
        .collect();
    assert_eq!(row_counts(&path), moved);
    assert_eq!(reader.history(11, None).unwrap(), history);
    store.apply_batch(BOOT, &batches[1]).unwrap();
    assert_eq!(reader.history(11, None).unwrap(), history);
    assert_eq!(store.compact_samples().unwrap(), 4);
    assert_eq!(row_counts(&path), moved);
    assert_eq!(reader.history(11, None).unwrap(), history);
}

#[test]
fn entries_without_an_instance_are_skipped() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    let mut nameless = record(5);
    nameless.instance = None;
    let batch = ScanBatch {
        started: vec![nameless, record(6)],
        samples: vec![Sample::default()],
        exited: vec![instance(77)],
        ..scan(1, T0)
    };
    let outcome = store.apply_batch(BOOT, &batch).unwrap();
    assert_eq!(outcome.records, 4);
    let reader = StoreReader::open(&path).unwrap();
    assert_eq!(live_pids(&reader), [6]);
    assert_eq!(reader.scans(None).unwrap()[0].started, 1);
}

#[test]
fn a_scan_row_carries_the_ledger_digest_of_what_arrived() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    let reader = StoreReader::open(&path).unwrap();

    let mut chunk0 = snapshot(1, T0, &[1, 2, 3]);
    chunk0.last_chunk = false;
    let mut chunk1 = snapshot(1, T0, &[4, 5]);
    chunk1.chunk = 1;
    store.apply_batch(BOOT, &chunk0).unwrap();
    store.apply_batch(BOOT, &chunk1).unwrap();
    let row = reader.scans(Some(1)).unwrap().remove(0);
    assert_eq!(
        row.digest,
        Some(sentineld_proto::audit::scan_digest(&[
            chunk0,
            chunk1.clone()
        ]))
    );
    assert_eq!((row.scan_seq, row.chunks, row.chunks_sent), (1, 2, 2));
    assert!(row.is_whole());

    // A replay of the last chunk keeps the row stored first.
    store.apply_batch(BOOT, &chunk1).unwrap();
    assert_eq!(reader.scans(None).unwrap().len(), 1);

    // A scan whose first chunk never arrived, and one the collector's WAL
    // stripped of samples: stored, marked as not whole.
    let mut late = scan(2, T0 + 1000);
    late.chunk = 1;
    store.apply_batch(BOOT, &late).unwrap();
    let row = reader.scans(Some(1)).unwrap().remove(0);
    assert_eq!((row.chunks, row.chunks_sent), (1, 2));
    assert!(!row.is_whole());
    let mut stripped = scan(3, T0 + 2000);
    stripped.samples_dropped = 7;
    store.apply_batch(BOOT, &stripped).unwrap();
    let row = reader.scans(Some(1)).unwrap().remove(0);
    assert_eq!(row.samples_dropped, 7);
    assert!(!row.is_whole());
    assert_eq!(
        row.digest,
        Some(sentineld_proto::audit::scan_digest(&[stripped]))
    );
}

/// Scan 1 (T0) a snapshot of 10-14; scans 2-20 one second apart with a
/// sample of each live instance; 10 exits at scan 3, 11 at scan 15.
fn twenty_scans() -> Vec<ScanBatch> {
    let mut batches = vec![snapshot(1, T0, &[10, 11, 12, 13, 14])];
    for seq in 2..=20_u64 {
        let time = T0 + 1000 * i64::try_from(seq).unwrap();
        let mut exited = Vec::new();
        let live: Vec<u32> = (10..=14)
            .filter(|&pid| {
                let gone_at = match pid {
                    10 => 3,
                    11 => 15,
                    _ => u64::MAX,
                };
                if seq == gone_at {
                    exited.push(instance(pid));
                }
                seq < gone_at
            })
            .collect();
        batches.push(ScanBatch {
            samples: live.iter().map(|&p| sample(p, 1.0)).collect(),
            exited,
            process_count: u32::try_from(live.len()).unwrap(),
            ..scan(seq, time)
        });
    }
    batches
}

fn sample_times(reader: &StoreReader, pid: u32) -> Vec<i64> {
    reader
        .history(pid, None)
        .unwrap()
        .iter()
        .map(|p| p.time_ms)
        .collect()
}

#[test]
fn retention_removes_old_samples_exited_instances_and_scans_in_any_batch_size() {
    let cutoff = T0 + 10_000;
    let mut expected_counts = None;
    for batch in [1, 3, 7, 1000] {
        let dir = TempDir::new().unwrap();
        let path = store_path(&dir);
        let mut store = Store::open(&path).unwrap();
        for b in twenty_scans() {
            store.apply_batch(BOOT, &b).unwrap();
        }
        let pruner = store.pruner().with_batch(batch);
        let pruned = pruner.prune(cutoff, || false).unwrap();
        assert_eq!(
            (pruned.samples, pruned.instances, pruned.scans),
            // 10: its 2 samples; 11-14: 9 samples each before the cutoff
            // (T0 and scans 2-9); scans 1-9.
            (38, 1, 9),
            "batch {batch}"
        );
        assert!(!pruned.interrupted);
        if batch == 1 {
            assert!(pruned.transactions > 38, "one entry per transaction");
        }

        let reader = StoreReader::open(&path).unwrap();
        assert!(sample_times(&reader, 10).is_empty(), "batch {batch}");
        assert!(exit_time(&path, BOOT, 10).is_none());
        assert_eq!(
            sample_times(&reader, 11),
            (10..=14).map(|s| T0 + s * 1000).collect::<Vec<_>>(),
            "an instance that exited after the cutoff keeps its newer samples"
        );
        assert_eq!(exit_time(&path, BOOT, 11), Some(T0 + 15_000));
        assert_eq!(
            sample_times(&reader, 12),
            (10..=20).map(|s| T0 + s * 1000).collect::<Vec<_>>()
        );
        assert_eq!(live_pids(&reader), vec![12, 13, 14]);
        let scans = reader.scans(None).unwrap();
        assert_eq!(scans.len(), 11);
        assert!(scans.iter().all(|s| s.time_ms >= cutoff));

        let counts = row_counts(&path);
        if let Some(expected) = &expected_counts {
            assert_eq!(&counts, expected, "batch {batch}");
        }
        expected_counts = Some(counts);

        // A second pass finds nothing; the writer goes on.
        assert!(pruner.prune(cutoff, || false).unwrap().is_empty());
        let next = ScanBatch {
            samples: vec![sample(12, 2.0)],
            process_count: 3,
            ..scan(21, T0 + 21_000)
        };
        assert!(store.apply_batch(BOOT, &next).unwrap().scan_id.is_some());
        assert_eq!(sample_times(&reader, 12).last(), Some(&(T0 + 21_000)));
    }
}

#[test]
fn an_interrupted_retention_pass_keeps_what_it_did_and_the_next_finishes() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    for b in twenty_scans() {
        store.apply_batch(BOOT, &b).unwrap();
    }
    let pruner = store.pruner().with_batch(2);
    let asked = std::cell::Cell::new(0);
    let first = pruner
        .prune(T0 + 10_000, || {
            asked.set(asked.get() + 1);
            asked.get() > 3
        })
        .unwrap();
    assert!(first.interrupted);
    assert_eq!(first.transactions, 3);
    let rest = pruner.prune(T0 + 10_000, || false).unwrap();
    assert_eq!(first.samples + rest.samples, 38);
    assert_eq!(first.instances + rest.instances, 1);
    assert_eq!(first.scans + rest.scans, 9);
}

#[test]
fn a_parent_is_the_recorded_instance_else_the_newest_of_its_pid_in_scope() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    let at = |pid: u32, start: i64| InstanceRef {
        pid,
        start_time: start,
    };
    let child = |pid: u32, start: i64, ppid: u32, parent_start: i64| ProcessRecord {
        instance: Some(at(pid, start)),
        ppid,
        parent_start_time: parent_start,
        name: format!("p{pid}@{start}"),
        sample: None,
        ..record(pid)
    };
    let first = ScanBatch {
        snapshot: true,
        started: vec![child(10, 100, 1, 0), child(20, 200, 10, 100)],
        ..scan(1, T0)
    };
    // The first pid 10 exits; the pid is reused by a newer instance.
    let second = ScanBatch {
        started: vec![
            child(10, 300, 1, 0),
            child(30, 400, 10, 0),
            child(31, 500, 10, 150),
        ],
        exited: vec![at(10, 100)],
        ..scan(2, T0 + 1000)
    };
    let other_boot = ScanBatch {
        snapshot: true,
        started: vec![child(40, 600, 10, 0)],
        ..scan(1, T0)
    };
    // A snapshot of one boot ends every instance of the others: the other
    // boot goes first.
    store.apply_batch(OTHER_BOOT, &other_boot).unwrap();
    store.apply_batch(BOOT, &first).unwrap();
    store.apply_batch(BOOT, &second).unwrap();
    let reader = StoreReader::open(&path).unwrap();
    let snapshot = reader.snapshot().unwrap();
    let parent = |boot, ppid, start_time, scope| {
        let found = snapshot
            .parent(
                ParentRef {
                    boot_id: boot,
                    ppid,
                    start_time,
                },
                scope,
            )
            .unwrap();
        found.map(|r| r.name)
    };
    let name = |s: &str| Some(s.to_owned());
    // Recorded start time: that instance, even exited, among all; among
    // the live ones only while it lives.
    assert_eq!(parent(BOOT, 10, 100, Scope::All), name("p10@100"));
    assert_eq!(parent(BOOT, 10, 100, Scope::Live), None);
    // None recorded: the newest instance of the pid on that boot.
    assert_eq!(parent(BOOT, 10, 0, Scope::All), name("p10@300"));
    assert_eq!(parent(BOOT, 10, 0, Scope::Live), name("p10@300"));
    // A start time no instance has, a pid never stored, another boot.
    assert_eq!(parent(BOOT, 10, 150, Scope::All), None);
    assert_eq!(parent(BOOT, 99, 0, Scope::All), None);
    assert_eq!(parent(OTHER_BOOT, 10, 0, Scope::All), None);
    // What the stored processes name.
    let live = snapshot.live().unwrap();
    let refs: Vec<(String, ParentRef)> = live
        .iter()
        .map(|p| (p.record.name.clone(), p.parent_ref()))
        .collect();
    assert!(refs.contains(&(
        "p20@200".to_owned(),
        ParentRef {
            boot_id: BOOT,
            ppid: 10,
            start_time: 100
        }
    )));
}

#[test]
fn a_column_reads_the_same_from_its_parts_as_from_the_whole_record() {
    use crate::rules::record::{Column, Record};
    use crate::store::Parts;

    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    let mut full = record(10);
    full.container_id = "c0ffee".into();
    full.exe = "/tmp/x (deleted)".into();
    full.exe_info = Some(ExeInfo {
        sha256: vec![0x5a; 32],
        hash_status: HashStatus::Ok as i32,
        deleted: true,
        ..ExeInfo::default()
    });
    if let Some(s) = &mut full.sample {
        s.listening_ports = vec![22, 443];
    }
    // pid 10 gets a newer sample; pid 11 has only its record's own.
    let mut newer = sample(10, 9.5);
    newer.status = "R".into();
    store
        .apply_batch(
            BOOT,
            &ScanBatch {
                started: vec![full, record(11)],
                ..snapshot(1, T0, &[])
            },
        )
        .unwrap();
    store
        .apply_batch(
            BOOT,
            &ScanBatch {
                samples: vec![newer],
                ..scan(2, T0 + 1000)
            },
        )
        .unwrap();
    let reader = StoreReader::open(&path).unwrap();
    let snapshot = reader.snapshot().unwrap();
    let mut seen = 0;
    snapshot
        .each_stored(true, |stored| {
            seen += 1;
            let whole = stored.decode(Parts::ALL).unwrap();
            let whole = Record::from_stored(whole.record, whole.latest);
            for &c in Column::ALL {
                let part = stored.decode(c.stored_parts()).unwrap();
                let part = Record::from_stored(part.record, part.latest);
                assert_eq!(part.get(c), whole.get(c), "column {c} of pid {}", whole.pid);
            }
            // Nothing is what it is by accident: the partial reads did leave
            // things out.
            let bare = stored.decode(Parts::default()).unwrap();
            assert!(bare.record.name.is_empty() && bare.record.cmdline.is_empty());
            assert!(bare.latest.is_none() && bare.record.sample.is_none());
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, 2);
    // The newer sample is the one read.
    let status = |parts| {
        let mut out = Vec::new();
        snapshot
            .each_stored(true, |stored| {
                let p = stored.decode(parts).unwrap();
                out.push(Record::from_stored(p.record, p.latest).status);
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        out
    };
    assert_eq!(status(Column::Status.stored_parts()), ["R", "S"]);
}

#[test]
fn staged_samples_move_by_themselves_and_only_for_stored_instances() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    store.compact_at = 5;
    let batches = three_scans();
    let staged = |path: &Path| {
        let counts = row_counts(path);
        let n = |t: &str| counts.iter().find(|(name, _)| *name == t).unwrap().1;
        (n("samples"), n("recent_samples"))
    };
    // 3 staged, then 3 + 4 = 7 (past 5): moved with the batch that staged them.
    store.apply_batch(BOOT, &batches[0]).unwrap();
    assert_eq!(staged(&path), (0, 3));
    store.apply_batch(BOOT, &batches[1]).unwrap();
    assert_eq!(staged(&path), (7, 0));
    store.apply_batch(BOOT, &batches[2]).unwrap();
    assert_eq!(staged(&path), (7, 3));
    let reader = StoreReader::open(&path).unwrap();
    assert_eq!(
        sample_times(&reader, 11),
        [T0, T0 + 1000, T0 + 2000],
        "stored and staged samples read together"
    );

    // pid 10 exited at T0 + 2000; retention with a later cutoff removes it
    // and its stored samples; what is staged for it is not moved.
    store.compact_at = u64::MAX;
    store
        .apply_batch(
            BOOT,
            &ScanBatch {
                samples: vec![sample(10, 1.0), sample(11, 1.0)],
                ..scan(4, T0 + 3000)
            },
        )
        .unwrap();
    let pruned = store.pruner().prune(T0 + 2500, || false).unwrap();
    assert_eq!(pruned.instances, 1, "{pruned:?}");
    assert!(sample_times(&reader, 10).is_empty());
    // Staged: pid 11 at T0 + 3000 (kept), pid 10 at T0 + 3000 (its
    // instance is gone): one moved.
    assert_eq!(store.compact_samples().unwrap(), 1);
    assert_eq!(sample_times(&reader, 11), [T0 + 3000]);
    assert!(sample_times(&reader, 10).is_empty());
}

#[test]
fn a_move_in_several_transactions_moves_every_staged_sample_once() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    store.compact_at = u64::MAX;
    let pids: Vec<u32> = (1000..2000).collect();
    store.apply_batch(BOOT, &snapshot(1, T0, &pids)).unwrap();
    for seq in 2..=10_u64 {
        let time = T0 + 1000 * i64::try_from(seq).unwrap();
        let batch = ScanBatch {
            samples: pids.iter().map(|&p| sample(p, 1.0)).collect(),
            ..scan(seq, time)
        };
        store.apply_batch(BOOT, &batch).unwrap();
    }
    let reader = StoreReader::open(&path).unwrap();
    let before = reader.history(1500, None).unwrap();
    assert_eq!(before.len(), 10);
    // 10,000 staged: more than one transaction's worth.
    assert_eq!(store.compact_samples().unwrap(), 10_000);
    let counts = row_counts(&path);
    assert!(counts.contains(&("samples", 10_000)), "{counts:?}");
    assert!(counts.contains(&("recent_samples", 0)), "{counts:?}");
    assert_eq!(reader.history(1500, None).unwrap(), before);
    assert_eq!(store.compact_samples().unwrap(), 0);
}

/// The (first time, sample count) of every block of `pid`'s instance.
fn blocks_of(path: &Path, pid: u32) -> Vec<(i64, usize)> {
    let db = reader_db(path);
    let txn = db.begin_read().unwrap();
    let blocks = txn.open_table(SAMPLE_BLOCKS).unwrap();
    let (boot, start, pid) = instance_key(BOOT, pid);
    blocks
        .range((boot, start, pid, i64::MIN)..=(boot, start, pid, i64::MAX))
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            let block = SampleBlock::decode_at(path, v.value(), k.value()).unwrap();
            (k.value().3, block.samples.len())
        })
        .collect()
}

#[test]
fn several_batches_in_one_transaction_store_what_one_at_a_time_stores() {
    let dir = TempDir::new().unwrap();
    // A snapshot in three chunks (pid 12 missing from it: marked exited
    // at its end), then the three scans.
    let mut batches = vec![
        ScanBatch {
            started: vec![record(12)],
            ..scan(1, T0 - 5000)
        },
        ScanBatch {
            snapshot: true,
            chunk: 0,
            last_chunk: false,
            started: vec![record(10)],
            ..scan(2, T0 - 1000)
        },
        ScanBatch {
            snapshot: true,
            chunk: 1,
            last_chunk: false,
            started: vec![record(11)],
            ..scan(2, T0 - 1000)
        },
        ScanBatch {
            snapshot: true,
            chunk: 2,
            started: vec![record(13)],
            ..scan(2, T0 - 1000)
        },
    ];
    batches.extend(three_scans());
    let one = dir.path().join("one.redb");
    let mut store = Store::open(&one).unwrap();
    let singly: Vec<BatchOutcome> = batches
        .iter()
        .map(|b| store.apply_batch(BOOT, b).unwrap())
        .collect();
    let all = dir.path().join("all.redb");
    let mut grouped = Store::open(&all).unwrap();
    // Split so that the snapshot's chunks straddle two transactions.
    let refs: Vec<([u8; 16], &ScanBatch)> = batches.iter().map(|b| (BOOT, b)).collect();
    let mut together = grouped.apply_batches(&refs[..2]).unwrap();
    together.extend(grouped.apply_batches(&refs[2..]).unwrap());
    assert_eq!(together, singly);
    assert_eq!(row_counts(&all), row_counts(&one));
    let (a, b) = (
        StoreReader::open(&one).unwrap(),
        StoreReader::open(&all).unwrap(),
    );
    assert_eq!(a.scans(None).unwrap(), b.scans(None).unwrap());
    assert_eq!(live_pids(&a), live_pids(&b));
    // The snapshot, reconciled across the two transactions, marked pid
    // 12 exited (the next snapshot lists it again).
    let scans = b.scans(None).unwrap();
    let snapshot = scans.iter().find(|s| s.time_ms == T0 - 1000).unwrap();
    assert_eq!(
        (snapshot.started, snapshot.exited, snapshot.chunks),
        (3, 1, 3)
    );
    for pid in 10..=13 {
        assert_eq!(a.history(pid, None).unwrap(), b.history(pid, None).unwrap());
    }
}

#[test]
fn samples_fill_blocks_and_a_late_sample_joins_the_block_that_covers_it() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    store.compact_at = u64::MAX;
    let at = |k: i64| T0 + 1000 * k;
    let scans: Vec<ScanBatch> = (1..=600)
        .map(|k| ScanBatch {
            samples: vec![sample(11, k as f32)],
            ..scan(k as u64 + 1, at(k))
        })
        .collect();
    let mut batches = vec![snapshot(1, T0, &[11])];
    batches.extend(scans);
    let refs: Vec<([u8; 16], &ScanBatch)> = batches.iter().map(|b| (BOOT, b)).collect();
    store.apply_batches(&refs).unwrap();
    let staged = store.compact_samples().unwrap();
    assert_eq!(staged, 601);
    assert_eq!(schema::BLOCK_SAMPLES, 64, "the blocks below assume it");
    // 601 samples: nine full blocks and one of 25.
    let mut expected_blocks: Vec<(i64, usize)> = (0..9).map(|b| (at(64 * b), 64)).collect();
    expected_blocks.push((at(576), 25));
    assert_eq!(blocks_of(&path, 11), expected_blocks);
    let reader = StoreReader::open(&path).unwrap();
    let expected: Vec<i64> = (0..=600).map(at).collect();
    assert_eq!(sample_times(&reader, 11), expected);

    // Newer samples make a new block; a replayed one replaces the sample
    // of its time; a late one is inserted into the block that covers it.
    let more = ScanBatch {
        samples: vec![sample(11, 1.0)],
        ..scan(700, at(601))
    };
    let replayed = ScanBatch {
        samples: vec![sample(11, 99.0)],
        ..scan(101, at(100))
    };
    let late = ScanBatch {
        samples: vec![sample(11, 7.5)],
        ..scan(800, at(300) + 500)
    };
    store
        .apply_batches(&[(BOOT, &more), (BOOT, &replayed), (BOOT, &late)])
        .unwrap();
    // Read while staged and stored: each time once.
    let history = reader.history(11, None).unwrap();
    assert_eq!(history.len(), 603);
    assert_eq!(store.compact_samples().unwrap(), 3);
    // The late one made its block 65: split in two.
    expected_blocks[4].1 = 32;
    expected_blocks.insert(5, (at(288), 33));
    expected_blocks.push((at(601), 1));
    assert_eq!(blocks_of(&path, 11), expected_blocks);
    assert_eq!(reader.history(11, None).unwrap(), history);
    let newest = reader.history(11, Some(3)).unwrap();
    let times: Vec<i64> = newest.iter().map(|p| p.time_ms).collect();
    assert_eq!(times, [at(599), at(600), at(601)]);
    let point = |t: i64| history.iter().find(|p| p.time_ms == t).unwrap();
    assert_eq!(point(at(100)).sample.cpu_percent, 99.0);
    assert_eq!(point(at(300) + 500).sample.cpu_percent, 7.5);

    // Retention with its cutoff inside a block: the blocks before it go,
    // it is written again from its first sample kept.
    let cutoff = at(400);
    let pruned = store
        .pruner()
        .with_batch(2)
        .prune(cutoff, || false)
        .unwrap();
    assert_eq!(pruned.samples, 401, "{pruned:?}");
    assert_eq!(
        blocks_of(&path, 11),
        [
            (at(400), 448 - 400),
            (at(448), 64),
            (at(512), 64),
            (at(576), 25),
            (at(601), 1)
        ]
    );
    let kept = sample_times(&reader, 11);
    assert_eq!(kept.first(), Some(&cutoff));
    assert_eq!(kept.len(), 603 - 401);
}

#[test]
fn a_schema_1_store_is_read_and_marked_schema_2() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    store.apply_batch(BOOT, &snapshot(1, T0, &[11])).unwrap();
    drop(store);
    // Schema 1 moved samples into `samples`, one entry each.
    {
        let db = raw_writer(&path);
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 1u64.to_le_bytes().as_slice())
            .unwrap();
        txn.delete_table(SAMPLE_BLOCKS).unwrap();
        let mut samples = txn.open_table(SAMPLES).unwrap();
        let (boot, start, pid) = instance_key(BOOT, 11);
        for (k, time) in [T0 - 2000, T0 - 1000].into_iter().enumerate() {
            let bytes = prost::Message::encode_to_vec(&sample(11, k as f32));
            samples
                .insert((boot, start, pid, time), bytes.as_slice())
                .unwrap();
        }
        drop(samples);
        txn.commit().unwrap();
    }
    let version = |path: &Path| {
        let db = reader_db(path);
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let v = meta.get("schema_version").unwrap().unwrap();
        u64::from_le_bytes(v.value().try_into().unwrap())
    };
    let reader = StoreReader::open(&path).unwrap();
    assert_eq!(sample_times(&reader, 11), [T0 - 2000, T0 - 1000, T0]);
    drop(reader);
    let mut store = Store::open(&path).unwrap();
    assert_eq!(version(&path), 2);
    assert_eq!(store.compact_samples().unwrap(), 1);
    let reader = StoreReader::open(&path).unwrap();
    assert_eq!(sample_times(&reader, 11), [T0 - 2000, T0 - 1000, T0]);
    let pruned = store.pruner().prune(T0 - 1500, || false).unwrap();
    assert_eq!(pruned.samples, 1, "{pruned:?}");
    assert_eq!(sample_times(&reader, 11), [T0 - 1000, T0]);
}

#[test]
fn samples_older_than_the_newest_block_keep_blocks_small() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    store.compact_at = u64::MAX;
    let at = |k: i64| T0 + 1000 * k;
    let mut batches = vec![snapshot(1, T0, &[11])];
    batches.extend((1..=10).map(|k| ScanBatch {
        samples: vec![sample(11, 1.0)],
        ..scan(k as u64 + 1, at(k))
    }));
    let refs: Vec<([u8; 16], &ScanBatch)> = batches.iter().map(|b| (BOOT, b)).collect();
    store.apply_batches(&refs).unwrap();
    store.compact_samples().unwrap();
    assert_eq!(blocks_of(&path, 11), [(T0, 11)]);
    // The clock stepped back: 200 samples inside the first block's range.
    let late: Vec<ScanBatch> = (1..=200)
        .map(|ms| ScanBatch {
            samples: vec![sample(11, 2.0)],
            ..scan(100 + ms as u64, T0 + ms)
        })
        .collect();
    let refs: Vec<([u8; 16], &ScanBatch)> = late.iter().map(|b| (BOOT, b)).collect();
    store.apply_batches(&refs).unwrap();
    assert_eq!(store.compact_samples().unwrap(), 200);
    let blocks = blocks_of(&path, 11);
    assert!(
        blocks.iter().all(|&(_, n)| n <= schema::BLOCK_SAMPLES),
        "{blocks:?}"
    );
    assert_eq!(blocks.iter().map(|&(_, n)| n).sum::<usize>(), 211);
    let mut expected: Vec<i64> = (0..=200).map(|ms| T0 + ms).collect();
    expected.extend((1..=10).map(at));
    let reader = StoreReader::open(&path).unwrap();
    assert_eq!(sample_times(&reader, 11), expected);
    let newest: Vec<i64> = reader
        .history(11, Some(12))
        .unwrap()
        .iter()
        .map(|p| p.time_ms)
        .collect();
    assert_eq!(newest, expected[expected.len() - 12..]);
}
