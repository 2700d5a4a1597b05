//! `sentinelcli query` over a store of 1,000,000 instances.
//!
//! The store is built once per run, in a temp dir, with the agent's writer
//! (`Store::apply_batch`, one write transaction per 1,000 started records,
//! in non-snapshot scans of 100 chunks each). Each batch also marks the
//! previous batch's instances exited except one in `KEEP_EVERY`, so at the
//! end 1,000 instances are live and 999,000 have exited. Every instance
//! names the live one of its batch as its parent, so parent lookups hit.
//!
//! What is measured is what `sentinelcli --state-dir DIR query [--all] SQL`
//! does after parsing its command line: `sentineld_cli::execute`, which
//! opens the store read-only, reads it, builds the records, runs the query
//! and renders the table (into memory here instead of stdout).
//!
//! ```sh
//! cargo bench -p sentineld-benches --bench query
//! QUERY_BENCH_DIR=/var/tmp/q1m cargo bench -p sentineld-benches --bench query
//! ```
//!
//! With `QUERY_BENCH_DIR` the store is built there once and reused by later
//! runs (delete it after changing the store format or this file).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser as _;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use sentineld_agent::store::Store;
use sentineld_benches::synthetic::record;
use sentineld_cli::Cli;
use sentineld_proto::v1::{InstanceRef, ProcessRecord, ScanBatch};
use tempfile::TempDir;

const BOOT: [u8; 16] = [0x5e; 16];
const INSTANCES: u32 = 1_000_000;
const BATCH: u32 = 1_000;
const CHUNKS_PER_SCAN: u32 = 100;
/// One instance in this many stays live (the first of each batch).
const KEEP_EVERY: u32 = 1_000;
/// One instance in this many is called `sshd`, the name the query asks for.
const SSHD_EVERY: u32 = 1_009;
/// Start time of instance 0, unix seconds; 20 instances start per second.
const S0: i64 = 1_789_000_000;
const SQL: &str = "SELECT pid, name FROM processes WHERE name = 'sshd'";

fn instance(i: u32) -> InstanceRef {
    InstanceRef {
        pid: 1000 + i,
        start_time: S0 + i64::from(i / 20),
    }
}

fn instance_record(i: u32) -> ProcessRecord {
    let me = instance(i);
    let mut r = record(me.pid);
    r.instance = Some(me);
    if let Some(sample) = &mut r.sample {
        sample.instance = Some(me);
    }
    if i.is_multiple_of(KEEP_EVERY) {
        r.ppid = 1;
        r.parent_start_time = 0;
    } else {
        let parent = instance(i - i % KEEP_EVERY);
        r.ppid = parent.pid;
        r.parent_start_time = parent.start_time;
    }
    if i.is_multiple_of(SSHD_EVERY) {
        "sshd".clone_into(&mut r.name);
    }
    r
}

/// Writes the store at `path` and returns how long that took.
fn build_store(path: &Path) -> Duration {
    let start = Instant::now();
    let mut store = Store::open(path).expect("a new store opens");
    let batches = INSTANCES / BATCH;
    let exited_of = |k: u32| -> Vec<InstanceRef> {
        (k * BATCH..(k + 1) * BATCH)
            .filter(|i| !i.is_multiple_of(KEEP_EVERY))
            .map(instance)
            .collect()
    };
    for k in 0..=batches {
        let chunk = k % CHUNKS_PER_SCAN;
        let scan = k / CHUNKS_PER_SCAN;
        let batch = ScanBatch {
            scan_seq: u64::from(scan) + 1,
            chunk,
            last_chunk: chunk == CHUNKS_PER_SCAN - 1 || k == batches,
            time_ms: (S0 + i64::from((scan + 1) * CHUNKS_PER_SCAN * BATCH / 20)) * 1000,
            process_count: BATCH,
            started: if k < batches {
                (k * BATCH..(k + 1) * BATCH).map(instance_record).collect()
            } else {
                Vec::new()
            },
            exited: if k > 0 { exited_of(k - 1) } else { Vec::new() },
            ..ScanBatch::default()
        };
        store.apply_batch(BOOT, &batch).expect("batch stored");
    }
    start.elapsed()
}

/// The state directory: a new temp dir, or `QUERY_BENCH_DIR` when set
/// (the store is built there unless it holds one, and kept, e.g. to
/// profile `sentinelcli` on it).
fn state_dir() -> (Option<TempDir>, PathBuf) {
    if let Some(dir) = std::env::var_os("QUERY_BENCH_DIR") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("QUERY_BENCH_DIR can be created");
        return (None, dir);
    }
    let temp = TempDir::new().expect("a temporary directory");
    let dir = temp.path().to_path_buf();
    (Some(temp), dir)
}

fn bench_query(c: &mut Criterion) {
    let (_temp, dir) = state_dir();
    let store = dir.join("store.redb");
    if store.exists() {
        eprintln!("query: using the store in {}", dir.display());
    } else {
        let took = build_store(&store);
        let size = std::fs::metadata(&store).map_or(0, |m| m.len());
        eprintln!(
            "query: stored {INSTANCES} instances in {:.1} s ({} MiB)",
            took.as_secs_f64(),
            size >> 20
        );
    }
    let state_dir = dir.to_str().expect("a UTF-8 state directory");

    let mut group = c.benchmark_group("query_1m");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for (id, all) in [("live", false), ("all", true)] {
        let mut argv = vec!["sentinelcli", "--state-dir", state_dir, "query"];
        if all {
            argv.push("--all");
        }
        argv.push(SQL);
        let cli = Cli::try_parse_from(&argv).expect("a valid command line");
        let mut out = Vec::new();
        let mut diag = Vec::new();
        sentineld_cli::execute(&cli, &mut out, &mut diag).expect("the query runs");
        eprintln!(
            "query: {id}: {} output lines",
            out.iter().filter(|&&b| b == b'\n').count()
        );
        group.bench_function(id, |b| {
            b.iter(|| {
                out.clear();
                diag.clear();
                sentineld_cli::execute(black_box(&cli), &mut out, &mut diag)
                    .expect("the query runs");
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_query);
criterion_main!(benches);
