//! The socket side: one connection to the agent at a time, re-established
//! with backoff whenever it ends.
//!
//! On every connection procmond sends its handshake, waits for the agent's,
//! asks the scan thread for a full snapshot, and sends from the write-ahead
//! log: first every batch the agent has not acknowledged, in order, then each
//! new one as the scan thread appends it, numbering envelopes from 1. Acks
//! are read concurrently; each one truncates the log up to the batch it
//! names. While there is no connection the log keeps what the scans produce.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::Stream as LocalSocketStream;
use interprocess::local_socket::tokio::prelude::*;
use sentineld_proto::v1::{Envelope, Handshake, Role, envelope::Body};
use sentineld_proto::{FrameCodec, FrameError, PROTOCOL_MAJOR, PROTOCOL_MINOR};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::wal::Wal;

/// Longest wait for the agent's handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnection delay; doubles up to [`BACKOFF_MAX`].
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Most log entries read for sending at once.
const SEND_SLICE: usize = 64;

/// What the socket side asks of the scan thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// A new connection needs a full snapshot: scan now and send one.
    Snapshot,
}

/// Who we are, for the handshake.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) boot_id: [u8; 16],
    pub(crate) hostname: String,
    pub(crate) pid: u32,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(
        "cannot connect to the agent at {path}: {source} (is sentinelagent running? --socket or --state-dir must match its own)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent closed the connection")]
    Closed,
    #[error("no handshake from the agent within {0:?}")]
    HandshakeTimeout(Duration),
    #[error(
        "the agent speaks protocol version {theirs}, this procmond speaks {PROTOCOL_MAJOR}: install matching versions of procmond and sentinelagent"
    )]
    Version { theirs: u32 },
    #[error("expected the agent's handshake, got {0}")]
    NotAHandshake(&'static str),
    #[error("the peer says it is {0:?}, expected the agent")]
    NotTheAgent(Role),
    #[error("unexpected {0} from the agent")]
    Unexpected(&'static str),
    #[error("agent sequence {got} repeats or goes back (last {last})")]
    SequenceRepeat { got: u64, last: u64 },
    #[error("cannot read the write-ahead log: {0}")]
    Wal(String),
    #[error("frame error on the agent connection ({reason}): {source}", reason = .source.reason())]
    Frame {
        #[from]
        source: FrameError,
    },
}

impl SessionError {
    /// Errors that retrying alone will not fix.
    fn is_misconfiguration(&self) -> bool {
        matches!(
            self,
            SessionError::Version { .. } | SessionError::NotTheAgent(_)
        )
    }
}

/// How a connection ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Cancelled,
    /// The scan thread is gone (it stops only on shutdown).
    ScannerGone,
}

type Conn = Framed<LocalSocketStream, FrameCodec>;

/// Exponential backoff with jitter: each delay is drawn from the upper half
/// of the current step.
#[derive(Debug)]
pub(crate) struct Backoff {
    step: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            step: min,
            min,
            max,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.step = self.min;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(random_u64() % nanos)
    }
}

fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5e47_1e1d);
    h.finish()
}

/// Runs until `cancel` fires or the scan thread goes away, reconnecting
/// whenever a connection ends.
pub(crate) async fn run(
    socket: &Path,
    me: &Identity,
    wal: &Mutex<Wal>,
    rx: &mut mpsc::Receiver<()>,
    control: &SyncSender<Control>,
    cancel: &CancellationToken,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut failures: u64 = 0;
    let mut last_error = String::new();
    loop {
        let mut connected = false;
        match session(
            socket,
            me,
            wal,
            rx,
            control,
            cancel,
            &mut backoff,
            &mut connected,
        )
        .await
        {
            Ok(Ended::Cancelled | Ended::ScannerGone) => return,
            Err(e) => {
                if connected {
                    failures = 0;
                    last_error.clear();
                }
                failures += 1;
                // A new error, and then every 60th repeat, is worth a
                // warning; the rest would say the same while the agent is
                // away.
                let message = e.to_string();
                if message != last_error || failures.is_multiple_of(60) {
                    if e.is_misconfiguration() {
                        error!(error = %e, failures, "the agent refused; retrying");
                    } else {
                        warn!(error = %e, failures, "no connection to the agent; retrying");
                    }
                } else {
                    debug!(error = %e, failures, "no connection to the agent; retrying");
                }
                last_error = message;
            }
        }
        let delay = backoff.next_delay();
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = &mut sleep => break,
                nudge = rx.recv() => match nudge {
                    // The scan is in the log; the next connection sends it.
                    Some(()) => debug!("no agent connection: scan kept in the log"),
                    None => return,
                },
            }
        }
    }
}

