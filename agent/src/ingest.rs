//! The storage thread: the only place the agent writes its store.
//!
//! redb transactions are synchronous, so they run on their own thread;
//! connections hand it batches through a bounded channel and acknowledge
//! each once it is committed. The batches queued when the thread takes
//! one are stored with it in one write transaction (group commit, up to
//! [`GROUP_RECORDS`] records): one `fdatasync` for all of them, and the
//! pages they share are copied once. A collector with credit for several
//! batches keeps several queued, so the disk's latency is paid once per
//! group instead of once per batch.
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
use crate::store::{BatchOutcome, Store, StoreError, batch_records};

/// Batches waiting for the storage thread. Small: backpressure reaches the
/// collector through unacknowledged batches, not through agent memory.
const QUEUE_DEPTH: usize = 16;

/// Records one group commit takes at most (it may take one batch more than
/// this). redb keeps a transaction's dirty pages in memory until it
/// commits, so this bounds them.
const GROUP_RECORDS: u64 = 16_384;

/// What the storage thread answers for one batch. A failed transaction
/// fails every batch of its group: the error is shared.
pub(crate) type Stored = Result<BatchOutcome, Arc<StoreError>>;

/// Set on a connection's first failed batch. Its later batches, queued
/// already, are failed too without being stored: acknowledgements are
/// cumulative and the collector sends them all again, and a later chunk
/// stored without the failed one would complete its scan without it.
pub(crate) type ConnectionFailure = Arc<std::sync::OnceLock<Arc<StoreError>>>;

struct Job {
    boot_id: [u8; 16],
    batch: ScanBatch,
    reply: oneshot::Sender<Stored>,
    failed: ConnectionFailure,
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
    /// Queues one batch for storing (waiting while the queue is full) and
    /// returns where its outcome will arrive once it is committed or has
    /// failed. Batches are stored in the order they are queued.
    pub(crate) async fn submit(
        &self,
        boot_id: [u8; 16],
        batch: ScanBatch,
        failed: &ConnectionFailure,
    ) -> Result<oneshot::Receiver<Stored>, IngestClosed> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                boot_id,
                batch,
                reply,
                failed: Arc::clone(failed),
            })
            .await
            .map_err(|_| IngestClosed)?;
        Ok(rx)
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
        let mut group: Vec<Job> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut records = 0;
            let mut next = Some(first);
            loop {
                let job = match next.take() {
                    Some(job) => job,
                    None if records >= GROUP_RECORDS => break,
                    None => match rx.try_recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    },
                };
                if let Some(e) = job.failed.get() {
                    let _ = job.reply.send(Err(Arc::clone(e)));
                    continue;
                }
                records += batch_records(&job.batch);
                group.push(job);
            }
            if group.is_empty() {
                continue;
            }
            let batches: Vec<([u8; 16], &ScanBatch)> =
                group.iter().map(|job| (job.boot_id, &job.batch)).collect();
            let result = store.apply_batches(&batches);
            drop(batches);
            match result {
                Ok(outcomes) => {
                    stats.batches_stored.fetch_add(group.len() as u64, Ordering::Relaxed);
                    stats.store_commits.fetch_add(1, Ordering::Relaxed);
                    for outcome in &outcomes {
                        stats.records_stored.fetch_add(outcome.records, Ordering::Relaxed);
                        if outcome.scan_id.is_some() {
                            stats.scans_stored.fetch_add(1, Ordering::Relaxed);
                        }
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
                    let mut committed = Vec::with_capacity(group.len());
                    for (job, outcome) in group.drain(..).zip(outcomes) {
                        // The connection may have gone; the batch is stored either way.
                        let _ = job.reply.send(Ok(outcome));
                        committed.push(Committed {
                            boot_id: job.boot_id,
                            batch: job.batch,
                        });
                    }
                    // Detection sees only what is committed, after every
                    // ack of the group is on its way: rules never delay
                    // storage.
                    if let Some(detect) = &detect
                        && !committed.into_iter().all(|c| detect.send(c))
                    {
                        tracing::error!("the detection thread has stopped; batches are stored but not evaluated");
                    }
                }
                Err(e) => {
                    failed += group.len() as u64;
                    let scan_seq = group[0].batch.scan_seq;
                    if stats.store_failed(|| e.to_string()) {
                        tracing::error!(
                            error = %e,
                            scan_seq,
                            batches = group.len(),
                            "cannot store batch: {}",
                            store_error_hint(&e)
                        );
                    } else {
                        tracing::debug!(error = %e, scan_seq, failed, "cannot store batch");
                    }
                    let e = Arc::new(e);
                    for job in group.drain(..) {
                        let _ = job.failed.set(Arc::clone(&e));
                        let _ = job.reply.send(Err(Arc::clone(&e)));
                    }
                }
            }
        }
    })?;
    Ok((IngestHandle { tx, stop_waiting }, thread))
}
