//! Alert delivery: where alerts go (`stdout`, `file`, `syslog`,
//! `webhook`), how users name them (`spec`, `config`) and how they get
//! there (`delivery`).

pub mod alert;
pub mod config;
pub mod delivery;
pub mod file;
pub mod settings;
pub mod sink;
pub mod spec;
pub mod stdout;
pub mod syslog;
pub mod webhook;

#[cfg(test)]
pub(crate) mod testutil;

pub use alert::{Alert, Severity};
pub use delivery::{
    BreakerState, DeliveryRecord, Dispatcher, DispatcherBuilder, DispatcherStats, Outcome,
    SendSummary, SinkStats,
};
pub use settings::{DeliveryPolicy, SinkSettings, SinkTarget};
pub use spec::parse_spec;
