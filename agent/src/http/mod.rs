//! The agent's HTTP endpoint: Prometheus `/metrics`, a JSON process API and
//! `/healthz`, on loopback by default (`--metrics-listen`, see
//! [`parse_listen`]).
//!
//! Boundary: this module knows HTTP and the exposition formats, nothing
//! about the store, the wire or `/proc`. The agent implements
//! [`StateSource`] (a cheap current [`Snapshot`] and a history reader) and
//! runs [`serve`] with its shutdown token. JSON shapes are in `docs/api.md`.
//!
//! Invariants: a request never scans or queries heavily (only the history
//! endpoint reads the store, on a blocking thread); connections, request
//! heads, query strings, history limits and exported series are bounded;
//! a bad request gets a 4xx with `{"error": "..."}`, never a panic.

mod api;
mod listen;
mod metrics;
mod server;
mod spike;
mod state;

#[cfg(test)]
mod tests;

pub use crate::http::listen::{DEFAULT_LISTEN, ListenError, parse_listen};
pub use crate::http::metrics::{
    MetricsFormat, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE, RenderError,
    render_metrics,
};
pub use crate::http::server::{HttpConfig, serve};
pub use crate::http::spike::{DEFAULT_MAX_TRACKED, DEFAULT_SPIKE_THRESHOLD_PERCENT, SpikeTracker};
pub use crate::http::state::{
    AgentCounters, BucketHistogram, CPU_SPIKE_BUCKETS, HistoryError, HistoryPoint, ProcessRow,
    RULE_EVAL_BUCKETS, SCAN_DURATION_BUCKETS, Snapshot, StateSource,
};
