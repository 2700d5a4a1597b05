//! End-to-end tests: a real listener on 127.0.0.1:0 and raw HTTP/1.1 over a
//! real `TcpStream`.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::{
    AgentCounters, BucketHistogram, HistoryError, HistoryPoint, HttpConfig, ProcessRow,
    RULE_EVAL_BUCKETS, SCAN_DURATION_BUCKETS, Snapshot, SpikeTracker, StateSource, serve,
};

#[derive(Debug)]
struct FakeState {
    snapshot: Mutex<Arc<Snapshot>>,
}

impl FakeState {
    fn new(snapshot: Snapshot) -> Arc<Self> {
        Arc::new(Self {
            snapshot: Mutex::new(Arc::new(snapshot)),
        })
    }

    fn set(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap() = Arc::new(snapshot);
    }
}

impl StateSource for FakeState {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.lock().unwrap())
    }

    fn history(&self, pid: u32, limit: usize) -> Result<Vec<HistoryPoint>, HistoryError> {
        match pid {
            1 => Ok((0..500)
                .map(|i| HistoryPoint {
                    time: format!("2026-11-03T10:{:02}:{:02}Z", i / 60 % 60, i % 60),
                    start_time: "2026-11-03T09:00:00Z".to_owned(),
                    cpu_percent: i as f32,
                    rss_bytes: 1000 + i,
                    vms_bytes: 2000,
                    threads: 3,
                    open_fds: Some(7),
                    listening_ports: vec![8080],
                })
                .take(limit)
                .collect()),
            2 => Err(HistoryError::Store {
                pid,
                source: "disk on fire".into(),
            }),
            _ => Err(HistoryError::NotFound { pid }),
        }
    }
}

fn process(pid: u32, name: &str, cpu: f32, rss: u64) -> ProcessRow {
    ProcessRow {
        pid,
        name: name.to_owned(),
        user: Some("www-data".to_owned()),
        container_id: pid.is_multiple_of(2).then(|| format!("c{pid}")),
        cpu_percent: cpu,
        rss_bytes: rss,
        vms_bytes: rss * 4,
        swap_bytes: pid.is_multiple_of(3).then_some(4096),
        threads: 2,
        open_fds: (!pid.is_multiple_of(5)).then_some(12),
        listening_ports: if pid == 1 { vec![80, 443] } else { Vec::new() },
        exe: Some(format!("/usr/bin/{name}")),
        cmdline: vec![name.to_owned(), "--flag".to_owned()],
        start_time: "2026-11-03T09:00:00Z".to_owned(),
    }
}

fn full_snapshot() -> Snapshot {
    let mut scan = BucketHistogram::new(SCAN_DURATION_BUCKETS);
    scan.observe(0.02);
    scan.observe(0.3);
    let mut rules = BucketHistogram::new(RULE_EVAL_BUCKETS);
    rules.observe(0.0002);
    let mut spikes = SpikeTracker::default();
    let t0 = Instant::now();
    spikes.observe(9, 1, 99.0, t0);
    spikes.observe(9, 1, 10.0, t0 + Duration::from_secs(42));
    Snapshot {
        agent: AgentCounters {
            records_stored: 1234,
            batches_stored: 12,
            store_commits: 5,
            scans_stored: 10,
            store_errors: 1,
            store_fault: None,
            retention_passes: 3,
            retention_failures: 1,
            retention_pruned: vec![("samples", 40), ("instances", 2), ("scans", 9)],
            collector_restarts: 2,
            collector_connected: true,
            last_scan_at: Some(Instant::now()),
            frames_rejected: vec![("crc", 3), ("oversized", 0)],
            alerts: vec![("high", 4), ("critical", 1)],
            deliveries: vec![
                ("webhook".to_owned(), "delivered", 5),
                ("webhook".to_owned(), "retried", 2),
                ("syslog".to_owned(), "failed", 1),
            ],
            sink_states: vec![("webhook".to_owned(), "ok"), ("syslog".to_owned(), "open")],
            rule_eval_seconds: rules,
            scan_duration_seconds: scan,
            wal_bytes: 4096,
            store_bytes: 1 << 20,
            missing_capabilities: vec!["CAP_SYS_PTRACE".to_owned()],
            agent_cpu_seconds: 1.5,
            agent_rss_bytes: 30 << 20,
            collector_cpu_seconds: Some(0.25),
            collector_rss_bytes: Some(8 << 20),
        },
        processes: Arc::new(
            [
                process(1, "nginx", 5.0, 10 << 20),
                process(2, "php-fpm", 20.0, 50 << 20),
                process(3, "php-fpm-worker", 30.0, 40 << 20),
                process(4, "php-fpm:pool www", 10.0, 30 << 20),
                process(5, "php", 1.0, 5 << 20),
                process(6, "Postgres", 0.5, 200 << 20),
            ]
            .into_iter()
            .map(Arc::new)
            .collect(),
        ),
        cpu_spike_seconds: spikes.histogram().clone(),
    }
}

