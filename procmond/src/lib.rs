//! procmond: SentinelD's privileged collector.
//!
//! Every scan interval it enumerates the processes of the host
//! ([`collect`]), diffs them against the last scan ([`diff`]), hashes the
//! executables of new instances off the scan's hot path ([`hash`]), adds
//! container ids, open descriptors and listening ports ([`enrich`]), and
//! sends the result ([`scan`]) to the agent over a local socket, in chunks.
//! [`scanner`] ties one scan together; daemon mode runs it on its own
//! thread beside the async socket side ([`run_daemon`]); `--once` prints one
//! scan as JSON lines ([`run_once`]).
//!
//! procmond parses nothing but `/proc` and the agent's acks and credits,
//! and never links the store, the rule engine, HTTP or the alert sinks.

pub mod args;
mod client;
pub mod collect;
mod daemon;
pub mod diff;
pub mod enrich;
mod error;
pub mod hash;
pub mod ledger;
mod once;
pub mod privilege;
mod procfs;
pub mod scan;
pub mod scanner;
#[cfg(test)]
mod testutil;
mod users;
pub mod wal;

pub use args::Args;
pub use daemon::{DaemonConfig, run_daemon, run_with_scanner};
pub use error::Error;
pub use once::{ONCE_HASH_WAIT, run_once, write_views};

/// Result of [`exit_with_parent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentWatch {
    /// SIGTERM arrives when the parent exits.
    Armed,
    /// The parent exited already: stop now.
    ParentGone,
}

/// Asks the kernel to send SIGTERM when the parent process exits (Linux
/// `PR_SET_PDEATHSIG`). A parent that exited before the request took effect
/// is reported as [`ParentWatch::ParentGone`].
pub fn exit_with_parent() -> Result<ParentWatch, Error> {
    #[cfg(target_os = "linux")]
    {
        let before = nix::unistd::getppid();
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
            .map_err(Error::ParentDeathSignal)?;
        if nix::unistd::getppid() != before {
            return Ok(ParentWatch::ParentGone);
        }
        Ok(ParentWatch::Armed)
    }
    #[cfg(not(target_os = "linux"))]
    {
        tracing::warn!("--exit-with-parent is only supported on Linux; ignored");
        Ok(ParentWatch::Armed)
    }
}
