//! The dispatcher with real sinks: a local HTTP server, files in a temp
//! dir, a pipe. Timings are kept short through the policies; nothing
//! asserts on wall-clock time beyond generous bounds for waiting.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::sinks::alert::Alert;
use crate::sinks::delivery::{
    BreakerState, BuildError, DeliveryRecord, Dispatcher, Outcome, SendSummary,
};
use crate::sinks::file::FileSink;
use crate::sinks::settings::{
    DeliveryPolicy, FileSettings, SinkSettings, SinkTarget, SyslogSettings, SyslogTransport,
    WebhookSettings,
};
use crate::sinks::sink::Sink;
use crate::sinks::spec::parse_spec;
use crate::sinks::stdout::StdoutSink;
use crate::sinks::testutil::{Reply, TestServer, alert};

/// Longest any test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(20);

fn fast_policy() -> DeliveryPolicy {
    DeliveryPolicy::default()
        .with_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .unwrap()
}

fn webhook(url: &str, timeout: Duration, policy: DeliveryPolicy) -> SinkSettings {
    SinkSettings::new(
        SinkTarget::Webhook(WebhookSettings::new(url, timeout, None).unwrap()),
        policy,
    )
}

async fn next(rx: &mut mpsc::Receiver<DeliveryRecord>) -> DeliveryRecord {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a delivery record within the patience")
        .expect("record channel open")
}

/// Records until one matches `done`, which is included.
async fn until(
    rx: &mut mpsc::Receiver<DeliveryRecord>,
    done: impl Fn(&DeliveryRecord) -> bool,
) -> Vec<DeliveryRecord> {
    let mut seen = Vec::new();
    loop {
        let r = next(rx).await;
        let stop = done(&r);
        seen.push(r);
        if stop {
            return seen;
        }
    }
}

fn attempts(records: &[DeliveryRecord], sink: &str) -> Vec<(u32, Outcome)> {
    records
        .iter()
        .filter(|r| r.sink == sink)
        .map(|r| (r.attempt, r.outcome))
        .collect()
}

#[tokio::test]
async fn webhook_delivered_on_200() {
    let server = TestServer::start(vec![Reply::Status(200)]).await;
    let settings = webhook(
        &server.url("http", "/hook"),
        Duration::from_secs(5),
        fast_policy(),
    );
    let name = settings.name();
    let shutdown = CancellationToken::new();
    let (dispatcher, mut records) = Dispatcher::start(&[settings], shutdown.clone())
        .await
        .unwrap();
    assert_eq!(
        dispatcher.send(alert("a1")),
        SendSummary {
            queued: 1,
            dropped: 0
        }
    );
    let r = next(&mut records).await;
    assert_eq!(r.alert_id, "a1");
    assert_eq!(r.sink, name);
    assert_eq!(
        (r.attempt, r.outcome, r.error),
        (1, Outcome::Delivered, None)
    );
    assert!(r.time_ms > 1_600_000_000_000);
    let stats = dispatcher.stats();
    assert_eq!(stats.sinks[0].delivered, 1);
    assert_eq!(stats.sinks[0].breaker, BreakerState::Closed);
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, dispatcher.stopped())
        .await
        .unwrap();
}

#[tokio::test]
async fn webhook_retried_then_delivered_after_two_500s() {
    let server = TestServer::start(vec![
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(200),
    ])
    .await;
    let settings = webhook(
        &server.url("http", "/"),
        Duration::from_secs(5),
        fast_policy(),
    );
    let (dispatcher, mut records) = Dispatcher::start(&[settings], CancellationToken::new())
        .await
        .unwrap();
    dispatcher.send(alert("a1"));
    let seen = until(&mut records, |r| r.outcome != Outcome::Retrying).await;
    let got: Vec<_> = seen.iter().map(|r| (r.attempt, r.outcome)).collect();
    assert_eq!(
        got,
        [
            (1, Outcome::Retrying),
            (2, Outcome::Retrying),
            (3, Outcome::Delivered)
        ]
    );
    assert!(
        seen[0].error.as_deref().unwrap().contains("500"),
        "{seen:?}"
    );
    assert_eq!(server.count(), 3);
    let s = &dispatcher.stats().sinks[0];
    assert_eq!((s.delivered, s.retried, s.failed), (1, 2, 0));
}

