//! Runs the real `sentinelcli` against a store built in a temporary
//! directory with the agent's own writer, which stays open while the CLI
//! reads, as it does beside a running agent.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use sentineld_agent::store::Store;
use sentineld_proto::v1::{ExeInfo, HashStatus, InstanceRef, ProcessRecord, Sample, ScanBatch};
use serde_json::Value;
use tempfile::TempDir;

const BOOT: [u8; 16] = [0x42; 16];
/// Time of the first scan, unix milliseconds (2026-09-21T14:13:20Z).
const T0: i64 = 1_790_000_000_000;

/// A process of the fixture.
struct Proc {
    pid: u32,
    ppid: u32,
    name: &'static str,
    exe: &'static str,
    cmdline: &'static [&'static str],
    uid: u32,
    user: &'static str,
    sha256: Option<u8>,
}

const PROCS: &[Proc] = &[
    Proc {
        pid: 1,
        ppid: 0,
        name: "systemd",
        exe: "/usr/lib/systemd/systemd",
        cmdline: &["/sbin/init"],
        uid: 0,
        user: "root",
        sha256: Some(0x11),
    },
    Proc {
        pid: 2,
        ppid: 0,
        name: "kthreadd",
        exe: "",
        cmdline: &[],
        uid: 0,
        user: "root",
        sha256: None,
    },
    Proc {
        pid: 50,
        ppid: 2,
        name: "kworker/0:1",
        exe: "",
        cmdline: &[],
        uid: 0,
        user: "root",
        sha256: None,
    },
    Proc {
        pid: 100,
        ppid: 1,
        name: "sshd",
        exe: "/usr/sbin/sshd",
        cmdline: &["sshd: /usr/sbin/sshd -D"],
        uid: 0,
        user: "root",
        sha256: Some(0xab),
    },
    Proc {
        pid: 200,
        ppid: 100,
        name: "bash",
        exe: "/usr/bin/bash",
        cmdline: &["bash", "-c", "echo a, \"b\""],
        uid: 1000,
        user: "alice",
        sha256: Some(0xcd),
    },
    Proc {
        pid: 201,
        ppid: 200,
        name: "Python3",
        exe: "/usr/bin/python3.12",
        cmdline: &["python3", "x.py"],
        uid: 1000,
        user: "alice",
        sha256: None,
    },
    // Exits at the second scan.
    Proc {
        pid: 300,
        ppid: 1,
        name: "short",
        exe: "/usr/bin/short",
        cmdline: &["short"],
        uid: 1000,
        user: "alice",
        sha256: Some(0x30),
    },
];

fn start_of(pid: u32) -> i64 {
    1_789_000_000 + i64::from(pid)
}

fn instance(pid: u32) -> InstanceRef {
    InstanceRef {
        pid,
        start_time: start_of(pid),
    }
}

fn sample(pid: u32, scan: u32) -> Sample {
    Sample {
        instance: Some(instance(pid)),
        cpu_percent: 1.5 * scan as f32,
        rss_bytes: 1024 * 1024 * u64::from(pid) + u64::from(scan),
        vms_bytes: 4 * 1024 * 1024 * u64::from(pid),
        threads: 1 + scan,
        open_fds: Some(10 + scan),
        status: "S".into(),
        listening_ports: Vec::new(),
        swap_bytes: None,
    }
}

fn record(p: &Proc) -> ProcessRecord {
    let exe_info = match p.sha256 {
        Some(byte) => ExeInfo {
            sha256: vec![byte; 32],
            hash_status: HashStatus::Ok as i32,
            size: 1000,
            ..ExeInfo::default()
        },
        None if p.exe.is_empty() => ExeInfo {
            hash_status: HashStatus::NoExe as i32,
            ..ExeInfo::default()
        },
        None => ExeInfo {
            hash_status: HashStatus::Pending as i32,
            ..ExeInfo::default()
        },
    };
    ProcessRecord {
        instance: Some(instance(p.pid)),
        ppid: p.ppid,
        name: p.name.into(),
        exe: p.exe.into(),
        cmdline: p.cmdline.iter().map(|s| (*s).to_owned()).collect(),
        uid: Some(p.uid),
        user: p.user.into(),
        exe_info: Some(exe_info),
        container_id: String::new(),
        parent_start_time: start_of(p.ppid),
        sample: Some(sample(p.pid, 1)),
    }
}

