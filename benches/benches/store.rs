//! Store write throughput: one 1,000-record batch per redb write transaction
//! (immediate durability, so every batch includes its fsync).
//!
//! `started_1000`: a batch of 1,000 new instances with full records, as in a
//! snapshot or a busy scan. `samples_1000`: the steady state, one sample for
//! each of 1,000 live instances. `samples_5x1000_grouped`: five such
//! batches in one transaction, as the storage thread's group commit stores
//! them. Each measured batch goes into a store that
//! already holds the earlier ones; the store is replaced (untimed) every
//! `BATCHES_PER_STORE` batches to bound the disk the run uses.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sentineld_agent::store::Store;
use sentineld_benches::synthetic::{record, sample_scan};
use sentineld_proto::v1::ScanBatch;
use tempfile::TempDir;

const BOOT: [u8; 16] = [0x5e; 16];
const RECORDS: u32 = 1000;
const BATCHES_PER_STORE: u64 = 500;
const T0: i64 = 1_790_000_000_000;

fn fresh_store() -> (TempDir, Store) {
    let dir = TempDir::new().expect("a temporary directory");
    let store = Store::open(&dir.path().join("store.redb")).expect("a new store opens");
    (dir, store)
}

fn bench_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(u64::from(RECORDS)));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));

    // Pids never repeat within one store, so every batch inserts new rows.
    let mut batch_no: u64 = 0;
    group.bench_function("started_1000", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let (mut _dir, mut store) = fresh_store();
            for i in 0..iters {
                if i > 0 && i % BATCHES_PER_STORE == 0 {
                    (_dir, store) = fresh_store();
                }
                batch_no += 1;
                let base = (batch_no % 4000) as u32 * RECORDS;
                let batch = ScanBatch {
                    scan_seq: batch_no,
                    last_chunk: true,
                    time_ms: T0 + batch_no as i64 * 1000,
                    process_count: RECORDS,
                    started: (base..base + RECORDS).map(record).collect(),
                    ..ScanBatch::default()
                };
                let start = Instant::now();
                let outcome = store
                    .apply_batch(BOOT, black_box(&batch))
                    .expect("batch stored");
                elapsed += start.elapsed();
                black_box(outcome);
            }
            elapsed
        })
    });

    let populate = || {
        let (dir, mut store) = fresh_store();
        let snapshot = ScanBatch {
            scan_seq: 1,
            last_chunk: true,
            snapshot: true,
            time_ms: T0,
            process_count: RECORDS,
            started: (0..RECORDS).map(record).collect(),
            ..ScanBatch::default()
        };
        store.apply_batch(BOOT, &snapshot).expect("snapshot stored");
        (dir, store)
    };
    let mut tick: u64 = 0;
    group.bench_function("samples_1000", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let (mut _dir, mut store) = populate();
            for i in 0..iters {
                if i > 0 && i % BATCHES_PER_STORE == 0 {
                    (_dir, store) = populate();
                }
                tick += 1;
                let batch = sample_scan(T0, tick, RECORDS);
                let start = Instant::now();
                let outcome = store
                    .apply_batch(BOOT, black_box(&batch))
                    .expect("batch stored");
                elapsed += start.elapsed();
                black_box(outcome);
            }
            elapsed
        })
    });

    // The same samples, five batches per transaction: what the storage
    // thread's group commit does when the collector has credit for
    // several. Throughput is per record, as above.
    const GROUP: u64 = 5;
    group.throughput(Throughput::Elements(GROUP * u64::from(RECORDS)));
    group.bench_function("samples_5x1000_grouped", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let (mut _dir, mut store) = populate();
            for i in 0..iters {
                if i > 0 && i % (BATCHES_PER_STORE / GROUP) == 0 {
                    (_dir, store) = populate();
                }
                let batches: Vec<ScanBatch> = (0..GROUP)
                    .map(|_| {
                        tick += 1;
                        sample_scan(T0, tick, RECORDS)
                    })
                    .collect();
                let group: Vec<([u8; 16], &ScanBatch)> =
                    batches.iter().map(|batch| (BOOT, batch)).collect();
                let start = Instant::now();
                let outcome = store
                    .apply_batches(black_box(&group))
                    .expect("batches stored");
                elapsed += start.elapsed();
                black_box(outcome);
            }
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
