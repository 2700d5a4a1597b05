//! What the agent hands the HTTP endpoint: a cheap, current [`Snapshot`] and a
//! history reader, both behind the [`StateSource`] trait.
//!
//! Invariant: nothing in this module scans `/proc` or opens the store. A
//! scrape reads one `Arc<Snapshot>` that the agent keeps current; only
//! `/api/processes/{pid}/history` reads the store, through
//! [`StateSource::history`], on a blocking thread.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

/// The agent's side of the HTTP endpoint.
///
/// Implemented by the agent; the server holds it as `Arc<dyn StateSource>`.
pub trait StateSource: Send + Sync + 'static {
    /// The current snapshot. Must be cheap (clone an `Arc` the agent swaps
    /// after each scan): it is called once per request and never waits on a
    /// scan or on the store.
    fn snapshot(&self) -> Arc<Snapshot>;

    /// Up to `limit` most recent samples of the process(es) that had `pid`,
    /// newest first, read from the store. Called on a blocking thread
    /// (`spawn_blocking`), so it may run a redb read transaction.
    /// `limit` is already checked: `1..=HttpConfig::max_history_limit`.
    ///
    /// # Errors
    /// [`HistoryError::NotFound`] when the store knows no process with this
    /// pid (answered with 404), [`HistoryError::Store`] when reading failed
    /// (answered with 500).
    fn history(&self, pid: u32, limit: usize) -> Result<Vec<HistoryPoint>, HistoryError>;
}

/// Why [`StateSource::history`] gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The store has no process instance with this pid.
    #[error("no process with pid {pid} in the store")]
    NotFound {
        /// The pid that was asked for.
        pid: u32,
    },
    /// Reading the store failed.
    #[error("reading the history of pid {pid} from the store failed")]
    Store {
        /// The pid that was asked for.
        pid: u32,
        /// The store's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Everything `/metrics`, `/healthz` and `/api/processes`, `/api/groups`
/// show, as of the agent's last update.
///
/// The agent builds a new one after each stored scan (and when a counter it
/// cares to show promptly changes) and swaps it in, e.g. with an
/// `ArcSwap`-like cell or a `Mutex<Arc<Snapshot>>`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The agent's own counters and health.
    pub agent: AgentCounters,
    /// Every live process as of the last scan, in any order. `/metrics`
    /// exports only the top N of these by CPU and by memory; the JSON API
    /// shows all of them. Rows are shared: a process whose figures did not
    /// change keeps its row from one snapshot to the next.
    pub processes: Arc<Vec<Arc<ProcessRow>>>,
    /// How long processes stayed above the CPU-spike threshold, in seconds:
    /// a clone of [`crate::http::SpikeTracker::histogram`].
    pub cpu_spike_seconds: BucketHistogram,
}

