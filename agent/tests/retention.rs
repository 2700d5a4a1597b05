//! Retention with the real agent: a store holding days-old scans is left
//! alone under `retention_days = 0`, and pruned at once when SIGHUP brings
//! `retention_days = 1`; what is newer, and live processes, stay.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::eventually;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sentineld_agent::store::{Store, StoreReader};
use sentineld_common::layout::StateLayout;
use sentineld_proto::v1::{InstanceRef, ProcessRecord, Sample, ScanBatch};

const BOOT: [u8; 16] = [0x5e; 16];
const HOUR_MS: i64 = 60 * 60 * 1000;

fn instance(pid: u32) -> InstanceRef {
    InstanceRef {
        pid,
        start_time: 1_700_000_000 + i64::from(pid),
    }
}

fn sample(pid: u32) -> Sample {
    Sample {
        instance: Some(instance(pid)),
        rss_bytes: 4096,
        threads: 1,
        status: "S".into(),
        ..Sample::default()
    }
}

fn record(pid: u32) -> ProcessRecord {
    ProcessRecord {
        instance: Some(instance(pid)),
        ppid: 1,
        name: format!("aged-{pid}"),
        exe: "/usr/bin/aged".into(),
        sample: Some(sample(pid)),
        ..ProcessRecord::default()
    }
}

/// Three days ago: a snapshot of 4001-4003, then 4001 exits. An hour ago:
/// a scan with samples of the two still alive.
fn fill(store: &Path, now_ms: i64) {
    let old = now_ms - 72 * HOUR_MS;
    let mut store = Store::open(store).unwrap();
    let batches = [
        ScanBatch {
            scan_seq: 1,
            time_ms: old,
            snapshot: true,
            last_chunk: true,
            process_count: 3,
            started: (4001..=4003).map(record).collect(),
            ..ScanBatch::default()
        },
        ScanBatch {
            scan_seq: 2,
            time_ms: old + 1000,
            last_chunk: true,
            process_count: 2,
            exited: vec![instance(4001)],
            samples: vec![sample(4002), sample(4003)],
            ..ScanBatch::default()
        },
        ScanBatch {
            scan_seq: 3,
            time_ms: now_ms - HOUR_MS,
            last_chunk: true,
            process_count: 2,
            samples: vec![sample(4002), sample(4003)],
            ..ScanBatch::default()
        },
    ];
    for batch in &batches {
        store.apply_batch(BOOT, batch).unwrap();
    }
}

fn log_has(log: &Path, text: &str) -> Option<String> {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    log.contains(text).then_some(log)
}

#[test]
fn retention_prunes_old_data_once_a_reload_turns_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let store = StateLayout::resolve(Some(&state), None).store();
    let now_ms = sentineld_common::time::now_millis();
    fill(&store, now_ms);

    let config = dir.path().join("config.toml");
    std::fs::write(&config, "retention_days = 0\n").unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = common::Agent {
        child: common::agent_command()
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .args(["--collector", "external"])
            .arg("--rules-dir")
            .arg(dir.path().join("no-rules"))
            .arg("--metrics-listen")
            .arg(addr.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    };
    let pid = Pid::from_raw(i32::try_from(agent.pid()).unwrap());

    eventually(Duration::from_secs(30), || log_has(&log, "retention off"))
        .expect("the agent says retention is off");
    let reader = StoreReader::open(&store).unwrap();
    assert_eq!(reader.scans(None).unwrap().len(), 3, "nothing removed");
    assert_eq!(reader.instances(None).unwrap().len(), 3);
    assert_eq!(reader.history(4002, None).unwrap().len(), 3);

    std::fs::write(&config, "retention_days = 1\n").unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let text = eventually(Duration::from_secs(30), || {
        log_has(&log, "retention: removed")
    })
    .expect("SIGHUP with retention_days = 1 runs a pass");
    assert!(text.contains("retention period changed"), "{text}");

    let scans = reader.scans(None).unwrap();
    assert_eq!(scans.len(), 1, "the two three-day-old scans are gone");
    assert_eq!(scans[0].time_ms, now_ms - HOUR_MS);
    let instances = reader.instances(None).unwrap();
    let mut pids: Vec<u32> = instances
        .iter()
        .filter_map(|i| i.process.record.instance.map(|r| r.pid))
        .collect();
    pids.sort_unstable();
    assert_eq!(
        pids,
        vec![4002, 4003],
        "the instance that exited 3 days ago is gone"
    );
    let history = reader.history(4002, None).unwrap();
    assert_eq!(
        history.iter().map(|p| p.time_ms).collect::<Vec<_>>(),
        vec![now_ms - HOUR_MS],
        "only the sample newer than a day is kept"
    );
    let live: Vec<u32> = reader
        .live()
        .unwrap()
        .iter()
        .filter_map(|p| p.record.instance.map(|r| r.pid))
        .collect();
    assert_eq!(live.len(), 2, "live processes stay: {live:?}");

    let (_, metrics) = common::http_get(addr, "/metrics").unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("sentineld_retention_pruned_total{kind=\"samples\"}"))
        .unwrap_or_else(|| panic!("no retention counter in {metrics}"));
    // 4001: one; 4002 and 4003: two each.
    assert!(line.ends_with(" 5"), "{line}");

    let status = agent.terminate();
    assert!(status.success(), "{status}");
}