#[tokio::test]
async fn webhook_400_fails_without_retry() {
    let server = TestServer::start(vec![Reply::Status(400), Reply::Status(200)]).await;
    let settings = webhook(
        &server.url("http", "/"),
        Duration::from_secs(5),
        fast_policy(),
    );
    let (dispatcher, mut records) = Dispatcher::start(&[settings], CancellationToken::new())
        .await
        .unwrap();
    dispatcher.send(alert("bad"));
    let r = next(&mut records).await;
    assert_eq!((r.attempt, r.outcome), (1, Outcome::Failed));
    assert!(r.error.as_deref().unwrap().contains("400"), "{r:?}");
    // The next alert goes through: nothing was retried in between.
    dispatcher.send(alert("good"));
    let r = next(&mut records).await;
    assert_eq!(
        (r.alert_id.as_str(), r.outcome),
        ("good", Outcome::Delivered)
    );
    assert_eq!(server.count(), 2);
    let s = &dispatcher.stats().sinks[0];
    assert_eq!((s.failed, s.retried, s.delivered), (1, 0, 1));
    assert_eq!(s.breaker, BreakerState::Closed);
}

#[tokio::test]
async fn webhook_connection_closed_is_retried() {
    let server = TestServer::start(vec![Reply::Close, Reply::Status(200)]).await;
    let settings = webhook(
        &server.url("http", "/"),
        Duration::from_secs(5),
        fast_policy(),
    );
    let (dispatcher, mut records) = Dispatcher::start(&[settings], CancellationToken::new())
        .await
        .unwrap();
    dispatcher.send(alert("a1"));
    let seen = until(&mut records, |r| r.outcome != Outcome::Retrying).await;
    let got: Vec<_> = seen.iter().map(|r| (r.attempt, r.outcome)).collect();
    assert_eq!(got, [(1, Outcome::Retrying), (2, Outcome::Delivered)]);
}

#[tokio::test]
async fn attempts_run_out() {
    let server = TestServer::start(vec![Reply::Status(503)]).await;
    let policy = fast_policy().with_max_attempts(3).unwrap();
    let settings = webhook(&server.url("http", "/"), Duration::from_secs(5), policy);
    let (dispatcher, mut records) = Dispatcher::start(&[settings], CancellationToken::new())
        .await
        .unwrap();
    dispatcher.send(alert("a1"));
    let seen = until(&mut records, |r| r.outcome != Outcome::Retrying).await;
    let got: Vec<_> = seen.iter().map(|r| (r.attempt, r.outcome)).collect();
    assert_eq!(
        got,
        [
            (1, Outcome::Retrying),
            (2, Outcome::Retrying),
            (3, Outcome::Failed)
        ]
    );
    let s = &dispatcher.stats().sinks[0];
    assert_eq!((s.failed, s.retried), (1, 2));
}

