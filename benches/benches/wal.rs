//! procmond's write-ahead log: append throughput per sync policy.
//!
//! Each append is one scan chunk, as the scan thread writes it; after each
//! append the owner's group-commit call runs (`needs_sync` then
//! `sync_now`), as in `procmond`'s daemon. Every 64 appends the batches are
//! acknowledged (the log truncates, as it does while the agent keeps up).
//! Two chunk sizes: 1,000 samples (a full chunk) and 10 samples (a quiet
//! host's scan). fdatasync calls per second are printed after each case.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use procmond::wal::{SyncPolicy, Wal, WalConfig};
use sentineld_benches::synthetic;
use sentineld_proto::v1::ScanBatch;

const T0: i64 = 1_790_000_000_000;

fn batch(records: u32, tick: u64) -> ScanBatch {
    ScanBatch {
        scan_seq: tick,
        last_chunk: true,
        time_ms: T0 + tick as i64 * 1000,
        process_count: records,
        samples: (0..records)
            .map(|pid| synthetic::sample(pid, tick))
            .collect(),
        ..ScanBatch::default()
    }
}

fn bench_wal(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    let policies = [
        ("every_batch", SyncPolicy::EveryBatch),
        (
            "group_100ms",
            SyncPolicy::Interval(Duration::from_millis(100)),
        ),
    ];
    for (policy_name, sync) in policies {
        for records in [1000u32, 10] {
            group.throughput(Throughput::Elements(u64::from(records)));
            let name = format!("{policy_name}/{records}_samples");
            let (mut syncs, mut appends, mut busy) = (0u64, 0u64, Duration::ZERO);
            group.bench_function(&name, |b| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir().expect("a temp dir");
                    let config = WalConfig {
                        sync,
                        max_bytes: 1 << 30,
                        ..WalConfig::default()
                    };
                    let (mut wal, _) = Wal::open(dir.path(), config).expect("the WAL opens");
                    let batches: Vec<ScanBatch> = (0..64).map(|t| batch(records, t + 1)).collect();
                    let before = wal.stats().syncs;
                    let start = Instant::now();
                    for i in 0..iters {
                        let id = wal
                            .append(black_box(&batches[(i % 64) as usize]))
                            .expect("append");
                        if wal.needs_sync() {
                            wal.sync_now().expect("sync");
                        }
                        if i % 64 == 63 {
                            wal.ack(id).expect("ack");
                        }
                    }
                    let took = start.elapsed();
                    syncs += wal.stats().syncs - before;
                    appends += iters;
                    busy += took;
                    took
                })
            });
            let secs = busy.as_secs_f64().max(f64::MIN_POSITIVE);
            println!(
                "wal_append/{name}: {:.0} appends/s, {:.0} records/s, {:.0} fdatasync/s ({syncs} syncs over {appends} appends)",
                appends as f64 / secs,
                appends as f64 * f64::from(records) / secs,
                syncs as f64 / secs,
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_wal);
criterion_main!(benches);
