//! Helpers the agent's integration tests share: the real binaries, the CLI
//! and polling.

#![allow(dead_code, reason = "each test binary uses a part of these")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A workspace binary beside this package's `sentinelagent`.
pub fn bin(name: &str) -> PathBuf {
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_sentinelagent"));
    let path = agent.with_file_name(name);
    assert!(
        path.is_file(),
        "{} not built: run the workspace's tests (cargo test --workspace)",
        path.display()
    );
    path
}

/// Runs the real `sentinelcli` on `state_dir`.
pub fn cli(state_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("sentinelcli"))
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()
        .expect("run sentinelcli")
}

/// Runs `sentinelcli` and parses its JSON output; `None` when it failed.
pub fn cli_json(state_dir: &Path, args: &[&str]) -> Option<Vec<Value>> {
    let out = cli(state_dir, args);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls `f` until it returns Some, for at most `limit`.
pub fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
