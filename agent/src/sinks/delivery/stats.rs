//! Per-sink counters, shared between the dispatcher and the sink's task.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::sinks::delivery::breaker::BreakerState;

/// A snapshot of one sink's counters. Counts are alerts, not attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStats {
    pub sink: String,
    pub delivered: u64,
    /// Alerts given up on (permanent failure or attempts exhausted).
    pub failed: u64,
    /// Failed attempts that were retried.
    pub retried: u64,
    /// Alerts never (fully) attempted: queue full, sink stopped, shutdown.
    pub dropped: u64,
    /// Alerts waiting in the queue now.
    pub queued: usize,
    pub queue_capacity: usize,
    pub breaker: BreakerState,
}

/// A snapshot of every sink, and of the record channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatcherStats {
    pub sinks: Vec<SinkStats>,
    /// Delivery records lost because the record channel was full.
    pub records_dropped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) breaker: AtomicU8,
    /// Drops since the current full-queue burst began.
    burst_dropped: AtomicU64,
    in_burst: AtomicBool,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_breaker(&self, state: BreakerState) {
        self.breaker.store(state.to_u8(), Ordering::Relaxed);
    }

    /// Counts one alert dropped because the queue was full; the first of a
    /// burst logs.
    pub(crate) fn queue_full_drop(&self, sink: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.burst_dropped.fetch_add(1, Ordering::Relaxed);
        if !self.in_burst.swap(true, Ordering::Relaxed) {
            warn!(
                sink,
                "sink queue is full; dropping alerts for this sink until it drains \
                 (check the sink or raise its `queue`)"
            );
        }
    }

    /// The sink took alerts off its queue: a burst of drops, if any, is
    /// over and is logged with its size.
    pub(crate) fn queue_has_room(&self, sink: &str) {
        if self.in_burst.swap(false, Ordering::Relaxed) {
            let dropped = self.burst_dropped.swap(0, Ordering::Relaxed);
            warn!(
                sink,
                dropped, "sink queue has room again; alerts were dropped while it was full"
            );
        }
    }

    pub(crate) fn snapshot(&self, sink: &str, queued: usize, queue_capacity: usize) -> SinkStats {
        SinkStats {
            sink: sink.to_owned(),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            queued,
            queue_capacity,
            breaker: BreakerState::from_u8(self.breaker.load(Ordering::Relaxed)),
        }
    }
}
