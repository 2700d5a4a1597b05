//! JSON lines appended to a file, rotated by size: when the next batch
//! would take `PATH` past `max_bytes`, `PATH.(keep-1)` becomes `PATH.keep`
//! (the oldest is removed), ..., `PATH` becomes `PATH.1`, and a new `PATH`
//! is started. Each batch is one write followed by `fdatasync`.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;

use crate::sinks::alert::Alert;
use crate::sinks::settings::FileSettings;
use crate::sinks::sink::{Retry, Sink, encode_lines};

/// Why the file sink could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileOpenError {
    #[error(
        "directory `{}` of alert file `{}` does not exist; create it or choose another path",
        dir.display(), path.display()
    )]
    NoParent { path: PathBuf, dir: PathBuf },
    #[error("could not open alert file `{}`; check its permissions", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why the file sink did not deliver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("could not encode the alert as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("could not open alert file `{}`", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not write alert file `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not rotate alert file `{}`", path.display())]
    Rotate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Retry for FileError {
    fn is_retryable(&self) -> bool {
        // A full disk or a lost mount may come back.
        !matches!(self, Self::Encode(_))
    }
}

/// The running file sink.
#[derive(Debug)]
pub struct FileSink {
    settings: FileSettings,
    /// `None` after a failed write: the next batch reopens the file.
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    buf: Vec<u8>,
}

impl FileSink {
    /// Opens (creates) the file for appending. Its directory must exist.
    pub async fn open(settings: FileSettings) -> Result<Self, FileOpenError> {
        let path = settings.path();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
            return Err(FileOpenError::NoParent {
                path: path.to_path_buf(),
                dir,
            });
        }
        let (file, size) = open_append(path)
            .await
            .map_err(|source| FileOpenError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            settings,
            file: Some(file),
            size,
            buf: Vec::new(),
        })
    }

    async fn write_batch(&mut self) -> Result<(), FileError> {
        let path = self.settings.path();
        let len = self.buf.len() as u64;
        if self.file.is_none() {
            let (file, size) = open_append(path).await.map_err(|source| FileError::Open {
                path: path.to_path_buf(),
                source,
            })?;
            self.file = Some(file);
            self.size = size;
        }
        if self.size > 0 && self.size.saturating_add(len) > self.settings.max_bytes().get() {
            self.file = None;
            rotate(path, self.settings.keep())
                .await
                .map_err(|source| FileError::Rotate {
                    path: path.to_path_buf(),
                    source,
                })?;
            let (file, size) = open_append(path).await.map_err(|source| FileError::Open {
                path: path.to_path_buf(),
                source,
            })?;
            self.file = Some(file);
            self.size = size;
        }
        let file = self.file.as_mut().ok_or_else(|| FileError::Open {
            path: path.to_path_buf(),
            source: io::Error::other("file was not reopened"),
        })?;
        let written = async {
            file.write_all(&self.buf).await?;
            file.flush().await?;
            file.sync_data().await
        }
        .await;
        match written {
            Ok(()) => {
                self.size += len;
                Ok(())
            }
            Err(source) => {
                // Part of the batch may be on disk; reopen and re-measure.
                self.file = None;
                Err(FileError::Write {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

impl Sink for FileSink {
    type Error = FileError;

    fn max_batch(&self) -> usize {
        256
    }

    async fn send(&mut self, batch: &[Arc<Alert>]) -> Result<(), FileError> {
        self.buf.clear();
        encode_lines(batch, &mut self.buf).map_err(FileError::Encode)?;
        self.write_batch().await
    }
}

async fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .await?;
    let size = file.metadata().await?.len();
    Ok((file, size))
}

/// `PATH.n` for rotation number `n`.
pub(crate) fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

async fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    if keep == 0 {
        return ignore_missing(tokio::fs::remove_file(path).await);
    }
    ignore_missing(tokio::fs::remove_file(rotated(path, keep)).await)?;
    for n in (1..keep).rev() {
        ignore_missing(tokio::fs::rename(rotated(path, n), rotated(path, n + 1)).await)?;
    }
    tokio::fs::rename(path, rotated(path, 1)).await
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::num::NonZeroU64;

    use super::*;
    use crate::sinks::testutil::alert;

    fn ids_in(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<Alert>(l).unwrap().id)
            .collect()
    }

    #[tokio::test]
    async fn appends_json_lines_that_parse_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut sink = FileSink::open(FileSettings::with_defaults(path.clone()).unwrap())
            .await
            .unwrap();
        sink.send(&[alert("a1"), alert("a2")]).await.unwrap();
        drop(sink);
        // Reopening appends.
        let mut sink = FileSink::open(FileSettings::with_defaults(path.clone()).unwrap())
            .await
            .unwrap();
        sink.send(&[alert("a3")]).await.unwrap();
        assert_eq!(ids_in(&path), ["a1", "a2", "a3"]);
    }

    #[tokio::test]
    async fn rotates_at_max_bytes_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let line_len = {
            let mut buf = Vec::new();
            encode_lines(&[alert("a00")], &mut buf).unwrap();
            buf.len() as u64
        };
        // Two lines per file.
        let max = NonZeroU64::new(line_len * 2).unwrap();
        let settings = FileSettings::new(path.clone(), max, 3).unwrap();
        let mut sink = FileSink::open(settings).await.unwrap();
        for i in 0..12 {
            sink.send(&[alert(&format!("a{i:02}"))]).await.unwrap();
        }
        assert_eq!(ids_in(&path), ["a10", "a11"]);
        assert_eq!(ids_in(&rotated(&path, 1)), ["a08", "a09"]);
        assert_eq!(ids_in(&rotated(&path, 2)), ["a06", "a07"]);
        assert_eq!(ids_in(&rotated(&path, 3)), ["a04", "a05"]);
        assert!(!rotated(&path, 4).exists());
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "alerts.jsonl",
                "alerts.jsonl.1",
                "alerts.jsonl.2",
                "alerts.jsonl.3"
            ]
        );
    }

    #[tokio::test]
    async fn keep_zero_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let settings = FileSettings::new(path.clone(), NonZeroU64::new(1).unwrap(), 0).unwrap();
        let mut sink = FileSink::open(settings).await.unwrap();
        sink.send(&[alert("a1")]).await.unwrap();
        sink.send(&[alert("a2")]).await.unwrap();
        assert_eq!(ids_in(&path), ["a2"]);
        assert!(!rotated(&path, 1).exists());
    }

    #[tokio::test]
    async fn missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("alerts.jsonl");
        let err = FileSink::open(FileSettings::with_defaults(path).unwrap())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FileOpenError::NoParent { .. }));
        assert!(msg.contains("does not exist; create it"), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
    }

    #[tokio::test]
    async fn file_removed_under_the_sink_is_recreated_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut sink = FileSink::open(FileSettings::with_defaults(path.clone()).unwrap())
            .await
            .unwrap();
        sink.send(&[alert("a1")]).await.unwrap();
        // Simulate a failed write: the next send reopens by path.
        sink.file = None;
        std::fs::remove_file(&path).unwrap();
        sink.send(&[alert("a2")]).await.unwrap();
        assert_eq!(ids_in(&path), ["a2"]);
    }
}
