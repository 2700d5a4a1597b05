//! Daemon mode: the scan thread and the socket side, and the handoff
//! between them.
//!
//! Scanning is synchronous and runs on its own thread. Every scan, whether
//! the agent is connected or not, is appended to the audit ledger (one
//! entry) and to the write-ahead log (one entry per chunk,
//! group-committed), and the socket side is nudged through a one-slot
//! channel. The socket side sends from the log: on every connection it
//! replays what the agent has not acknowledged, in order, then follows the
//! log as it grows, and it truncates the log as acknowledgements arrive. So
//! nothing is lost while the agent is away or restarting; the log is
//! bounded in bytes and coalesces (drops samples first) when full
//! ([`crate::wal`]).
//!
//! The socket side also asks for a snapshot on every (re)connection
//! through a one-slot control channel, which wakes the scan thread early.

use std::path::PathBuf;
use std::sync::mpsc::{self as std_mpsc, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::client::{self, Control};
use crate::collect::{AnyCollector, Collector};
use crate::error::Error;
use crate::ledger::{Ledger, LedgerConfig};
use crate::scan::Scan;
use crate::scanner::{ScanConfig, Scanner};
use crate::wal::{Wal, WalConfig};
use sentineld_proto::v1::ProcessRecord;

/// Everything daemon mode needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// procmond's own files: the write-ahead log and the audit ledger.
    pub state_dir: PathBuf,
    /// The write-ahead log's bound and sync policy.
    pub wal: WalConfig,
    /// The audit ledger's segment size and how many sealed segments stay.
    pub ledger: LedgerConfig,
    /// The agent's socket.
    pub socket: PathBuf,
    pub scan_interval: Duration,
    /// The scan interval while the agent's credit is out (it is behind or
    /// stalled); at least `scan_interval`.
    pub backpressure_interval: Duration,
    /// Uids the agent may run as; empty for the default (procmond's own
    /// uid, root, and the owner of the socket's directory).
    pub agent_uids: Vec<u32>,
    pub chunk_records: usize,
    pub scan: ScanConfig,
}

/// Runs the collector until `cancel` fires: scans every interval and sends
/// the scans to the agent, reconnecting whenever the agent goes away.
pub async fn run_daemon(config: DaemonConfig, cancel: CancellationToken) -> Result<(), Error> {
    let collector = AnyCollector::open(config.scan.collector)?;
    info!(collector = collector.name(), "process collector open");
    let scanner = Scanner::new(collector, config.scan.clone())?;
    run_with_scanner(scanner, config, cancel).await
}

/// [`run_daemon`] with a given scanner (tests use a scripted collector).
pub async fn run_with_scanner<C: Collector + Send + 'static>(
    scanner: Scanner<C>,
    config: DaemonConfig,
    cancel: CancellationToken,
) -> Result<(), Error> {
    create_private_dir(&config.state_dir)?;
    let wal_dir = config.state_dir.join("wal");
    let (wal, recovery) = Wal::open(&wal_dir, config.wal).map_err(Error::Wal)?;
    if recovery.is_clean() {
        info!(
            dir = %wal_dir.display(),
            unacked = recovery.unacked,
            "write-ahead log open"
        );
    } else {
        warn!(
            dir = %wal_dir.display(),
            unacked = recovery.unacked,
            truncated_bytes = recovery.truncated_bytes,
            corrupt_segment = ?recovery.corrupt_segment,
            "write-ahead log recovered from a torn or corrupt tail"
        );
    }
    let wal = Arc::new(Mutex::new(wal));
    let ledger = Ledger::open(&config.state_dir, config.ledger).map_err(Error::Ledger)?;
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let (control_tx, control_rx) = std_mpsc::sync_channel::<Control>(1);
    let loop_cancel = cancel.clone();
    let interval = config.scan_interval;
    let flow = Arc::new(client::Flow::new(
        interval,
        config.backpressure_interval.max(interval),
    ));
    let scan_flow = Arc::clone(&flow);
    let chunk_records = config.chunk_records;
    let boot_id = sentineld_common::host::boot_id();
    let scan_wal = Arc::clone(&wal);
    let thread = std::thread::Builder::new()
        .name("procmond-scan".into())
        .spawn(move || {
            let mut out = ScanOutput {
                wal: scan_wal,
                ledger,
                boot_id,
                notify: tx,
            };
            scan_loop(
                scanner,
                &mut out,
                &control_rx,
                &loop_cancel,
                &scan_flow,
                chunk_records,
            );
        })
        .map_err(|source| Error::Thread {
            what: "scan",
            source,
        })?;
    info!(
        socket = %config.socket.display(),
        interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        "procmond started"
    );

    let me = client::Identity {
        boot_id,
        hostname: sentineld_common::host::hostname(),
        pid: std::process::id(),
    };
    let link = client::Link {
        socket: config.socket.clone(),
        agent_uids: config.agent_uids.clone(),
    };
    client::run(&link, &me, &wal, &flow, &mut rx, &control_tx, &cancel).await;
    let (stalls, resumes) = flow.transitions();
    if stalls > 0 {
        info!(stalls, resumes, "backpressure from the agent this run");
    }

    sentineld_common::notify::stopping();
    drop(control_tx);
    drop(rx);
    let joined = tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| Error::ScanThread(e.to_string()))?;
    joined.map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Error::ScanThread(message)
    })?;
    if let Ok(mut wal) = wal.lock()
        && let Err(e) = wal.sync_now()
    {
        warn!(error = %e, "cannot sync the write-ahead log at shutdown");
    }
    info!("procmond stopped");
    Ok(())
}

