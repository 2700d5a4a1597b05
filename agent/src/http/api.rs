//! The JSON API: `/api/processes`, `/api/processes/{pid}/history`,
//! `/api/groups` and `/healthz`. Shapes are documented in `docs/api.md`.
//!
//! Handlers here are plain functions from a snapshot (and query) to a
//! serializable answer or an [`ApiError`]; `server` does the HTTP.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde::Serialize;

use crate::http::state::{ProcessRow, Snapshot};

/// An error answer: a status and a message for `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) error: &'a str,
}

/// Decoded `key=value` pairs of a query string. `+` is a space; `%XX` is a
/// byte; the result must be UTF-8. Keys not asked for are ignored; a repeated
/// key keeps its last value.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

/// Longest query string accepted, in bytes.
const MAX_QUERY_LEN: usize = 2048;

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let Some(query) = query else {
            return Ok(Self::default());
        };
        if query.len() > MAX_QUERY_LEN {
            return Err(ApiError::bad_request(format!(
                "query string too long: {} bytes, at most {MAX_QUERY_LEN}",
                query.len()
            )));
        }
        let mut pairs = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((percent_decode(key)?, percent_decode(value)?));
        }
        Ok(Self { pairs })
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(byte) = hex else {
                    return Err(ApiError::bad_request(format!(
                        "invalid percent-encoding in query `{s}`"
                    )));
                };
                out.push(byte);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_request(format!("query `{s}` is not UTF-8 once decoded")))
}

/// `/api/processes` answer.
#[derive(Debug, Serialize)]
pub(crate) struct ProcessList<'a> {
    count: usize,
    processes: Vec<&'a ProcessRow>,
}

/// `/api/processes[?name=SUBSTRING]`: live processes whose name contains the
/// substring, case-insensitively; all of them without `name`. By pid.
pub(crate) fn processes<'a>(snapshot: &'a Snapshot, query: &Query) -> ProcessList<'a> {
    let needle = query.get("name").map(str::to_lowercase);
    let mut processes: Vec<&ProcessRow> = match needle.as_deref() {
        None | Some("") => snapshot.processes.iter().map(|r| &**r).collect(),
        Some(needle) => snapshot
            .processes
            .iter()
            .map(|r| &**r)
            .filter(|row| row.name.to_lowercase().contains(needle))
            .collect(),
    };
    processes.sort_unstable_by_key(|row| row.pid);
    ProcessList {
        count: processes.len(),
        processes,
    }
}

/// Parses the `{pid}` segment of `/api/processes/{pid}/history`.
pub(crate) fn parse_pid(segment: &str) -> Result<u32, ApiError> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "invalid pid `{segment}`: expected a decimal process id"
        )));
    }
    segment.parse::<u32>().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid pid `{segment}`: larger than any process id"
        ))
    })
}

/// Default `limit` of `/api/processes/{pid}/history`.
pub(crate) const DEFAULT_HISTORY_LIMIT: usize = 100;

/// Reads `?limit=N`: default [`DEFAULT_HISTORY_LIMIT`], at least 1, clamped to
/// `max`.
pub(crate) fn history_limit(query: &Query, max: usize) -> Result<usize, ApiError> {
    let Some(raw) = query.get("limit") else {
        return Ok(DEFAULT_HISTORY_LIMIT.min(max));
    };
    match raw.parse::<usize>() {
        Ok(0) | Err(_) => Err(ApiError::bad_request(format!(
            "invalid limit `{raw}`: expected a whole number from 1 to {max}"
        ))),
        Ok(n) => Ok(n.min(max)),
    }
}

/// `/api/groups` answer.
#[derive(Debug, Serialize)]
pub(crate) struct Group<'a> {
    base: &'a str,
    count: usize,
    cpu_percent_total: f64,
    cpu_percent_avg: f64,
    rss_bytes_total: u64,
    rss_bytes_avg: u64,
    vms_bytes_total: u64,
    vms_bytes_avg: u64,
    members: Vec<&'a ProcessRow>,
}

/// Whether `name` belongs to the group `base`: equal to it, or `base`
/// followed by `-`, `:`, `.`, `_` or a digit, then anything (`php-fpm` has
/// `php-fpm`, `php-fpm-worker`, `php-fpm:pool`, `php-fpm8.2`; `python` has
/// `python3.12` but not `pythonw`). ASCII case is ignored.
pub(crate) fn in_group(name: &str, base: &str) -> bool {
    let (name, base) = (name.as_bytes(), base.as_bytes());
    if name.len() < base.len() || !name[..base.len()].eq_ignore_ascii_case(base) {
        return false;
    }
    match name.get(base.len()) {
        None => true,
        Some(&next) => matches!(next, b'-' | b':' | b'.' | b'_') || next.is_ascii_digit(),
    }
}