/// A webhook that never answers times out, is retried, and opens its
/// breaker; a file sink in the same dispatcher keeps delivering meanwhile,
/// and the caller is never held up.
#[tokio::test]
async fn dead_webhook_does_not_block_the_file_sink() {
    let server = TestServer::start(vec![Reply::Hang]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let policy = fast_policy()
        .with_breaker(2, Duration::from_secs(600))
        .unwrap();
    let hook = webhook(&server.url("http", "/"), Duration::from_millis(200), policy);
    let hook_name = hook.name();
    let file = SinkSettings::with_defaults(SinkTarget::File(
        FileSettings::with_defaults(path.clone()).unwrap(),
    ));
    let file_name = file.name();
    let shutdown = CancellationToken::new();
    let mut builder =
        Dispatcher::builder(shutdown.clone()).drain_timeout(Duration::from_millis(200));
    builder.add(&hook).await.unwrap();
    builder.add(&file).await.unwrap();
    let (dispatcher, mut records) = builder.build();

    dispatcher.send(alert("a0"));
    // Two timed-out attempts open the webhook's breaker.
    let mut seen = Vec::new();
    while !(seen
        .iter()
        .any(|r: &DeliveryRecord| r.sink == hook_name && r.attempt == 2)
        && seen.iter().any(|r: &DeliveryRecord| r.sink == file_name))
    {
        seen.push(next(&mut records).await);
    }
    assert_eq!(
        attempts(&seen, &hook_name),
        [(1, Outcome::Retrying), (2, Outcome::Retrying)]
    );
    assert!(
        seen.iter().filter(|r| r.sink == hook_name).all(|r| r
            .error
            .as_deref()
            .unwrap()
            .contains("did not answer")),
        "{seen:?}"
    );
    assert_eq!(attempts(&seen, &file_name), [(1, Outcome::Delivered)]);
    assert_eq!(dispatcher.stats().sinks[0].breaker, BreakerState::Open);

    // While the webhook is dead, the file sink gets every alert at once.
    for i in 1..=5 {
        let summary = dispatcher.send(alert(&format!("a{i}")));
        assert_eq!(
            summary,
            SendSummary {
                queued: 2,
                dropped: 0
            }
        );
        let r = next(&mut records).await;
        assert_eq!(
            (r.sink.as_str(), r.alert_id.as_str(), r.outcome),
            (
                file_name.as_str(),
                format!("a{i}").as_str(),
                Outcome::Delivered
            )
        );
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 6);
    let stats = dispatcher.stats();
    assert_eq!(stats.sinks[0].breaker, BreakerState::Open);
    // The alerts wait in the webhook's queue.
    assert_eq!(stats.sinks[0].queued, 5);
    assert_eq!(stats.sinks[1].delivered, 6);

    // Shutdown: the breaker is still open, so the webhook's alerts are
    // dropped, counted and recorded, and the tasks end.
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, dispatcher.stopped())
        .await
        .unwrap();
    let mut dropped = Vec::new();
    while let Ok(r) = records.try_recv() {
        assert_eq!(
            (r.sink.as_str(), r.outcome),
            (hook_name.as_str(), Outcome::Dropped)
        );
        dropped.push(r.alert_id);
    }
    assert_eq!(dropped, ["a0", "a1", "a2", "a3", "a4", "a5"]);
    assert_eq!(dispatcher.stats().sinks[0].dropped, 6);
    // Sending after shutdown drops, it does not block or panic.
    assert_eq!(
        dispatcher.send(alert("late")),
        SendSummary {
            queued: 0,
            dropped: 2
        }
    );
}

/// A sink that blocks each batch until the test lets it through.
#[derive(Debug)]
struct GatedSink {
    gate: Arc<Semaphore>,
    started: mpsc::UnboundedSender<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct NeverError(Infallible);

impl crate::sinks::sink::Retry for NeverError {
    fn is_retryable(&self) -> bool {
        match self.0 {}
    }
}

impl Sink for GatedSink {
    type Error = NeverError;

    fn max_batch(&self) -> usize {
        1
    }

