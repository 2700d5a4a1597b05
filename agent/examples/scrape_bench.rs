//! Times `/metrics` rendering with a 10,000-process snapshot and top 50:
//! the render function alone, then through HTTP on loopback.
//! Prints best and median of 200 runs each. Not a test: no assertions on time.
//!
//! `cargo run --release --example scrape_bench`

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sentineld_agent::http::{
    AgentCounters, BucketHistogram, HistoryError, HistoryPoint, HttpConfig, MetricsFormat,
    ProcessRow, SCAN_DURATION_BUCKETS, Snapshot, StateSource, render_metrics, serve,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const PROCESSES: u32 = 10_000;
const TOP_N: usize = 50;
const RUNS: usize = 200;

#[derive(Debug)]
struct Fixed(Arc<Snapshot>);

impl StateSource for Fixed {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.0)
    }
    fn history(&self, pid: u32, _limit: usize) -> Result<Vec<HistoryPoint>, HistoryError> {
        Err(HistoryError::NotFound { pid })
    }
}

fn snapshot() -> Snapshot {
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let processes = (1..=PROCESSES)
        .map(|pid| {
            let r = next();
            Arc::new(ProcessRow {
                pid,
                name: format!("proc-{}", r % 500),
                user: Some(format!("user{}", r % 20)),
                container_id: r.is_multiple_of(3).then(|| format!("{:064x}", r)),
                cpu_percent: (r % 10_000) as f32 / 100.0,
                rss_bytes: (r >> 16) % (4 << 30),
                vms_bytes: (r >> 8) % (64 << 30),
                swap_bytes: Some(r % 4096),
                threads: (r % 64) as u32 + 1,
                open_fds: Some((r % 1024) as u32),
                listening_ports: if r.is_multiple_of(7) {
                    vec![(r % 60_000) as u32 + 1024]
                } else {
                    Vec::new()
                },
                exe: Some("/usr/bin/something".to_owned()),
                cmdline: vec!["something".to_owned(), "--flag".to_owned()],
                start_time: "2026-11-03T09:00:00Z".to_owned(),
            })
        })
        .collect();
    let mut scan = BucketHistogram::new(SCAN_DURATION_BUCKETS);
    scan.observe(0.03);
    Snapshot {
        agent: AgentCounters {
            collector_connected: true,
            last_scan_at: Some(Instant::now()),
            scan_duration_seconds: scan,
            frames_rejected: vec![("crc", 1), ("oversized", 0), ("decode", 0)],
            alerts: vec![("low", 1), ("medium", 2), ("high", 3), ("critical", 4)],
            deliveries: vec![("webhook".to_owned(), "delivered", 10)],
            ..AgentCounters::default()
        },
        processes: Arc::new(processes),
        cpu_spike_seconds: BucketHistogram::default(),
    }
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    let best = times.first().copied().unwrap_or_default();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    println!(
        "{what}: best {:.3} ms, median {:.3} ms over {} runs",
        best.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        times.len()
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let snapshot = Arc::new(snapshot());

    let mut bytes = 0;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let text = render_metrics(&snapshot, TOP_N, Instant::now(), MetricsFormat::OpenMetrics)?;
        times.push(started.elapsed());
        bytes = text.len();
    }
    println!("{PROCESSES} processes, top {TOP_N}, {bytes} bytes per scrape");
    report("render (no HTTP)", times);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let token = CancellationToken::new();
    let mut config = HttpConfig::new(Duration::from_secs(5));
    config.top_n = TOP_N;
    let server = tokio::spawn(serve(
        listener,
        Arc::new(Fixed(Arc::clone(&snapshot))),
        config,
        token.clone(),
    ));
    let mut times = Vec::with_capacity(RUNS);
    let mut buf = Vec::with_capacity(64 * 1024);
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n")
            .await?;
        buf.clear();
        stream.read_to_end(&mut buf).await?;
        times.push(started.elapsed());
        if !buf.starts_with(b"HTTP/1.1 200") {
            return Err("scrape failed".into());
        }
    }
    report("GET /metrics over loopback (new connection each)", times);
    token.cancel();
    server.await?;
    Ok(())
}
