//! The storage thread: the only place the agent writes its store.
//!
//! redb transactions are synchronous, so they run on their own thread;
//! connections hand it batches through a bounded channel and wait for the
//! commit before they acknowledge. One batch is one write transaction.
//!
//! A batch that cannot be stored is not acknowledged: the connection that
//! brought it closes, and the collector sends it again from its write-ahead
//! log. A full disk does not even fail the batch: the store waits for space
//! (see `store::write::space`), and the batch is stored once there is some.
//! Either way the store's state is logged when it changes, not per batch:
//! once when writes start failing, once when a batch is stored again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use sentineld_proto::v1::ScanBatch;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::detect::{Committed, DetectHandle};
use crate::stats::AgentStats;
use crate::store::{BatchOutcome, Store, StoreError};

/// Batches waiting for the storage thread. Small: backpressure reaches the
/// collector through unacknowledged batches, not through agent memory.
const QUEUE_DEPTH: usize = 16;

struct Job {
    boot_id: [u8; 16],
    batch: ScanBatch,
    reply: oneshot::Sender<Result<BatchOutcome, StoreError>>,
}

/// Sends batches to the storage thread.
#[derive(Clone, Debug)]
pub(crate) struct IngestHandle {
    tx: mpsc::Sender<Job>,
    /// Ends a store write's wait for disk space (at shutdown).
    stop_waiting: CancellationToken,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("scan_seq", &self.batch.scan_seq)
            .finish()
    }
}

/// The storage thread ended (it only does so at shutdown).
#[derive(Debug, thiserror::Error)]
#[error("the storage thread has stopped")]
pub(crate) struct IngestClosed;

impl IngestHandle {
    /// Stores one batch and waits for its commit.
    pub(crate) async fn store(
        &self,
        boot_id: [u8; 16],
        batch: ScanBatch,
    ) -> Result<Result<BatchOutcome, StoreError>, IngestClosed> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                boot_id,
                batch,
                reply,
            })
            .await
            .map_err(|_| IngestClosed)?;
        rx.await.map_err(|_| IngestClosed)
    }

    /// Shutting down: a write waiting for disk space fails instead, so the
    /// batch it belongs to is left unacknowledged and the agent can stop.
    pub(crate) fn stop_waiting_for_space(&self) {
        self.stop_waiting.cancel();
    }
}

/// Why a store error keeps the store from being written, and what to do.
fn store_error_hint(e: &StoreError) -> &'static str {
    match e {
        StoreError::Redb { source, .. } if matches!(**source, redb::Error::PreviousIo) => {
            "the store cannot be written since an earlier I/O error: restart sentinelagent; \
             the collector keeps the backlog in its write-ahead log"
        }
        _ => "the collector keeps the batch in its write-ahead log and sends it again",
    }
}

/// Starts the storage thread over `store`. It ends when every handle is
/// dropped, after finishing the batches already queued.
pub(crate) fn spawn(
    mut store: Store,
    stats: Arc<AgentStats>,
    detect: Option<DetectHandle>,
) -> std::io::Result<(IngestHandle, JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
    let stop_waiting = CancellationToken::new();
    store.wait_for_space(Arc::clone(&stats), stop_waiting.clone());
    let thread = std::thread::Builder::new().name("store-writer".into()).spawn(move || {
        // Batches that failed since the store last stored one.
        let mut failed: u64 = 0;
        while let Some(job) = rx.blocking_recv() {
            let result = store.apply_batch(job.boot_id, &job.batch);
            match &result {
                Ok(outcome) => {
                    stats.records_stored.fetch_add(outcome.records, Ordering::Relaxed);
                    stats.batches_stored.fetch_add(1, Ordering::Relaxed);
                    if outcome.scan_id.is_some() {
                        stats.scans_stored.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(after) = stats.store_writable() {
                        tracing::info!(
                            after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                            failed_batches = failed,
                            "store writable again after {:.1} s",
                            after.as_secs_f64()
                        );
                    }
                    failed = 0;
                }
                Err(e) => {
                    failed += 1;
                    if stats.store_failed(|| e.to_string()) {
                        tracing::error!(
                            error = %e,
                            scan_seq = job.batch.scan_seq,
                            "cannot store batch: {}",
                            store_error_hint(e)
                        );
                    } else {
                        tracing::debug!(error = %e, scan_seq = job.batch.scan_seq, failed, "cannot store batch");
                    }
                }
            }
            let stored = result.is_ok();
            // The connection may have gone; the batch is stored either way.
            let _ = job.reply.send(result);
            // Detection sees only what is committed, after the ack is on
            // its way: rules never delay storage.
            if stored && let Some(detect) = &detect {
                let committed = Committed {
                    boot_id: job.boot_id,
                    batch: job.batch,
                };
                if !detect.send(committed) {
                    tracing::error!("the detection thread has stopped; batches are stored but not evaluated");
                }
            }
        }
    })?;
    Ok((IngestHandle { tx, stop_waiting }, thread))
}