/// `/api/groups?base=NAME`.
pub(crate) fn group<'a>(snapshot: &'a Snapshot, query: &'a Query) -> Result<Group<'a>, ApiError> {
    let base = match query.get("base") {
        Some(base) if !base.is_empty() => base,
        _ => {
            return Err(ApiError::bad_request(
                "missing `base`: ask for /api/groups?base=NAME",
            ));
        }
    };
    let mut members: Vec<&ProcessRow> = snapshot
        .processes
        .iter()
        .map(|r| &**r)
        .filter(|row| in_group(&row.name, base))
        .collect();
    members.sort_unstable_by_key(|row| row.pid);
    let count = members.len();
    let cpu_percent_total: f64 = members.iter().map(|r| f64::from(r.cpu_percent)).sum();
    let rss_bytes_total: u64 = members.iter().map(|r| r.rss_bytes).sum();
    let vms_bytes_total: u64 = members.iter().map(|r| r.vms_bytes).sum();
    let divisor = count.max(1);
    Ok(Group {
        base,
        count,
        cpu_percent_total,
        cpu_percent_avg: cpu_percent_total / divisor as f64,
        rss_bytes_total,
        rss_bytes_avg: rss_bytes_total / divisor as u64,
        vms_bytes_total,
        vms_bytes_avg: vms_bytes_total / divisor as u64,
        members,
    })
}

/// `/healthz` answer.
#[derive(Debug, Serialize)]
pub(crate) struct Health<'a> {
    status: &'static str,
    problems: Vec<String>,
    collector_connected: bool,
    last_scan_age_seconds: Option<f64>,
    scan_interval_seconds: f64,
    wal_bytes: u64,
    store_bytes: u64,
    store_writable: bool,
    store_error: Option<&'a str>,
    store_unwritable_seconds: Option<f64>,
    sink_states: Vec<SinkState<'a>>,
    missing_capabilities: &'a [String],
}

#[derive(Debug, Serialize)]
struct SinkState<'a> {
    sink: &'a str,
    state: &'static str,
}

/// `/healthz`: healthy when the collector is connected, the last scan is
/// younger than three scan intervals and the store can be written.
pub(crate) fn health(
    snapshot: &Snapshot,
    scan_interval: Duration,
    now: Instant,
) -> (StatusCode, Health<'_>) {
    let agent = &snapshot.agent;
    let age = agent
        .last_scan_at
        .map(|at| now.saturating_duration_since(at));
    let mut problems = Vec::new();
    if !agent.collector_connected {
        problems.push("collector not connected".to_owned());
    }
    let limit = scan_interval.saturating_mul(3);
    match age {
        None => problems.push("no scan stored yet".to_owned()),
        Some(age) if age >= limit => problems.push(format!(
            "last scan is {:.1} s old, more than 3 scan intervals ({:.1} s)",
            age.as_secs_f64(),
            limit.as_secs_f64()
        )),
        Some(_) => {}
    }
    let unwritable = agent
        .store_fault
        .as_ref()
        .map(|fault| now.saturating_duration_since(fault.since));
    if let (Some(fault), Some(unwritable)) = (&agent.store_fault, unwritable) {
        problems.push(format!(
            "store not writable for {:.1} s: {}",
            unwritable.as_secs_f64(),
            fault.error
        ));
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if problems.is_empty() {
            "ok"
        } else {
            "unhealthy"
        },
        problems,
        collector_connected: agent.collector_connected,
        last_scan_age_seconds: age.map(|a| a.as_secs_f64()),
        scan_interval_seconds: scan_interval.as_secs_f64(),
        wal_bytes: agent.wal_bytes,
        store_bytes: agent.store_bytes,
        store_writable: agent.store_fault.is_none(),
        store_error: agent.store_fault.as_ref().map(|f| f.error.as_str()),
        store_unwritable_seconds: unwritable.map(|d| d.as_secs_f64()),
        sink_states: agent
            .sink_states
            .iter()
            .map(|(sink, state)| SinkState { sink, state })
            .collect(),
        missing_capabilities: &agent.missing_capabilities,
    };
    (status, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use crate::http::api::{Query, history_limit, in_group, parse_pid};

    #[test]
    fn groups_by_base_name() {
        for name in [
            "php-fpm",
            "php-fpm-worker",
            "php-fpm:pool www",
            "PHP-FPM8.2",
        ] {
            assert!(in_group(name, "php-fpm"), "{name}");
        }
        for name in ["php", "php-fp", "php-fpmx", "xphp-fpm"] {
            assert!(!in_group(name, "php-fpm"), "{name}");
        }
        assert!(in_group("python3.12", "python"));
        assert!(!in_group("pythonw", "python"));
        assert!(in_group("nginx", "nginx"));
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("name=a%20b+c&x&name=%E2%9C%93&limit=5")).unwrap();
        assert_eq!(q.get("name"), Some("✓"));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(q.get("missing"), None);
        assert_eq!(
            Query::parse(Some("name=a%20b+c")).unwrap().get("name"),
            Some("a b c")
        );
        for bad in ["name=%", "name=%g1", "name=%ff", "name=%2"] {
            assert!(Query::parse(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(history_limit(&q, 1000).unwrap(), 5);
        assert_eq!(history_limit(&Query::default(), 1000).unwrap(), 100);
        let big = Query::parse(Some("limit=999999")).unwrap();
        assert_eq!(history_limit(&big, 1000).unwrap(), 1000);
        for bad in ["limit=0", "limit=-1", "limit=abc", "limit="] {
            assert!(history_limit(&Query::parse(Some(bad)).unwrap(), 10).is_err());
        }
    }

    #[test]
    fn pids() {
        assert_eq!(parse_pid("42").unwrap(), 42);
        for bad in ["", "abc", "-1", "+1", "4294967296", " 1"] {
            assert!(parse_pid(bad).is_err(), "{bad}");
        }
    }
}
