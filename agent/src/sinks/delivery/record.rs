//! What happened to each delivery attempt, for the agent's store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

/// One attempt to deliver one alert to one sink, or its drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub alert_id: String,
    /// The sink's display name, e.g. `webhook:https://host/path`.
    pub sink: String,
    /// 1 for the first attempt; for `Dropped`, the attempts made before.
    pub attempt: u32,
    pub outcome: Outcome,
    /// Why the attempt failed or the alert was dropped.
    pub error: Option<String>,
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The sink has the alert.
    Delivered,
    /// The attempt failed and another one will follow.
    Retrying,
    /// The alert will not be delivered to this sink: the failure is
    /// permanent or the attempts ran out.
    Failed,
    /// Never (fully) attempted: the sink's queue was full, the sink had
    /// stopped, or shutdown came first.
    Dropped,
}

/// The sending side of the record channel; never blocks.
#[derive(Debug, Clone)]
pub(crate) struct RecordSender {
    tx: mpsc::Sender<DeliveryRecord>,
    shared: Arc<RecordShared>,
}

#[derive(Debug, Default)]
pub(crate) struct RecordShared {
    pub(crate) dropped: AtomicU64,
    /// Set while records are being dropped; the first drop of a burst logs.
    dropping: AtomicBool,
}

impl RecordSender {
    pub(crate) fn new(tx: mpsc::Sender<DeliveryRecord>) -> Self {
        Self {
            tx,
            shared: Arc::default(),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<RecordShared> {
        &self.shared
    }

    pub(crate) fn emit(
        &self,
        alert_id: &str,
        sink: &str,
        attempt: u32,
        outcome: Outcome,
        error: Option<&str>,
    ) {
        let record = DeliveryRecord {
            alert_id: alert_id.to_owned(),
            sink: sink.to_owned(),
            attempt,
            outcome,
            error: error.map(str::to_owned),
            time_ms: jiff::Timestamp::now().as_millisecond(),
        };
        match self.tx.try_send(record) {
            Ok(()) => {
                if self.shared.dropping.swap(false, Ordering::Relaxed) {
                    warn!(
                        dropped_total = self.shared.dropped.load(Ordering::Relaxed),
                        "delivery record channel has room again"
                    );
                }
            }
            Err(_) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.shared.dropping.swap(true, Ordering::Relaxed) {
                    warn!(
                        "delivery record channel is full or closed; dropping records until it drains"
                    );
                }
            }
        }
    }
}
