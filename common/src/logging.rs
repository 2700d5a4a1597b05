//! Logging set-up for the daemons and the CLI.
//!
//! Logs go to stderr (journald picks them up under systemd), so stdout stays
//! free for data: `procmond --once` JSON lines, the stdout alert sink, CLI
//! output. The level comes from `RUST_LOG` (default given by the caller).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(default_directive: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour only for a person at a terminal; journald and files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr (the reader went away) must not turn into a panic
        // inside the subscriber's own error report.
        .log_internal_errors(false)
        .try_init();
}
