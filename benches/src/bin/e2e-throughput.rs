//! End-to-end ingest throughput: records per second from a collector,
//! through the collector socket and the frame codec, into the real
//! `sentinelagent`'s redb store (committed and acknowledged).
//!
//! The collector side speaks procmond's protocol (handshake, credit-bound
//! sending, acks), so the number includes everything the agent does for a
//! batch: read, CRC check, decode, one write transaction (immediate
//! durability), ack and credit grant. First one batch of `started`
//! records for the instances, then sample batches for them, each batch a
//! one-chunk scan with its own time.
//!
//! ```sh
//! cargo build --release --workspace
//! ./target/release/e2e-throughput [SECONDS] [RECORDS_PER_BATCH] [PENDING_RECORDS]
//! ```
//!
//! PENDING_RECORDS is the agent's `--max-pending-records` (the credit).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sentineld_benches::synthetic::{record, sample_scan};
use sentineld_benches::{sibling_binary, terminate};
use sentineld_proto::codec;
use sentineld_proto::v1::{Envelope, Handshake, Role, ScanBatch, envelope::Body};
use sentineld_proto::{MAX_FRAME_LEN, PROTOCOL_MAJOR};

const T0: i64 = 1_790_000_000_000;
const WARM_UP: Duration = Duration::from_secs(2);

/// What the reader thread has seen.
#[derive(Debug, Default)]
struct Progress {
    granted: u64,
    acked_records: u64,
    closed: bool,
}

fn frame(sequence: u64, body: Body) -> Vec<u8> {
    codec::encode_to_vec(&Envelope {
        version: PROTOCOL_MAJOR,
        sequence,
        body: Some(body),
    })
    .expect("a batch fits in a frame")
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map_or(default, |a| a.parse().expect("a number"))
}

fn main() {
    let seconds = arg(1, 10);
    let records = u32::try_from(arg(2, 1000)).expect("records per batch fit in u32");
    let pending = arg(3, 1000);
    let agent_bin = sibling_binary("sentinelagent").unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("agent.sock");
    let agent = Command::new(agent_bin)
        .args(["--collector", "external", "--metrics-listen", "off"])
        .args(["--no-builtin-rules", "--max-pending-records"])
        .arg(pending.to_string())
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
        .expect("start sentinelagent");
    let result = run(&socket, seconds, records);
    terminate(agent.id());
    let _ = agent.wait_with_output();
    match result {
        Ok((rate, batches)) => println!(
            "e2e: {rate:.0} records/s ({:.0} batches/s of {records} records, credit {pending}, {seconds} s measured)",
            batches
        ),
        Err(e) => {
            eprintln!("e2e-throughput: {e}");
            std::process::exit(1);
        }
    }
}

fn connect(socket: &Path) -> Result<UnixStream, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(format!("connect: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Records/s and batches/s acknowledged over `seconds` after a warm-up.
fn run(socket: &Path, seconds: u64, records: u32) -> Result<(f64, f64), String> {
    let mut stream = connect(socket)?;
    let progress = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
    let reader = {
        let mut stream = stream.try_clone().map_err(|e| e.to_string())?;
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                while let Ok(Some(env)) = codec::decode(&mut buf, MAX_FRAME_LEN) {
                    let (lock, cvar) = &*progress;
                    let mut p = lock.lock().expect("progress lock");
                    // Each grant after the first gives back the records of
                    // a batch just committed and acknowledged.
                    if let Some(Body::Credit(grant)) = env.body {
                        if p.granted > 0 {
                            p.acked_records += grant.records;
                        }
                        p.granted += grant.records;
                    }
                    cvar.notify_all();
                }
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let (lock, cvar) = &*progress;
            lock.lock().expect("progress lock").closed = true;
            cvar.notify_all();
        })
    };

    let mut sequence = 1;
    stream
        .write_all(&frame(
            sequence,
            Body::Handshake(Handshake {
                protocol_major: PROTOCOL_MAJOR,
                role: Role::Collector.into(),
                boot_id: vec![0x5e; 16],
                software_version: "e2e-throughput".into(),
                ..Handshake::default()
            }),
        ))
        .map_err(|e| e.to_string())?;

    let mut spent: u64 = 0;
    let mut tick: u64 = 0;
    let mut measured: Option<(Instant, u64)> = None;
    let started = Instant::now();
    let result = loop {
        let batch = if tick == 0 {
            ScanBatch {
                scan_seq: 1,
                last_chunk: true,
                snapshot: true,
                time_ms: T0,
                process_count: records,
                started: (0..records).map(record).collect(),
                ..ScanBatch::default()
            }
        } else {
            sample_scan(T0, tick, records)
        };
        let need = u64::from(records);
        // Honour the credit as procmond does (a batch larger than the whole
        // credit goes alone).
        {
            let (lock, cvar) = &*progress;
            let mut p = lock.lock().expect("progress lock");
            while !p.closed && must_wait(&p, spent, need) {
                p = cvar.wait(p).expect("progress lock");
            }
            if p.closed {
                break Err("the agent closed the connection".to_owned());
            }
            let now = Instant::now();
            match measured {
                None if now.duration_since(started) >= WARM_UP => {
                    measured = Some((now, p.acked_records));
                }
                Some((from, acked)) if now.duration_since(from) >= Duration::from_secs(seconds) => {
                    let secs = now.duration_since(from).as_secs_f64();
                    let done = (p.acked_records - acked) as f64;
                    break Ok((done / secs, done / f64::from(records) / secs));
                }
                _ => {}
            }
        }
        sequence += 1;
        tick += 1;
        stream
            .write_all(&frame(sequence, Body::ScanBatch(batch)))
            .map_err(|e| e.to_string())?;
        spent += need;
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    result
}

/// Whether a batch of `need` records must wait for credit, having sent
/// `spent` records so far.
fn must_wait(p: &Progress, spent: u64, need: u64) -> bool {
    let idle = spent <= p.acked_records;
    p.granted == 0 || (spent + need > p.granted && !idle)
}
