//! Crash recovery with the real binaries, the agent in external collector
//! mode and procmond started separately:
//!
//! - the agent SIGKILLed while processes start and exit, restarted later:
//!   every instance that started meanwhile is stored, once;
//! - procmond SIGKILLed and its write-ahead log given a torn tail: it
//!   truncates the tail, says so, and delivers what came before;
//! - the agent stalled (SIGSTOP): procmond's credit runs out, it slows its
//!   scans and says so once; the agent resumed (SIGCONT): procmond catches
//!   up, goes back to its interval and says so once, and what started
//!   during the stall is stored.
//!
//! Nothing here asserts how fast anything happens; every wait is bounded by
//! a generous limit.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use common::{Reaped, cli_json, eventually, probe_exe, spawn_probe};
use nix::sys::signal::Signal;

const PATIENCE: Duration = Duration::from_secs(120);

/// The agent in external mode, logging to `log`.
fn agent(dir: &Path, log: &str, extra: &[&str]) -> Reaped {
    common::external_agent(
        &dir.join("state"),
        &dir.join("agent.sock"),
        &dir.join(log),
        extra,
    )
}

/// procmond, started separately, logging to `log`.
fn procmond(dir: &Path, log: &str, extra: &[&str]) -> Reaped {
    common::procmond(
        &dir.join("procmond"),
        &dir.join("agent.sock"),
        &dir.join(log),
        extra,
    )
}

fn stored(dir: &Path, name: &str) -> std::collections::BTreeMap<(u64, i64), usize> {
    common::stored_instances(&dir.join("state"), name)
}

fn stored_pids(dir: &Path, name: &str) -> std::collections::HashMap<u64, usize> {
    common::stored_pids(&dir.join("state"), name)
}

fn log_text(dir: &Path, log: &str) -> String {
    common::log_text(&dir.join(log))
}

fn wait_for_line(dir: &Path, log: &str, parts: &[&str]) -> bool {
    common::wait_for_line(&dir.join(log), parts, PATIENCE)
}

const BEFORE: u8 = 0;
const OUTAGE: u8 = 1;
const AFTER: u8 = 2;

#[test]
fn every_instance_started_while_the_agent_was_killed_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let first = agent(dir, "agent-1.log", &[]);
    let _procmond = procmond(dir, "procmond.log", &["--scan-interval", "100ms"]);
    let exe = probe_exe(dir, "recov-probe");

    // Processes start and exit the whole time: before, during and after
    // the outage.
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let spawner = {
        let (phase, stop, exe) = (Arc::clone(&phase), Arc::clone(&stop), exe.clone());
        std::thread::spawn(move || {
            let mut started: Vec<(u32, u8)> = Vec::new();
            let mut running: Vec<Child> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let child = spawn_probe(&exe, "1.5");
                started.push((child.id(), phase.load(Ordering::Relaxed)));
                running.push(child);
                running.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
                std::thread::sleep(Duration::from_millis(150));
            }
            for mut c in running {
                let _ = c.wait();
            }
            started
        })
    };

    assert!(
        eventually(PATIENCE, || (!stored_pids(dir, "recov-probe").is_empty())
            .then_some(()))
        .is_some(),
        "the collector feeds the agent"
    );
    phase.store(OUTAGE, Ordering::Relaxed);
    first.crash();
    // The outage: the spawner keeps starting processes, each of which
    // lives and exits while the agent is gone.
    std::thread::sleep(Duration::from_secs(4));
    phase.store(AFTER, Ordering::Relaxed);
    let second = agent(dir, "agent-2.log", &[]);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let started = spawner.join().unwrap();

    let during: Vec<u32> = started
        .iter()
        .filter(|(_, p)| *p == OUTAGE)
        .map(|(pid, _)| *pid)
        .collect();
    assert!(
        during.len() >= 5,
        "processes started during the outage: {during:?}"
    );
    let all_there = eventually(PATIENCE, || {
        let pids = stored_pids(dir, "recov-probe");
        started
            .iter()
            .all(|(pid, _)| pids.contains_key(&u64::from(*pid)))
            .then_some(pids)
    });
    let pids = stored_pids(dir, "recov-probe");
    let missing: Vec<&(u32, u8)> = started
        .iter()
        .filter(|(pid, _)| !pids.contains_key(&u64::from(*pid)))
        .collect();
    assert!(
        all_there.is_some(),
        "every instance is stored; missing (pid, phase): {missing:?}\nprocmond log:\n{}",
        log_text(dir, "procmond.log")
    );
    for (key, rows) in stored(dir, "recov-probe") {
        assert_eq!(rows, 1, "instance {key:?} is stored once");
    }
    for pid in &during {
        assert_eq!(
            pids.get(&u64::from(*pid)),
            Some(&1),
            "the instance of pid {pid}, started during the outage, is stored once"
        );
    }
    // Replayed scans are not stored twice either.
    let scans = cli_json(&dir.join("state"), &["scans", "--format", "json", "--all"]).unwrap();
    let mut keys: Vec<String> = scans
        .iter()
        .map(|s| format!("{}/{}", s["time"], s["duration_us"]))
        .collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "no scan is stored twice");
    drop(second);
}

