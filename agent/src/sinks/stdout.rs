//! JSON lines, one alert per line, on standard output (or any writer).

use std::fmt;
use std::io;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::sinks::alert::Alert;
use crate::sinks::sink::{Retry, Sink, encode_lines};

/// Why the stdout sink did not deliver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdoutError {
    #[error("could not encode the alert as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("could not write alerts to standard output")]
    Write(#[source] io::Error),
}

impl Retry for StdoutError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Encode(_) => false,
            // Nobody reads a closed pipe again.
            Self::Write(e) => e.kind() != io::ErrorKind::BrokenPipe,
        }
    }
}

/// Writes JSON lines to a writer, flushing after each batch.
pub struct StdoutSink<W> {
    writer: W,
    buf: Vec<u8>,
}

impl<W> fmt::Debug for StdoutSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdoutSink").finish_non_exhaustive()
    }
}

impl StdoutSink<tokio::io::Stdout> {
    /// The sink on the process's standard output.
    pub fn stdout() -> Self {
        Self::new(tokio::io::stdout())
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> StdoutSink<W> {
    pub fn new(writer: W) -> Self {
        Self {
            writer,
            buf: Vec::new(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> Sink for StdoutSink<W> {
    type Error = StdoutError;

    fn max_batch(&self) -> usize {
        64
    }

    async fn send(&mut self, batch: &[Arc<Alert>]) -> Result<(), StdoutError> {
        self.buf.clear();
        encode_lines(batch, &mut self.buf).map_err(StdoutError::Encode)?;
        self.writer
            .write_all(&self.buf)
            .await
            .map_err(StdoutError::Write)?;
        self.writer.flush().await.map_err(StdoutError::Write)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;
    use crate::sinks::testutil::alert;

    #[tokio::test]
    async fn writes_one_json_line_per_alert_into_a_pipe() {
        let (writer, reader) = tokio::io::duplex(1 << 16);
        let mut sink = StdoutSink::new(writer);
        sink.send(&[alert("a1"), alert("a2")]).await.unwrap();
        sink.send(&[alert("a3")]).await.unwrap();
        drop(sink);
        let mut lines = BufReader::new(reader).lines();
        let mut ids = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let back: Alert = serde_json::from_str(&line).unwrap();
            ids.push(back.id);
        }
        assert_eq!(ids, ["a1", "a2", "a3"]);
    }

    #[tokio::test]
    async fn closed_pipe_is_permanent() {
        let (writer, reader) = tokio::io::duplex(64);
        drop(reader);
        let mut sink = StdoutSink::new(writer);
        let err = sink.send(&[alert("a1")]).await.unwrap_err();
        assert!(!err.is_retryable(), "{err:?}");
    }
}
