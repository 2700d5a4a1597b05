//! One agent per state directory: an exclusive lock on `agent.lock`, held
//! for the agent's lifetime and released by the kernel when it exits (even
//! on SIGKILL).

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Holds the state directory's lock while alive.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    #[error(
        "another sentinelagent is already running on this state directory (lock {path} is held{holder}); stop it first or use another --state-dir"
    )]
    Held { path: PathBuf, holder: String },
    #[error("cannot open lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes the lock at `path`, or says who holds it.
    pub fn acquire(path: &Path) -> Result<StateLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(path)
                    .ok()
                    .map(|pid| pid.trim().to_owned())
                    .filter(|pid| !pid.is_empty())
                    .map(|pid| format!(" by pid {pid}"))
                    .unwrap_or_default();
                return Err(LockError::Held {
                    path: path.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.lock");
        let first = StateLock::acquire(&path).unwrap();
        let err = StateLock::acquire(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("already running"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        StateLock::acquire(&path).unwrap();
    }
}
