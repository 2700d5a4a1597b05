//! Daemon mode: the scan thread and the socket side, and the handoff
//! between them.
//!
//! Scanning is synchronous and runs on its own thread. After each scan it
//! offers the result to the socket side through a small bounded channel
//! (`try_reserve`, never blocking). When the channel is full (the agent is
//! behind) the scan is kept and the next one is merged into it
//! ([`Scan::merge`]), so what waits is one scan's worth of the latest state,
//! bounded by [`MAX_UNSENT_RECORDS`]. Past that bound the unsent scan is
//! dropped and the next scan is a full snapshot.
//!
//! The socket side asks for a snapshot on every (re)connection through a
//! one-slot control channel, which also wakes the scan thread early. While
//! there is no connection it drains and drops scans: the snapshot of the
//! next connection supersedes them. A write-ahead log will sit on the scan
//! thread's side of the channel (append, then offer), letting the socket
//! side replay unacknowledged batches instead.

use std::path::PathBuf;
use std::sync::mpsc::{self as std_mpsc, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::{self, Control, Outgoing};
use crate::collect::{Collector, SysinfoCollector};
use crate::error::Error;
use crate::scan::Scan;
use crate::scanner::{ScanConfig, Scanner};

/// Scans (chunked) that may wait in the channel to the socket side.
const CHANNEL_SCANS: usize = 2;
/// Most records kept in an unsent, merged scan.
pub const MAX_UNSENT_RECORDS: usize = 50_000;

/// Everything daemon mode needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The agent's socket.
    pub socket: PathBuf,
    pub scan_interval: Duration,
    pub chunk_records: usize,
    pub scan: ScanConfig,
}

/// Runs the collector until `cancel` fires: scans every interval and sends
/// the scans to the agent, reconnecting whenever the agent goes away.
pub async fn run_daemon(config: DaemonConfig, cancel: CancellationToken) -> Result<(), Error> {
    let scanner = Scanner::new(SysinfoCollector::new()?, config.scan.clone())?;
    run_with_scanner(scanner, config, cancel).await
}

/// [`run_daemon`] over any collector.
pub async fn run_with_scanner<C: Collector + Send + 'static>(
    scanner: Scanner<C>,
    config: DaemonConfig,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(CHANNEL_SCANS);
    let (control_tx, control_rx) = std_mpsc::sync_channel::<Control>(1);
    let loop_cancel = cancel.clone();
    let interval = config.scan_interval;
    let chunk_records = config.chunk_records;
    let thread = std::thread::Builder::new()
        .name("procmond-scan".into())
        .spawn(move || {
            scan_loop(
                scanner,
                &tx,
                &control_rx,
                &loop_cancel,
                interval,
                chunk_records,
            )
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
        boot_id: sentineld_common::host::boot_id(),
        hostname: sentineld_common::host::hostname(),
        pid: std::process::id(),
    };
    client::run(&config.socket, &me, &mut rx, &control_tx, &cancel).await;

    // Wake and stop the scan thread: it sees the cancellation, the closed
    // control channel or the closed scan channel.
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
    info!("procmond stopped");
    Ok(())
}

fn scan_loop<C: Collector>(
    mut scanner: Scanner<C>,
    tx: &mpsc::Sender<Outgoing>,
    control: &Receiver<Control>,
    cancel: &CancellationToken,
    interval: Duration,
    chunk_records: usize,
) {
    let mut unsent: Option<Scan> = None;
    let mut snapshot = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let started = Instant::now();
        let hash_wait = scanner.config().hash_wait;
        let scan = scanner.scan(snapshot, hash_wait);
        snapshot = false;
        let pending = match unsent.take() {
            Some(mut older) => {
                older.merge(scan);
                older
            }
            None => scan,
        };
        if pending.records() > MAX_UNSENT_RECORDS {
            warn!(
                records = pending.records(),
                max = MAX_UNSENT_RECORDS,
                "the agent is too far behind: unsent scans dropped, a snapshot follows"
            );
            snapshot = true;
        } else {
            match tx.try_reserve() {
                Ok(permit) => permit.send(Outgoing {
                    snapshot: pending.snapshot,
                    scan_seq: pending.scan_seq,
                    batches: pending.into_batches(chunk_records),
                }),
                Err(mpsc::error::TrySendError::Full(())) => {
                    debug!(
                        scan_seq = pending.scan_seq,
                        "socket side busy: scan kept for merging"
                    );
                    unsent = Some(pending);
                }
                Err(mpsc::error::TrySendError::Closed(())) => return,
            }
        }

        let next = started + interval;
        let left = next.saturating_duration_since(Instant::now());
        match control.recv_timeout(left) {
            Ok(Control::Snapshot) => {
                snapshot = true;
                // CPU usage needs some time between two refreshes.
                let earliest = started + sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;
                std::thread::sleep(earliest.saturating_duration_since(Instant::now()));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