#[test]
fn a_torn_wal_tail_is_truncated_and_what_came_before_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let flags = ["--scan-interval", "100ms", "--wal-sync", "every-batch"];
    let first_agent = agent(dir, "agent-1.log", &[]);
    let first = procmond(dir, "procmond-1.log", &flags);
    let exe = probe_exe(dir, "torn-probe");
    let mut warmup = spawn_probe(&exe, "1");
    assert!(
        eventually(PATIENCE, || (!stored_pids(dir, "torn-probe").is_empty())
            .then_some(()))
        .is_some(),
        "the collector feeds the agent"
    );
    warmup.wait().unwrap();

    // With the agent gone, a process starts and exits: only procmond's
    // log holds it (every batch synced).
    first_agent.crash();
    let mut away = spawn_probe(&exe, "2");
    let away_pid = u64::from(away.id());
    away.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    first.crash();

    // A torn tail: a frame header announcing more bytes than follow.
    let wal = dir.join("procmond").join("wal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let active = segments.last().expect("a WAL segment");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(active)
        .unwrap();
    let mut torn = 4096u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    file.write_all(&torn).unwrap();
    drop(file);

    let _second = procmond(dir, "procmond-2.log", &flags);
    let _second_agent = agent(dir, "agent-2.log", &[]);
    assert!(
        wait_for_line(
            dir,
            "procmond-2.log",
            &["recovered from a torn or corrupt tail"]
        ),
        "procmond reports the torn tail:\n{}",
        log_text(dir, "procmond-2.log")
    );
    assert!(
        eventually(PATIENCE, || stored_pids(dir, "torn-probe")
            .contains_key(&away_pid)
            .then_some(()))
        .is_some(),
        "the process seen before the tear is stored:\n{}",
        log_text(dir, "procmond-2.log")
    );
}

#[test]
fn a_stalled_agent_slows_procmond_down_until_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let agent = agent(dir, "agent.log", &["--max-pending-records", "1000"]);
    let _procmond = procmond(
        dir,
        "procmond.log",
        &["--scan-interval", "100ms", "--backpressure-interval", "1s"],
    );
    let exe = probe_exe(dir, "stall-probe");
    let mut warmup = spawn_probe(&exe, "1");
    assert!(
        eventually(PATIENCE, || (!stored_pids(dir, "stall-probe").is_empty())
            .then_some(()))
        .is_some(),
        "the collector feeds the agent"
    );
    warmup.wait().unwrap();

    agent.signal(Signal::SIGSTOP);
    let mut during = spawn_probe(&exe, "1");
    let during_pid = u64::from(during.id());
    let engaged = wait_for_line(dir, "procmond.log", &["backpressure", "engaged"]);
    during.wait().unwrap();
    agent.signal(Signal::SIGCONT);
    assert!(
        engaged,
        "procmond says its credit ran out:\n{}",
        log_text(dir, "procmond.log")
    );
    assert!(
        wait_for_line(dir, "procmond.log", &["backpressure", "released"]),
        "procmond says the agent caught up:\n{}",
        log_text(dir, "procmond.log")
    );
    assert!(
        eventually(PATIENCE, || stored_pids(dir, "stall-probe")
            .contains_key(&during_pid)
            .then_some(()))
        .is_some(),
        "the process started during the stall is stored"
    );
    // Each transition is logged once, not once per scan.
    let log = log_text(dir, "procmond.log");
    let count = |word: &str| {
        log.lines()
            .filter(|l| l.contains("backpressure") && l.contains(word))
            .count()
    };
    let (engaged, released) = (count("engaged"), count("released"));
    assert!(
        engaged >= 1 && released >= 1 && engaged.abs_diff(released) <= 1,
        "{engaged} engaged, {released} released:\n{log}"
    );
    assert!(
        engaged <= 3,
        "the stall is logged once per transition, not per scan:\n{log}"
    );
}