/// The agent's counters and health. Counters are totals since the agent
/// started (Prometheus handles resets).
#[derive(Debug, Clone, Default)]
pub struct AgentCounters {
    /// Process records written to the store.
    pub records_stored: u64,
    /// Batches written to the store.
    pub batches_stored: u64,
    /// Write transactions that stored them (a group commit stores every
    /// batch queued when it starts).
    pub store_commits: u64,
    /// Scans written to the store.
    pub scans_stored: u64,
    /// Store writes that failed.
    pub store_errors: u64,
    /// Why the store cannot be written now (e.g. its disk is full), and
    /// since when; `None` while it can.
    pub store_fault: Option<crate::stats::StoreFault>,
    /// Retention passes finished.
    pub retention_passes: u64,
    /// Retention passes that failed (retried at the next pass).
    pub retention_failures: u64,
    /// Entries retention removed, by kind (`samples`, `instances`,
    /// `scans`): `(kind, count)`.
    pub retention_pruned: Vec<(&'static str, u64)>,
    /// Times the collector (procmond) was restarted or reconnected.
    pub collector_restarts: u64,
    /// Whether procmond is connected now.
    pub collector_connected: bool,
    /// When the last scan was stored (monotonic clock). `None` before the
    /// first one. The server computes the age at request time, so a stale
    /// snapshot still shows a growing age.
    pub last_scan_at: Option<Instant>,
    /// Frames rejected, by reason (e.g. `crc`, `oversized`, `decode`,
    /// `sequence`): `(reason, count)`.
    pub frames_rejected: Vec<(&'static str, u64)>,
    /// Alerts raised, by severity (`low`, `medium`, `high`, `critical`):
    /// `(severity, count)`.
    pub alerts: Vec<(&'static str, u64)>,
    /// Alert delivery attempts: `(sink name, outcome, count)` where outcome
    /// is one of `delivered`, `failed`, `retried`, `dropped`.
    pub deliveries: Vec<(String, &'static str, u64)>,
    /// Each sink's current state: `(sink name, state)`, state e.g. `ok`,
    /// `retrying`, `open` (circuit breaker open).
    pub sink_states: Vec<(String, &'static str)>,
    /// Duration of one rule-engine evaluation (all rules over one batch),
    /// in seconds. Start from [`BucketHistogram::new`] with
    /// [`RULE_EVAL_BUCKETS`].
    pub rule_eval_seconds: BucketHistogram,
    /// Duration of one procmond scan, in seconds, as reported with the scan.
    /// Start from [`BucketHistogram::new`] with [`SCAN_DURATION_BUCKETS`].
    pub scan_duration_seconds: BucketHistogram,
    /// Bytes in the agent-side write-ahead log not yet stored (WAL depth).
    pub wal_bytes: u64,
    /// Size of the redb file, in bytes.
    pub store_bytes: u64,
    /// Capabilities procmond lacks (e.g. `CAP_SYS_PTRACE`), so some fields
    /// are missing. Empty when it has all it wants.
    pub missing_capabilities: Vec<String>,
    /// CPU time used by the agent process (user + system), in seconds.
    pub agent_cpu_seconds: f64,
    /// Resident memory of the agent process, in bytes.
    pub agent_rss_bytes: u64,
    /// CPU time used by procmond, in seconds; `None` when unknown (not a
    /// child of the agent, or not connected). Such metrics are left out.
    pub collector_cpu_seconds: Option<f64>,
    /// Resident memory of procmond, in bytes; `None` when unknown.
    pub collector_rss_bytes: Option<u64>,
}

/// One live process as of the last scan. Serialized as is by the JSON API.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessRow {
    /// Process id.
    pub pid: u32,
    /// Short name (`comm`).
    pub name: String,
    /// User name, or the uid as a string when it has no name; `None` when
    /// unknown.
    pub user: Option<String>,
    /// Container id when the process runs in one.
    pub container_id: Option<String>,
    /// CPU use over the last scan interval, in percent of one core (may
    /// exceed 100 on several cores).
    pub cpu_percent: f32,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// Virtual memory, in bytes.
    pub vms_bytes: u64,
    /// Swapped-out memory, in bytes; `None` when unknown.
    pub swap_bytes: Option<u64>,
    /// Number of threads.
    pub threads: u32,
    /// Open file descriptors; `None` when procmond may not read them.
    pub open_fds: Option<u32>,
    /// Local ports of its listening TCP sockets and bound, unconnected UDP
    /// sockets (IPv4 and IPv6), sorted; empty when none are known.
    pub listening_ports: Vec<u32>,
    /// Executable path; `None` when unreadable.
    pub exe: Option<String>,
    /// Command line, one element per argument.
    pub cmdline: Vec<String>,
    /// Start time, RFC 3339 in UTC (e.g. `2026-11-03T10:15:00Z`).
    pub start_time: String,
}

/// One stored sample of a process, for `/api/processes/{pid}/history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// When the sample was taken, RFC 3339 in UTC.
    pub time: String,
    /// Start time of the instance the sample belongs to, RFC 3339 in UTC:
    /// pids are reused, so one pid's history may span instances.
    pub start_time: String,
    /// CPU use, in percent of one core.
    pub cpu_percent: f32,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// Virtual memory, in bytes.
    pub vms_bytes: u64,
    /// Number of threads.
    pub threads: u32,
    /// Open file descriptors; `None` when unknown.
    pub open_fds: Option<u32>,
    /// Listening ports, as in [`ProcessRow::listening_ports`].
    pub listening_ports: Vec<u32>,
}

/// Suggested bucket bounds for scan durations, in seconds.
pub const SCAN_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Suggested bucket bounds for one rule evaluation, in seconds.
pub const RULE_EVAL_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
];
/// Bucket bounds of [`crate::http::SpikeTracker`]'s histogram, in seconds.
pub const CPU_SPIKE_BUCKETS: &[f64] = &[
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14_400.0,
];

/// A histogram with fixed bucket bounds, kept by the agent and cloned into
/// the snapshot: pre-bucketed counts, so its size never depends on how much
/// was observed.
///
/// `Default` is a histogram with only the `+Inf` bucket (sum and count only).
#[derive(Debug, Clone, PartialEq)]
pub struct BucketHistogram {
    /// Finite upper bounds, strictly increasing.
    bounds: Vec<f64>,
    /// Per-bucket (not cumulative) counts; one more than `bounds`, the last
    /// is the `+Inf` bucket.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Default for BucketHistogram {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl BucketHistogram {
    /// A histogram with these upper bounds (sorted and deduplicated here;
    /// non-finite bounds are dropped, `+Inf` is always implied).
    pub fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = vec![0; bounds.len() + 1];
        Self {
            bounds,
            counts,
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation. NaN is ignored.
    pub fn observe(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        if let Some(slot) = self.counts.get_mut(bucket) {
            *slot += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// Sum of all observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// `(upper bound, count in this bucket)` pairs, not cumulative, ending
    /// with `(f64::INFINITY, _)`: the shape prometheus-client encodes.
    pub(crate) fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use crate::http::state::BucketHistogram;

    #[test]
    fn histogram_buckets_are_per_bucket_and_end_with_inf() {
        let mut h = BucketHistogram::new(&[1.0, 0.5, f64::NAN, 1.0]);
        for v in [0.1, 0.5, 0.7, 3.0, f64::NAN] {
            h.observe(v);
        }
        assert_eq!(h.count(), 4);
        assert!((h.sum() - 4.3).abs() < 1e-9);
        assert_eq!(
            h.buckets(),
            vec![(0.5, 2), (1.0, 1), (f64::INFINITY, 1)],
            "le is inclusive and bounds are sorted and deduplicated"
        );
    }

    #[test]
    fn default_histogram_has_only_inf() {
        let h = BucketHistogram::default();
        assert_eq!(h.buckets(), vec![(f64::INFINITY, 0)]);
    }
}
