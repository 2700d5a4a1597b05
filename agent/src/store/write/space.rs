//! The store's file, waiting for space instead of failing when its
//! filesystem is full.
//!
//! redb treats any failed write as fatal for the open database: every later
//! operation fails with "previous I/O error" until the database is closed
//! and opened again, which the agent cannot do while its threads share it.
//! So a write that finds no space left (`ENOSPC`, `EDQUOT`) is retried here,
//! with a backoff, until it succeeds: the transaction it belongs to waits,
//! the batch is not acknowledged meanwhile, and the collector keeps it and
//! what follows in its write-ahead log. Once space returns the same write
//! goes through and the transaction commits as if nothing happened.
//!
//! Only writes and resizes are retried: both can be repeated as they are.
//! A failed `fsync` is passed on, since the kernel may have dropped the
//! pages it could not write, and repeating it would claim they are on disk.
//!
//! The wait starts only once the storage thread arms it (with where to
//! report and when to give up): while the store is being opened, or when it
//! is used outside the agent, a full disk is an error at once.

use std::io;
use std::ops::Bound;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::stats::AgentStats;

/// First pause before a write is tried again; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Whether, and to whom, the store reports that its disk is full.
#[derive(Debug)]
pub(crate) struct SpaceWatch {
    /// The store's file, for messages.
    path: PathBuf,
    armed: OnceLock<Armed>,
}

#[derive(Debug)]
struct Armed {
    stats: Arc<AgentStats>,
    /// Cancelled at shutdown: a write still waiting for space then fails.
    stop: CancellationToken,
}

impl SpaceWatch {
    pub(crate) fn new(path: &Path) -> SpaceWatch {
        SpaceWatch {
            path: path.to_path_buf(),
            armed: OnceLock::new(),
        }
    }

    /// From now on a write that finds no space waits for it, reporting the
    /// outage to `stats`, until `stop` is cancelled. Only the first call
    /// counts.
    pub(crate) fn arm(&self, stats: Arc<AgentStats>, stop: CancellationToken) {
        let _ = self.armed.set(Armed { stats, stop });
    }
}

/// Whether `e` says the filesystem (or the user's quota on it) is full.
fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
    )
}

/// The mount point of the filesystem holding `path`: its highest ancestor
/// on the same device.
fn mount_point(path: &Path) -> PathBuf {
    let Ok(path) = path.canonicalize() else {
        return path.to_path_buf();
    };
    let Ok(dev) = std::fs::metadata(&path).map(|m| m.dev()) else {
        return path;
    };
    let mut top = path.as_path();
    for dir in path.ancestors().skip(1) {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.dev() == dev => top = dir,
            _ => break,
        }
    }
    top.to_path_buf()
}

/// Bytes an unprivileged user may still write on the filesystem of `path`.
fn available_bytes(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// redb's file backend, retrying writes that find no space once armed.
#[derive(Debug)]
pub(crate) struct SpaceWaitingFile {
    file: FileBackend,
    watch: Arc<SpaceWatch>,
}

impl SpaceWaitingFile {
    pub(crate) fn new(file: FileBackend, watch: Arc<SpaceWatch>) -> SpaceWaitingFile {
        SpaceWaitingFile { file, watch }
    }

    /// Runs `op`; while it fails for want of space and the watch is armed,
    /// waits and runs it again.
    fn retrying(&self, mut op: impl FnMut() -> io::Result<()>) -> io::Result<()> {
        let first = match op() {
            Err(e) if is_no_space(&e) => e,
            done => return done,
        };
        let Some(armed) = self.watch.armed.get() else {
            return Err(first);
        };
        let path = &self.watch.path;
        let filesystem = mount_point(path.parent().unwrap_or(path));
        let reported = armed.stats.store_failed(|| {
            format!(
                "{first} on {} (store {})",
                filesystem.display(),
                path.display()
            )
        });
        if reported {
            error!(
                store = %path.display(),
                filesystem = %filesystem.display(),
                available_bytes = available_bytes(&filesystem),
                error = %first,
                "cannot store batch: {first} on {}: free space there; \
                 the collector keeps the backlog in its write-ahead log and it is stored once space returns",
                filesystem.display()
            );
        } else {
            debug!(store = %path.display(), error = %first, "store write waits for space");
        }
        let began = Instant::now();
        let mut pause = RETRY_MIN;
        loop {
            if armed.stop.is_cancelled() {
                warn!(
                    store = %path.display(),
                    waited_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "stopping while the store waits for space: the batch is left to the collector's write-ahead log"
                );
                return Err(first);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(RETRY_MAX);
            match op() {
                Err(e) if is_no_space(&e) => {}
                done => return done,
            }
        }
    }
}

impl StorageBackend for SpaceWaitingFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.retrying(|| self.file.set_len(len))
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.retrying(|| self.file.write(offset, data))
    }

    fn close(&self) -> Result<(), io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}
