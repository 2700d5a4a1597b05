//! What the HTTP endpoint serves, kept current by the agent's own work so a
//! scrape never scans or queries heavily.
//!
//! The detection thread, which sees every committed batch and keeps the
//! live processes, publishes the process table once per scan (an `Arc`
//! swapped under a short lock), with the scan-duration, rule-evaluation and
//! CPU-spike histograms. Counters are read from [`AgentStats`] and the
//! sinks' dispatcher at scrape time. History is read from the store with
//! a reader over the agent's own database handle.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::http::{
    AgentCounters, BucketHistogram, HistoryError, HistoryPoint, ProcessRow, RULE_EVAL_BUCKETS,
    SCAN_DURATION_BUCKETS, Snapshot, SpikeTracker, StateSource,
};
use crate::sinks::{BreakerState, Dispatcher};
use crate::stats::{AgentStats, RejectReason};
use crate::store::StoreReader;

/// What procmond reports of itself with each scan (its last chunk's stats).
#[derive(Debug, Clone, Default)]
pub(crate) struct CollectorSelf {
    pub wal_bytes: u64,
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub missing_capabilities: Vec<String>,
}

/// What the detection thread publishes.
#[derive(Debug)]
struct Published {
    processes: Arc<Vec<Arc<ProcessRow>>>,
    last_scan_at: Option<Instant>,
    /// What procmond said of itself in its last scan.
    collector: Option<CollectorSelf>,
    scan_durations: BucketHistogram,
    rule_eval: BucketHistogram,
    spikes: SpikeTracker,
}

/// The agent's state for `/metrics`, `/healthz` and `/api/...`.
#[derive(Debug)]
pub struct AgentState {
    stats: Arc<AgentStats>,
    dispatcher: Dispatcher,
    reader: StoreReader,
    published: Mutex<Published>,
}

impl AgentState {
    pub fn new(stats: Arc<AgentStats>, dispatcher: Dispatcher, reader: StoreReader) -> AgentState {
        AgentState {
            stats,
            dispatcher,
            reader,
            published: Mutex::new(Published {
                processes: Arc::new(Vec::new()),
                last_scan_at: None,
                collector: None,
                scan_durations: BucketHistogram::new(SCAN_DURATION_BUCKETS),
                rule_eval: BucketHistogram::new(RULE_EVAL_BUCKETS),
                spikes: SpikeTracker::default(),
            }),
        }
    }

    fn published(&self) -> MutexGuard<'_, Published> {
        // Every writer leaves the data consistent between statements: a
        // panic elsewhere does not make it unusable.
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes the live processes at the end of a scan (or of the scans
    /// evaluated since the last publication, whose durations are
    /// `durations_us`): `rows`, with each one's start time in `starts`
    /// (unix seconds, for the CPU-spike tracker), and what procmond
    /// reported of itself with the last scan.
    pub(crate) fn publish_scan(
        &self,
        rows: Vec<Arc<ProcessRow>>,
        starts: &[i64],
        durations_us: &[u64],
        collector: CollectorSelf,
    ) {
        let now = Instant::now();
        let mut p = self.published();
        for (row, start) in rows.iter().zip(starts) {
            p.spikes.observe(
                row.pid,
                u64::try_from(*start).unwrap_or(0),
                row.cpu_percent,
                now,
            );
        }
        p.spikes.finish_scan();
        for &duration_us in durations_us {
            p.scan_durations.observe(duration_us as f64 / 1e6);
        }
        p.last_scan_at = Some(now);
        p.collector = Some(collector);
        p.processes = Arc::new(rows);
    }

    /// Records how long one rule evaluation pass took.
    pub(crate) fn observe_rule_eval(&self, seconds: f64) {
        self.published().rule_eval.observe(seconds);
    }
}

fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

impl StateSource for AgentState {
    fn snapshot(&self) -> Arc<Snapshot> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        let sinks = self.dispatcher.stats();
        let mut deliveries = Vec::with_capacity(sinks.sinks.len() * 4);
        let mut sink_states = Vec::with_capacity(sinks.sinks.len());
        for sink in &sinks.sinks {
            deliveries.push((sink.sink.clone(), "delivered", sink.delivered));
            deliveries.push((sink.sink.clone(), "failed", sink.failed));
            deliveries.push((sink.sink.clone(), "retried", sink.retried));
            deliveries.push((sink.sink.clone(), "dropped", sink.dropped));
            sink_states.push((sink.sink.clone(), breaker_name(sink.breaker)));
        }
        let (agent_cpu_seconds, agent_rss_bytes) = sentineld_common::host::own_usage();
        let store_bytes = std::fs::metadata(self.reader.path()).map_or(0, |m| m.len());
        let p = self.published();
        Arc::new(Snapshot {
            agent: AgentCounters {
                records_stored: s.records_stored.load(Relaxed),
                batches_stored: s.batches_stored.load(Relaxed),
                store_commits: s.store_commits.load(Relaxed),
                scans_stored: s.scans_stored.load(Relaxed),
                store_errors: s.store_errors.load(Relaxed),
                store_fault: s.store_fault(),
                retention_passes: s.retention_passes.load(Relaxed),
                retention_failures: s.retention_failures.load(Relaxed),
                retention_pruned: vec![
                    ("samples", s.retention_pruned_samples.load(Relaxed)),
                    ("instances", s.retention_pruned_instances.load(Relaxed)),
                    ("scans", s.retention_pruned_scans.load(Relaxed)),
                ],
                collector_restarts: s.collector_restarts.load(Relaxed),
                collector_connected: s.collector_connected.load(Relaxed),
                last_scan_at: p.last_scan_at,
                frames_rejected: RejectReason::ALL
                    .iter()
                    .map(|r| (r.as_str(), s.rejected(*r)))
                    .collect(),
                alerts: crate::sinks::Severity::ALL
                    .iter()
                    .map(|sev| (sev.as_str(), s.alerts(*sev)))
                    .collect(),
                deliveries,
                sink_states,
                rule_eval_seconds: p.rule_eval.clone(),
                scan_duration_seconds: p.scan_durations.clone(),
                wal_bytes: p.collector.as_ref().map_or(0, |c| c.wal_bytes),
                missing_capabilities: p
                    .collector
                    .as_ref()
                    .map(|c| c.missing_capabilities.clone())
                    .unwrap_or_default(),
                store_bytes,
                agent_cpu_seconds,
                agent_rss_bytes,
                collector_cpu_seconds: p.collector.as_ref().map(|c| c.cpu_seconds),
                collector_rss_bytes: p.collector.as_ref().map(|c| c.rss_bytes),
            },
            processes: Arc::clone(&p.processes),
            cpu_spike_seconds: p.spikes.histogram().clone(),
        })
    }

    fn history(&self, pid: u32, limit: usize) -> Result<Vec<HistoryPoint>, HistoryError> {
        let points = self
            .reader
            .history(pid, Some(limit))
            .map_err(|e| HistoryError::Store {
                pid,
                source: Box::new(e),
            })?;
        if points.is_empty() {
            return Err(HistoryError::NotFound { pid });
        }
        Ok(points
            .into_iter()
            .map(|p| HistoryPoint {
                time: sentineld_common::time::rfc3339_millis(p.time_ms),
                start_time: sentineld_common::time::rfc3339_secs(p.start_time),
                cpu_percent: p.sample.cpu_percent,
                rss_bytes: p.sample.rss_bytes,
                vms_bytes: p.sample.vms_bytes,
                threads: p.sample.threads,
                open_fds: p.sample.open_fds,
                listening_ports: p.sample.listening_ports,
            })
            .collect())
    }
}
