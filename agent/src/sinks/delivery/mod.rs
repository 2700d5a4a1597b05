//! Getting alerts to the sinks: a [`Dispatcher`] with one task, one bounded
//! queue, retries with backoff and a circuit breaker per sink, and a
//! [`DeliveryRecord`] for every attempt.

mod backoff;
mod breaker;
mod dispatcher;
mod record;
mod stats;
mod worker;

#[cfg(test)]
mod tests;

pub use breaker::BreakerState;
pub use dispatcher::{
    BuildError, DEFAULT_DRAIN_TIMEOUT, DEFAULT_RECORD_CAPACITY, Dispatcher, DispatcherBuilder,
    SendSummary,
};
pub use record::{DeliveryRecord, Outcome};
pub use stats::{DispatcherStats, SinkStats};
