//! The storage thread: the only place the agent writes its store.
//!
//! redb transactions are synchronous, so they run on their own thread;
//! connections hand it batches through a bounded channel and wait for the
//! commit before they acknowledge. One batch is one write transaction.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use sentineld_proto::v1::ScanBatch;
use tokio::sync::{mpsc, oneshot};

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
}

/// Starts the storage thread over `store`. It ends when every handle is
/// dropped, after finishing the batches already queued.
pub(crate) fn spawn(
    mut store: Store,
    stats: Arc<AgentStats>,
    detect: Option<DetectHandle>,
) -> std::io::Result<(IngestHandle, JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
    let thread = std::thread::Builder::new().name("store-writer".into()).spawn(move || {
        while let Some(job) = rx.blocking_recv() {
            let result = store.apply_batch(job.boot_id, &job.batch);
            match &result {
                Ok(outcome) => {
                    stats.records_stored.fetch_add(outcome.records, Ordering::Relaxed);
                    stats.batches_stored.fetch_add(1, Ordering::Relaxed);
                    if outcome.scan_id.is_some() {
                        stats.scans_stored.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, scan_seq = job.batch.scan_seq, "cannot store batch");
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
    Ok((IngestHandle { tx }, thread))
}