async fn start(
    state: Arc<FakeState>,
    config: HttpConfig,
) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let handle = tokio::spawn(serve(listener, state, config, token.clone()));
    (addr, token, handle)
}

fn config() -> HttpConfig {
    HttpConfig::new(Duration::from_secs(5))
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap()
    }
}

async fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

async fn scrape(addr: SocketAddr) -> Reply {
    send(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\nConnection: close\r\n\r\n",
    )
    .await
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A small exposition parser: `name{k="v",...} value`, with `\\`, `\"` and
/// `\n` escapes in label values; comment lines are skipped.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap();
        let name = line[..name_end].to_owned();
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            loop {
                let mut key = String::new();
                let mut closed = false;
                for (i, c) in chars.by_ref() {
                    match c {
                        '=' => break,
                        '}' => {
                            closed = true;
                            rest = &inner[i + 1..];
                            break;
                        }
                        ',' => {}
                        c => key.push(c),
                    }
                }
                if closed {
                    break;
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            other => panic!("bad escape \\{other} in {line}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
            }
        }
        let value = rest.trim().split(' ').next().unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

#[tokio::test]
async fn metrics_in_openmetrics_have_every_family() {
    let (addr, token, handle) = start(FakeState::new(full_snapshot()), config()).await;
    let reply = scrape(addr).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(reply.body.ends_with("# EOF\n"), "{}", reply.body);
    let s = parse_exposition(&reply.body);

    assert_eq!(value(&s, "sentineld_scan_duration_seconds_count", &[]), 2.0);
    assert_eq!(
        value(
            &s,
            "sentineld_scan_duration_seconds_bucket",
            &[("le", "0.025")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "sentineld_scan_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        2.0
    );
    assert_eq!(value(&s, "sentineld_processes", &[]), 6.0);
    assert_eq!(value(&s, "sentineld_records_stored_total", &[]), 1234.0);
    assert_eq!(value(&s, "sentineld_batches_stored_total", &[]), 12.0);
    assert_eq!(value(&s, "sentineld_store_commits_total", &[]), 5.0);
    assert_eq!(value(&s, "sentineld_store_errors_total", &[]), 1.0);
    assert_eq!(value(&s, "sentineld_store_writable", &[]), 1.0);
    assert_eq!(value(&s, "sentineld_retention_passes_total", &[]), 3.0);
    assert_eq!(value(&s, "sentineld_retention_failures_total", &[]), 1.0);
    assert_eq!(
        value(
            &s,
            "sentineld_retention_pruned_total",
            &[("kind", "samples")]
        ),
        40.0
    );
    assert_eq!(value(&s, "sentineld_collector_restarts_total", &[]), 2.0);
    assert_eq!(
        value(&s, "sentineld_frames_rejected_total", &[("reason", "crc")]),
        3.0
    );
    assert_eq!(
        value(&s, "sentineld_alerts_total", &[("severity", "critical")]),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "sentineld_alert_deliveries_total",
            &[("sink", "webhook"), ("outcome", "retried")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "sentineld_sink_state",
            &[("sink", "syslog"), ("state", "open")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "sentineld_missing_capability",
            &[("capability", "CAP_SYS_PTRACE")]
        ),
        1.0
    );
    assert_eq!(value(&s, "sentineld_wal_bytes", &[]), 4096.0);
    assert_eq!(value(&s, "sentineld_store_bytes", &[]), f64::from(1 << 20));
    assert_eq!(value(&s, "sentineld_collector_connected", &[]), 1.0);
    assert!(value(&s, "sentineld_last_scan_age_seconds", &[]) < 60.0);
    assert_eq!(
        value(&s, "sentineld_rule_eval_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(value(&s, "sentineld_agent_cpu_seconds_total", &[]), 1.5);
    assert_eq!(
        value(&s, "sentineld_agent_resident_memory_bytes", &[]),
        f64::from(30 << 20)
    );
    assert_eq!(
        value(&s, "sentineld_collector_cpu_seconds_total", &[]),
        0.25
    );
    assert_eq!(
        value(&s, "sentineld_collector_resident_memory_bytes", &[]),
        f64::from(8 << 20)
    );
    assert_eq!(
        value(&s, "sentineld_process_cpu_spike_seconds_count", &[]),
        1.0
    );
    assert_eq!(
        value(&s, "sentineld_process_cpu_spike_seconds_sum", &[]),
        42.0
    );
    assert_eq!(
        value(
            &s,
            "sentineld_process_cpu_spike_seconds_bucket",
            &[("le", "60.0")]
        ),
        1.0
    );

    let cpu = find(&s, "sentineld_process_cpu_percent", &[("pid", "2")]).unwrap();
    assert_eq!(cpu.value, 20.0);
    let keys: Vec<&str> = cpu.labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["name", "pid", "user", "container_id"]);
    assert_eq!(cpu.label("name"), Some("php-fpm"));
    assert_eq!(cpu.label("user"), Some("www-data"));
    assert_eq!(cpu.label("container_id"), Some("c2"));
    assert_eq!(
        value(
            &s,
            "sentineld_process_memory_bytes",
            &[("pid", "6"), ("kind", "rss")]
        ),
        f64::from(200 << 20)
    );
    assert_eq!(
        value(
            &s,
            "sentineld_process_memory_bytes",
            &[("pid", "6"), ("kind", "swap")]
        ),
        4096.0
    );
    assert!(
        find(
            &s,
            "sentineld_process_memory_bytes",
            &[("pid", "5"), ("kind", "swap")]
        )
        .is_none()
    );
    assert_eq!(value(&s, "sentineld_process_threads", &[("pid", "1")]), 2.0);
    assert!(find(&s, "sentineld_process_open_fds", &[("pid", "5")]).is_none());
    assert_eq!(
        value(&s, "sentineld_process_open_fds", &[("pid", "4")]),
        12.0
    );

    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn metrics_default_to_prometheus_text_and_head_has_no_body() {
    let (addr, token, handle) = start(FakeState::new(full_snapshot()), config()).await;
    let reply = get(addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!reply.body.contains("# EOF"));
    let s = parse_exposition(&reply.body);
    assert_eq!(value(&s, "sentineld_records_stored_total", &[]), 1234.0);
    assert_eq!(
        value(
            &s,
            "sentineld_scan_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        2.0
    );
    assert_eq!(
        value(&s, "sentineld_process_cpu_percent", &[("pid", "3")]),
        30.0
    );

    let head = send(
        addr,
        b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn label_values_are_escaped() {
    let nasty = "evil\"name\\with\nnewline";
    let mut snapshot = full_snapshot();
    snapshot.processes = Arc::new(vec![Arc::new(ProcessRow {
        user: Some("we\"ird".to_owned()),
        ..process(77, nasty, 99.0, 1)
    })]);
    let (addr, token, handle) = start(FakeState::new(snapshot), config()).await;
    for reply in [scrape(addr).await, get(addr, "/metrics").await] {
        assert_eq!(reply.status, 200);
        assert!(
            reply.body.contains(r#"name="evil\"name\\with\nnewline""#),
            "{}",
            reply.body
        );
        let s = parse_exposition(&reply.body);
        let cpu = find(&s, "sentineld_process_cpu_percent", &[("pid", "77")]).unwrap();
        assert_eq!(cpu.label("name"), Some(nasty));
        assert_eq!(cpu.label("user"), Some("we\"ird"));
    }
    token.cancel();
    handle.await.unwrap();
}

fn process_pids(samples: &[Sample]) -> BTreeSet<u32> {
    samples
        .iter()
        .filter(|s| s.name.starts_with("sentineld_process_") && !s.name.contains("spike"))
        .map(|s| s.label("pid").unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn top_n_is_bounded_and_stale_series_disappear() {
    let mut snapshot = full_snapshot();
    // pid 1000+i: cpu grows with i, memory shrinks with i.
    snapshot.processes = (0..200)
        .map(|i| {
            Arc::new(process(
                1000 + i,
                "worker",
                i as f32 / 2.0,
                u64::from(1000 - i) << 10,
            ))
        })
        .collect::<Vec<_>>()
        .into();
    let state = FakeState::new(snapshot.clone());
    let mut cfg = config();
    cfg.top_n = 3;
    let (addr, token, handle) = start(Arc::clone(&state), cfg).await;

    let first = process_pids(&parse_exposition(&scrape(addr).await.body));
    let expected: BTreeSet<u32> = [1000, 1001, 1002, 1197, 1198, 1199].into();
    assert_eq!(first, expected);

    // pid 1199 drops to idle and small: it leaves both top sets.
    let row = Arc::make_mut(
        Arc::make_mut(&mut snapshot.processes)
            .iter_mut()
            .find(|r| r.pid == 1199)
            .unwrap(),
    );
    row.cpu_percent = 0.0;
    row.rss_bytes = 1;
    state.set(snapshot);
    let second_body = scrape(addr).await.body;
    let second = process_pids(&parse_exposition(&second_body));
    assert!(
        !second.contains(&1199),
        "stale series of pid 1199 in {second_body}"
    );
    assert!(second.contains(&1196));
    assert!(second.len() <= 6);
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn processes_endpoint_filters_by_name() {
    let (addr, token, handle) = start(FakeState::new(full_snapshot()), config()).await;
    let all = get(addr, "/api/processes").await;
    assert_eq!(all.status, 200);
    let all = all.json();
    assert_eq!(all["count"], 6);
    assert_eq!(all["processes"][0]["pid"], 1);
    assert_eq!(all["processes"][0]["cmdline"][1], "--flag");
    assert_eq!(all["processes"][0]["container_id"], serde_json::Value::Null);
    assert_eq!(
        all["processes"][0]["listening_ports"],
        serde_json::json!([80, 443])
    );
    assert_eq!(all["processes"][1]["container_id"], "c2");
    assert_eq!(
        all["processes"][1]["listening_ports"],
        serde_json::json!([])
    );

    let php = get(addr, "/api/processes?name=PHP-F").await.json();
    assert_eq!(php["count"], 3);
    let pids: Vec<u64> = php["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, [2, 3, 4]);

    let spaced = get(addr, "/api/processes?name=pool%20www").await.json();
    assert_eq!(spaced["count"], 1);
    let none = get(addr, "/api/processes?name=nothing-like-it")
        .await
        .json();
    assert_eq!(none["count"], 0);

    let bad = get(addr, "/api/processes?name=%zz").await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap()
            .contains("percent-encoding")
    );
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn history_endpoint() {
    let (addr, token, handle) = start(FakeState::new(full_snapshot()), config()).await;
    let reply = get(addr, "/api/processes/1/history?limit=3").await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["pid"], 1);
    assert_eq!(body["count"], 3);
    assert_eq!(body["points"][2]["rss_bytes"], 1002);
    assert_eq!(body["points"][0]["open_fds"], 7);
    assert_eq!(
        body["points"][0]["listening_ports"],
        serde_json::json!([8080])
    );

    assert_eq!(
        get(addr, "/api/processes/1/history").await.json()["count"],
        100
    );
    let mut cfg = config();
    cfg.max_history_limit = 10;
    let (addr2, token2, handle2) = start(FakeState::new(full_snapshot()), cfg).await;
    assert_eq!(
        get(addr2, "/api/processes/1/history?limit=100000")
            .await
            .json()["count"],
        10
    );
    token2.cancel();
    handle2.await.unwrap();

    let missing = get(addr, "/api/processes/424242/history").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("424242"));

    let failing = get(addr, "/api/processes/2/history").await;
    assert_eq!(failing.status, 500);
    assert!(failing.json()["error"].is_string());

    for path in [
        "/api/processes/abc/history",
        "/api/processes/-1/history",
        "/api/processes/99999999999/history",
        "/api/processes//history",
        "/api/processes/1/history?limit=0",
        "/api/processes/1/history?limit=many",
    ] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        assert!(reply.json()["error"].is_string());
    }
    for path in [
        "/api/processes/1",
        "/api/processes/1/history/x",
        "/api/processes/1/2/history",
    ] {
        assert_eq!(get(addr, path).await.status, 404, "{path}");
    }
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn groups_endpoint() {
    let (addr, token, handle) = start(FakeState::new(full_snapshot()), config()).await;
    let reply = get(addr, "/api/groups?base=php-fpm").await;
    assert_eq!(reply.status, 200);
    let g = reply.json();
    assert_eq!(g["base"], "php-fpm");
    assert_eq!(g["count"], 3);
    assert_eq!(g["cpu_percent_total"], 60.0);
    assert_eq!(g["cpu_percent_avg"], 20.0);
    assert_eq!(g["rss_bytes_total"], 120 << 20);
    assert_eq!(g["rss_bytes_avg"], 40 << 20);
    assert_eq!(g["members"].as_array().unwrap().len(), 3);

    let postgres = get(addr, "/api/groups?base=postgres").await.json();
    assert_eq!(postgres["count"], 1);
    let empty = get(addr, "/api/groups?base=nothing").await.json();
    assert_eq!(empty["count"], 0);
    assert_eq!(empty["cpu_percent_avg"], 0.0);

    for path in ["/api/groups", "/api/groups?base="] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 400, "{path}");
        assert!(reply.json()["error"].as_str().unwrap().contains("base"));
    }
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn healthz_is_200_only_when_connected_and_fresh() {
    let snapshot = full_snapshot();
    let state = FakeState::new(snapshot.clone());
    let (addr, token, handle) = start(Arc::clone(&state), config()).await;
    let ok = get(addr, "/healthz").await;
    assert_eq!(ok.status, 200);
    let body = ok.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["collector_connected"], true);
    assert_eq!(body["wal_bytes"], 4096);
    assert_eq!(body["store_bytes"], 1 << 20);
    assert_eq!(body["scan_interval_seconds"], 5.0);
    assert_eq!(body["sink_states"][1]["sink"], "syslog");
    assert_eq!(body["sink_states"][1]["state"], "open");
    assert_eq!(body["missing_capabilities"][0], "CAP_SYS_PTRACE");
    assert!(body["last_scan_age_seconds"].as_f64().unwrap() < 15.0);
    assert_eq!(body["store_writable"], true);
    assert_eq!(body["store_error"], serde_json::Value::Null);

    let mut full = snapshot.clone();
    full.agent.store_fault = Some(crate::stats::StoreFault {
        error: "No space left on device (os error 28) on /var".to_owned(),
        since: Instant::now(),
    });
    state.set(full);
    let reply = get(addr, "/healthz").await;
    assert_eq!(reply.status, 503);
    let body = reply.json();
    assert_eq!(body["store_writable"], false);
    assert!(body["store_unwritable_seconds"].as_f64().is_some());
    let problem = body["problems"][0].as_str().unwrap();
    assert!(
        problem.starts_with("store not writable") && problem.contains("No space left"),
        "{problem}"
    );

    let mut disconnected = snapshot.clone();
    disconnected.agent.collector_connected = false;
    state.set(disconnected);
    let reply = get(addr, "/healthz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["problems"][0], "collector not connected");

    let mut stale = snapshot.clone();
    stale.agent.last_scan_at = Instant::now().checked_sub(Duration::from_secs(16));
    if stale.agent.last_scan_at.is_some() {
        state.set(stale);
        let reply = get(addr, "/healthz").await;
        assert_eq!(reply.status, 503);
        assert!(
            reply.json()["problems"][0]
                .as_str()
                .unwrap()
                .contains("last scan")
        );
    }

    let mut never = snapshot;
    never.agent.last_scan_at = None;
    state.set(never);
    let reply = get(addr, "/healthz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.json()["last_scan_age_seconds"],
        serde_json::Value::Null
    );
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let (addr, token, handle) = start(FakeState::new(full_snapshot()), config()).await;
    for path in [
        "/",
        "/nope",
        "/metrics/",
        "/api",
        "/api/processes/",
        "/healthz/x",
    ] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert!(
            reply.json()["error"]
                .as_str()
                .unwrap()
                .contains("no such endpoint")
        );
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let reply = send(
            addr,
            format!(
                "{method} /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        assert!(
            reply.json()["error"]
                .as_str()
                .unwrap()
                .contains("not allowed")
        );
    }
    let reply = get(addr, &format!("/api/processes?name={}", "a".repeat(3000))).await;
    assert_eq!(reply.status, 400);

    // Not HTTP at all: hyper answers 400 and closes.
    let reply = send(addr, b"HELLO\r\n\r\n").await;
    assert_eq!(reply.status, 400);

    // A request head over the limit: 431, and the server goes on.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "x".repeat(64 * 1024)
    );
    let reply = send(addr, huge.as_bytes()).await;
    assert_eq!(reply.status, 431);
    assert_eq!(get(addr, "/healthz").await.status, 200);
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn keep_alive_serves_several_requests() {
    let (addr, token, handle) = start(FakeState::new(full_snapshot()), config()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /api/groups?base=nginx HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_silent_client_times_out_and_frees_its_slot() {
    let mut cfg = config();
    cfg.max_connections = 1;
    cfg.header_read_timeout = Duration::from_millis(300);
    let (addr, token, handle) = start(FakeState::new(full_snapshot()), cfg).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // The only slot is taken; this request is served once the silent one
    // has been timed out.
    let reply = get(addr, "/healthz").await;
    assert_eq!(reply.status, 200);
    let mut buf = Vec::new();
    // The server closed it: the read ends (with EOF or a reset).
    let _closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf))
        .await
        .unwrap();
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let (addr, token, handle) = start(FakeState::new(full_snapshot()), config()).await;
    assert_eq!(get(addr, "/healthz").await.status, 200);
    // An idle keep-alive connection must not hold shutdown up.
    let _idle = {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0_u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        s
    };
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

/// The Grafana dashboard shipped in `packaging/grafana/`.
const DASHBOARD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/grafana/sentineld.json"
));

/// Names of PromQL aggregation operators, which may be followed by a
/// `by (...)` clause before their parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names a PromQL expression selects: identifiers outside label
/// matchers, label lists, strings, ranges and `$variables` that are neither
/// keywords nor functions.
fn promql_metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut names = Vec::new();
    let mut braces = 0_usize;
    let mut label_list = false;
    let mut grouping = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' => braces += 1,
            b'}' => braces = braces.saturating_sub(1),
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
            }
            b'(' if grouping => {
                label_list = true;
                grouping = false;
            }
            b')' => label_list = false,
            b'$' => {
                i += 1;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                continue;
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                continue;
            }
            c if ident(c) => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = expr[i..].trim_start().as_bytes().first().copied();
                if braces > 0 || label_list {
                    // A label name.
                } else if matches!(
                    word,
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    grouping = true;
                } else if matches!(word, "and" | "or" | "unless" | "bool" | "offset")
                    || AGGREGATIONS.contains(&word)
                    || next == Some(b'(')
                {
                    // A keyword, an aggregation or a function.
                } else {
                    names.push(word.to_owned());
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

#[test]
fn promql_names_are_found() {
    let names = |e: &str| promql_metric_names(e);
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{instance=~"$instance", x="y{z}"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names("topk($topn, sum by (container_id) (b{c!=\"\"})) / on (instance) group_left(name) c"),
        ["b", "c"]
    );
    assert_eq!(names("rate(d_total[5m]) * 100 > bool 1e3"), ["d_total"]);
    assert_eq!(
        names("sum without (pid) (e) or max(f offset 1h)"),
        ["e", "f"]
    );
}

/// Every PromQL expression of the dashboard: panel targets (rows
/// included) and query variables (`label_values(METRIC, label)`).
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn panels(list: &serde_json::Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(target["expr"].as_str().unwrap().to_owned());
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap();
        // label_values(METRIC, LABEL): the metric is the selector before the
        // last comma.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap();
        let selector = inner.rsplit_once(',').map_or(inner, |(s, _)| s);
        out.push(selector.to_owned());
    }
    out
}

#[tokio::test]
async fn dashboard_queries_only_exported_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();

    // What the agent exports: a real scrape of a snapshot in which every
    // optional family is present, in both formats.
    let (addr, token, handle) = start(FakeState::new(full_snapshot()), config()).await;
    let mut exported = BTreeSet::new();
    for body in [get(addr, "/metrics").await.body, scrape(addr).await.body] {
        exported.extend(parse_exposition(&body).into_iter().map(|s| s.name));
    }
    token.cancel();
    handle.await.unwrap();

    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:?}");
    let mut used = BTreeSet::new();
    for q in &queries {
        let names = promql_metric_names(q);
        assert!(!names.is_empty(), "no metric in {q}");
        used.extend(names);
    }
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the agent does not export: {unknown:?}\nexported: {exported:?}"
    );
    // The panels the dashboard is for.
    for needed in [
        "sentineld_scan_duration_seconds_bucket",
        "sentineld_processes",
        "sentineld_process_cpu_percent",
        "sentineld_process_memory_bytes",
        "sentineld_process_cpu_spike_seconds_bucket",
        "sentineld_alerts_total",
        "sentineld_alert_deliveries_total",
        "sentineld_sink_state",
    ] {
        assert!(used.contains(needed), "no panel uses {needed}");
    }
}

#[test]
fn dashboard_is_importable() {
    let d: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    assert!(
        d["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some());
    assert!(
        d["id"].is_null(),
        "an exported dashboard has no database id"
    );
    let mut ids = BTreeSet::new();
    for panel in d["panels"].as_array().unwrap() {
        let id = panel["id"].as_u64().unwrap();
        assert!(ids.insert(id), "panel id {id} used twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {id} is wider than the grid");
        assert!(grid["h"].as_u64().unwrap() > 0);
        if panel["type"] == "row" {
            continue;
        }
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        let mut refs = BTreeSet::new();
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(
                target["datasource"]["uid"], "${DS_PROMETHEUS}",
                "panel {id}"
            );
            assert!(refs.insert(target["refId"].as_str().unwrap().to_owned()));
        }
        assert!(!refs.is_empty(), "panel {id} has no query");
    }
}