/// A store holding two scans: a snapshot of every fixture process, then a
/// scan that samples them again and sees pid 300 exit. The writer is
/// returned open, as the running agent holds it.
fn fixture() -> (TempDir, Store) {
    let dir = TempDir::new().expect("temp dir");
    let mut store = Store::open(&dir.path().join("store.redb")).expect("create store");
    let first = ScanBatch {
        scan_seq: 1,
        last_chunk: true,
        snapshot: true,
        time_ms: T0,
        duration_us: 2500,
        process_count: PROCS.len() as u32,
        started: PROCS.iter().map(record).collect(),
        ..ScanBatch::default()
    };
    let outcome = store.apply_batch(BOOT, &first).expect("first scan");
    assert!(outcome.scan_id.is_some());
    let second = ScanBatch {
        scan_seq: 2,
        last_chunk: true,
        time_ms: T0 + 1_000,
        duration_us: 900,
        process_count: PROCS.len() as u32 - 1,
        exited: vec![instance(300)],
        samples: PROCS
            .iter()
            .filter(|p| p.pid != 300)
            .map(|p| sample(p.pid, 2))
            .collect(),
        ..ScanBatch::default()
    };
    let outcome = store.apply_batch(BOOT, &second).expect("second scan");
    assert!(outcome.scan_id.is_some());
    (dir, store)
}

