//! The agent's store: one redb file holding every process instance, its
//! samples and the scans that carried them.
//!
//! [`Store`] is the writer (exactly one, the agent's storage thread);
//! [`StoreReader`] is the read-only view `sentinelcli` opens beside the
//! running agent. Both open the file in redb's `ConcurrencyMode::SingleWriter`,
//! so readers follow the writer's commits and cannot write. The tables and
//! their byte layout are documented in `docs/store-format.md`; `schema` is the
//! only module that knows them.

pub(crate) mod alerts;
mod read;
mod retention;
pub(crate) mod schema;
mod write;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use alerts::{AlertWriter, NewAlert, NewDelivery};
pub use read::{
    HistoryPoint, ParentRef, Parts, ScanRow, Scope, Snapshot, StoreReader, StoredAlert,
    StoredBytes, StoredInstance, StoredProcess,
};
pub use retention::{Pruned, Pruner};
pub(crate) use write::batch_records;
pub use write::{BatchOutcome, Store};

/// Why a store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "no SentinelD store at {}: start sentinelagent with --state-dir, or pass the right --state-dir",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error("{} is not a SentinelD store: {reason}", path.display())]
    NotAStore { path: PathBuf, reason: String },
    #[error(
        "{} has store schema version {found}, this build knows up to version {expected}: use a newer SentinelD",
        path.display()
    )]
    SchemaVersion {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error(
        "{} is locked by another process: stop the other sentinelagent using this state directory, or give this one another --state-dir",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("cannot open store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {}: {source}", path.display())]
    Redb {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("store {} is corrupt: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },
}

/// Attaches the store's path to a redb error.
pub(crate) trait RedbResultExt<T> {
    fn in_store(self, path: &Path) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> RedbResultExt<T> for Result<T, E> {
    fn in_store(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::redb(path, e))
    }
}

impl StoreError {
    /// Wraps any redb error with the store's path.
    pub(crate) fn redb(path: &Path, source: impl Into<redb::Error>) -> StoreError {
        StoreError::Redb {
            path: path.to_path_buf(),
            source: Box::new(source.into()),
        }
    }

    pub(crate) fn corrupt(path: &Path, what: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    pub(crate) fn not_a_store(path: &Path, reason: impl Into<String>) -> StoreError {
        StoreError::NotAStore {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Sorts redb's open errors into the cases a user can act on.
    /// `reading`: a missing file is "no store here" for a reader; the writer
    /// creates the file, so for it a missing file means a missing directory.
    pub(crate) fn from_open(path: &Path, err: redb::DatabaseError, reading: bool) -> StoreError {
        use std::io::ErrorKind;
        match err {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: path.to_path_buf(),
            },
            redb::DatabaseError::Storage(redb::StorageError::Io(e)) => match e.kind() {
                ErrorKind::NotFound if reading => StoreError::NotFound {
                    path: path.to_path_buf(),
                },
                // redb reports a file that is not a redb database as InvalidData.
                ErrorKind::InvalidData => {
                    let reason = if e.to_string().contains("empty") {
                        "the file is empty (if sentinelagent is starting, retry)"
                    } else {
                        "it is not a redb database"
                    };
                    StoreError::not_a_store(path, reason)
                }
                _ => StoreError::Io {
                    path: path.to_path_buf(),
                    source: e,
                },
            },
            err => StoreError::redb(path, err),
        }
    }
}
