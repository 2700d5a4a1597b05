//! The audit ledger end to end: the real agent and procmond run a few scans,
//! then `sentinelcli audit verify` passes on the untouched state directory
//! and fails, naming the position, after each kind of tampering with the
//! ledger or the store (each on its own copy).

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use common::{Agent, cli, cli_json, eventually, external_agent, procmond, wait_timeout};

use std::fs;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde_json::Value;
use tempfile::TempDir;

const SCANS: TableDefinition<u64, &[u8]> = TableDefinition::new("scans");
const SCAN_KEYS: TableDefinition<(u128, i64, u64), u64> = TableDefinition::new("scan_keys");

/// Runs the system until the store holds `scans` scans, then stops it.
fn record_scans(dir: &Path, scans: usize) {
    let mut agent = Agent::start(dir);
    eventually(Duration::from_secs(60), || {
        cli_json(dir, &["scans", "--format", "json"]).filter(|s| s.len() >= scans)
    })
    .expect("the agent stores scans");
    assert!(agent.terminate().success());
}

/// A copy of the store and the ledger in a new state directory.
fn copy_state(from: &Path) -> TempDir {
    let to = TempDir::new().unwrap();
    fs::copy(from.join("store.redb"), to.path().join("store.redb")).unwrap();
    fs::create_dir(to.path().join("procmond")).unwrap();
    fs::copy(
        from.join("procmond/ledger.log"),
        to.path().join("procmond/ledger.log"),
    )
    .unwrap();
    to
}

fn ledger_lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("procmond/ledger.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_ledger(dir: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(dir.join("procmond/ledger.log"), text).unwrap();
}

/// Runs `audit verify`; returns its exit code and the JSON report.
fn verify(dir: &Path) -> (i32, Value) {
    let out = cli(dir, &["audit", "verify", "--format", "json"]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

/// Asserts `audit verify` fails with a first problem of `kind` whose
/// message contains every one of `words`; returns the problem.
fn fails_with(dir: &Path, kind: &str, words: &[&str]) -> Value {
    let (code, report) = verify(dir);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["intact"], false);
    let first = report["problems"][0].clone();
    assert_eq!(first["kind"], kind, "{report:#}");
    let message = first["message"].as_str().unwrap();
    for w in words {
        assert!(message.contains(w), "{message:?} lacks {w:?}");
    }
    // The table names the problem too.
    let table = cli(dir, &["audit", "verify"]);
    assert_eq!(table.status.code(), Some(1));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("NOT intact"), "{text}");
    assert!(text.contains(message), "{text}");
    first
}

