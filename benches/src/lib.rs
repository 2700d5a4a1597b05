//! Shared helpers for the SentinelD benchmarks and load tools.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A workspace binary beside the running one (`cargo build --release
/// --workspace` puts them together).
pub fn sibling_binary(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release --workspace` first",
            path.display()
        ))
    }
}

/// Sends SIGTERM to the process `pid` (and only to it).
pub fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// The `q` quantile (0.0 to 1.0) of sorted values, nearest rank; the
/// default value when there are none.
pub fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short slice"
    )]
    let i = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Formats a duration in milliseconds with one decimal.
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Synthetic records the benches and load tools share: one service
/// process's instance, sample and full record, by pid.
pub mod synthetic {
    use sentineld_proto::v1::{ExeInfo, HashStatus, InstanceRef, ProcessRecord, Sample, ScanBatch};

    /// Scan number `tick` (from 1) of `records` processes with pids from
    /// 0, each sampled, taken `tick` seconds after `t0_ms`: the steady
    /// state the store and end-to-end benches write.
    pub fn sample_scan(t0_ms: i64, tick: u64, records: u32) -> ScanBatch {
        ScanBatch {
            scan_seq: tick + 1,
            last_chunk: true,
            time_ms: t0_ms + i64::try_from(tick).unwrap_or(i64::MAX / 1000) * 1000,
            process_count: records,
            samples: (0..records).map(|pid| sample(pid, tick)).collect(),
            ..ScanBatch::default()
        }
    }

    /// The instance of `pid` (one start time for all).
    pub fn instance(pid: u32) -> InstanceRef {
        InstanceRef {
            pid,
            start_time: 1_789_000_000,
        }
    }

    /// A sample of `pid` whose CPU figure moves with `tick`.
    pub fn sample(pid: u32, tick: u64) -> Sample {
        Sample {
            instance: Some(instance(pid)),
            cpu_percent: (tick % 100) as f32 / 10.0,
            rss_bytes: 24_000_000 + u64::from(pid) * 4096,
            vms_bytes: 1_200_000_000,
            threads: 8,
            open_fds: Some(42),
            status: "S".into(),
            listening_ports: Vec::new(),
            swap_bytes: Some(0),
        }
    }

    /// A record about the size of a real service process (~300 bytes encoded).
    pub fn record(pid: u32) -> ProcessRecord {
        ProcessRecord {
            instance: Some(instance(pid)),
            ppid: 1,
            name: "postgres".into(),
            exe: "/usr/lib/postgresql/16/bin/postgres".into(),
            cmdline: vec![
                "/usr/lib/postgresql/16/bin/postgres".into(),
                "-D".into(),
                "/var/lib/postgresql/16/main".into(),
                "-c".into(),
                "config_file=/etc/postgresql/16/main/postgresql.conf".into(),
                format!("--worker-id={pid}"),
            ],
            uid: Some(114),
            user: "postgres".into(),
            exe_info: Some(ExeInfo {
                sha256: vec![0xc3; 32],
                hash_status: HashStatus::Ok as i32,
                hash_error: String::new(),
                size: 9_876_543,
                inode: 1_573_210,
                device: 2049,
                mtime: 1_780_000_000,
                deleted: false,
            }),
            container_id: String::new(),
            parent_start_time: 1_788_999_000,
            sample: Some(sample(pid, 0)),
        }
    }
}
