//! Hostile and broken input on the collector socket, with the real agent
//! and its real procmond: each bad peer is refused or disconnected, counted
//! by reason in /metrics, logged with its credentials, and the agent keeps
//! storing the real collector's scans after every one.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{bin, cli_json, eventually, free_port};
use sentineld_proto::codec::encode_to_vec;
use sentineld_proto::v1::{Ack, Envelope, Handshake, Role, ScanBatch, envelope::Body};

/// Every wait is bounded by this; nothing is asserted about how fast.
const PATIENCE: Duration = Duration::from_secs(60);

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running agent (standalone: with its own procmond), its log and its
/// metrics address.
struct Agent {
    child: Reaped,
    state: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    metrics: SocketAddr,
}

fn start_agent(dir: &Path, socket: &Path, extra: &[&str]) -> Agent {
    let state = dir.join("state");
    let log = dir.join("agent.log");
    let metrics = free_port();
    let child = common::agent_command()
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(socket)
        .args(["--scan-interval", "200ms", "--no-builtin-rules"])
        .arg("--rules-dir")
        .arg(dir.join("no-rules"))
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Agent {
        child: Reaped(child),
        state,
        socket: socket.to_path_buf(),
        log,
        metrics,
    }
}

fn scan_count(state: &Path) -> usize {
    cli_json(state, &["scans", "--format", "json", "--limit", "100000"]).map_or(0, |v| v.len())
}

/// Waits for the real collector's next scans to be stored.
fn scans_keep_arriving(agent: &Agent, after: &str) {
    let before = scan_count(&agent.state);
    assert!(
        eventually(PATIENCE, || (scan_count(&agent.state) > before + 1)
            .then_some(()))
        .is_some(),
        "the real collector's scans keep arriving after {after}"
    );
}

/// GET `path` over HTTP/1.1; the body.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    common::http_get(addr, path).map(|(_, body)| body)
}

