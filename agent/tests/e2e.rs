//! End to end with the real binaries: sentinelagent (which starts procmond)
//! in a temp state directory, a known child process, and sentinelcli reading
//! the store while the agent runs.
//!
//! The binaries are found beside this package's `sentinelagent`; `cargo test
//! --workspace` builds all three.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use common::{Agent, cli, cli_json, eventually};

use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let parent: u32 = rest
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if parent == ppid {
            out.push(pid);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; read its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rfind(')').and_then(|i| s.get(i + 2..i + 3)) != Some("Z"))
        .unwrap_or(false)
}

#[test]
fn agent_collects_a_known_child_and_cli_finds_it_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A program with an odd file name in a directory of our own.
    let exe = dir.path().join("odd name (x)");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let expected_sha = hex::encode(Sha256::digest(std::fs::read(&exe).unwrap()));

    let mut agent = Agent::start(&state);
    let mut child = Command::new(&exe).arg("300").spawn().unwrap();
    let child_pid = child.id();

    let pid_arg = child_pid.to_string();
    let found = eventually(Duration::from_secs(60), || {
        let rows = cli_json(&state, &["ps", "--pid", &pid_arg, "--format", "json"])?;
        let row = rows.into_iter().next()?;
        // Wait until the hash has been attached as well.
        row["sha256"].is_string().then_some(row)
    });
    let _ = child.kill();
    let _ = child.wait();
    let row = found.expect("the child appears in `sentinelcli ps` with its hash");

    assert_eq!(row["pid"], child_pid);
    assert_eq!(row["ppid"], std::process::id());
    assert_eq!(row["exe"], exe.to_str().unwrap());
    assert_eq!(
        row["cmdline"],
        serde_json::json!([exe.to_str().unwrap(), "300"])
    );
    assert_eq!(row["sha256"], expected_sha.as_str());
    assert!(row["start_time"].as_str().unwrap().ends_with('Z'));
    assert!(row["rss_bytes"].as_u64().unwrap() > 0);
    assert!(row["threads"].as_u64().unwrap() >= 1);

    let scans = cli_json(&state, &["scans", "--format", "json"])
        .expect("scans answers while the agent runs");
    assert!(!scans.is_empty());
    for key in ["scan_id", "time", "process_count", "duration_us"] {
        assert!(
            scans[0].get(key).is_some(),
            "scan row has {key}: {}",
            scans[0]
        );
    }
    assert!(scans[0]["process_count"].as_u64().unwrap() > 1);

    // The agent's procmond is its child; SIGTERM stops both, cleanly.
    let procmonds: Vec<u32> = children_of(agent.pid());
    assert_eq!(
        procmonds.len(),
        1,
        "the agent supervises exactly one procmond"
    );
    let status = agent.terminate();
    assert!(
        status.success(),
        "agent exit status after SIGTERM: {status}"
    );
    let gone = eventually(Duration::from_secs(10), || {
        (!alive(procmonds[0])).then_some(())
    });
    assert!(
        gone.is_some(),
        "procmond {} still running after the agent stopped",
        procmonds[0]
    );

    // The store stays readable after shutdown.
    let rows = cli_json(&state, &["ps", "--format", "json"]).expect("ps after shutdown");
    assert!(!rows.is_empty());
}

#[test]
fn a_second_agent_on_the_same_state_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Agent::start(dir.path());
    let ready = eventually(Duration::from_secs(30), || {
        dir.path().join("sentineld.sock").exists().then_some(())
    });
    assert!(ready.is_some(), "the first agent creates its socket");
    let out = common::agent_command()
        .args(["--metrics-listen", "off"])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running"), "stderr: {stderr}");
    assert!(first.terminate().success());
}

#[test]
fn cli_on_a_missing_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&dir.path().join("nowhere"), &["ps"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no SentinelD store"), "stderr: {stderr}");
}
