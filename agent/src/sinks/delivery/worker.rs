//! One sink's task: takes batches off its queue, retries with backoff,
//! respects the circuit breaker, records every attempt, and drains on
//! shutdown for a bounded time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::sinks::alert::Alert;
use crate::sinks::delivery::backoff;
use crate::sinks::delivery::breaker::{Breaker, BreakerState};
use crate::sinks::delivery::record::{Outcome, RecordSender};
use crate::sinks::delivery::stats::Counters;
use crate::sinks::settings::DeliveryPolicy;
use crate::sinks::sink::{Retry, Sink, error_chain};

pub(crate) struct Worker<S> {
    pub(crate) name: Arc<str>,
    pub(crate) sink: S,
    pub(crate) rx: mpsc::Receiver<Arc<Alert>>,
    pub(crate) policy: DeliveryPolicy,
    pub(crate) counters: Arc<Counters>,
    pub(crate) records: RecordSender,
    pub(crate) shutdown: CancellationToken,
    pub(crate) drain_timeout: Duration,
}

/// The worker's state between awaits, so that what is left when the drain
/// time runs out can be counted.
struct Run<S> {
    w: Worker<S>,
    breaker: Breaker,
    /// The batch being delivered.
    pending: Vec<Arc<Alert>>,
    /// Attempts already made on `pending`.
    attempts: u32,
}

impl<S: Sink> Worker<S> {
    pub(crate) async fn run(self) {
        let shutdown = self.shutdown.clone();
        let drain = self.drain_timeout;
        let breaker = Breaker::new(
            self.policy.breaker_threshold().get(),
            self.policy.breaker_cooldown(),
        );
        let mut run = Run {
            w: self,
            breaker,
            pending: Vec::new(),
            attempts: 0,
        };
        let drain_over = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
        };
        tokio::select! {
            () = run.deliver_all() => {}
            () = drain_over => {
                debug!(sink = %run.w.name, "drain time ran out");
            }
        }
        run.drop_remaining();
        debug!(sink = %run.w.name, "sink stopped");
    }
}

impl<S: Sink> Run<S> {
    /// Delivers until the queue is closed and empty, or until shutdown
    /// finds the breaker open.
    async fn deliver_all(&mut self) {
        let mut closed = false;
        loop {
            if self.pending.is_empty() {
                self.attempts = 0;
                let max = self.w.sink.max_batch().max(1);
                let received = tokio::select! {
                    biased;
                    n = self.w.rx.recv_many(&mut self.pending, max) => n,
                    () = self.w.shutdown.cancelled(), if !closed => {
                        // Deliver what is queued, accept nothing more.
                        self.w.rx.close();
                        closed = true;
                        continue;
                    }
                };
                if received == 0 {
                    return;
                }
                self.w.counters.queue_has_room(&self.w.name);
            }
            if !self.deliver_pending().await {
                return;
            }
        }
    }

    /// Attempts the pending batch until it is delivered or failed; `false`
    /// if shutdown came while the breaker was open.
    async fn deliver_pending(&mut self) -> bool {
        loop {
            if let Err(until) = self.breaker.check(Instant::now()) {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => continue,
                    () = self.w.shutdown.cancelled() => return false,
                }
            }
            self.publish_breaker();
            self.attempts += 1;
            let attempt = self.attempts;
            let n = self.pending.len();
            let error = match self.w.sink.send(&self.pending).await {
                Ok(()) => {
                    if self.breaker.state() != BreakerState::Closed {
                        info!(sink = %self.w.name, "sink recovered; circuit breaker closed");
                    }
                    self.breaker.on_success();
                    self.publish_breaker();
                    Counters::add(&self.w.counters.delivered, n);
                    self.finish(attempt, Outcome::Delivered, None);
                    return true;
                }
                Err(e) => e,
            };
            let text = error_chain(&error);
            if !error.is_retryable() {
                warn!(sink = %self.w.name, attempt, error = %text, alerts = n, "delivery failed permanently");
                Counters::add(&self.w.counters.failed, n);
                self.finish(attempt, Outcome::Failed, Some(&text));
                return true;
            }
            if self.breaker.on_failure(Instant::now()) {
                warn!(
                    sink = %self.w.name,
                    cooldown_ms = self.w.policy.breaker_cooldown().as_millis() as u64,
                    "circuit breaker opened; alerts wait in the queue"
                );
            }
            self.publish_breaker();
            if attempt >= self.w.policy.max_attempts().get() {
                warn!(sink = %self.w.name, attempt, error = %text, alerts = n, "delivery failed; no attempts left");
                Counters::add(&self.w.counters.failed, n);
                self.finish(attempt, Outcome::Failed, Some(&text));
                return true;
            }
            warn!(sink = %self.w.name, attempt, error = %text, alerts = n, "delivery failed; will retry");
            Counters::add(&self.w.counters.retried, n);
            for alert in &self.pending {
                self.w.records.emit(
                    &alert.id,
                    &self.w.name,
                    attempt,
                    Outcome::Retrying,
                    Some(&text),
                );
            }
            let wait = backoff::delay(
                self.w.policy.backoff_base(),
                self.w.policy.backoff_max(),
                attempt,
            );
            // After shutdown, retry without waiting: the drain time bounds it.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.w.shutdown.cancelled() => {}
            }
        }
    }

    fn finish(&mut self, attempt: u32, outcome: Outcome, error: Option<&str>) {
        for alert in self.pending.drain(..) {
            self.w
                .records
                .emit(&alert.id, &self.w.name, attempt, outcome, error);
        }
        if outcome == Outcome::Delivered {
            debug!(sink = %self.w.name, attempt, "delivered");
        }
    }

    fn publish_breaker(&self) {
        self.w.counters.set_breaker(self.breaker.state());
    }

    /// Records what shutdown left undelivered as dropped.
    fn drop_remaining(&mut self) {
        self.w.rx.close();
        let reason = "sink stopped before the alert was delivered";
        let mut dropped = 0usize;
        for alert in self.pending.drain(..) {
            self.w.records.emit(
                &alert.id,
                &self.w.name,
                self.attempts,
                Outcome::Dropped,
                Some(reason),
            );
            dropped += 1;
        }
        while let Ok(alert) = self.w.rx.try_recv() {
            self.w
                .records
                .emit(&alert.id, &self.w.name, 0, Outcome::Dropped, Some(reason));
            dropped += 1;
        }
        if dropped > 0 {
            Counters::add(&self.w.counters.dropped, dropped);
            warn!(sink = %self.w.name, dropped, "shutdown: alerts not delivered in the drain time were dropped");
        }
    }
}
