//! The HTTP endpoint with the real binaries: /metrics, /healthz and the
//! process API answer from what the running agent keeps current.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::eventually;

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path`; the status code and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    common::http_get(addr, path)
}

#[test]
fn metrics_health_and_process_api_answer_while_the_agent_runs() {
    let dir = tempfile::tempdir().unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _agent = Reaped(
        common::agent_command()
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--rules-dir")
            .arg(dir.path().join("no-rules"))
            .args(["--scan-interval", "200ms", "--metrics-top-n", "5"])
            .arg("--metrics-listen")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let exe = dir.path().join("metrics-probe");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let probe = Reaped(Command::new(&exe).arg("300").spawn().unwrap());
    let pid = probe.0.id();

    let (_, processes) = eventually(Duration::from_secs(60), || {
        let (status, body) = get(addr, "/api/processes?name=metrics-probe")?;
        (status == 200 && body.contains(&format!("\"pid\":{pid}"))).then_some((status, body))
    })
    .expect("the process API lists the probe");
    let rows: serde_json::Value = serde_json::from_str(&processes).unwrap();
    assert!(rows.to_string().contains("metrics-probe"), "{rows}");

    let (status, health) = eventually(Duration::from_secs(30), || {
        get(addr, "/healthz").filter(|(s, _)| *s == 200)
    })
    .expect("/healthz is 200 once scans arrive");
    assert_eq!(status, 200, "{health}");

    let (status, metrics) = get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    for name in [
        "sentineld_records_stored_total",
        "sentineld_scan_duration_seconds",
        "sentineld_processes",
        "sentineld_collector_connected 1",
        "sentineld_process_cpu_percent{",
        "sentineld_frames_rejected_total{",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    // procmond reports itself with each scan: its memory, its WAL, and the
    // capabilities it lacks (none as root, both otherwise).
    let value = |name: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let rss = value("sentineld_collector_resident_memory_bytes").expect("procmond's RSS");
    assert!(rss > 1_000_000.0, "procmond's RSS: {rss}");
    assert!(
        value("sentineld_collector_cpu_seconds_total").is_some(),
        "{metrics}"
    );
    assert!(value("sentineld_wal_bytes").is_some(), "{metrics}");
    let missing = metrics
        .lines()
        .filter(|l| l.starts_with("sentineld_missing_capability{"))
        .count();
    let root = nix::unistd::geteuid().is_root();
    assert_eq!(missing, if root { 0 } else { 2 }, "{metrics}");
    let healthz: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        healthz["missing_capabilities"].as_array().map(Vec::len),
        Some(if root { 0 } else { 2 }),
        "{health}"
    );

    let per_process = metrics
        .lines()
        .filter(|l| l.starts_with("sentineld_process_threads{"))
        .count();
    assert!(
        (1..=10).contains(&per_process),
        "top 5 by CPU and by memory: at most 10 series, got {per_process}"
    );

    let (status, history) = eventually(Duration::from_secs(30), || {
        get(addr, &format!("/api/processes/{pid}/history?limit=5")).filter(|(s, _)| *s == 200)
    })
    .expect("the probe's history");
    assert_eq!(status, 200);
    let points: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert!(points.to_string().contains("rss_bytes"), "{points}");
    assert_eq!(get(addr, "/api/processes/abc/history").unwrap().0, 400);
    assert_eq!(get(addr, "/nope").unwrap().0, 404);
}

#[test]
fn a_remote_metrics_address_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::agent_command()
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--metrics-listen", "0.0.0.0:9184"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics-listen"), "{stderr}");
}
