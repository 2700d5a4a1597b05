//! `procmond --once`, run as a real binary.

mod common;

use std::process::{Command, Stdio};

use common::{Reaped, copy_sleep, sha256_hex, spawn_retrying};
use serde_json::{Value, json};

/// Runs `procmond --once` and parses its JSON lines.
/// `once()` until `pid`'s executable is hashed: `--once` waits a bounded
/// time for hashes, which a loaded machine (other tests hashing every
/// executable too) can exceed.
fn once_hashed(pid: u32) -> Vec<Value> {
    for _ in 0..3 {
        let views = once();
        if views
            .iter()
            .any(|v| v["pid"] == pid && v["hash_status"] != "pending")
        {
            return views;
        }
    }
    once()
}

fn once() -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_procmond"))
        .arg("--once")
        .stderr(Stdio::inherit())
        .output()
        .expect("run procmond --once");
    assert!(
        out.status.success(),
        "procmond --once failed: {:?}",
        out.status
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn find(views: &[Value], pid: u32) -> &Value {
    views
        .iter()
        .find(|v| v["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in the output"))
}

#[test]
fn reports_a_child_with_an_odd_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = copy_sleep(dir.path(), "odd name (x)");
    let expected = sha256_hex(&exe);
    let child = Reaped(spawn_retrying(&exe, &["30"]));
    let pid = child.0.id();

    let views = once_hashed(pid);
    let v = find(&views, pid);
    let exe_str = exe.to_str().expect("utf-8 path");
    assert_eq!(v["ppid"], std::process::id());
    assert_eq!(v["name"], "odd name (x)");
    assert_eq!(v["exe"], exe_str);
    assert_eq!(v["cmdline"], json!([exe_str, "30"]));
    assert_eq!(v["sha256"], expected);
    assert_eq!(v["hash_status"], "ok");
    assert_eq!(v["exe_deleted"], false);
    assert_eq!(v["threads"], 1);
    assert_eq!(v["uid"], nix::unistd::getuid().as_raw());

    // Every process once, in pid order, and this test among them.
    let pids: Vec<u64> = views
        .iter()
        .map(|v| v["pid"].as_u64().expect("pid"))
        .collect();
    assert!(pids.windows(2).all(|w| w[0] < w[1]), "{pids:?}");
    find(&views, std::process::id());
}

#[test]
fn hashes_what_runs_after_the_file_is_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = copy_sleep(dir.path(), "deleted (y)");
    let expected = sha256_hex(&exe);
    let child = Reaped(spawn_retrying(&exe, &["30"]));
    std::fs::remove_file(&exe).expect("delete the copy");
    assert!(!exe.exists());

    let views = once_hashed(child.0.id());
    let v = find(&views, child.0.id());
    assert_eq!(v["exe"], exe.to_str().expect("utf-8 path"));
    assert_eq!(v["exe_deleted"], true);
    assert_eq!(v["hash_status"], "ok");
    assert_eq!(v["sha256"], expected);
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_procmond"))
        .arg("--once")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run procmond --once");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for procmond");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