fn cli(state_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sentinelcli"))
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()
        .expect("run sentinelcli")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

/// Runs a command that must succeed and print JSON; returns the array.
fn json(state_dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = cli(state_dir, &all);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    match serde_json::from_slice(&out.stdout).expect("stdout is JSON") {
        Value::Array(rows) => rows,
        other => panic!("expected a JSON array, got {other}"),
    }
}

fn pids(rows: &[Value]) -> Vec<u64> {
    rows.iter()
        .map(|r| r["pid"].as_u64().expect("pid is a number"))
        .collect()
}

#[test]
fn ps_json_lists_the_live_processes_with_their_latest_sample() {
    let (dir, _store) = fixture();
    let rows = json(dir.path(), &["ps"]);
    assert_eq!(pids(&rows), [1, 2, 50, 100, 200, 201]);

    let bash = &rows[4];
    assert_eq!(bash["pid"], 200);
    assert_eq!(bash["ppid"], 100);
    assert_eq!(bash["name"], "bash");
    assert_eq!(bash["exe"], "/usr/bin/bash");
    assert_eq!(
        bash["cmdline"],
        serde_json::json!(["bash", "-c", "echo a, \"b\""])
    );
    assert_eq!(bash["start_time"], "2026-09-10T00:30:00Z");
    assert_eq!(bash["uid"], 1000);
    assert_eq!(bash["user"], "alice");
    assert_eq!(bash["sha256"], "cd".repeat(32));
    assert_eq!(bash["hash_status"], "ok");
    // The second scan's sample, not the record's first one.
    assert_eq!(bash["rss_bytes"], 200 * 1024 * 1024 + 2);
    assert_eq!(bash["cpu_percent"], 3.0);
    assert_eq!(bash["threads"], 3);
    assert_eq!(bash["open_fds"], 12);
    assert!(bash.get("depth").is_none(), "depth only with --tree");

    let kthreadd = &rows[1];
    assert!(kthreadd["exe"].is_null());
    assert!(kthreadd["sha256"].is_null());
    assert_eq!(kthreadd["hash_status"], "no_exe");
    assert_eq!(kthreadd["cmdline"], serde_json::json!([]));
}

#[test]
fn ps_filters_select_and_combine() {
    let (dir, _store) = fixture();
    let d = dir.path();
    assert_eq!(pids(&json(d, &["ps", "--name", "PYTHON"])), [201]);
    // The executable's file name counts too.
    assert_eq!(pids(&json(d, &["ps", "--name", "python3.12"])), [201]);
    assert_eq!(pids(&json(d, &["ps", "--pid", "100"])), [100]);
    assert_eq!(pids(&json(d, &["ps", "--user", "alice"])), [200, 201]);
    assert_eq!(pids(&json(d, &["ps", "--user", "0"])), [1, 2, 50, 100]);
    assert_eq!(pids(&json(d, &["ps", "--sha256", "ABAB"])), [100]);
    assert_eq!(pids(&json(d, &["ps", "--sha256", "c"])), [200]);
    assert_eq!(
        pids(&json(d, &["ps", "--user", "root", "--name", "k"])),
        [2, 50]
    );
    assert!(
        json(d, &["ps", "--pid", "300"]).is_empty(),
        "pid 300 exited"
    );
    assert!(json(d, &["ps", "--name", "nothing-like-this"]).is_empty());

    let out = cli(d, &["ps", "--sha256", "xyz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a SHA-256 prefix"),
        "{}",
        stderr(&out)
    );

    let out = cli(d, &["ps", "--name", "nothing-like-this"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("no process matches"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ps_tree_orders_children_under_their_parents() {
    let (dir, _store) = fixture();
    let rows = json(dir.path(), &["ps", "--tree"]);
    let order: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["pid"].as_u64().expect("pid"),
                r["depth"].as_u64().expect("depth"),
            )
        })
        .collect();
    assert_eq!(
        order,
        [(1, 0), (100, 1), (200, 2), (201, 3), (2, 0), (50, 1)]
    );

    // Filtered: a process whose parent is not shown is a root.
    let rows = json(dir.path(), &["ps", "--tree", "--user", "alice"]);
    let order: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["pid"].as_u64().expect("pid"),
                r["depth"].as_u64().expect("depth"),
            )
        })
        .collect();
    assert_eq!(order, [(200, 0), (201, 1)]);

    let out = cli(dir.path(), &["ps", "--tree"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let commands: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| &l[text.find("COMMAND").expect("header")..])
        .collect();
    assert_eq!(
        commands,
        [
            "/sbin/init",
            "\\_ sshd: /usr/sbin/sshd -D",
            "   \\_ bash -c echo a, \"b\"",
            "      \\_ python3 x.py",
            "[kthreadd]",
            "\\_ [kworker/0:1]",
        ]
    );
}

#[test]
fn ps_table_has_aligned_columns() {
    let (dir, _store) = fixture();
    let out = cli(dir.path(), &["ps"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "header and six processes:\n{text}");
    let header = lines[0];
    let words: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "PID", "PPID", "USER", "CPU%", "RSS", "THREADS", "SHA256", "COMMAND"
        ]
    );
    // Every row's command starts where the header's COMMAND does, and the
    // right-aligned PID column ends where the header's PID does.
    let command_at = header.find("COMMAND").expect("COMMAND column");
    let pid_end = header.find("PID").expect("PID column") + 3;
    for line in &lines[1..] {
        assert_eq!(line.as_bytes()[command_at - 1], b' ', "{line}");
        assert_ne!(line.as_bytes()[command_at], b' ', "{line}");
        assert!(
            line[..pid_end].trim_start().parse::<u32>().is_ok(),
            "{line}"
        );
    }
    let sshd = lines
        .iter()
        .find(|l| l.ends_with("sshd: /usr/sbin/sshd -D"))
        .expect("sshd row");
    assert_eq!(&sshd[command_at..], "sshd: /usr/sbin/sshd -D");
    assert!(
        sshd.contains(" abababababab "),
        "first 12 hex digits: {sshd}"
    );
    assert!(sshd.contains(" 100M "), "human RSS: {sshd}");
    assert!(sshd.contains(" root "), "{sshd}");
}

