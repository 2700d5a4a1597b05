//! The errors procmond's library reports to its binary.

use std::io;

/// Why procmond cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read the process table: {0}")]
    Collector(String),
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: io::Error,
    },
    #[error("the scan thread panicked: {0}")]
    ScanThread(String),
    #[error("cannot write the scan to stdout: {0}")]
    Output(#[source] io::Error),
    #[error("cannot set the parent-death signal (--exit-with-parent): {0}")]
    ParentDeathSignal(#[source] nix::Error),
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("write-ahead log: {0}")]
    Wal(#[source] crate::wal::WalError),
    #[error("audit ledger: {0}")]
    Ledger(#[source] crate::ledger::LedgerError),
}
