//! `/metrics`: the snapshot in the Prometheus or OpenMetrics text format.
//!
//! Every scrape builds a fresh prometheus-client `Registry` holding one
//! collector over the snapshot, so a series exists only while its source
//! does: a process that leaves the top N, a sink that is removed or a
//! collector that is not known simply stop appearing. Cardinality is bounded
//! by `2 × top_n` processes.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabel, EncodeLabelSet,
    LabelSetEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use std::borrow::Borrow;

use crate::http::state::{BucketHistogram, ProcessRow, Snapshot};

/// Content type of the OpenMetrics text format, served when the scraper
/// asks for it (Prometheus does by default).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4, served otherwise
/// (curl, older scrapers).
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Which text format to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    /// OpenMetrics 1.0 text, ending in `# EOF`.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    PrometheusText,
}

impl MetricsFormat {
    /// Picks the format from a request's `Accept` header.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::PrometheusText,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Self::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }
}

/// Rendering the metrics failed (a formatter error; not expected with a
/// `String` sink).
#[derive(Debug, thiserror::Error)]
#[error("encoding the metrics failed")]
pub struct RenderError(#[from] fmt::Error);

/// Renders the snapshot: the agent's own metrics and the top `top_n`
/// processes by CPU and by resident memory (the union of both sets).
/// `now` is used for the age of the last scan. Callable without HTTP.
///
/// # Errors
/// [`RenderError`] when the encoder fails.
pub fn render_metrics(
    snapshot: &Arc<Snapshot>,
    top_n: usize,
    now: Instant,
    format: MetricsFormat,
) -> Result<String, RenderError> {
    let top = top_processes(&snapshot.processes, top_n);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector {
        snapshot: Arc::clone(snapshot),
        top,
        last_scan_age_seconds: snapshot
            .agent
            .last_scan_at
            .map(|at| now.saturating_duration_since(at).as_secs_f64()),
    }));
    // Roughly 300 bytes per exported process plus the agent's own metrics.
    let mut out = String::with_capacity(8 * 1024 + 2 * top_n * 400);
    match format {
        MetricsFormat::OpenMetrics => {
            prometheus_client::encoding::text::encode(&mut out, &registry)?;
        }
        MetricsFormat::PrometheusText => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        }
    }
    Ok(out)
}

/// Indexes into `rows` of the union of the top `n` by CPU and the top `n` by
/// resident memory, in ascending index order. Ties go to the lower pid, so
/// the choice is stable between scrapes.
pub(crate) fn top_processes<R: Borrow<ProcessRow>>(rows: &[R], n: usize) -> Vec<usize> {
    if rows.len() <= n {
        return (0..rows.len()).collect();
    }
    let Some(nth) = n.checked_sub(1) else {
        return Vec::new();
    };
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let mut chosen = Vec::with_capacity(2 * n);
    order.select_nth_unstable_by(nth, |&a, &b| {
        let (a, b) = (rows[a].borrow(), rows[b].borrow());
        b.cpu_percent
            .total_cmp(&a.cpu_percent)
            .then(a.pid.cmp(&b.pid))
    });
    chosen.extend_from_slice(&order[..n]);
    order.select_nth_unstable_by(nth, |&a, &b| {
        let (a, b) = (rows[a].borrow(), rows[b].borrow());
        b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid))
    });
    chosen.extend_from_slice(&order[..n]);
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Arc<Snapshot>,
    top: Vec<usize>,
    last_scan_age_seconds: Option<f64>,
}

/// The labels of a per-process series, in this order: name, pid, user,
/// container_id, then `kind` when given. Unknown values are empty strings,
/// which Prometheus treats as absent labels.
struct ProcessLabels<'a> {
    row: &'a ProcessRow,
    kind: Option<&'static str>,
}

impl EncodeLabelSet for ProcessLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        let row = self.row;
        ("name", row.name.as_str()).encode(encoder.encode_label())?;
        ("pid", row.pid).encode(encoder.encode_label())?;
        ("user", row.user.as_deref().unwrap_or("")).encode(encoder.encode_label())?;
        ("container_id", row.container_id.as_deref().unwrap_or(""))
            .encode(encoder.encode_label())?;
        if let Some(kind) = self.kind {
            ("kind", kind).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

fn counter<V: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, V, u64>(&value, None)
}