#[test]
fn csv_has_a_header_and_quotes_commas_and_quotes() {
    let (dir, _store) = fixture();
    let out = cli(dir.path(), &["ps", "--format", "csv", "--pid", "200"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "pid,ppid,name,exe,cmdline,start_time,uid,user,status,threads,rss_bytes,vms_bytes,\
         swap_bytes,cpu_percent,open_fds,sha256,hash_status,hash_error,exe_deleted,container_id,\
         listening_ports"
    );
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1].starts_with(
            "200,100,bash,/usr/bin/bash,\"bash -c echo a, \"\"b\"\"\",2026-09-10T00:30:00Z,1000,alice,S,3,"
        ),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].ends_with(&format!(",{},ok,,false,,", "cd".repeat(32))),
        "{}",
        lines[1]
    );

    let out = cli(
        dir.path(),
        &["ps", "--format", "csv", "--tree", "--pid", "1"],
    );
    let text = stdout(&out);
    assert!(
        text.lines()
            .next()
            .expect("header")
            .ends_with(",container_id,listening_ports,depth")
    );
    assert!(text.lines().nth(1).expect("row").ends_with(",0"));
}

#[test]
fn history_lists_samples_oldest_first() {
    let (dir, _store) = fixture();
    let rows = json(dir.path(), &["history", "200"]);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["time"], "2026-09-21T14:13:20.000Z");
    assert_eq!(rows[1]["time"], "2026-09-21T14:13:21.000Z");
    assert_eq!(rows[1]["pid"], 200);
    assert_eq!(rows[1]["start_time"], "2026-09-10T00:30:00Z");
    assert_eq!(rows[0]["cpu_percent"], 1.5);
    assert_eq!(rows[1]["cpu_percent"], 3.0);
    assert_eq!(rows[1]["rss_bytes"], 200 * 1024 * 1024 + 2);
    assert_eq!(rows[1]["vms_bytes"], 800 * 1024 * 1024);
    assert_eq!(rows[1]["threads"], 3);
    assert_eq!(rows[1]["open_fds"], 12);
    assert_eq!(rows[1]["status"], "S");

    let rows = json(dir.path(), &["history", "200", "--limit", "1"]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["time"], "2026-09-21T14:13:21.000Z");

    // An exited process keeps its history.
    assert_eq!(json(dir.path(), &["history", "300"]).len(), 1);

    let out = cli(dir.path(), &["history", "200", "--format", "csv"]);
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("time,pid,start_time,cpu_percent,rss_bytes,vms_bytes,threads,open_fds,status")
    );
    assert_eq!(
        lines.next(),
        Some("2026-09-21T14:13:20.000Z,200,2026-09-10T00:30:00Z,1.5,209715201,838860800,2,11,S")
    );

    let out = cli(dir.path(), &["history", "200"]);
    let text = stdout(&out);
    assert!(text.starts_with("TIME "), "{text}");
    assert_eq!(text.lines().count(), 3);
}

#[test]
fn history_of_an_unknown_pid_is_empty_and_succeeds() {
    let (dir, _store) = fixture();
    assert!(json(dir.path(), &["history", "99999"]).is_empty());

    let out = cli(dir.path(), &["history", "99999"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("no samples of pid 99999"),
        "{}",
        stderr(&out)
    );

    let out = cli(dir.path(), &["history", "99999", "--format", "csv"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).lines().count(), 1, "header only");
    assert!(out.stderr.is_empty(), "notes only in table format");
}

#[test]
fn scans_are_newest_first() {
    let (dir, _store) = fixture();
    let rows = json(dir.path(), &["scans"]);
    assert_eq!(rows.len(), 2);
    let first = rows[1]["scan_id"].as_u64().expect("scan id");
    let second = rows[0]["scan_id"].as_u64().expect("scan id");
    assert!(second > first);
    assert_eq!(rows[0]["time"], "2026-09-21T14:13:21.000Z");
    assert_eq!(rows[0]["process_count"], 6);
    assert_eq!(rows[0]["duration_us"], 900);
    assert_eq!(rows[0]["exited"], 1);
    assert_eq!(rows[0]["snapshot"], false);
    assert_eq!(rows[1]["started"], 7);
    assert_eq!(rows[1]["snapshot"], true);
    let keys: Vec<&str> = rows[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 7, "{keys:?}");

    assert_eq!(json(dir.path(), &["scans", "--limit", "1"]).len(), 1);

    let out = cli(dir.path(), &["scans", "--format", "csv"]);
    assert_eq!(
        stdout(&out).lines().next(),
        Some("scan_id,time,process_count,duration_us,started,exited,snapshot")
    );
    let out = cli(dir.path(), &["scans"]);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines().nth(1).expect("newest").contains("900us"),
        "{text}"
    );
}

