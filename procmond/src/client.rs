//! The socket side: one connection to the agent at a time, re-established
//! with backoff whenever it ends.
//!
//! On every connection procmond checks who serves the socket (the peer's
//! uid, SO_PEERCRED), sends its handshake, waits for the agent's, asks the
//! scan thread for a full snapshot, and sends from the write-ahead log: first
//! every batch the agent has not acknowledged, in order, then each new one
//! as the scan thread appends it, numbering envelopes from 1. Acks and
//! credit grants are read concurrently; each ack truncates the log up to
//! the batch it names. While there is no connection the log keeps what the
//! scans produce. From the agent procmond accepts nothing but its
//! handshake, acks and credit grants, each at most [`AGENT_FRAME_MAX`]
//! bytes; anything else closes the connection.
//!
//! Flow control: the agent grants credit in records. procmond never has
//! more records sent and unacknowledged than it was granted, with one
//! exception that keeps it live: when nothing is unacknowledged, one batch
//! larger than the whole credit goes alone. A batch that does not fit stays
//! in the log until acks and grants make room; meanwhile [`Flow`] tells the
//! scan thread to stretch its interval, until the socket side has sent
//! everything in the log and half the credit is free again.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::{SinkExt as _, StreamExt as _};
use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::Stream as LocalSocketStream;
use interprocess::local_socket::tokio::prelude::*;
use sentineld_proto::v1::{Envelope, Handshake, Role, ScanBatch, envelope::Body};
use sentineld_proto::{FrameError, MAX_FRAME_LEN, PROTOCOL_MAJOR, PROTOCOL_MINOR, codec};
use tokio::sync::{Notify, mpsc};
use tokio_util::codec::{Decoder, Encoder, Framed};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::wal::Wal;

/// Longest wait for the agent's handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnection delay; doubles up to [`BACKOFF_MAX`].
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Largest frame accepted from the agent. Its messages (handshake, ack,
/// credit) are a few hundred bytes; procmond, which runs privileged, does
/// not buffer more than this for anything the agent sends.
pub(crate) const AGENT_FRAME_MAX: usize = 64 * 1024;

/// Most log entries read for sending at once: they are held decoded until
/// sent, so this bounds that memory (two chunks of up to 1,000 records; a
/// 10,000-process snapshot read ten at a time was a sixth of procmond's
/// peak RSS). Reading again costs an open and a seek of the segment.
const SEND_SLICE: usize = 2;

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

/// Where the agent is and who may serve it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) socket: PathBuf,
    /// Uids the agent may run as; empty for the default (see
    /// [`allowed_agent_uids`]).
    pub(crate) agent_uids: Vec<u32>,
}

/// The uids procmond talks to: `configured` when given, else its own uid,
/// root, and the owner of the directory that holds the socket (that user
/// decides which socket is there).
fn allowed_agent_uids(configured: &[u32], socket: &Path) -> Vec<u32> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    let mut uids = vec![nix::unistd::geteuid().as_raw(), 0];
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(meta) = std::fs::metadata(dir) {
        uids.push(std::os::unix::fs::MetadataExt::uid(&meta));
    }
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// Whether the agent's credit ran out, shared by the socket side (which
/// knows) and the scan thread (which stretches its interval meanwhile).
/// Both transitions are logged once and counted.
#[derive(Debug)]
pub(crate) struct Flow {
    starved: AtomicBool,
    stalls: AtomicU64,
    resumes: AtomicU64,
    since: Mutex<Option<Instant>>,
    interval: Duration,
    stretched: Duration,
}

impl Flow {
    /// `interval` is the configured scan interval, `stretched` the one used
    /// while the credit is out.
    pub(crate) fn new(interval: Duration, stretched: Duration) -> Flow {
        Flow {
            starved: AtomicBool::new(false),
            stalls: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            since: Mutex::new(None),
            interval,
            stretched,
        }
    }

    /// The scan interval to use now.
    pub(crate) fn interval(&self) -> Duration {
        if self.starved.load(Ordering::Relaxed) {
            self.stretched
        } else {
            self.interval
        }
    }

    /// Times the credit ran out, and times it came back.
    pub(crate) fn transitions(&self) -> (u64, u64) {
        (
            self.stalls.load(Ordering::Relaxed),
            self.resumes.load(Ordering::Relaxed),
        )
    }