/// `sentineld_frames_rejected_total{reason="REASON"}`.
fn rejected(metrics: SocketAddr, reason: &str) -> u64 {
    let Some(body) = get(metrics, "/metrics") else {
        return 0;
    };
    let series = format!("sentineld_frames_rejected_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until the rejection counter of `reason` reaches `at_least`.
fn counted(agent: &Agent, reason: &str, at_least: u64) -> u64 {
    eventually(PATIENCE, || {
        let n = rejected(agent.metrics, reason);
        (n >= at_least).then_some(n)
    })
    .unwrap_or_else(|| {
        panic!(
            "{reason} counted at least {at_least} times (now {})",
            rejected(agent.metrics, reason)
        )
    })
}

/// Waits until the agent's log has a line naming `reason` and `peer`.
fn logged(agent: &Agent, reason: &str, peer: &str) {
    let found = eventually(PATIENCE, || {
        let text = std::fs::read_to_string(&agent.log).ok()?;
        text.lines()
            .any(|l| l.contains(reason) && l.contains(peer))
            .then_some(())
    });
    assert!(
        found.is_some(),
        "the agent logs {reason} with {peer}:\n{}",
        std::fs::read_to_string(&agent.log).unwrap_or_default()
    );
}

/// Sends `bytes`, closes the sending half, and reports whether the agent
/// then closed the connection.
fn closed_after(socket: &Path, bytes: &[u8]) -> bool {
    let mut s = UnixStream::connect(socket).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut buf = [0u8; 4096];
    // The agent may answer a valid handshake before it closes; read to EOF.
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn frame(version: u32, sequence: u64, body: Body) -> Vec<u8> {
    encode_to_vec(&Envelope {
        version,
        sequence,
        body: Some(body),
    })
    .unwrap()
}

fn collector_hello(major: u32) -> Body {
    Body::Handshake(Handshake {
        protocol_major: major,
        role: Role::Collector.into(),
        boot_id: vec![7; 16],
        ..Handshake::default()
    })
}

/// Reads frames until one is an ack, or the connection ends.
fn read_ack(s: &mut UnixStream) -> Option<Ack> {
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(env) =
            sentineld_proto::codec::decode(&mut buf, sentineld_proto::MAX_FRAME_LEN).ok()?
        {
            if let Some(Body::Ack(ack)) = env.body {
                return Some(ack);
            }
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Open files this process may hold.
fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

#[test]
fn bad_peers_are_refused_counted_logged_and_real_scans_keep_arriving() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let agent = start_agent(dir.path(), &socket, &["--max-connections", "8"]);
    assert!(
        eventually(PATIENCE, || (scan_count(&agent.state) >= 2).then_some(())).is_some(),
        "the real collector stores scans"
    );
    let me = format!("pid {}", std::process::id());

    // A client that connects and never speaks is timed out.
    let silent = UnixStream::connect(&agent.socket).unwrap();

    let mut bad_crc = frame(1, 1, collector_hello(1));
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    let mut undecodable = vec![4, 0, 0, 0];
    undecodable.extend_from_slice(&crc32fast::hash(&[0xff; 4]).to_le_bytes());
    undecodable.extend_from_slice(&[0xff; 4]);
    let mut huge = u32::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(&[0; 4]);
    let whole = frame(1, 1, collector_hello(1));
    let truncated = whole[..whole.len() / 2].to_vec();
    let mut repeat = frame(1, 5, collector_hello(1));
    repeat.extend(frame(1, 5, Body::ScanBatch(ScanBatch::default())));
    let mut unexpected = frame(1, 1, collector_hello(1));
    unexpected.extend(frame(1, 2, Body::Ack(Ack { sequence: 1 })));
    let short_boot_id = frame(
        1,
        1,
        Body::Handshake(Handshake {
            protocol_major: 1,
            role: Role::Collector.into(),
            boot_id: vec![1, 2, 3],
            ..Handshake::default()
        }),
    );
    let agent_role = frame(
        1,
        1,
        Body::Handshake(Handshake {
            protocol_major: 1,
            role: Role::Agent.into(),
            boot_id: vec![7; 16],
            ..Handshake::default()
        }),
    );

    // (what, bytes, the reason it is counted under)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // "GET " read as a length is far above the maximum.
        (
            "garbage",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "oversize",
        ),
        ("a huge length prefix", huge, "oversize"),
        ("a bad crc", bad_crc, "bad_crc"),
        ("an undecodable payload", undecodable, "undecodable"),
        ("a frame cut short", truncated, "truncated"),
        (
            "a wrong envelope version",
            frame(9, 1, collector_hello(9)),
            "wrong_version",
        ),
        (
            "a wrong handshake version",
            frame(1, 1, collector_hello(2)),
            "wrong_version",
        ),
        (
            "no handshake first",
            frame(1, 1, Body::Ack(Ack { sequence: 1 })),
            "bad_handshake",
        ),
        ("a short boot id", short_boot_id, "bad_handshake"),
        (
            "a peer claiming to be the agent",
            agent_role,
            "bad_handshake",
        ),
        ("a repeated sequence", repeat, "sequence_repeat"),
        (
            "a message a collector never sends",
            unexpected,
            "unexpected_message",
        ),
    ];
    for (what, bytes, reason) in &cases {
        let before = rejected(agent.metrics, reason);
        assert!(
            closed_after(&agent.socket, bytes),
            "the agent closes the connection on {what}"
        );
        counted(&agent, reason, before + 1);
        logged(&agent, reason, &me);
        scans_keep_arriving(&agent, what);
    }

    // A sequence gap is counted and logged, and the batch still stored.
    let before = rejected(agent.metrics, "sequence_gap");
    let mut gap = UnixStream::connect(&agent.socket).unwrap();
    gap.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    gap.write_all(&frame(1, 1, collector_hello(1))).unwrap();
    gap.write_all(&frame(1, 3, Body::ScanBatch(ScanBatch::default())))
        .unwrap();
    assert_eq!(
        read_ack(&mut gap).map(|a| a.sequence),
        Some(3),
        "a batch after a gap is acknowledged"
    );
    drop(gap);
    counted(&agent, "sequence_gap", before + 1);
    logged(&agent, "sequence_gap", &me);
    scans_keep_arriving(&agent, "a sequence gap");

    let mut silent_buf = [0u8; 1];
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(
        (&silent).read(&mut silent_buf).unwrap_or(0),
        0,
        "a silent client is timed out"
    );
    counted(&agent, "handshake_timeout", 1);
    logged(&agent, "handshake_timeout", &me);
    scans_keep_arriving(&agent, "a silent client");

    // Thousands of connections at once: at most --max-connections are
    // served (the real collector holds one), the rest closed at once and
    // counted.
    let crowd_size = 2000.min(fd_limit() / 2);
    let before = rejected(agent.metrics, "too_many_connections");
    let crowd: Vec<UnixStream> = (0..crowd_size)
        .filter_map(|_| UnixStream::connect(&agent.socket).ok())
        .collect();
    // Slots held by the crowd free up after the handshake timeout, so on a
    // slow machine a few more than 7 may be served; most are refused.
    let refused = (crowd.len() / 2) as u64;
    counted(&agent, "too_many_connections", before + refused);
    logged(&agent, "too_many_connections", &me);
    scans_keep_arriving(&agent, "thousands of connections");
    drop(crowd);
    scans_keep_arriving(&agent, "the crowd left");

    // The log says each kind of rejection a bounded number of times, not
    // once per connection of the crowd.
    let log = std::fs::read_to_string(&agent.log).unwrap();
    let crowd_lines = log
        .lines()
        .filter(|l| l.contains("too_many_connections"))
        .count();
    assert!(
        crowd_lines <= 40,
        "{crowd_lines} log lines for {refused} refused connections"
    );

    let mut agent = agent;
    assert!(
        matches!(agent.child.0.try_wait(), Ok(None)),
        "the agent is still running"
    );
}

#[test]
fn a_collector_running_as_another_uid_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: connecting as another uid needs root");
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    // A socket other users can reach, so that the agent's own check is
    // what refuses them.
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    for d in [dir.path(), public.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = public.join("agent.sock");
    let agent = start_agent(dir.path(), &socket, &[]);
    assert!(
        eventually(PATIENCE, || (scan_count(&agent.state) >= 1).then_some(())).is_some(),
        "the real collector stores scans"
    );
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    // A real procmond, as nobody.
    let rogue_state = dir.path().join("rogue");
    std::fs::create_dir(&rogue_state).unwrap();
    nix::unistd::chown(
        &rogue_state,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let rogue_log = dir.path().join("rogue.log");
    let _rogue = Reaped(
        Command::new(bin("procmond"))
            .arg("--state-dir")
            .arg(&rogue_state)
            .arg("--socket")
            .arg(&socket)
            .args(["--scan-interval", "200ms"])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&rogue_log).unwrap())
            .spawn()
            .unwrap(),
    );
    counted(&agent, "peer_uid", 1);
    logged(&agent, "peer_uid", &format!("uid {NOBODY}"));
    scans_keep_arriving(&agent, "a collector with another uid");
}

#[test]
fn procmond_refuses_an_agent_running_as_another_uid() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let agent = Reaped(
        common::agent_command()
            .args(["--metrics-listen", "off", "--collector", "external"])
            .arg("--no-builtin-rules")
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--socket")
            .arg(&socket)
            .arg("--rules-dir")
            .arg(dir.path().join("no-rules"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let other = nix::unistd::geteuid()
        .as_raw()
        .wrapping_add(4242)
        .to_string();
    let log = dir.path().join("procmond.log");
    let _procmond = Reaped(
        Command::new(bin("procmond"))
            .arg("--state-dir")
            .arg(dir.path().join("procmond"))
            .arg("--socket")
            .arg(&socket)
            .args(["--scan-interval", "200ms", "--agent-uid", &other])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let refused = eventually(PATIENCE, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("not an allowed agent uid").then_some(text)
    });
    assert!(
        refused.is_some(),
        "procmond says why it refuses the agent:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        scan_count(&dir.path().join("state")),
        0,
        "nothing reached the agent"
    );
    drop(agent);
}

/// `name`'s value in the agent's metrics, 0 while it cannot be read.
fn metric(metrics: SocketAddr, name: &str) -> u64 {
    get(metrics, "/metrics")
        .and_then(|body| {
            body.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

#[test]
fn batches_sent_back_to_back_are_acknowledged_in_order_and_credited_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let agent = start_agent(dir.path(), &socket, &["--collector", "external"]);
    let mut s = eventually(PATIENCE, || UnixStream::connect(&socket).ok()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // More batches than a connection may have in flight, all at once, so
    // the agent reads while it stores and groups what is queued.
    const BATCHES: u64 = 40;
    const RECORDS: u32 = 25;
    let mut bytes = frame(1, 1, collector_hello(1));
    for n in 0..BATCHES {
        let started = (0..RECORDS)
            .map(|i| sentineld_proto::v1::ProcessRecord {
                instance: Some(sentineld_proto::v1::InstanceRef {
                    pid: 100_000 + u32::try_from(n).unwrap() * RECORDS + i,
                    start_time: 1_700_000_000,
                }),
                name: format!("b{n}"),
                ..Default::default()
            })
            .collect();
        let batch = ScanBatch {
            scan_seq: n + 1,
            last_chunk: true,
            time_ms: 1_790_000_000_000 + i64::try_from(n).unwrap(),
            started,
            ..ScanBatch::default()
        };
        bytes.extend(frame(1, n + 2, Body::ScanBatch(batch)));
    }
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(&bytes))
    };
    let (mut acks, mut credit) = (Vec::new(), 0_u64);
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 4096];
    // The connection's credit, then each batch's records given back.
    let expected = 1_000 + BATCHES * u64::from(RECORDS);
    let done =
        |acks: &Vec<u64>, credit: u64| acks.last() == Some(&(BATCHES + 1)) && credit >= expected;
    while !done(&acks, credit) {
        while let Some(env) =
            sentineld_proto::codec::decode(&mut buf, sentineld_proto::MAX_FRAME_LEN).unwrap()
        {
            match env.body {
                Some(Body::Ack(ack)) => acks.push(ack.sequence),
                Some(Body::Credit(grant)) => credit += grant.records,
                _ => {}
            }
        }
        if done(&acks, credit) {
            break;
        }
        let n = s
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("{e}: acks {acks:?}, credit {credit}"));
        assert!(n > 0, "the agent closed the connection after acks {acks:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    writer.join().unwrap().unwrap();
    // Acks are cumulative: in order, each naming a later batch.
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "{acks:?}");
    // Nothing granted twice.
    assert_eq!(credit, expected);
    let stored = eventually(PATIENCE, || {
        let n = metric(agent.metrics, "sentineld_batches_stored_total");
        (n >= BATCHES).then_some(n)
    });
    assert_eq!(stored, Some(BATCHES));
    let commits = metric(agent.metrics, "sentineld_store_commits_total");
    assert!((1..=BATCHES).contains(&commits), "{commits} commits");
    let out = common::cli(
        &agent.state,
        &[
            "query",
            "--all",
            "--format",
            "json",
            "SELECT name FROM processes",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(names.len(), (BATCHES * u64::from(RECORDS)) as usize);
}