#[test]
fn commits_of_the_running_writer_show_up() {
    let (dir, mut store) = fixture();
    assert_eq!(json(dir.path(), &["scans"]).len(), 2);
    let started = ProcessRecord {
        instance: Some(instance(400)),
        ppid: 1,
        name: "late".into(),
        cmdline: vec!["late".into()],
        sample: Some(sample(400, 3)),
        ..ProcessRecord::default()
    };
    let third = ScanBatch {
        scan_seq: 3,
        last_chunk: true,
        time_ms: T0 + 2_000,
        process_count: 7,
        started: vec![started],
        ..ScanBatch::default()
    };
    store.apply_batch(BOOT, &third).expect("third scan");
    assert_eq!(json(dir.path(), &["scans"]).len(), 3);
    assert_eq!(pids(&json(dir.path(), &["ps", "--name", "late"])), [400]);
}

#[test]
fn an_empty_store_says_so() {
    let dir = TempDir::new().expect("temp dir");
    let _store = Store::open(&dir.path().join("store.redb")).expect("create store");
    assert!(json(dir.path(), &["ps"]).is_empty());
    let out = cli(dir.path(), &["ps"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("holds no scan yet"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_store_names_the_path() {
    let dir = TempDir::new().expect("temp dir");
    let state = dir.path().join("nowhere");
    let out = cli(&state, &["ps"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("sentinelcli: error: "), "{err}");
    assert!(err.contains("no SentinelD store at"), "{err}");
    assert!(
        err.contains(&state.join("store.redb").display().to_string()),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_random_file_is_not_a_store() {
    let dir = TempDir::new().expect("temp dir");
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("store.redb"), junk).expect("write junk");
    let out = cli(dir.path(), &["scans"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("is not a SentinelD store"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = Store::open(&dir.path().join("store.redb")).expect("create store");
    // Far more output than a pipe buffers, so writing must hit the closed end.
    let long_arg = "x".repeat(200);
    let started: Vec<ProcessRecord> = (1000..3000)
        .map(|pid| ProcessRecord {
            instance: Some(instance(pid)),
            ppid: 1,
            name: "filler".into(),
            cmdline: vec!["filler".into(), long_arg.clone()],
            sample: Some(sample(pid, 1)),
            ..ProcessRecord::default()
        })
        .collect();
    let batch = ScanBatch {
        scan_seq: 1,
        last_chunk: true,
        snapshot: true,
        time_ms: T0,
        process_count: started.len() as u32,
        started,
        ..ScanBatch::default()
    };
    store.apply_batch(BOOT, &batch).expect("scan");

    let mut child = Command::new(env!("CARGO_BIN_EXE_sentinelcli"))
        .arg("--state-dir")
        .arg(dir.path())
        .arg("ps")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sentinelcli");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for sentinelcli");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn query_runs_the_rule_dialect_over_live_processes_with_parents() {
    let (dir, _store) = fixture();
    let rows = json(
        dir.path(),
        &[
            "query",
            "SELECT pid, name, parent_name, exe_dir FROM processes WHERE user = 'alice' ORDER BY pid",
        ],
    );
    // pid 300 exited: only live processes without --all.
    assert_eq!(pids(&rows), vec![200, 201]);
    assert_eq!(rows[0]["parent_name"], "sshd");
    assert_eq!(rows[0]["exe_dir"], "/usr/bin");
    assert_eq!(rows[1]["parent_name"], "bash");

    let all = json(
        dir.path(),
        &[
            "query",
            "SELECT pid, threads, parent_name FROM processes WHERE user = 'alice' ORDER BY pid",
            "--all",
        ],
    );
    assert_eq!(pids(&all), vec![200, 201, 300]);
    // Each with its latest sample: the second scan's, or for pid 300, which
    // exited then, the first's.
    let threads: Vec<&Value> = all.iter().map(|r| &r["threads"]).collect();
    assert_eq!(threads, [3, 3, 2]);
    assert_eq!(all[1]["parent_name"], "bash");
    assert_eq!(all[2]["parent_name"], "systemd");

    let out = cli(dir.path(), &["query", "SELECT nmae FROM processes"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("nmae") && err.contains("name"), "{err}");
    let out = cli(dir.path(), &["query", "DELETE FROM processes"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn query_table_and_csv_have_the_projected_columns() {
    let (dir, _store) = fixture();
    let out = cli(
        dir.path(),
        &["query", "SELECT pid, name FROM processes WHERE pid = 100"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(
        lines
            .next()
            .map(str::split_whitespace)
            .map(Iterator::collect::<Vec<_>>),
        Some(vec!["pid", "name"])
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.contains("100") && l.contains("sshd"))
    );
    let out = cli(
        dir.path(),
        &[
            "query",
            "SELECT pid, name FROM processes WHERE pid = 100",
            "--format",
            "csv",
        ],
    );
    assert_eq!(stdout(&out), "pid,name\n100,sshd\n");
}

#[test]
fn alerts_on_a_store_without_alerts_is_empty() {
    let (dir, _store) = fixture();
    assert!(json(dir.path(), &["alerts"]).is_empty());
    let out = cli(dir.path(), &["alerts", "--severity", "urgent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("urgent"));
    let out = cli(dir.path(), &["alerts", "--since", "yesterday-ish"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn rules_validate_list_and_test_need_no_agent() {
    let (dir, _store) = fixture();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "rules:\n  - id: t.python\n    title: python run by alice\n    description: d\n    severity: medium\n    tags: [T1059]\n    sql: SELECT * FROM processes WHERE lower(name) LIKE 'python%' AND parent_name = 'bash'\n",
    )
    .expect("write rule file");
    let out = cli(
        dir.path(),
        &["rules", "validate", good.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 rules, valid"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[rules]]\nid = \"t.bad\"\ntitle = \"t\"\ndescription = \"d\"\nseverity = \"high\"\nsql = \"SELECT * FROM processes WHERE regexp_like(name, '(')\"\n",
    )
    .expect("write rule file");
    let out = cli(
        dir.path(),
        &["rules", "validate", bad.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.toml") && err.contains("t.bad"), "{err}");

    let hits = json(
        dir.path(),
        &["rules", "test", good.to_str().expect("utf-8")],
    );
    assert_eq!(pids(&hits), vec![201]);
    assert_eq!(hits[0]["rule_id"], "t.python");

    let empty = dir.path().join("no-rules");
    let listed = json(
        dir.path(),
        &[
            "rules",
            "list",
            "--rules-dir",
            empty.to_str().expect("utf-8"),
        ],
    );
    assert!(listed.len() >= 15, "the built-in pack is listed");
    assert!(listed.iter().any(|r| r["id"] == "linux.exec_from_tmp"));
}

#[test]
fn rules_validate_refuses_an_id_of_the_built_in_pack() {
    let dir = TempDir::new().expect("temp dir");
    let file = dir.path().join("clash.yaml");
    std::fs::write(
        &file,
        "rules:\n  - id: linux.exec_from_tmp\n    title: mine\n    description: d\n    severity: low\n    sql: SELECT * FROM processes WHERE name = 'x'\n",
    )
    .expect("write rule file");
    let path = file.to_str().expect("utf-8");
    let out = cli(dir.path(), &["rules", "validate", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("built-in"), "{}", stderr(&out));
    let out = cli(
        dir.path(),
        &["rules", "validate", path, "--no-builtin-rules"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
