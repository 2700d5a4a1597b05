//! Hostile and broken input on the collector socket: each bad peer is
//! disconnected and the agent keeps storing the real collector's scans.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sentineld_proto::codec::encode_to_vec;
use sentineld_proto::v1::{Envelope, Handshake, Role, envelope::Body};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scan_count(state: &Path) -> usize {
    let cli = Path::new(env!("CARGO_BIN_EXE_sentinelagent")).with_file_name("sentinelcli");
    let out = Command::new(cli)
        .arg("--state-dir")
        .arg(state)
        .args(["scans", "--format", "json", "--limit", "100000"])
        .output()
        .expect("run sentinelcli");
    if !out.status.success() {
        return 0;
    }
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).map_or(0, |v| v.len())
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Sends `bytes` and reports whether the agent then closed the connection.
fn closed_after(socket: &Path, bytes: &[u8]) -> bool {
    let mut s = UnixStream::connect(socket).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
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

#[test]
fn bad_peers_are_dropped_and_real_scans_keep_arriving() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let agent = Command::new(env!("CARGO_BIN_EXE_sentinelagent"))
        .args(["--metrics-listen", "off"])
        .arg("--state-dir")
        .arg(state)
        .args(["--scan-interval", "200ms"])
        .arg("--rules-dir")
        .arg(state.join("no-rules"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = Agent(agent);
    let socket = state.join("sentineld.sock");
    assert!(
        wait_for(Duration::from_secs(60), || scan_count(state) >= 2),
        "the real collector stores scans"
    );

    // A client that connects and never speaks holds no resources for long.
    let silent = UnixStream::connect(&socket).unwrap();

    let mut bad_crc = frame(1, 1, collector_hello(1));
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    let mut undecodable = vec![4, 0, 0, 0];
    undecodable.extend_from_slice(&crc32fast::hash(&[0xff; 4]).to_le_bytes());
    undecodable.extend_from_slice(&[0xff; 4]);
    let mut huge = u32::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(&[0; 4]);
    let mut repeat = frame(1, 5, collector_hello(1));
    repeat.extend(frame(1, 5, collector_hello(1)));

    let cases: [(&str, Vec<u8>); 7] = [
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("huge length", huge),
        ("bad crc", bad_crc),
        ("undecodable payload", undecodable),
        ("wrong version", frame(9, 1, collector_hello(9))),
        (
            "not a handshake first",
            frame(1, 1, Body::Ack(sentineld_proto::v1::Ack { sequence: 1 })),
        ),
        ("sequence repeat", repeat),
    ];
    for (what, bytes) in cases {
        assert!(
            closed_after(&socket, &bytes),
            "agent closes the connection on {what}"
        );
    }

    let mut silent_buf = [0u8; 1];
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(
        (&silent).read(&mut silent_buf).unwrap_or(0),
        0,
        "a silent client is timed out"
    );

    // Many connections at once: the agent bounds them and keeps going.
    let crowd: Vec<UnixStream> = (0..50)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    let before = scan_count(state);
    assert!(
        wait_for(Duration::from_secs(60), || scan_count(state) > before + 2),
        "scans keep arriving after hostile peers"
    );
    drop(crowd);
    assert!(
        matches!(agent.0.try_wait(), Ok(None)),
        "the agent is still running"
    );
}