    async fn send(&mut self, batch: &[Arc<Alert>]) -> Result<(), NeverError> {
        let _ = self.started.send(batch[0].id.clone());
        self.gate.acquire().await.map(|p| p.forget()).ok();
        Ok(())
    }
}

#[tokio::test]
async fn full_queue_drops_are_counted_and_recorded() {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let sink = GatedSink {
        gate: gate.clone(),
        started: started_tx,
    };
    let mut builder = Dispatcher::builder(CancellationToken::new());
    builder
        .add_sink("gated".into(), sink, fast_policy().with_queue(2).unwrap())
        .unwrap();
    let (dispatcher, mut records) = builder.build();

    dispatcher.send(alert("a0"));
    // The sink holds a0; two more fit in the queue; the rest are dropped.
    assert_eq!(started.recv().await.unwrap(), "a0");
    let summaries: Vec<_> = (1..=5)
        .map(|i| dispatcher.send(alert(&format!("a{i}"))))
        .collect();
    let dropped: usize = summaries.iter().map(|s| s.dropped).sum();
    assert_eq!(dropped, 3);
    let s = &dispatcher.stats().sinks[0];
    assert_eq!((s.dropped, s.queued, s.queue_capacity), (3, 2, 2));
    for id in ["a3", "a4", "a5"] {
        let r = next(&mut records).await;
        assert_eq!(
            (r.alert_id.as_str(), r.attempt, r.outcome),
            (id, 0, Outcome::Dropped)
        );
        assert_eq!(r.error.as_deref(), Some("sink queue full"));
    }
    gate.add_permits(3);
    for id in ["a0", "a1", "a2"] {
        let r = next(&mut records).await;
        assert_eq!((r.alert_id.as_str(), r.outcome), (id, Outcome::Delivered));
    }
    assert_eq!(dispatcher.stats().sinks[0].delivered, 3);
}

#[tokio::test]
async fn full_record_channel_counts_and_never_blocks() {
    let mut builder = Dispatcher::builder(CancellationToken::new()).record_capacity(2);
    let (writer, reader) = tokio::io::duplex(1 << 20);
    builder
        .add_sink("pipe".into(), StdoutSink::new(writer), fast_policy())
        .unwrap();
    let (dispatcher, records) = builder.build();
    for i in 0..10 {
        dispatcher.send(alert(&format!("a{i}")));
    }
    // All ten reach the pipe although only two records fit.
    let mut lines = BufReader::new(reader).lines();
    for i in 0..10 {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let back: Alert = serde_json::from_str(&line).unwrap();
        assert_eq!(back.id, format!("a{i}"));
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while dispatcher.stats().sinks[0].delivered < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery not counted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(records.len(), 2);
    assert_eq!(dispatcher.stats().records_dropped, 8);
}

#[tokio::test]
async fn shutdown_drains_the_queue_in_time() {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let mut builder = Dispatcher::builder(shutdown.clone()).drain_timeout(PATIENCE);
    builder
        .add_sink(
            "gated".into(),
            GatedSink {
                gate: gate.clone(),
                started: started_tx,
            },
            fast_policy(),
        )
        .unwrap();
    let (dispatcher, mut records) = builder.build();
    for i in 0..3 {
        dispatcher.send(alert(&format!("a{i}")));
    }
    assert_eq!(started.recv().await.unwrap(), "a0");
    shutdown.cancel();
    gate.add_permits(3);
    tokio::time::timeout(PATIENCE, dispatcher.stopped())
        .await
        .unwrap();
    let mut delivered = Vec::new();
    while let Ok(r) = records.try_recv() {
        assert_eq!(r.outcome, Outcome::Delivered);
        delivered.push(r.alert_id);
    }
    assert_eq!(delivered, ["a0", "a1", "a2"]);
}

#[tokio::test]
async fn shutdown_drops_what_the_drain_time_leaves() {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let mut builder =
        Dispatcher::builder(shutdown.clone()).drain_timeout(Duration::from_millis(50));
    builder
        .add_sink(
            "stuck".into(),
            GatedSink {
                gate,
                started: started_tx,
            },
            fast_policy(),
        )
        .unwrap();
    let (dispatcher, mut records) = builder.build();
    dispatcher.send(alert("a0"));
    dispatcher.send(alert("a1"));
    assert_eq!(started.recv().await.unwrap(), "a0");
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, dispatcher.stopped())
        .await
        .unwrap();
    let a0 = next(&mut records).await;
    assert_eq!(
        (a0.alert_id.as_str(), a0.attempt, a0.outcome),
        ("a0", 1, Outcome::Dropped)
    );
    let a1 = next(&mut records).await;
    assert_eq!(
        (a1.alert_id.as_str(), a1.attempt, a1.outcome),
        ("a1", 0, Outcome::Dropped)
    );
    assert_eq!(dispatcher.stats().sinks[0].dropped, 2);
}

#[tokio::test]
async fn missing_syslog_socket_is_a_delivery_failure() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SinkSettings::new(
        SinkTarget::Syslog(SyslogSettings::with_defaults(SyslogTransport::Unix(
            dir.path().join("log"),
        ))),
        fast_policy().with_max_attempts(2).unwrap(),
    );
    let (dispatcher, mut records) = Dispatcher::start(&[settings], CancellationToken::new())
        .await
        .unwrap();
    dispatcher.send(alert("a1"));
    let seen = until(&mut records, |r| r.outcome != Outcome::Retrying).await;
    let got: Vec<_> = seen.iter().map(|r| (r.attempt, r.outcome)).collect();
    assert_eq!(got, [(1, Outcome::Retrying), (2, Outcome::Failed)]);
    assert!(
        seen[1]
            .error
            .as_deref()
            .unwrap()
            .contains("could not connect to syslog"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn build_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("file={}/nope/alerts.jsonl", dir.path().display());
    let err = Dispatcher::start(&[parse_spec(&missing).unwrap()], CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::File(_)), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    let spec = format!("file={}/alerts.jsonl", dir.path().display());
    let twice = [parse_spec(&spec).unwrap(), parse_spec(&spec).unwrap()];
    let err = Dispatcher::start(&twice, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Duplicate(_)), "{err:?}");
}

#[tokio::test]
async fn file_sink_through_the_dispatcher_writes_parseable_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let shutdown = CancellationToken::new();
    let mut builder = Dispatcher::builder(shutdown.clone());
    let sink = FileSink::open(FileSettings::with_defaults(path.clone()).unwrap())
        .await
        .unwrap();
    builder
        .add_sink("file".into(), sink, fast_policy())
        .unwrap();
    let (dispatcher, mut records) = builder.build();
    for i in 0..20 {
        dispatcher.send(alert(&format!("a{i:02}")));
    }
    until(&mut records, |r| r.alert_id == "a19").await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, dispatcher.stopped())
        .await
        .unwrap();
    let ids: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Alert>(l).unwrap().id)
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("a{i:02}")).collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn dropping_every_dispatcher_delivers_the_queue_and_stops() {
    let server = TestServer::start(vec![Reply::Status(200)]).await;
    let settings = webhook(
        &server.url("http", "/"),
        Duration::from_secs(5),
        fast_policy(),
    );
    let (dispatcher, mut records) = Dispatcher::start(&[settings], CancellationToken::new())
        .await
        .unwrap();
    for i in 0..3 {
        dispatcher.send(alert(&format!("a{i}")));
    }
    drop(dispatcher);
    let mut delivered = Vec::new();
    while let Some(r) = tokio::time::timeout(PATIENCE, records.recv())
        .await
        .unwrap()
    {
        assert_eq!(r.outcome, Outcome::Delivered);
        delivered.push(r.alert_id);
    }
    assert_eq!(delivered, ["a0", "a1", "a2"]);
}

