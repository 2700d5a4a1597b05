//! Alert latency, end to end with the real binaries: the time from starting
//! a process that a built-in rule catches (a program run from a temp
//! directory) to its alert line leaving sentinelagent's stdout sink.
//!
//! ```sh
//! cargo build --release --workspace
//! cargo run --release -p sentineld-benches --bin alert-latency -- [RUNS] [SCAN_INTERVAL]
//! ```
//!
//! Defaults: 20 runs, a 1s scan interval. Every process it starts, it stops
//! by its pid; the agent is stopped with SIGTERM by its pid.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let interval = args.next().unwrap_or_else(|| "1s".to_owned());
    let agent_bin = sentineld_benches::sibling_binary("sentinelagent")?;
    let dir = tempfile::tempdir()?;
    let mut agent = Command::new(&agent_bin)
        .args(["--metrics-listen", "off"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--rules-dir")
        .arg(dir.path().join("no-rules"))
        .args(["--scan-interval", &interval, "--alert-sink", "stdout"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = agent.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel::<(Instant, serde_json::Value)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let at = Instant::now();
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send((at, v));
            }
        }
    });
    // Let the agent and procmond settle on their first snapshot.
    std::thread::sleep(Duration::from_secs(3));

    let program: PathBuf = dir.path().join("latency-probe");
    std::fs::copy("/bin/sleep", &program)?;
    let mut latencies = Vec::with_capacity(runs);
    for run in 0..runs {
        // Start at a varying point of the scan cycle.
        std::thread::sleep(Duration::from_millis(137 * (run as u64 % 7)));
        let started = Instant::now();
        let mut child = Command::new(&program).arg("60").spawn()?;
        let pid = u64::from(child.id());
        let deadline = started + Duration::from_secs(30);
        let mut found = None;
        while let Ok((at, alert)) =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if alert["rule_id"] == "linux.exec_from_tmp" && alert["process"]["pid"] == pid {
                found = Some(at.duration_since(started));
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        match found {
            Some(latency) => latencies.push(latency),
            None => eprintln!("run {run}: no alert within 30 s"),
        }
    }
    sentineld_benches::terminate(agent.id());
    let _ = agent.wait();

    latencies.sort();
    let pick = |q: f64| sentineld_benches::quantile(&latencies, q);
    println!(
        "alert latency over {} runs at scan interval {interval}: min {:?}  p50 {:?}  p99 {:?}  max {:?}",
        latencies.len(),
        pick(0.0),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    Ok(())
}
