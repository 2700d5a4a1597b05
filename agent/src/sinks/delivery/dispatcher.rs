//! The agent's handle on the sinks.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sinks::alert::Alert;
use crate::sinks::delivery::record::{DeliveryRecord, Outcome, RecordSender};
use crate::sinks::delivery::stats::{Counters, DispatcherStats};
use crate::sinks::delivery::worker::Worker;
use crate::sinks::file::{FileOpenError, FileSink};
use crate::sinks::settings::{DeliveryPolicy, SinkSettings, SinkTarget};
use crate::sinks::sink::Sink;
use crate::sinks::stdout::StdoutSink;
use crate::sinks::syslog::SyslogSink;
use crate::sinks::webhook::{WebhookBuildError, WebhookSink};

/// Default time each sink gets to deliver its queue after shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bound of the delivery record channel.
pub const DEFAULT_RECORD_CAPACITY: usize = 4_096;

/// Why a sink could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error(transparent)]
    File(#[from] FileOpenError),
    #[error("webhook sink `{sink}`")]
    Webhook {
        sink: String,
        #[source]
        source: WebhookBuildError,
    },
    #[error("sink `{0}` is given twice; remove one")]
    Duplicate(String),
}

type Spawn = Box<dyn FnOnce(&TaskTracker, &RecordSender, &CancellationToken, Duration) + Send>;

/// Collects sinks; [`DispatcherBuilder::build`] starts their tasks.
pub struct DispatcherBuilder {
    shutdown: CancellationToken,
    drain_timeout: Duration,
    record_capacity: usize,
    names: HashSet<String>,
    handles: Vec<SinkHandle>,
    spawns: Vec<Spawn>,
}

impl fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherBuilder")
            .field("drain_timeout", &self.drain_timeout)
            .field("record_capacity", &self.record_capacity)
            .field("sinks", &self.names)
            .finish_non_exhaustive()
    }
}

impl DispatcherBuilder {
    /// How long each sink may keep delivering after `shutdown` is
    /// cancelled; [`DEFAULT_DRAIN_TIMEOUT`] unless set.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Bound of the delivery record channel (at least 1);
    /// [`DEFAULT_RECORD_CAPACITY`] unless set.
    pub fn record_capacity(mut self, capacity: usize) -> Self {
        self.record_capacity = capacity.max(1);
        self
    }

    /// Adds a built-in sink: opens its file or builds its HTTP client.
    /// Syslog connects at its first delivery.
    pub async fn add(&mut self, settings: &SinkSettings) -> Result<&mut Self, BuildError> {
        let name = settings.name();
        if self.names.contains(&name) {
            return Err(BuildError::Duplicate(name));
        }
        let policy = *settings.delivery();
        match settings.target() {
            SinkTarget::Stdout => self.add_sink(name, StdoutSink::stdout(), policy),
            SinkTarget::File(f) => {
                let sink = FileSink::open(f.clone()).await?;
                self.add_sink(name, sink, policy)
            }
            SinkTarget::Syslog(s) => self.add_sink(name, SyslogSink::new(s.clone()), policy),
            SinkTarget::Webhook(w) => {
                let sink = WebhookSink::new(w.clone()).map_err(|source| BuildError::Webhook {
                    sink: name.clone(),
                    source,
                })?;
                self.add_sink(name, sink, policy)
            }
        }?;
        if let Some(handle) = self.handles.last_mut() {
            handle.settings = Some(settings.clone());
        }
        Ok(self)
    }

    /// Adds any [`Sink`] under `name` (shown in records, stats and logs).
    pub fn add_sink<S: Sink>(
        &mut self,
        name: String,
        sink: S,
        policy: DeliveryPolicy,
    ) -> Result<&mut Self, BuildError> {
        if !self.names.insert(name.clone()) {
            return Err(BuildError::Duplicate(name));
        }
        let name: Arc<str> = name.into();
        let (tx, rx) = mpsc::channel(policy.queue().get());
        let counters = Arc::new(Counters::default());
        self.handles.push(SinkHandle {
            name: name.clone(),
            tx,
            counters: counters.clone(),
            settings: None,
        });
        self.spawns.push(Box::new(
            move |tracker, records, shutdown, drain_timeout| {
                let worker = Worker {
                    name,
                    sink,
                    rx,
                    policy,
                    counters,
                    records: records.clone(),
                    shutdown: shutdown.clone(),
                    drain_timeout,
                };
                tracker.spawn(worker.run());
            },
        ));
        Ok(self)
    }

    /// Starts one task per sink (call it inside a Tokio runtime). Returns
    /// the dispatcher and the receiving end of the delivery records, which
    /// the agent should drain: when it is full, records are counted in
    /// [`DispatcherStats::records_dropped`] and lost.
    pub fn build(self) -> (Dispatcher, mpsc::Receiver<DeliveryRecord>) {
        let (records_tx, records_rx) = mpsc::channel(self.record_capacity);
        let records = RecordSender::new(records_tx);
        let tracker = TaskTracker::new();
        for spawn in self.spawns {
            spawn(&tracker, &records, &self.shutdown, self.drain_timeout);
        }
        tracker.close();
        let dispatcher = Dispatcher {
            inner: Arc::new(Inner {
                sinks: RwLock::new(self.handles),
                records,
                tracker,
                shutdown: self.shutdown,
                drain_timeout: self.drain_timeout,
            }),
        };
        (dispatcher, records_rx)
    }
}

