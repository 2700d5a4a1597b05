//! Counters of the agent's work, shared by its tasks. Every counted event
//! is also logged where it happens, so logs and counters agree.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sinks::Severity;

fn severity_index(severity: Severity) -> usize {
    match severity {
        Severity::Low => 0,
        Severity::Medium => 1,
        Severity::High => 2,
        Severity::Critical => 3,
    }
}

/// Why a frame or connection was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Oversize,
    BadCrc,
    Undecodable,
    Truncated,
    WrongVersion,
    BadHandshake,
    HandshakeTimeout,
    UnexpectedMessage,
    SequenceGap,
    SequenceRepeat,
    Io,
    /// The peer's uid (SO_PEERCRED) is not an allowed collector uid.
    PeerUid,
    /// Every connection slot was taken (`--max-connections`).
    TooManyConnections,
}

impl RejectReason {
    pub const ALL: [RejectReason; 13] = [
        RejectReason::Oversize,
        RejectReason::BadCrc,
        RejectReason::Undecodable,
        RejectReason::Truncated,
        RejectReason::WrongVersion,
        RejectReason::BadHandshake,
        RejectReason::HandshakeTimeout,
        RejectReason::UnexpectedMessage,
        RejectReason::SequenceGap,
        RejectReason::SequenceRepeat,
        RejectReason::Io,
        RejectReason::PeerUid,
        RejectReason::TooManyConnections,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversize => "oversize",
            RejectReason::BadCrc => "bad_crc",
            RejectReason::Undecodable => "undecodable",
            RejectReason::Truncated => "truncated",
            RejectReason::WrongVersion => "wrong_version",
            RejectReason::BadHandshake => "bad_handshake",
            RejectReason::HandshakeTimeout => "handshake_timeout",
            RejectReason::UnexpectedMessage => "unexpected_message",
            RejectReason::SequenceGap => "sequence_gap",
            RejectReason::SequenceRepeat => "sequence_repeat",
            RejectReason::Io => "io",
            RejectReason::PeerUid => "peer_uid",
            RejectReason::TooManyConnections => "too_many_connections",
        }
    }

    pub(crate) fn index(self) -> usize {
        RejectReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is listed in ALL")
    }
}

/// Why the store cannot be written now, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFault {
    /// The first error of the outage, as logged.
    pub error: String,
    /// When the first write failed.
    pub since: Instant,
}

/// Counters, updated lock-free by the connection and storage tasks.
#[derive(Debug, Default)]
pub struct AgentStats {
    rejected: [AtomicU64; RejectReason::ALL.len()],
    pub records_stored: AtomicU64,
    pub batches_stored: AtomicU64,
    /// Write transactions that stored batches (a group commit stores
    /// several batches in one).
    pub store_commits: AtomicU64,
    pub scans_stored: AtomicU64,
    /// Write transactions that failed (each failing the batches it held),
    /// and store writes that found the disk full (each counted once,
    /// however long it waited).
    pub store_errors: AtomicU64,
    /// Set from a store write's failure until a batch is stored again.
    store_fault: Mutex<Option<StoreFault>>,
    pub collector_restarts: AtomicU64,
    pub collector_connected: AtomicBool,
    /// Alerts raised (stored and handed to the sinks), by severity: low,
    /// medium, high, critical.
    alerts: [AtomicU64; 4],
    pub rule_reloads: AtomicU64,
    pub rule_reload_failures: AtomicU64,
    /// Rule evaluation: runs, records evaluated and total time.
    pub rule_eval_runs: AtomicU64,
    pub rule_eval_records: AtomicU64,
    pub rule_eval_nanos: AtomicU64,
    /// Retention: passes finished, what they removed, passes that failed.
    pub retention_passes: AtomicU64,
    pub retention_pruned_samples: AtomicU64,
    pub retention_pruned_instances: AtomicU64,
    pub retention_pruned_scans: AtomicU64,
    pub retention_failures: AtomicU64,
}

impl AgentStats {
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Counts a failed store write in `store_errors` and, unless the store
    /// is already known to be unwritable, records `error` as the fault in
    /// force. Returns whether the store was writable until now: callers log
    /// only then, so an outage is logged once, not once per batch.
    pub fn store_failed(&self, error: impl FnOnce() -> String) -> bool {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
        let mut fault = self.fault();
        if fault.is_some() {
            return false;
        }
        *fault = Some(StoreFault {
            error: error(),
            since: Instant::now(),
        });
        true
    }

    /// A batch was stored: the store is writable. Returns how long it was
    /// not, when it was not.
    pub fn store_writable(&self) -> Option<Duration> {
        self.fault().take().map(|f| f.since.elapsed())
    }

    /// Why the store cannot be written, while it cannot.
    pub fn store_fault(&self) -> Option<StoreFault> {
        self.fault().clone()
    }

    fn fault(&self) -> std::sync::MutexGuard<'_, Option<StoreFault>> {
        // Every holder leaves the value whole: a panic elsewhere does not
        // make it unusable.
        self.store_fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn count_alert(&self, severity: Severity) {
        self.alerts[severity_index(severity)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn alerts(&self, severity: Severity) -> u64 {
        self.alerts[severity_index(severity)].load(Ordering::Relaxed)
    }

    pub fn observe_rule_eval(&self, took: Duration, records: usize) {
        self.rule_eval_runs.fetch_add(1, Ordering::Relaxed);
        self.rule_eval_records
            .fetch_add(records as u64, Ordering::Relaxed);
        self.rule_eval_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::stats::AgentStats;

    #[test]
    fn a_store_outage_is_reported_once_and_every_failure_counted() {
        let stats = AgentStats::default();
        assert_eq!(stats.store_writable(), None, "writable from the start");
        assert!(stats.store_failed(|| "no space left".to_owned()));
        assert!(!stats.store_failed(|| unreachable!("the first error stays")));
        assert!(!stats.store_failed(|| unreachable!("the first error stays")));
        assert_eq!(stats.store_errors.load(Ordering::Relaxed), 3);
        assert_eq!(
            stats.store_fault().map(|f| f.error).as_deref(),
            Some("no space left")
        );
        assert!(stats.store_writable().is_some(), "the outage ends once");
        assert_eq!(stats.store_writable(), None);
        assert_eq!(stats.store_fault(), None);
        assert!(stats.store_failed(|| "again".to_owned()), "a new outage");
    }
}
