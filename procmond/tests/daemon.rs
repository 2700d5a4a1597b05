//! Daemon mode against a real local socket: handshake, snapshot, deltas,
//! reconnection, version refusal and shutdown.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use interprocess::local_socket::tokio::Stream as LocalSocketStream;
use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use sentineld_proto::v1::{Ack, CreditGrant, Envelope, Handshake, Role, ScanBatch, envelope::Body};
use sentineld_proto::{FrameCodec, PROTOCOL_MAJOR};
use tokio::time::timeout;
use tokio_util::codec::Framed;

type Conn = Framed<LocalSocketStream, FrameCodec>;

/// Guards every wait so a broken collector fails the test instead of
/// hanging it.
const STEP: Duration = Duration::from_secs(60);

async fn next(conn: &mut Conn) -> Option<Envelope> {
    timeout(STEP, conn.next())
        .await
        .expect("procmond answers in time")
        .map(|frame| frame.expect("valid frame"))
}

async fn accept(listener: &LocalSocketListener) -> Conn {
    let stream = timeout(STEP, listener.accept())
        .await
        .expect("procmond connects in time")
        .expect("accept");
    Framed::new(stream, FrameCodec::default())
}

fn agent_hello(major: u32) -> Body {
    Body::Handshake(Handshake {
        protocol_major: major,
        role: Role::Agent.into(),
        software_version: "test".into(),
        boot_id: sentineld_common::host::boot_id().to_vec(),
        pid: std::process::id(),
        ..Handshake::default()
    })
}

/// Reads procmond's handshake and checks it.
async fn handshake(conn: &mut Conn, procmond_pid: u32) {
    let env = next(conn).await.expect("a handshake");
    assert_eq!(env.version, PROTOCOL_MAJOR);
    assert_eq!(env.sequence, 1);
    let Some(Body::Handshake(h)) = env.body else {
        panic!("first message is not a handshake: {env:?}");
    };
    assert_eq!(h.role(), Role::Collector);
    assert_eq!(h.protocol_major, PROTOCOL_MAJOR);
    assert_eq!(h.pid, procmond_pid);
    assert_eq!(h.boot_id, sentineld_common::host::boot_id().to_vec());
    assert_eq!(h.software_version, sentineld_common::VERSION);
}

/// Both directions' envelope numbers on one connection.
struct Seqs {
    /// Last sequence received from procmond.
    theirs: u64,
    /// Last sequence sent to procmond.
    ours: u64,
}

/// Reads the chunks of one scan, checking sequence and chunk numbering,
/// and acks it.
async fn read_scan(conn: &mut Conn, seqs: &mut Seqs) -> Vec<ScanBatch> {
    let mut chunks: Vec<ScanBatch> = Vec::new();
    loop {
        let env = next(conn).await.expect("a scan batch");
        seqs.theirs += 1;
        assert_eq!(
            env.sequence, seqs.theirs,
            "envelope sequence is strictly increasing"
        );
        let Some(Body::ScanBatch(batch)) = env.body else {
            panic!("expected a scan batch: {env:?}");
        };
        if let Some(first) = chunks.first() {
            assert_eq!(batch.scan_seq, first.scan_seq);
            assert_eq!(batch.time_ms, first.time_ms);
        }
        assert_eq!(batch.chunk as usize, chunks.len());
        let records =
            batch.started.len() + batch.exited.len() + batch.samples.len() + batch.updated.len();
        assert!(
            records <= 7,
            "chunk of {records} records with --chunk-records 7"
        );
        let last = batch.last_chunk;
        assert_eq!(batch.stats.is_some(), last);
        chunks.push(batch);
        if last {
            seqs.ours += 1;
            let ack = Body::Ack(Ack {
                sequence: seqs.theirs,
            });
            send(conn, seqs.ours, ack).await;
            // As the agent does: the stored records' credit comes back.
            let records: usize = chunks
                .iter()
                .map(|c| c.started.len() + c.exited.len() + c.samples.len() + c.updated.len())
                .sum();
            seqs.ours += 1;
            let grant = Body::Credit(CreditGrant {
                records: records as u64,
            });
            send(conn, seqs.ours, grant).await;
            return chunks;
        }
    }
}

async fn send(conn: &mut Conn, sequence: u64, body: Body) {
    conn.send(Envelope {
        version: PROTOCOL_MAJOR,
        sequence,
        body: Some(body),
    })
    .await
    .expect("send to procmond");
}

fn listen(path: &Path) -> LocalSocketListener {
    let name = path.to_fs_name::<GenericFilePath>().expect("socket name");
    ListenerOptions::new()
        .name(name)
        .create_tokio()
        .expect("listen on the test socket")
}