#[tokio::test]
async fn replace_keeps_unchanged_sinks_and_swaps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let a = parse_spec(&format!("file={}", dir.path().join("a.jsonl").display())).unwrap();
    let b = parse_spec(&format!("file={}", dir.path().join("b.jsonl").display())).unwrap();
    let shutdown = CancellationToken::new();
    let (dispatcher, mut records) = Dispatcher::start(std::slice::from_ref(&a), shutdown.clone())
        .await
        .unwrap();
    dispatcher.send(alert("before"));
    assert_eq!(next(&mut records).await.outcome, Outcome::Delivered);

    // `a` stays (same settings, same counters), `b` is added.
    dispatcher.replace(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(dispatcher.sink_names(), vec![a.name(), b.name()]);
    assert_eq!(dispatcher.stats().sinks[0].delivered, 1, "a kept running");

    // A sink that cannot start leaves the set as it was.
    let bad = parse_spec(&format!(
        "file={}",
        dir.path().join("no/such/dir/c.jsonl").display()
    ))
    .unwrap();
    assert!(dispatcher.replace(&[bad]).await.is_err());
    assert_eq!(dispatcher.sink_names(), vec![a.name(), b.name()]);

    // Only `b` now: alerts no longer reach `a`.
    dispatcher.replace(std::slice::from_ref(&b)).await.unwrap();
    assert_eq!(dispatcher.sink_names(), vec![b.name()]);
    dispatcher.send(alert("after"));
    let r = next(&mut records).await;
    assert_eq!(
        (r.alert_id.as_str(), r.sink.as_str()),
        ("after", b.name().as_str())
    );
    let in_a = std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap();
    assert!(!in_a.contains("\"after\""), "{in_a}");

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, dispatcher.stopped())
        .await
        .unwrap();
}
