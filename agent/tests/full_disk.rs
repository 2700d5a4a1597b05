//! A full disk under the agent's store, with the real binaries: the agent in
//! external collector mode with its state directory on a small tmpfs, and
//! procmond with its write-ahead log on the ordinary disk.
//!
//! - The tmpfs is filled: the agent says once, naming the filesystem and
//!   what to do, that it cannot store; it keeps running, `/healthz` says the
//!   store is not writable, nothing new is stored, and procmond's
//!   write-ahead log grows with the processes that start (and some that
//!   exit) meanwhile.
//! - Space returns: the agent says so once, without a restart, and every
//!   one of those processes is stored, once.
//! - The disk fills again and the agent gets SIGTERM: it stops, cleanly;
//!   started again once there is space, it opens its store and stores what
//!   procmond kept meanwhile.
//!
//! Mounting needs root: without it (or when the mount fails) the test says
//! why and passes. Nothing here asserts how fast anything happens; every
//! wait is bounded by a generous limit.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    Reaped, eventually, free_port, http_get, log_lines, log_text, probe_exe, spawn_probe,
    wait_for_line,
};
use nix::sys::signal::Signal;

const PATIENCE: Duration = Duration::from_secs(120);

const PROBE: &str = "fulldisk-probe";

/// What the agent logs when the store's disk is full, and when it is not.
const FULL: &[&str] = &["cannot store batch", "No space left on device"];
const WRITABLE: &[&str] = &["store writable again after"];

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `32m`) on `dir`; the error says why not.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("mounting a tmpfs needs root".to_owned());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process of a failed test not reaped yet): detach
            // it now; the kernel frees it when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the filesystem of `dir` with `dir/filler`, to the last byte.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let block = vec![0x5a_u8; 1 << 16];
    let mut size = block.len();
    loop {
        match file.write(&block[..size]) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {
                if size == 1 {
                    return path;
                }
                size = (size / 16).max(1);
            }
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// Bytes in procmond's write-ahead log.
fn wal_bytes(procmond_state: &Path) -> u64 {
    std::fs::read_dir(procmond_state.join("wal"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The stored instances of `pids`, live or exited: (pid, start time) →
/// rows. Found by pid rather than by name: a scan can catch a child between
/// its fork and its exec, under the name of the test's thread.
fn stored(state: &Path, pids: &[u64]) -> BTreeMap<(u64, i64), usize> {
    let condition = pids
        .iter()
        .map(|pid| format!("pid = {pid}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    common::stored_where(state, &condition)
}

/// Which of `pids` have no stored instance.
fn missing(state: &Path, pids: &[u64]) -> Vec<u64> {
    let stored = stored(state, pids);
    pids.iter()
        .copied()
        .filter(|pid| !stored.keys().any(|(p, _)| p == pid))
        .collect()
}

/// Waits until every one of `pids` is stored.
fn all_stored(state: &Path, pids: &[u64]) -> bool {
    eventually(PATIENCE, || missing(state, pids).is_empty().then_some(())).is_some()
}

/// `/healthz`: its status and body.
fn health(addr: std::net::SocketAddr) -> Option<(u16, serde_json::Value)> {
    let (status, body) = http_get(addr, "/healthz")?;
    Some((status, serde_json::from_str(&body).ok()?))
}

#[test]
fn a_full_disk_is_reported_once_and_storing_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mnt = dir.join("agent-fs");
    let _tmpfs = match Tmpfs::mount(&mnt, "32m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let state = mnt.join("state");
    let socket = dir.join("agent.sock");
    let agent_log = dir.join("agent.log");
    let procmond_state = dir.join("procmond");
    let metrics = free_port();
    let mut agent = common::external_agent(
        &state,
        &socket,
        &agent_log,
        &["--metrics-listen", &metrics.to_string()],
    );
    let _procmond = common::procmond(
        &procmond_state,
        &socket,
        &dir.join("procmond.log"),
        &[
            "--scan-interval",
            "100ms",
            "--backpressure-interval",
            "300ms",
        ],
    );
    let exe = probe_exe(dir, PROBE);
    let mut warmup = spawn_probe(&exe, "1");
    assert!(
        all_stored(&state, &[u64::from(warmup.id())]),
        "the collector feeds the agent:\n{}",
        log_text(&agent_log)
    );
    warmup.wait().unwrap();

    // The outage: the store's filesystem is full.
    let filler = fill(&mnt);
    assert!(
        wait_for_line(&agent_log, FULL, PATIENCE),
        "the agent says its disk is full:\n{}",
        log_text(&agent_log)
    );
    let line = log_text(&agent_log)
        .lines()
        .find(|l| FULL.iter().all(|p| l.contains(p)))
        .unwrap()
        .to_owned();
    assert!(
        line.contains(&mnt.display().to_string()) && line.contains("free space"),
        "the message names the filesystem and what to do: {line}"
    );
    let (status, body) = eventually(PATIENCE, || {
        health(metrics).filter(|(_, body)| body["store_writable"] == false)
    })
    .expect("/healthz says the store is not writable");
    assert_eq!(status, 503, "{body}");

    // Processes start during the outage: some live on, some exit before
    // it ends, each seen by several scans.
    let wal_at_start = wal_bytes(&procmond_state);
    let mut started = Vec::new();
    let mut living = Vec::new();
    let mut exiting = Vec::new();
    for _ in 0..3 {
        let child = spawn_probe(&exe, "600");
        started.push(u64::from(child.id()));
        living.push(Reaped(child));
        let child = spawn_probe(&exe, "2");
        started.push(u64::from(child.id()));
        exiting.push(child);
    }
    for child in &mut exiting {
        child.wait().unwrap();
    }
    assert!(
        eventually(PATIENCE, || (wal_bytes(&procmond_state) > wal_at_start)
            .then_some(()))
        .is_some(),
        "procmond's write-ahead log holds the backlog"
    );
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "the agent keeps running:\n{}",
        log_text(&agent_log)
    );
    assert_eq!(
        missing(&state, &started),
        started,
        "nothing is stored while the disk is full"
    );
    assert_eq!(
        log_lines(&agent_log, FULL),
        1,
        "the outage is logged once, not once per batch:\n{}",
        log_text(&agent_log)
    );

    // Space returns: the agent stores the backlog without a restart.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        all_stored(&state, &started),
        "every process started during the outage is stored; missing pids {:?}\n{}",
        missing(&state, &started),
        log_text(&agent_log)
    );
    for (instance, rows) in stored(&state, &started) {
        assert_eq!(rows, 1, "instance {instance:?} is stored once");
    }
    assert!(
        wait_for_line(&agent_log, WRITABLE, PATIENCE),
        "the agent says the store is writable again:\n{}",
        log_text(&agent_log)
    );
    assert_eq!(log_lines(&agent_log, FULL), 1);
    assert_eq!(log_lines(&agent_log, WRITABLE), 1);
    assert!(
        eventually(PATIENCE, || health(metrics).filter(
            |(status, body)| *status == 200 && body["store_writable"] == true
        ))
        .is_some(),
        "/healthz is healthy again: {:?}",
        health(metrics)
    );

    // Full again, and the agent is told to stop: a write waiting for space
    // does not hold the shutdown, and what was waiting is not lost.
    let filler = fill(&mnt);
    assert!(
        eventually(PATIENCE, || (log_lines(&agent_log, FULL) == 2)
            .then_some(()))
        .is_some(),
        "a second outage is logged again:\n{}",
        log_text(&agent_log)
    );
    let late = Reaped(spawn_probe(&exe, "600"));
    let late_pid = [u64::from(late.pid())];
    agent.signal(Signal::SIGTERM);
    let status = common::wait_timeout(&mut agent.0, PATIENCE)
        .expect("the agent stops on SIGTERM while its disk is full");
    assert!(status.success(), "{status}:\n{}", log_text(&agent_log));
    assert_eq!(
        log_lines(&agent_log, &["stopping while the store waits for space"]),
        1
    );

    std::fs::remove_file(&filler).unwrap();
    let restarted_log = dir.join("agent-2.log");
    let _restarted = common::external_agent(&state, &socket, &restarted_log, &[]);
    assert!(
        all_stored(&state, &late_pid),
        "the store opens again and the process started during the second outage is stored:\n{}",
        log_text(&restarted_log)
    );
    for (instance, rows) in stored(&state, &[started.as_slice(), &late_pid].concat()) {
        assert_eq!(rows, 1, "instance {instance:?} is stored once");
    }
    drop((living, late));
}