#[tokio::test]
async fn sends_a_snapshot_then_deltas_and_reconnects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let listener = listen(&socket);
    let mut procmond = tokio::process::Command::new(env!("CARGO_BIN_EXE_procmond"))
        .arg("--state-dir")
        .arg(dir.path().join("procmond"))
        .arg("--socket")
        .arg(&socket)
        .args(["--scan-interval", "200ms", "--chunk-records", "7"])
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start procmond");
    let procmond_pid = procmond.id().expect("running");
    let me = std::process::id();

    // First connection: handshake, then a snapshot listing this test.
    let mut conn = accept(&listener).await;
    handshake(&mut conn, procmond_pid).await;
    send(&mut conn, 1, agent_hello(PROTOCOL_MAJOR)).await;
    send(&mut conn, 2, Body::Credit(CreditGrant { records: 1000 })).await;
    let mut seqs = Seqs { theirs: 1, ours: 2 };
    let snapshot = read_scan(&mut conn, &mut seqs).await;
    assert!(
        snapshot.len() > 1,
        "more than 7 processes make several chunks"
    );
    assert!(snapshot.iter().all(|c| c.snapshot));
    let started: Vec<_> = snapshot.iter().flat_map(|c| c.started.iter()).collect();
    let mine = started
        .iter()
        .find(|r| r.instance.is_some_and(|i| i.pid == me))
        .expect("the snapshot lists the test process");
    let exe = std::env::current_exe().expect("own exe");
    assert_eq!(mine.exe, exe.to_string_lossy());
    assert!(
        started
            .iter()
            .any(|r| r.instance.is_some_and(|i| i.pid == procmond_pid))
    );
    let last = snapshot.last().expect("a last chunk");
    assert_eq!(last.process_count as usize, started.len());

    // Then deltas (after at most one more snapshot: the first scan of a
    // session is one, and so is the scan the connection asks for): this
    // process is sampled, not restarted.
    let mut delta = read_scan(&mut conn, &mut seqs).await;
    if delta.iter().all(|c| c.snapshot) {
        delta = read_scan(&mut conn, &mut seqs).await;
    }
    assert!(delta.iter().all(|c| !c.snapshot));
    assert!(delta[0].scan_seq > snapshot[0].scan_seq);
    // A sample goes out when a figure changed, and every SAMPLE_EVERYth
    // scan regardless: within that many deltas this process is sampled.
    let mut sampled = false;
    for _ in 0..=procmond::scanner::SAMPLE_EVERY + 1 {
        if delta.iter().all(|c| c.snapshot) {
            delta = read_scan(&mut conn, &mut seqs).await;
            continue;
        }
        assert!(delta.iter().all(|c| !c.snapshot));
        assert!(delta.iter().all(|c| {
            c.started
                .iter()
                .all(|r| r.instance.is_some_and(|i| i.pid != me))
        }));
        sampled = delta
            .iter()
            .flat_map(|c| c.samples.iter())
            .any(|s| s.instance.is_some_and(|i| i.pid == me));
        if sampled {
            break;
        }
        delta = read_scan(&mut conn, &mut seqs).await;
    }
    assert!(sampled, "this process is sampled");

    // The agent goes away: procmond comes back with a new handshake
    // (sequence from 1 again), first replays from its write-ahead log what
    // was not acknowledged (scans taken meanwhile, in order, never one
    // already acked), then sends a full snapshot.
    drop(conn);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut conn = accept(&listener).await;
    handshake(&mut conn, procmond_pid).await;
    send(&mut conn, 1, agent_hello(PROTOCOL_MAJOR)).await;
    send(&mut conn, 2, Body::Credit(CreditGrant { records: 1000 })).await;
    let mut seqs = Seqs { theirs: 1, ours: 2 };
    let mut last_seq = delta[0].scan_seq;
    let mut replayed = 0;
    let again = loop {
        let scan = read_scan(&mut conn, &mut seqs).await;
        // The ack of the last scan before the drop may be lost with the
        // connection (procmond may fail a write before it reads it): that
        // scan may come once more, first (the agent stores it once).
        let resent = replayed == 0 && scan[0].scan_seq == last_seq;
        assert!(
            scan[0].scan_seq > last_seq || resent,
            "scans arrive in order, none acknowledged is sent again"
        );
        last_seq = scan[0].scan_seq;
        if resent {
            continue;
        }
        // A replayed scan may itself be a snapshot (one asked for by the
        // connection that just went away); the snapshot this connection
        // asks for comes after the replay.
        if replayed > 0 && scan.iter().all(|c| c.snapshot) {
            break scan;
        }
        replayed += 1;
        assert!(replayed < 50, "a snapshot follows the replay");
    };
    assert!(
        replayed >= 1,
        "scans taken while the agent was away are replayed"
    );
    assert!(
        again
            .iter()
            .flat_map(|c| c.started.iter())
            .any(|r| r.instance.is_some_and(|i| i.pid == me))
    );
    drop(conn);

    // An agent on another major version is refused: procmond closes the
    // connection without sending a scan, and tries again later.
    let mut conn = accept(&listener).await;
    handshake(&mut conn, procmond_pid).await;
    send(&mut conn, 1, agent_hello(PROTOCOL_MAJOR + 1)).await;
    assert!(
        next(&mut conn).await.is_none(),
        "procmond hangs up on another major version"
    );
    let mut conn = accept(&listener).await;
    handshake(&mut conn, procmond_pid).await;

    // SIGTERM: a clean exit.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(procmond_pid).expect("pid fits")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal procmond");
    let status = timeout(STEP, procmond.wait())
        .await
        .expect("procmond stops in time")
        .expect("wait for procmond");
    assert!(status.success(), "{status:?}");
    drop(conn);
}
