//! Pieces every SentinelD binary shares. Depends on no other SentinelD crate.

pub mod host;
pub mod layout;
pub mod ledger;
pub mod logging;
pub mod notify;
pub mod time;

/// Version of the SentinelD workspace, reported in handshakes and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error and its causes on one line, `outer: cause: root cause`. A cause
/// whose text the line already holds (an error that prints its source
/// itself) is not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}
