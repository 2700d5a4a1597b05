//! Pieces every SentinelD binary shares. Depends on no other SentinelD crate.

pub mod host;
pub mod layout;
pub mod logging;
pub mod time;

/// Version of the SentinelD workspace, reported in handshakes and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