/// The ledger entry (from the ledger copy at `dir`) of the stored scan
/// with the given scan id.
fn stored_scan_entry(dir: &Path, line: usize) -> (u64, Value) {
    let entry: Value = serde_json::from_str(&ledger_lines(dir)[line - 1]).unwrap();
    let db = Database::open(dir.join("store.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let keys = txn.open_table(SCAN_KEYS).unwrap();
    let boot = u128::from_le_bytes(
        hex::decode(entry["boot_id"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let key = (
        boot,
        entry["time_ms"].as_i64().unwrap(),
        entry["scan_seq"].as_u64().unwrap(),
    );
    let id = keys.get(key).unwrap().expect("scan stored").value();
    (id, entry)
}

#[test]
fn verify_passes_untouched_and_names_each_tampering() {
    let run = TempDir::new().unwrap();
    record_scans(run.path(), 6);

    // Untouched.
    let (code, report) = verify(run.path());
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["intact"], true);
    let lines = ledger_lines(run.path());
    assert!(lines.len() >= 6, "{lines:?}");
    assert_eq!(report["entries"], lines.len());
    assert!(report["scans_matched"].as_u64().unwrap() >= 5, "{report:#}");
    let head = cli(run.path(), &["audit", "head"]);
    assert!(head.status.success());
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&head.stdout)
            .split(' ')
            .take(2)
            .collect::<Vec<_>>(),
        [
            last["seq"].to_string(),
            last["hash"].as_str().unwrap().to_owned()
        ]
    );

    // A ledger entry edited.
    let copy = copy_state(run.path());
    let mut lines = ledger_lines(copy.path());
    lines[2] = lines[2].replacen("\"process_count\":", "\"process_count\":1", 1);
    write_ledger(copy.path(), &lines);
    let p = fails_with(copy.path(), "chain", &["entry 3", "line 3", "edited"]);
    assert_eq!(p["ledger_line"], 3);
    assert_ne!(cli(copy.path(), &["audit", "head"]).status.code(), Some(0));

    // A ledger entry deleted.
    let copy = copy_state(run.path());
    let mut lines = ledger_lines(copy.path());
    lines.remove(2);
    write_ledger(copy.path(), &lines);
    fails_with(copy.path(), "chain", &["entry 3 is missing", "line 3"]);

    // Two entries swapped.
    let copy = copy_state(run.path());
    let mut lines = ledger_lines(copy.path());
    lines.swap(2, 3);
    write_ledger(copy.path(), &lines);
    fails_with(copy.path(), "chain", &["out of place", "line 3"]);

    // The last entries cut off: the chain holds, but the store has scans
    // the ledger no longer vouches for.
    let copy = copy_state(run.path());
    let (cut_id, _) = stored_scan_entry(copy.path(), 5);
    let mut lines = ledger_lines(copy.path());
    lines.truncate(4);
    write_ledger(copy.path(), &lines);
    let p = fails_with(copy.path(), "scan_unknown", &["has no ledger entry"]);
    assert_eq!(p["scan_id"], cut_id);

    // A stored scan edited: its digest no longer matches.
    let copy = copy_state(run.path());
    let (id, entry) = stored_scan_entry(copy.path(), 3);
    let digest = hex::decode(entry["digest"].as_str().unwrap()).unwrap();
    {
        let db = Database::open(copy.path().join("store.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut scans = txn.open_table(SCANS).unwrap();
            let mut row = scans.get(id).unwrap().unwrap().value().to_vec();
            let at = row
                .windows(32)
                .position(|w| w == digest.as_slice())
                .expect("the row holds the ledger's digest");
            row[at] ^= 0xff;
            scans.insert(id, row.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let p = fails_with(
        copy.path(),
        "scan_differs",
        &[&format!("stored scan {id} "), "ledger entry 3", "line 3"],
    );
    assert_eq!(p["scan_id"], id);

    // A stored scan deleted.
    let copy = copy_state(run.path());
    let (id, entry) = stored_scan_entry(copy.path(), 3);
    {
        let db = Database::open(copy.path().join("store.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut scans = txn.open_table(SCANS).unwrap();
            scans.remove(id).unwrap().unwrap();
            let mut keys = txn.open_table(SCAN_KEYS).unwrap();
            let boot = u128::from_le_bytes(
                hex::decode(entry["boot_id"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
            );
            keys.remove((
                boot,
                entry["time_ms"].as_i64().unwrap(),
                entry["scan_seq"].as_u64().unwrap(),
            ))
            .unwrap();
        }
        txn.commit().unwrap();
    }
    let p = fails_with(
        copy.path(),
        "scan_missing",
        &["ledger entry 3", "line 3", "no stored scan"],
    );
    assert_eq!(p["ledger_seq"], 3);

    // A ledger that cannot be read is an error (2), not a verdict.
    let copy = copy_state(run.path());
    fs::remove_file(copy.path().join("procmond/ledger.log")).unwrap();
    let out = cli(copy.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ledger.log"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ledger's sealed segments in `dir` (a state directory), oldest first.
fn sealed(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join("procmond"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("ledger.") && name != "ledger.log"
        })
        .collect();
    files.sort();
    files
}

/// A copy of the store and every ledger segment in a new state directory.
fn copy_segments(from: &Path) -> TempDir {
    let to = TempDir::new().unwrap();
    fs::copy(from.join("store.redb"), to.path().join("store.redb")).unwrap();
    fs::create_dir(to.path().join("procmond")).unwrap();
    for item in fs::read_dir(from.join("procmond")).unwrap() {
        let path = item.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if name.to_string_lossy().starts_with("ledger.") {
            fs::copy(&path, to.path().join("procmond").join(name)).unwrap();
        }
    }
    to
}

#[test]
fn verify_follows_the_chain_across_rotated_segments() {
    let run = TempDir::new().unwrap();
    let state = run.path();
    let socket = state.join("sentineld.sock");
    let mut agent = external_agent(state, &socket, &state.join("agent.log"), &[]);
    let mut collector = procmond(
        &state.join("procmond"),
        &socket,
        &state.join("procmond.log"),
        &[
            "--scan-interval",
            "100ms",
            "--ledger-segment-bytes",
            "4KiB",
            "--ledger-keep",
            "100",
        ],
    );
    eventually(Duration::from_secs(90), || {
        let stored = cli_json(state, &["scans", "--format", "json"])?;
        (sealed(state).len() >= 3 && stored.len() >= 20).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "procmond seals ledger segments: {:?}\n{}",
            sealed(state),
            common::log_text(&state.join("procmond.log"))
        )
    });
    collector.signal(Signal::SIGTERM);
    wait_timeout(&mut collector.0, Duration::from_secs(20)).expect("procmond exits");
    agent.signal(Signal::SIGTERM);
    wait_timeout(&mut agent.0, Duration::from_secs(20)).expect("the agent exits");

    let segments = sealed(state);
    for path in &segments {
        assert!(
            fs::metadata(path).unwrap().len() <= 4096,
            "{}",
            path.display()
        );
    }
    let (code, report) = verify(state);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["segments"].as_array().unwrap().len(),
        segments.len() + 1
    );
    assert_eq!(report["rotated"], Value::Null);
    assert!(
        report["scans_matched"].as_u64().unwrap() >= 15,
        "{report:#}"
    );
    let head = cli(state, &["audit", "head"]);
    assert!(head.status.success());
    let last: Value = serde_json::from_str(ledger_lines(state).last().unwrap()).unwrap();
    assert!(String::from_utf8_lossy(&head.stdout).starts_with(&format!(
        "{} {}",
        last["seq"],
        last["hash"].as_str().unwrap()
    )));

    // An entry in a sealed segment edited: the break names its file.
    let copy = copy_segments(state);
    let victim = sealed(copy.path())[1].clone();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let text = fs::read_to_string(&victim).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1] = lines[1].replacen("\"process_count\":", "\"process_count\":1", 1);
    fs::write(&victim, lines.join("\n") + "\n").unwrap();
    let p = fails_with(copy.path(), "chain", &[&name, "line 2", "edited"]);
    assert_eq!(
        (p["ledger_file"].as_str(), p["ledger_line"].as_u64()),
        (Some(name.as_str()), Some(2))
    );

    // A sealed segment in the middle deleted: a break in the next one.
    let copy = copy_segments(state);
    let segments = sealed(copy.path());
    fs::remove_file(&segments[1]).unwrap();
    let next = segments[2]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    fails_with(copy.path(), "chain", &[&next, "missing before line 1"]);

    // The oldest segment deleted: rotation, reported but intact.
    let copy = copy_segments(state);
    let segments = sealed(copy.path());
    fs::remove_file(&segments[0]).unwrap();
    let (code, report) = verify(copy.path());
    assert_eq!(code, 0, "{report:#}");
    let first: Value = serde_json::from_str(
        fs::read_to_string(&segments[1])
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["rotated"]["first_seq"], first["seq"]);
    assert_eq!(report["rotated"]["prev"], first["prev"]);
    let table = cli(copy.path(), &["audit", "verify"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(&format!(
            "entries before {} were rotated away",
            first["seq"]
        )),
        "{text}"
    );
    let head = cli(copy.path(), &["audit", "head", "--format", "json"]);
    assert!(head.status.success());
    let head: Value = serde_json::from_slice(&head.stdout).unwrap();
    assert_eq!(head["rotated"]["first_seq"], first["seq"]);
}
