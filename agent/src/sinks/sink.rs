//! What every sink implements, and how its errors are classified.

use std::error::Error;
use std::future::Future;
use std::sync::Arc;

use crate::sinks::alert::Alert;

/// A delivery target. The dispatcher runs each sink in its own task and
/// calls [`Sink::send`] with one batch at a time, never concurrently.
pub trait Sink: Send + 'static {
    /// Why a batch was not delivered.
    type Error: Error + Retry + Send + Sync + 'static;

    /// Most alerts handed to one [`Sink::send`]. A batch is delivered or
    /// failed as a whole, so sinks that cannot deliver a batch atomically
    /// (one request per alert) say 1.
    fn max_batch(&self) -> usize;

    /// Delivers `batch` (never empty). An error leaves the sink usable:
    /// the next call reconnects or reopens as needed.
    fn send(
        &mut self,
        batch: &[Arc<Alert>],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Whether trying the same delivery again may succeed.
pub trait Retry {
    /// `false` for a permanent failure (a rejected request, an alert that
    /// cannot be encoded): the alert is failed at once and the failure does
    /// not count against the circuit breaker.
    fn is_retryable(&self) -> bool;
}

pub use sentineld_common::error_chain;

/// Appends each alert as one JSON line.
pub(crate) fn encode_lines(
    batch: &[Arc<Alert>],
    buf: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    for alert in batch {
        serde_json::to_writer(&mut *buf, &**alert)?;
        buf.push(b'\n');
    }
    Ok(())
}
