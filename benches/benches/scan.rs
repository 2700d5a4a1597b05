//! One collector scan in steady state, against raw `/proc` reads in the
//! same run, so the ratios between them are meaningful on any machine.
//!
//! - `procfs`: `ProcfsCollector::collect` (the Linux fast path) after a
//!   warm-up: every process known, so only `/proc/PID/stat` is read.
//! - `sysinfo`: `SysinfoCollector::collect` after a warm-up (exe, argv and
//!   user already known, as in every scan but the first).
//! - `scanner`: a whole daemon scan with the collector `auto` picks:
//!   collect, diff against the last scan, enrich, build samples (no new
//!   executables to hash in steady state).
//! - `raw_proc`: for every pid, read `/proc/PID/stat`, `status` and
//!   `cmdline` and `readlink` its `exe`: the full read, about the least a
//!   collector that reads everything every scan does.
//! - `raw_stat`: for every pid, read `/proc/PID/stat` only: the floor of
//!   the fast path.

use std::hint::black_box;
use std::io::Read as _;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use procmond::collect::{
    AnyCollector, Collector, CollectorKind, Observed, ScanCounters, SysinfoCollector,
};
use procmond::scanner::{ScanConfig, Scanner};

/// Reads what a minimal collector would for every process; returns the
/// number of processes and bytes read.
fn raw_proc_scan(buf: &mut Vec<u8>) -> (usize, usize) {
    let mut processes = 0;
    let mut bytes = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let base = format!("/proc/{pid}");
        for file in ["stat", "status", "cmdline"] {
            buf.clear();
            if let Ok(mut f) = std::fs::File::open(format!("{base}/{file}")) {
                bytes += f.read_to_end(buf).unwrap_or(0);
            }
        }
        if let Ok(target) = std::fs::read_link(format!("{base}/exe")) {
            bytes += target.as_os_str().len();
        }
        processes += 1;
    }
    (processes, bytes)
}

/// Reads `/proc/PID/stat` of every pid; returns the number of processes
/// and bytes read.
fn raw_stat_scan(buf: &mut Vec<u8>) -> (usize, usize) {
    let mut processes = 0;
    let mut bytes = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        buf.clear();
        if let Ok(mut f) = std::fs::File::open(format!("/proc/{pid}/stat")) {
            bytes += f.read_to_end(buf).unwrap_or(0);
        }
        processes += 1;
    }
    (processes, bytes)
}

/// Benchmarks `collector` in steady state (after two warm-up scans).
fn bench_collector(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut collector: impl Collector,
) {
    let mut out: Vec<Observed> = Vec::new();
    let mut counters = ScanCounters::default();
    for _ in 0..2 {
        out.clear();
        collector.collect(&mut out, &mut counters);
    }
    group.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            collector.collect(&mut out, &mut counters);
            black_box(out.len())
        })
    });
}

fn bench_scan(c: &mut Criterion) {
    let mut probe = SysinfoCollector::new().expect("sysinfo works here");
    let mut out: Vec<Observed> = Vec::new();
    probe.collect(&mut out, &mut ScanCounters::default());
    let processes = out.len() as u64;
    drop(probe);

    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Elements(processes));

    bench_collector(
        &mut group,
        "procfs",
        AnyCollector::open(CollectorKind::Procfs).expect("/proc works here"),
    );
    bench_collector(
        &mut group,
        "sysinfo",
        SysinfoCollector::new().expect("sysinfo works here"),
    );

    let mut scanner = Scanner::new(
        AnyCollector::open(CollectorKind::Auto).expect("a collector opens"),
        ScanConfig::default(),
    )
    .expect("scanner starts");
    // Warm up: the first scans hash every executable.
    scanner.scan(false, Duration::from_secs(60));
    scanner.scan(false, Duration::from_secs(60));
    group.bench_function("scanner", |b| {
        b.iter(|| black_box(scanner.scan(false, Duration::ZERO)))
    });

    let mut buf = Vec::with_capacity(8192);
    group.bench_function("raw_proc", |b| {
        b.iter(|| black_box(raw_proc_scan(&mut buf)))
    });
    group.bench_function("raw_stat", |b| {
        b.iter(|| black_box(raw_stat_scan(&mut buf)))
    });
    group.finish();
    eprintln!("scan benches over {processes} processes");
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