fn create_private_dir(path: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| Error::StateDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Where a finished scan goes: the ledger, the write-ahead log, and a nudge
/// to the socket side, which sends from the log.
struct ScanOutput {
    wal: Arc<Mutex<Wal>>,
    ledger: Ledger,
    boot_id: [u8; 16],
    notify: mpsc::Sender<()>,
}

impl ScanOutput {
    /// Records one scan, with `snapshot` (a snapshot's records, see
    /// [`Scanner::scan_deferred`]) after its `started`; false when the
    /// socket side has gone (shutdown).
    fn record(
        &mut self,
        mut scan: Scan,
        snapshot: &[&ProcessRecord],
        chunk_records: usize,
    ) -> bool {
        let scan_seq = scan.scan_seq;
        if let Ok(wal) = self.wal.lock() {
            let stats = wal.stats();
            scan.stats.wal_bytes = wal.bytes();
            scan.stats.wal_samples_dropped = stats.samples_dropped;
            scan.stats.wal_chunks_dropped = stats.batches_dropped;
        }
        let (cpu_seconds, rss_bytes) = sentineld_common::host::own_usage();
        scan.stats.self_cpu_seconds = cpu_seconds;
        scan.stats.self_rss_bytes = rss_bytes;
        scan.stats.missing_capabilities = crate::privilege::missing_now();
        // The ledger first, so that a crash in between leaves a scan the
        // ledger has and the agent never got (reported as missing), not one
        // the agent holds and the ledger lacks. Then the chunks go to the
        // log as they are made: a snapshot's records are cloned one chunk
        // at a time, never held whole beside the tracker's.
        let summary = scan.summary(snapshot.iter().copied());
        if let Err(e) = self.ledger.append_summary(self.boot_id, summary) {
            error!(scan_seq, error = %e, "cannot append the scan to the audit ledger");
        }
        match self.wal.lock() {
            Ok(mut wal) => {
                let more = snapshot.iter().map(|r| (*r).clone());
                scan.for_each_batch(chunk_records, more, |batch| {
                    if let Err(e) = wal.append(&batch) {
                        // Counted in the log's stats (appends_refused).
                        error!(scan_seq, error = %e, "scan chunk not kept: the write-ahead log refused it");
                    }
                });
                if wal.needs_sync()
                    && let Err(e) = wal.sync_now()
                {
                    error!(error = %e, "cannot sync the write-ahead log");
                }
            }
            Err(_) => {
                error!(
                    scan_seq,
                    "the write-ahead log is unusable after a panic; scan not kept"
                );
            }
        }
        match self.notify.try_send(()) {
            // Full: the socket side has a nudge waiting already.
            Ok(()) | Err(mpsc::error::TrySendError::Full(())) => true,
            Err(mpsc::error::TrySendError::Closed(())) => false,
        }
    }
}

/// Longest the scan thread waits without looking at the flow state again,
/// so a stretched or restored interval takes effect within this time.
const FLOW_CHECK: Duration = Duration::from_millis(250);

/// The scan thread: scans every interval (or at once when a snapshot is
/// asked for), and records every scan in the ledger and the write-ahead
/// log, connected or not: the log holds what the agent has not yet
/// acknowledged, so nothing is lost while it is away. The interval is the
/// configured one, or the stretched one while the agent's credit is out
/// ([`client::Flow`]).
fn scan_loop<C: Collector>(
    mut scanner: Scanner<C>,
    out: &mut ScanOutput,
    control: &Receiver<Control>,
    cancel: &CancellationToken,
    flow: &client::Flow,
    chunk_records: usize,
) {
    // The first scan lists every process: it is a snapshot.
    let mut snapshot = true;
    // Under systemd: ready once the first scan is recorded; the watchdog is
    // fed from this thread, so a scan that hangs stops the pings.
    let mut ready = false;
    let mut watchdog = sentineld_common::notify::Watchdog::from_env();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let started = Instant::now();
        let hash_wait = scanner.config().hash_wait;
        let scan = scanner.scan_deferred(snapshot, hash_wait);
        debug!(
            scan_seq = scan.scan_seq,
            records = scan.records() + if snapshot { scanner.live() } else { 0 },
            "scan done"
        );
        let records = if snapshot {
            scanner.snapshot_records()
        } else {
            Vec::new()
        };
        snapshot = false;
        if !out.record(scan, &records, chunk_records) {
            return;
        }
        if !ready {
            sentineld_common::notify::ready("scanning");
            ready = true;
        }
        if let Some(watchdog) = &mut watchdog {
            watchdog.ping_if_due();
        }

        // Wait for the next scan, or scan at once for a snapshot (but not
        // sooner than CPU figures can be measured). The interval is looked
        // at again every FLOW_CHECK, so backpressure engages (and lets go)
        // mid-wait.
        loop {
            let next = started + flow.interval();
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match control.recv_timeout(left.min(FLOW_CHECK)) {
                Ok(Control::Snapshot) => {
                    snapshot = true;
                    let earliest = started + sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;
                    std::thread::sleep(earliest.saturating_duration_since(Instant::now()));
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(watchdog) = &mut watchdog {
                        watchdog.ping_if_due();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if cancel.is_cancelled() {
                return;
            }
        }
    }
}