    /// A batch waits for credit.
    fn stall(&self, waiting: u64, in_flight: u64, available: u64) {
        if self.starved.swap(true, Ordering::Relaxed) {
            return;
        }
        let stalls = self.stalls.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut since) = self.since.lock() {
            *since = Some(Instant::now());
        }
        warn!(
            backpressure = "engaged",
            stalls,
            waiting_records = waiting,
            in_flight_records = in_flight,
            credit_left = available,
            interval_ms = millis(self.stretched),
            "the agent's credit ran out: scans slowed down until it catches up"
        );
    }

    /// Everything in the log has been sent and the credit has recovered.
    fn caught_up(&self) {
        if !self.starved.swap(false, Ordering::Relaxed) {
            return;
        }
        let resumes = self.resumes.fetch_add(1, Ordering::Relaxed) + 1;
        let stalled_ms = self
            .since
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .map_or(0, |s| millis(s.elapsed()));
        info!(
            backpressure = "released",
            resumes,
            stalled_ms,
            interval_ms = millis(self.interval),
            "the agent caught up: scans back at the configured interval"
        );
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Records a batch counts against the credit.
pub(crate) fn batch_records(batch: &ScanBatch) -> u64 {
    (batch.started.len() + batch.exited.len() + batch.samples.len() + batch.updated.len()) as u64
}

/// The credit of one connection.
#[derive(Debug, Default)]
struct Credit {
    /// Records granted on this connection.
    granted: u64,
    /// Records sent on this connection.
    spent: u64,
    /// The first grant: the agent's whole window.
    window: u64,
}

impl Credit {
    fn grant(&mut self, records: u64) {
        if self.granted == 0 {
            self.window = records;
        }
        self.granted = self.granted.saturating_add(records);
    }

    fn available(&self) -> u64 {
        self.granted.saturating_sub(self.spent)
    }

    /// At least half the window is free again: enough headroom to go back
    /// to the configured interval without stalling at the next scan.
    fn recovered(&self) -> bool {
        self.available() >= self.window.div_ceil(2)
    }

    /// Whether a batch of `need` records may go now. `idle`: nothing is
    /// unacknowledged, so a batch larger than the whole credit goes alone.
    fn allows(&self, need: u64, idle: bool) -> bool {
        need <= self.available() || (idle && self.granted > 0)
    }
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
    #[error(
        "the socket {path} is served by uid {uid}, not an allowed agent uid {allowed:?}: pass --agent-uid {uid} if that is the agent"
    )]
    PeerUid {
        path: PathBuf,
        uid: u32,
        allowed: Vec<u32>,
    },
    #[error("cannot read the credentials of the peer on {path}: {reason}")]
    PeerUnknown { path: PathBuf, reason: String },
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
    #[error("the agent acknowledged sequence {acked}, but only {sent} was sent")]
    AckAhead { acked: u64, sent: u64 },
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
            SessionError::Version { .. }
                | SessionError::NotTheAgent(_)
                | SessionError::PeerUid { .. }
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

/// The frame codec with procmond's limits: batches out up to
/// [`MAX_FRAME_LEN`], agent messages in up to [`AGENT_FRAME_MAX`].
#[derive(Debug, Clone, Copy, Default)]
struct AgentCodec;

impl Decoder for AgentCodec {
    type Item = Envelope;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, FrameError> {
        codec::decode(src, AGENT_FRAME_MAX)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, FrameError> {
        match codec::decode(src, AGENT_FRAME_MAX)? {
            Some(envelope) => Ok(Some(envelope)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                have: src.len(),
                need: codec::check_header(src, AGENT_FRAME_MAX)?
                    .map_or(codec::HEADER_LEN, |h| codec::HEADER_LEN + h.len),
            }),
        }
    }
}

impl Encoder<Envelope> for AgentCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Envelope, dst: &mut BytesMut) -> Result<(), FrameError> {
        codec::encode(&item, dst, MAX_FRAME_LEN)
    }
}