fn envelope(sequence: u64, body: Body) -> Envelope {
    Envelope {
        version: PROTOCOL_MAJOR,
        sequence,
        body: Some(body),
    }
}

fn body_name(body: Option<&Body>) -> &'static str {
    match body {
        Some(Body::Handshake(_)) => "a handshake",
        Some(Body::ScanBatch(_)) => "a scan batch",
        Some(Body::Ack(_)) => "an ack",
        Some(Body::Credit(_)) => "a credit grant",
        None => "an empty envelope",
    }
}

async fn connect(socket: &Path) -> Result<LocalSocketStream, SessionError> {
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .map_err(|source| SessionError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    LocalSocketStream::connect(name)
        .await
        .map_err(|source| SessionError::Connect {
            path: socket.to_path_buf(),
            source,
        })
}

/// One connection, from connect to its end.
#[allow(
    clippy::too_many_arguments,
    reason = "the connection's ends, each borrowed from run's loop"
)]
async fn session(
    socket: &Path,
    me: &Identity,
    wal: &Mutex<Wal>,
    rx: &mut mpsc::Receiver<()>,
    control: &SyncSender<Control>,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
    connected: &mut bool,
) -> Result<Ended, SessionError> {
    let stream = tokio::select! {
        () = cancel.cancelled() => return Ok(Ended::Cancelled),
        s = connect(socket) => s?,
    };
    let mut framed: Conn = Framed::new(stream, FrameCodec::default());
    let mut sequence: u64 = 1;
    let hello = Handshake {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        role: Role::Collector.into(),
        software_version: sentineld_common::VERSION.to_owned(),
        capabilities: Vec::new(),
        boot_id: me.boot_id.to_vec(),
        hostname: me.hostname.clone(),
        pid: me.pid,
    };
    framed
        .send(envelope(sequence, Body::Handshake(hello)))
        .await?;

    let reply = tokio::select! {
        () = cancel.cancelled() => return Ok(Ended::Cancelled),
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next()) => r,
    };
    let reply = match reply {
        Err(_) => return Err(SessionError::HandshakeTimeout(HANDSHAKE_TIMEOUT)),
        Ok(None) => return Err(SessionError::Closed),
        Ok(Some(frame)) => frame?,
    };
    let agent = check_handshake(&reply)?;
    info!(
        socket = %socket.display(),
        agent_pid = agent.pid,
        agent_version = %agent.software_version,
        "connected to the agent"
    );
    backoff.reset();
    *connected = true;
    match control.try_send(Control::Snapshot) {
        // Full: a snapshot request is already waiting.
        Ok(()) | Err(TrySendError::Full(_)) => {}
        Err(TrySendError::Disconnected(_)) => return Ok(Ended::ScannerGone),
    }

    let (mut sink, mut stream) = framed.split();
    let mut last_in = reply.sequence;
    // (envelope sequence, log id) of each batch sent and not yet acked.
    let inflight: RefCell<VecDeque<(u64, u64)>> = RefCell::new(VecDeque::new());
    let reader = async {
        let mut credits: u64 = 0;
        let mut acked: u64 = 0;
        loop {
            let env = match stream.next().await {
                None => return Err(SessionError::Closed),
                Some(frame) => frame?,
            };
            if env.version != PROTOCOL_MAJOR {
                return Err(SessionError::Version {
                    theirs: env.version,
                });
            }
            if env.sequence <= last_in {
                return Err(SessionError::SequenceRepeat {
                    got: env.sequence,
                    last: last_in,
                });
            }
            if env.sequence != last_in + 1 {
                warn!(
                    expected = last_in + 1,
                    got = env.sequence,
                    "sequence gap from the agent"
                );
            }
            last_in = env.sequence;
            match env.body {
                Some(Body::Ack(ack)) => {
                    acked = acked.max(ack.sequence);
                    let mut through = None;
                    {
                        let mut inflight = inflight.borrow_mut();
                        while inflight.front().is_some_and(|&(seq, _)| seq <= acked) {
                            through = inflight.pop_front().map(|(_, id)| id);
                        }
                    }
                    if let Some(id) = through {
                        match wal.lock() {
                            Ok(mut wal) => {
                                if let Err(e) = wal.ack(id) {
                                    warn!(error = %e, "cannot truncate the write-ahead log");
                                }
                            }
                            Err(_) => warn!("the write-ahead log is unusable after a panic"),
                        }
                    }
                    debug!(acked, log_id = ?through, "ack from the agent");
                }
                Some(Body::Credit(grant)) => {
                    // Remembered for flow control; procmond does not
                    // throttle on it yet.
                    credits = credits.saturating_add(grant.records);
                    debug!(granted = grant.records, credits, "credit from the agent");
                }
                other => return Err(SessionError::Unexpected(body_name(other.as_ref()))),
            }
        }
    };
    let writer = async {
        // Everything the agent has not acknowledged, then what follows.
        let mut sent_through = match wal.lock() {
            Ok(wal) => wal.acked_through(),
            Err(_) => return Err(SessionError::Wal("unusable after a panic".to_owned())),
        };
        loop {
            let slice = match wal.lock() {
                Ok(wal) => wal
                    .read_after(sent_through, SEND_SLICE)
                    .map_err(|e| SessionError::Wal(e.to_string()))?,
                Err(_) => return Err(SessionError::Wal("unusable after a panic".to_owned())),
            };
            if slice.is_empty() {
                if rx.recv().await.is_none() {
                    return Ok(Ended::ScannerGone);
                }
                continue;
            }
            for (id, batch) in slice {
                sequence += 1;
                sink.feed(envelope(sequence, Body::ScanBatch(batch)))
                    .await?;
                inflight.borrow_mut().push_back((sequence, id));
                sent_through = id;
            }
            sink.flush().await?;
            debug!(sent_through, sequence, "batches sent");
        }
    };
    tokio::select! {
        () = cancel.cancelled() => Ok(Ended::Cancelled),
        r = reader => r,
        w = writer => w,
    }
}