#[derive(Debug, Clone)]
struct SinkHandle {
    name: Arc<str>,
    tx: mpsc::Sender<Arc<Alert>>,
    counters: Arc<Counters>,
    /// What a built-in sink was built from, so that a replacement keeps
    /// it running when its settings are unchanged.
    settings: Option<SinkSettings>,
}

#[derive(Debug)]
struct Inner {
    /// Replaced whole by [`Dispatcher::replace`]; only ever held briefly.
    sinks: RwLock<Vec<SinkHandle>>,
    records: RecordSender,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    drain_timeout: Duration,
}

impl Inner {
    fn sinks(&self) -> std::sync::RwLockReadGuard<'_, Vec<SinkHandle>> {
        // A panic while the lock was held cannot leave the list half
        // written: it is only ever assigned whole.
        self.sinks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Hands alerts to every sink without waiting for any of them. Cheap to
/// clone; the sinks stop when the shutdown token is cancelled (after their
/// drain time) or when every clone is dropped (after delivering their
/// queues).
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// What [`Dispatcher::send`] did with one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendSummary {
    /// Sinks whose queue took the alert.
    pub queued: usize,
    /// Sinks whose queue was full or that had stopped; each is counted in
    /// its stats and has a `Dropped` record.
    pub dropped: usize,
}

impl Dispatcher {
    /// A builder; `shutdown` stops every sink after its drain time.
    pub fn builder(shutdown: CancellationToken) -> DispatcherBuilder {
        DispatcherBuilder {
            shutdown,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            record_capacity: DEFAULT_RECORD_CAPACITY,
            names: HashSet::new(),
            handles: Vec::new(),
            spawns: Vec::new(),
        }
    }

    /// Starts the built-in sinks of `settings` with the default drain time
    /// and record capacity.
    pub async fn start(
        settings: &[SinkSettings],
        shutdown: CancellationToken,
    ) -> Result<(Dispatcher, mpsc::Receiver<DeliveryRecord>), BuildError> {
        let mut builder = Self::builder(shutdown);
        for s in settings {
            builder.add(s).await?;
        }
        Ok(builder.build())
    }

    /// Queues `alert` for every sink. Never waits: a sink whose queue is
    /// full drops it (counted, recorded, logged once per burst).
    pub fn send(&self, alert: Arc<Alert>) -> SendSummary {
        let mut summary = SendSummary::default();
        for sink in self.inner.sinks().iter() {
            let reason = match sink.tx.try_send(alert.clone()) {
                Ok(()) => {
                    summary.queued += 1;
                    continue;
                }
                Err(TrySendError::Full(_)) => {
                    sink.counters.queue_full_drop(&sink.name);
                    "sink queue full"
                }
                Err(TrySendError::Closed(_)) => {
                    Counters::add(&sink.counters.dropped, 1);
                    "sink has stopped"
                }
            };
            summary.dropped += 1;
            self.inner
                .records
                .emit(&alert.id, &sink.name, 0, Outcome::Dropped, Some(reason));
        }
        summary
    }

    /// A snapshot of every sink's counters.
    pub fn stats(&self) -> DispatcherStats {
        DispatcherStats {
            sinks: self
                .inner
                .sinks()
                .iter()
                .map(|s| {
                    let capacity = s.tx.max_capacity();
                    let queued = capacity - s.tx.capacity();
                    s.counters.snapshot(&s.name, queued, capacity)
                })
                .collect(),
            records_dropped: self.inner.records.shared().dropped.load(Ordering::Relaxed),
        }
    }

    /// The sinks' display names, in the order they were added.
    pub fn sink_names(&self) -> Vec<String> {
        self.inner
            .sinks()
            .iter()
            .map(|s| s.name.to_string())
            .collect()
    }

    /// Replaces the built-in sinks with those of `settings` (a reloaded
    /// configuration). A sink whose settings are unchanged keeps running
    /// with its queue and breaker; a removed sink delivers what it has
    /// queued and stops; a new one starts. If any new sink cannot be
    /// built, nothing changes. Sinks added with
    /// [`DispatcherBuilder::add_sink`] are removed.
    pub async fn replace(&self, settings: &[SinkSettings]) -> Result<(), BuildError> {
        let current = self.inner.sinks().clone();
        let mut builder = Self::builder(self.inner.shutdown.clone());
        for s in settings {
            match current.iter().find(|h| h.settings.as_ref() == Some(s)) {
                Some(kept) => {
                    if !builder.names.insert(kept.name.to_string()) {
                        return Err(BuildError::Duplicate(kept.name.to_string()));
                    }
                    builder.handles.push(kept.clone());
                }
                None => {
                    builder.add(s).await?;
                }
            }
        }
        let tracker = &self.inner.tracker;
        tracker.reopen();
        for spawn in builder.spawns {
            spawn(
                tracker,
                &self.inner.records,
                &self.inner.shutdown,
                self.inner.drain_timeout,
            );
        }
        tracker.close();
        let old = {
            let mut sinks = self
                .inner
                .sinks
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *sinks, builder.handles)
        };
        // Dropping the old handles closes the queues of the sinks not
        // kept: they deliver what is queued and end.
        drop(old);
        Ok(())
    }

    /// Resolves when every sink task has exited: after the shutdown token
    /// is cancelled and the drain time has passed at most.
    pub async fn stopped(&self) {
        self.inner.tracker.wait().await;
    }
}