type Conn = Framed<LocalSocketStream, AgentCodec>;

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
    link: &Link,
    me: &Identity,
    wal: &Mutex<Wal>,
    flow: &Flow,
    rx: &mut mpsc::Receiver<()>,
    control: &SyncSender<Control>,
    cancel: &CancellationToken,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut failures: u64 = 0;
    let mut last_error = String::new();
    loop {
        let mut connected = false;
        let ends = Ends {
            me,
            wal,
            flow,
            control,
            cancel,
        };
        match session(link, &ends, rx, &mut backoff, &mut connected).await {
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

/// What a session borrows from [`run`].
struct Ends<'a> {
    me: &'a Identity,
    wal: &'a Mutex<Wal>,
    flow: &'a Flow,
    control: &'a SyncSender<Control>,
    cancel: &'a CancellationToken,
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

/// Connects and checks that the peer runs as an allowed agent uid.
async fn connect(link: &Link) -> Result<LocalSocketStream, SessionError> {
    let socket = link.socket.as_path();
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .map_err(|source| SessionError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let stream =
        LocalSocketStream::connect(name)
            .await
            .map_err(|source| SessionError::Connect {
                path: socket.to_path_buf(),
                source,
            })?;
    let uid = stream
        .peer_creds()
        .map_err(|e| SessionError::PeerUnknown {
            path: socket.to_path_buf(),
            reason: e.to_string(),
        })?
        .euid()
        .ok_or_else(|| SessionError::PeerUnknown {
            path: socket.to_path_buf(),
            reason: "no uid".to_owned(),
        })?;
    let allowed = allowed_agent_uids(&link.agent_uids, socket);
    if !allowed.contains(&uid) {
        return Err(SessionError::PeerUid {
            path: socket.to_path_buf(),
            uid,
            allowed,
        });
    }
    Ok(stream)
}

/// One connection, from connect to its end.
async fn session(
    link: &Link,
    ends: &Ends<'_>,
    rx: &mut mpsc::Receiver<()>,
    backoff: &mut Backoff,
    connected: &mut bool,
) -> Result<Ended, SessionError> {
    let Ends {
        me,
        wal,
        flow,
        control,
        cancel,
    } = *ends;
    let stream = tokio::select! {
        () = cancel.cancelled() => return Ok(Ended::Cancelled),
        s = connect(link) => s?,
    };
    let mut framed: Conn = Framed::new(stream, AgentCodec);
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
    framed.send(envelope(1, Body::Handshake(hello))).await?;

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
        socket = %link.socket.display(),
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
    // The last envelope sequence sent (the handshake is 1).
    let sent_seq = Cell::new(1u64);
    // (envelope sequence, log id, records) of each batch sent and not yet
    // acked.
    let inflight: RefCell<VecDeque<(u64, u64, u64)>> = RefCell::new(VecDeque::new());
    let credit = RefCell::new(Credit::default());
    // Wakes the writer when an ack or a grant may let a batch go.
    let room = Notify::new();
    // The writer has sent everything in the log.
    let drained = Cell::new(false);
    // Backpressure lets go once the log is drained and half the window is
    // free again (not at the first free record, which would flap at every
    // scan while the agent is just behind).
    let maybe_release = || {
        if drained.get() && credit.borrow().recovered() {
            flow.caught_up();
        }
    };
    let reader = async {
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
                    if ack.sequence > sent_seq.get() {
                        return Err(SessionError::AckAhead {
                            acked: ack.sequence,
                            sent: sent_seq.get(),
                        });
                    }
                    acked = acked.max(ack.sequence);
                    let mut through = None;
                    {
                        let mut inflight = inflight.borrow_mut();
                        while inflight.front().is_some_and(|&(seq, _, _)| seq <= acked) {
                            through = inflight.pop_front().map(|(_, id, _)| id);
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
                    room.notify_one();
                    debug!(acked, log_id = ?through, "ack from the agent");
                }
                Some(Body::Credit(grant)) => {
                    let available = {
                        let mut credit = credit.borrow_mut();
                        credit.grant(grant.records);
                        credit.available()
                    };
                    room.notify_one();
                    maybe_release();
                    debug!(granted = grant.records, available, "credit from the agent");
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
        let mut queue: VecDeque<(u64, ScanBatch)> = VecDeque::new();
        // The log's backlog version when `queue` was read.
        let mut read_version = 0;
        loop {
            if queue.is_empty() {
                queue = match wal.lock() {
                    Ok(wal) => {
                        read_version = wal.backlog_version();
                        wal.read_after(sent_through, SEND_SLICE)
                            .map_err(|e| SessionError::Wal(e.to_string()))?
                            .into()
                    }
                    Err(_) => return Err(SessionError::Wal("unusable after a panic".to_owned())),
                };
                if queue.is_empty() {
                    drained.set(true);
                    maybe_release();
                    if rx.recv().await.is_none() {
                        return Ok(Ended::ScannerGone);
                    }
                    continue;
                }
            }
            let need = queue.front().map_or(0, |(_, batch)| batch_records(batch));
            let idle = inflight.borrow().is_empty();
            if !credit.borrow().allows(need, idle) {
                sink.flush().await?;
                let granted = credit.borrow().granted;
                if granted > 0 {
                    let in_flight = inflight.borrow().iter().map(|&(_, _, n)| n).sum();
                    flow.stall(need, in_flight, credit.borrow().available());
                }
                // The batches stay in the log and in the queue; the queue is
                // read again only if coalescing rewrote the log meanwhile
                // (decoding a scan's batches again at every ack would cost
                // more than the sending).
                room.notified().await;
                let rewritten = wal
                    .lock()
                    .map_or(true, |wal| wal.backlog_version() != read_version);
                if rewritten {
                    queue.clear();
                }
                continue;
            }
            let Some((id, batch)) = queue.pop_front() else {
                continue;
            };
            drained.set(false);
            let sequence = sent_seq.get() + 1;
            sink.feed(envelope(sequence, Body::ScanBatch(batch)))
                .await?;
            sent_seq.set(sequence);
            credit.borrow_mut().spent += need;
            inflight.borrow_mut().push_back((sequence, id, need));
            sent_through = id;
            if queue.is_empty() {
                sink.flush().await?;
                debug!(sent_through, sequence, "batches sent");
            }
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
    fn credit_bounds_what_is_in_flight() {
        let mut c = Credit::default();
        // Nothing granted yet: nothing goes, not even alone.
        assert!(!c.allows(1, true));
        c.grant(1000);
        assert_eq!(c.window, 1000);
        assert!(c.allows(1000, false));
        c.spent = 600;
        assert_eq!(c.available(), 400);
        assert!(c.allows(400, false));
        assert!(!c.allows(401, false));
        // A batch larger than the whole credit goes only when nothing is
        // unacknowledged.
        c.spent = 0;
        assert!(!c.allows(1500, false));
        assert!(c.allows(1500, true));
        c.spent = 1500;
        assert_eq!(c.available(), 0);
        assert!(!c.recovered());
        // Its grant back restores the credit exactly.
        c.grant(1500);
        assert_eq!(c.available(), 1000);
        assert_eq!(c.window, 1000);
        assert!(c.recovered());
        c.spent += 501;
        assert!(!c.recovered(), "less than half the window free");
    }

    #[test]
    fn flow_transitions_are_counted_once_each() {
        let flow = Flow::new(Duration::from_millis(100), Duration::from_millis(500));
        assert_eq!(flow.interval(), Duration::from_millis(100));
        flow.caught_up();
        assert_eq!(flow.transitions(), (0, 0));
        flow.stall(10, 990, 0);
        flow.stall(10, 990, 0);
        assert_eq!(flow.interval(), Duration::from_millis(500));
        assert_eq!(flow.transitions(), (1, 0));
        flow.caught_up();
        flow.caught_up();
        assert_eq!(flow.interval(), Duration::from_millis(100));
        assert_eq!(flow.transitions(), (1, 1));
    }

    #[test]
    fn agent_uids_default_to_self_root_and_the_socket_dir_owner() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("agent.sock");
        let own = nix::unistd::geteuid().as_raw();
        let uids = allowed_agent_uids(&[], &socket);
        assert!(uids.contains(&own) && uids.contains(&0), "{uids:?}");
        let dir_owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(dir.path()).expect("stat the temp dir"),
        );
        assert!(uids.contains(&dir_owner), "{uids:?}");
        assert_eq!(allowed_agent_uids(&[4242], &socket), vec![4242]);
    }

    #[test]
    fn agent_frames_are_small() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&((AGENT_FRAME_MAX as u32) + 1).to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            AgentCodec.decode(&mut buf),
            Err(FrameError::TooLong { .. })
        ));
        let ack = envelope(2, Body::Ack(sentineld_proto::v1::Ack { sequence: 1 }));
        let mut out = BytesMut::new();
        AgentCodec.encode(ack.clone(), &mut out).expect("encode");
        assert_eq!(AgentCodec.decode(&mut out).expect("decode"), Some(ack));
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