fn check_handshake(reply: &Envelope) -> Result<&Handshake, SessionError> {
    if reply.version != PROTOCOL_MAJOR {
        return Err(SessionError::Version {
            theirs: reply.version,
        });
    }
    let Some(Body::Handshake(agent)) = &reply.body else {
        return Err(SessionError::NotAHandshake(body_name(reply.body.as_ref())));
    };
    if agent.protocol_major != PROTOCOL_MAJOR {
        return Err(SessionError::Version {
            theirs: agent.protocol_major,
        });
    }
    if agent.role() != Role::Agent {
        return Err(SessionError::NotTheAgent(agent.role()));
    }
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let steps: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        let mut step = Duration::from_millis(100);
        for d in &steps {
            assert!(
                *d >= step / 2 && *d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(Duration::from_secs(5));
        }
        assert!(steps[9] >= Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn handshake_checks() {
        let agent = |major: u32, role: Role| {
            envelope(
                1,
                Body::Handshake(Handshake {
                    protocol_major: major,
                    role: role.into(),
                    ..Handshake::default()
                }),
            )
        };
        assert!(check_handshake(&agent(PROTOCOL_MAJOR, Role::Agent)).is_ok());
        let err = check_handshake(&agent(PROTOCOL_MAJOR + 1, Role::Agent)).expect_err("refused");
        assert!(matches!(err, SessionError::Version { theirs } if theirs == PROTOCOL_MAJOR + 1));
        assert!(
            err.to_string().contains("install matching versions"),
            "{err}"
        );
        assert!(matches!(
            check_handshake(&agent(PROTOCOL_MAJOR, Role::Collector)),
            Err(SessionError::NotTheAgent(Role::Collector))
        ));
        let ack = envelope(1, Body::Ack(sentineld_proto::v1::Ack { sequence: 1 }));
        assert!(matches!(
            check_handshake(&ack),
            Err(SessionError::NotAHandshake("an ack"))
        ));
    }
}