fn gauge<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &BucketHistogram,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(
            histogram.sum(),
            histogram.count(),
            &histogram.buckets(),
            None,
        )
}

/// A family of series, one per `(labels, value)`.
fn family<L, V, I>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: I,
) -> fmt::Result
where
    L: EncodeLabelSet,
    V: EncodeCounterValue + EncodeGaugeValue,
    I: IntoIterator<Item = (L, V)>,
{
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in series {
        let mut series = metric.encode_family(&labels)?;
        if metric_type == MetricType::Counter {
            series.encode_counter::<NoLabelSet, V, u64>(&value, None)?;
        } else {
            series.encode_gauge(&value)?;
        }
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snapshot = &*self.snapshot;
        let agent = &snapshot.agent;
        let enc = &mut encoder;

        histogram(
            enc,
            "sentineld_scan_duration_seconds",
            "Duration of one procmond scan.",
            &agent.scan_duration_seconds,
        )?;
        gauge(
            enc,
            "sentineld_processes",
            "Live processes in the last scan.",
            snapshot.processes.len() as u64,
        )?;
        counter(
            enc,
            "sentineld_records_stored",
            "Process records written to the store.",
            agent.records_stored,
        )?;
        counter(
            enc,
            "sentineld_batches_stored",
            "Batches written to the store.",
            agent.batches_stored,
        )?;
        counter(
            enc,
            "sentineld_store_commits",
            "Write transactions that stored batches (one stores every batch queued when it starts).",
            agent.store_commits,
        )?;
        counter(
            enc,
            "sentineld_scans_stored",
            "Scans written to the store.",
            agent.scans_stored,
        )?;
        counter(
            enc,
            "sentineld_store_errors",
            "Store writes that failed.",
            agent.store_errors,
        )?;
        gauge(
            enc,
            "sentineld_store_writable",
            "1 while the store can be written, 0 while it cannot (e.g. its disk is full).",
            u64::from(agent.store_fault.is_none()),
        )?;
        counter(
            enc,
            "sentineld_retention_passes",
            "Retention passes finished.",
            agent.retention_passes,
        )?;
        counter(
            enc,
            "sentineld_retention_failures",
            "Retention passes that failed (retried at the next pass).",
            agent.retention_failures,
        )?;
        family(
            enc,
            "sentineld_retention_pruned",
            "Entries older than the retention period removed from the store, by kind.",
            MetricType::Counter,
            agent
                .retention_pruned
                .iter()
                .map(|(kind, n)| ([("kind", *kind)], *n)),
        )?;
        counter(
            enc,
            "sentineld_collector_restarts",
            "Times procmond was restarted or reconnected.",
            agent.collector_restarts,
        )?;
        family(
            enc,
            "sentineld_frames_rejected",
            "Frames from procmond rejected, by reason.",
            MetricType::Counter,
            agent
                .frames_rejected
                .iter()
                .map(|(reason, n)| ([("reason", *reason)], *n)),
        )?;
        family(
            enc,
            "sentineld_alerts",
            "Alerts raised, by severity.",
            MetricType::Counter,
            agent
                .alerts
                .iter()
                .map(|(severity, n)| ([("severity", *severity)], *n)),
        )?;
        family(
            enc,
            "sentineld_alert_deliveries",
            "Alert delivery attempts, by sink and outcome.",
            MetricType::Counter,
            agent
                .deliveries
                .iter()
                .map(|(sink, outcome, n)| ([("sink", sink.as_str()), ("outcome", *outcome)], *n)),
        )?;
        family(
            enc,
            "sentineld_sink_state",
            "1 for each sink's current state.",
            MetricType::Gauge,
            agent
                .sink_states
                .iter()
                .map(|(sink, state)| ([("sink", sink.as_str()), ("state", *state)], 1_u64)),
        )?;
        family(
            enc,
            "sentineld_missing_capability",
            "1 for each capability procmond lacks.",
            MetricType::Gauge,
            agent
                .missing_capabilities
                .iter()
                .map(|cap| ([("capability", cap.as_str())], 1_u64)),
        )?;
        gauge(
            enc,
            "sentineld_wal_bytes",
            "Bytes in the write-ahead log not yet stored.",
            agent.wal_bytes,
        )?;
        gauge(
            enc,
            "sentineld_store_bytes",
            "Size of the store file.",
            agent.store_bytes,
        )?;
        gauge(
            enc,
            "sentineld_collector_connected",
            "1 when procmond is connected.",
            u64::from(agent.collector_connected),
        )?;
        if let Some(age) = self.last_scan_age_seconds {
            gauge(
                enc,
                "sentineld_last_scan_age_seconds",
                "Seconds since the last scan was stored.",
                age,
            )?;
        }
        histogram(
            enc,
            "sentineld_rule_eval_duration_seconds",
            "Duration of one rule-engine evaluation.",
            &agent.rule_eval_seconds,
        )?;
        counter(
            enc,
            "sentineld_agent_cpu_seconds",
            "CPU time used by the agent.",
            agent.agent_cpu_seconds,
        )?;
        gauge(
            enc,
            "sentineld_agent_resident_memory_bytes",
            "Resident memory of the agent.",
            agent.agent_rss_bytes,
        )?;
        if let Some(cpu) = agent.collector_cpu_seconds {
            counter(
                enc,
                "sentineld_collector_cpu_seconds",
                "CPU time used by procmond.",
                cpu,
            )?;
        }
        if let Some(rss) = agent.collector_rss_bytes {
            gauge(
                enc,
                "sentineld_collector_resident_memory_bytes",
                "Resident memory of procmond.",
                rss,
            )?;
        }

        let top = || {
            self.top
                .iter()
                .filter_map(|&i| snapshot.processes.get(i).map(|r| &**r))
        };
        let labels = |row| ProcessLabels { row, kind: None };
        family(
            enc,
            "sentineld_process_cpu_percent",
            "CPU use of a top process, in percent of one core.",
            MetricType::Gauge,
            top().map(|row| (labels(row), f64::from(row.cpu_percent))),
        )?;
        family(
            enc,
            "sentineld_process_memory_bytes",
            "Memory of a top process, by kind (rss, vms, swap).",
            MetricType::Gauge,
            top().flat_map(|row| {
                let kinds = [
                    ("rss", Some(row.rss_bytes)),
                    ("vms", Some(row.vms_bytes)),
                    ("swap", row.swap_bytes),
                ];
                kinds.into_iter().filter_map(move |(kind, value)| {
                    value.map(|v| {
                        (
                            ProcessLabels {
                                row,
                                kind: Some(kind),
                            },
                            v,
                        )
                    })
                })
            }),
        )?;
        family(
            enc,
            "sentineld_process_threads",
            "Threads of a top process.",
            MetricType::Gauge,
            top().map(|row| (labels(row), u64::from(row.threads))),
        )?;
        family(
            enc,
            "sentineld_process_open_fds",
            "Open file descriptors of a top process, when known.",
            MetricType::Gauge,
            top().filter_map(|row| row.open_fds.map(|fds| (labels(row), u64::from(fds)))),
        )?;
        histogram(
            enc,
            "sentineld_process_cpu_spike_seconds",
            "How long processes stayed above the CPU-spike threshold.",
            &snapshot.cpu_spike_seconds,
        )?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use crate::http::metrics::top_processes;
    use crate::http::state::ProcessRow;

    fn row(pid: u32, cpu: f32, rss: u64) -> ProcessRow {
        ProcessRow {
            pid,
            name: format!("p{pid}"),
            cpu_percent: cpu,
            rss_bytes: rss,
            ..ProcessRow::default()
        }
    }

    #[test]
    fn top_is_union_of_cpu_and_memory() {
        let rows = vec![
            row(1, 90.0, 10),
            row(2, 1.0, 9_000),
            row(3, 50.0, 20),
            row(4, 0.0, 5_000),
            row(5, f32::NAN, 1),
        ];
        // NaN sorts above everything with total_cmp; it is still a bounded pick.
        let top = top_processes(&rows, 2);
        assert!(top.len() <= 4);
        assert!(top.contains(&1), "pid 2 has the most memory");
        assert!(top.contains(&3), "pid 4 is second by memory");
        assert_eq!(top_processes(&rows, 0), Vec::<usize>::new());
        assert_eq!(top_processes(&rows, 10), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn ties_go_to_the_lower_pid() {
        let rows: Vec<ProcessRow> = (0..100).rev().map(|pid| row(pid, 5.0, 5)).collect();
        let top = top_processes(&rows, 3);
        let pids: Vec<u32> = top.iter().map(|&i| rows[i].pid).collect();
        let mut sorted = pids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2]);
    }
}
