//! The collector socket: accepts connections, checks every frame, hands
//! batches to the storage thread and acknowledges them once committed.
//!
//! A connection is first checked by its peer's credentials (SO_PEERCRED):
//! only the allowed collector uids get further. Connections are bounded;
//! one over the bound is closed at once. A peer that does not complete its
//! handshake in time, sends a bad frame or breaks the protocol is counted
//! by reason, logged once with its credentials, and disconnected. Nothing a
//! peer sends can make the agent panic or grow without bound: frame lengths
//! are checked before allocation, and a connection stops reading while it
//! has [`MAX_IN_FLIGHT`] batches (or [`MAX_IN_FLIGHT_BYTES`]) waiting for
//! the storage thread.
//!
//! Batches are pipelined: the next frame is read while the last is being
//! stored, so batches queued together are stored in one transaction (see
//! `ingest`), and acknowledged in order as they are committed.
//!
//! A batch that cannot be stored is never acknowledged, and its connection
//! is closed at once: acknowledgements are cumulative, so acknowledging a
//! later batch on the same connection would acknowledge the lost one too.
//! The collector reconnects and sends it again from its write-ahead log.
//!
//! Flow control: the agent grants the collector a credit of records it may
//! send beyond those acknowledged (`--max-pending-records`), and gives back
//! each batch's records with its ack.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::prelude::*;
use sentineld_proto::v1::{Ack, CreditGrant, Envelope, Handshake, Role, envelope::Body};
use sentineld_proto::{FrameCodec, FrameError, PROTOCOL_MAJOR, PROTOCOL_MINOR};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::ingest::{ConnectionFailure, IngestClosed, IngestHandle, Stored};
use crate::stats::{AgentStats, RejectReason};

/// Default credit: records the collector may have in flight beyond those
/// acknowledged.
pub const DEFAULT_PENDING_RECORDS: u64 = 1_000;

/// A connection reads no further frame while it has this many batches with
/// the storage thread, unacknowledged, or this many encoded bytes of them
/// (the check comes before a read, so with one maximum-size frame it can
/// hold up to twice that). The collector's credit keeps it well within
/// these; they bound what a collector that ignores its credit can make
/// the agent hold.
const MAX_IN_FLIGHT: usize = 16;
const MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// Rejections of one reason logged as warnings per [`LOG_WINDOW`]; the
/// rest are logged at debug level (and all are counted), so a peer that
/// reconnects in a loop cannot flood the journal.
const LOG_BURST: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(60);

pub(crate) struct ServerContext {
    pub(crate) ingest: IngestHandle,
    pub(crate) stats: Arc<AgentStats>,
    pub(crate) handshake_timeout: Duration,
    /// Uids allowed to connect as the collector; never empty.
    pub(crate) collector_uids: Vec<u32>,
    /// The credit granted on every connection (records).
    pub(crate) pending_records: u64,
    pub(crate) reject_log: RejectLog,
}

/// Who is on the other end of a connection, for logs and the uid check.
#[derive(Debug, Clone, Copy, Default)]
struct Peer {
    pid: Option<u32>,
    uid: Option<u32>,
}

impl Peer {
    fn of(stream: &LocalSocketStream) -> Peer {
        match stream.peer_creds() {
            Ok(creds) => Peer {
                pid: creds.pid().and_then(|p| u32::try_from(p).ok()),
                uid: creds.euid(),
            },
            Err(_) => Peer::default(),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, self.uid) {
            (Some(pid), Some(uid)) => write!(f, "pid {pid} uid {uid}"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            (None, Some(uid)) => write!(f, "uid {uid}"),
            (None, None) => f.write_str("unknown peer"),
        }
    }
}

/// The default collector uids: the agent's own, and root (procmond's
/// usual user; root can reach the agent's socket anyway).
pub fn default_collector_uids() -> Vec<u32> {
    let own = nix::unistd::geteuid().as_raw();
    if own == 0 { vec![0] } else { vec![own, 0] }
}

/// Why a connection was closed by the agent.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{reason_text}", reason_text = .1)]
    Protocol(RejectReason, String),
    #[error("storage failed: {0}")]
    Store(String),
}

impl Rejection {
    fn reason(&self) -> Option<RejectReason> {
        match self {
            Rejection::Frame(e) => Some(match e {
                FrameError::TooLong { .. } => RejectReason::Oversize,
                FrameError::BadChecksum { .. } => RejectReason::BadCrc,
                FrameError::Decode(_) => RejectReason::Undecodable,
                FrameError::Truncated { .. } => RejectReason::Truncated,
                _ => RejectReason::Io,
            }),
            Rejection::Protocol(reason, _) => Some(*reason),
            Rejection::Store(_) => None,
        }
    }
}

/// Bounds the warnings logged per rejection reason (see [`LOG_BURST`]).
#[derive(Debug, Default)]
pub(crate) struct RejectLog {
    windows: Mutex<[(Option<Instant>, u32, u64); RejectReason::ALL.len()]>,
}

impl RejectLog {
    /// Whether this rejection is logged as a warning, and how many of its
    /// reason were logged at debug level only since the last warning.
    fn admit(&self, reason: RejectReason) -> (bool, u64) {
        let Ok(mut windows) = self.windows.lock() else {
            return (true, 0);
        };
        let (start, logged, quiet) = &mut windows[reason.index()];
        let now = Instant::now();
        if start.is_none_or(|s| now.duration_since(s) >= LOG_WINDOW) {
            *start = Some(now);
            *logged = 0;
        }
        if *logged < LOG_BURST {
            *logged += 1;
            (true, std::mem::take(quiet))
        } else {
            *quiet += 1;
            (false, 0)
        }
    }
}

impl ServerContext {
    /// Counts a rejection and logs it (a warning, within the log bound).
    fn rejected(&self, peer: Peer, reason: RejectReason, error: &dyn fmt::Display) {
        self.stats.reject(reason);
        let (warn, quiet) = self.reject_log.admit(reason);
        if warn {
            if quiet > 0 {
                warn!(%peer, reason = reason.as_str(), error = %error, not_logged_before = quiet, "collector connection refused or closed");
            } else {
                warn!(%peer, reason = reason.as_str(), error = %error, "collector connection refused or closed");
            }
        } else {
            debug!(%peer, reason = reason.as_str(), error = %error, "collector connection refused or closed");
        }
    }

    /// Refuses a peer whose uid is not an allowed collector uid.
    fn check_peer(&self, peer: Peer) -> Result<(), String> {
        match peer.uid {
            Some(uid) if self.collector_uids.contains(&uid) => Ok(()),
            Some(uid) => Err(format!(
                "peer uid {uid} is not an allowed collector uid {:?} (run procmond as one of them, or pass --collector-uid {uid})",
                self.collector_uids
            )),
            None => Err("the peer's credentials cannot be read".to_owned()),
        }
    }
}

/// Accepts connections until `shutdown`, then waits for the open ones to
/// finish the batch they are storing.
///
/// A peer with a uid not allowed, or beyond `max_connections`, is counted,
/// logged and closed at once, so it holds no slot.
pub(crate) async fn serve(
    listener: LocalSocketListener,
    ctx: Arc<ServerContext>,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    let tasks = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let stream = match stream {
            Ok(stream) => {
                backoff = Duration::from_millis(10);
                stream
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(error = %e, "cannot accept a collector connection");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let peer = Peer::of(&stream);
        if let Err(why) = ctx.check_peer(peer) {
            ctx.rejected(peer, RejectReason::PeerUid, &why);
            continue;
        }
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            ctx.rejected(
                peer,
                RejectReason::TooManyConnections,
                &format_args!("{max_connections} connections are open already (--max-connections)"),
            );
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            handle(stream, peer, &ctx, &shutdown).await;
            drop(permit);
        });
    }
    // A batch still waiting for disk space would hold its connection, and
    // the shutdown, until space returns: it is left to the collector's log.
    ctx.ingest.stop_waiting_for_space();
    tasks.close();
    tasks.wait().await;
}

async fn handle(
    stream: LocalSocketStream,
    peer: Peer,
    ctx: &ServerContext,
    shutdown: &CancellationToken,
) {
    debug!(%peer, "collector connection accepted");
    let mut framed = Framed::new(stream, FrameCodec::default());
    let mut session = Session {
        peer,
        handshaken: false,
        gaps: 0,
    };
    let result = connection(&mut framed, ctx, &mut session, shutdown).await;
    if session.handshaken {
        ctx.stats
            .collector_connected
            .store(false, Ordering::Relaxed);
    }
    match result {
        Ok(()) if session.handshaken => info!(%peer, "collector disconnected"),
        Ok(()) => debug!(%peer, "connection closed before a handshake"),
        Err(rejection) => match rejection.reason() {
            Some(reason) => ctx.rejected(peer, reason, &rejection),
            // The storage thread logs the store's failures when they start;
            // the collector reconnects and sends the batch again.
            None => {
                debug!(%peer, error = %rejection, "collector connection closed: a batch was not stored")
            }
        },
    }
}

/// What one connection has done so far.
#[derive(Debug)]
struct Session {
    peer: Peer,
    /// The collector's handshake was accepted.
    handshaken: bool,
    /// Sequence gaps seen (each counted; only the first is a warning).
    gaps: u64,
}

type Conn = Framed<LocalSocketStream, FrameCodec>;

/// Numbers the agent's own envelopes on one connection.
struct Outgoing {
    sequence: u64,
}

impl Outgoing {
    async fn send(&mut self, framed: &mut Conn, body: Body) -> Result<(), Rejection> {
        self.sequence += 1;
        let envelope = Envelope {
            version: PROTOCOL_MAJOR,
            sequence: self.sequence,
            body: Some(body),
        };
        framed.send(&envelope).await?;
        Ok(())
    }
}

async fn connection(
    framed: &mut Conn,
    ctx: &ServerContext,
    session: &mut Session,
    shutdown: &CancellationToken,
) -> Result<(), Rejection> {
    let peer = session.peer;
    let first = match tokio::time::timeout(ctx.handshake_timeout, framed.next()).await {
        Err(_) => {
            return Err(Rejection::Protocol(
                RejectReason::HandshakeTimeout,
                format!("no handshake within {:?}", ctx.handshake_timeout),
            ));
        }
        Ok(None) => return Ok(()),
        Ok(Some(frame)) => frame?,
    };
    let mut last_seq = first.sequence;
    let hello = check_handshake(first)?;
    let boot_id: [u8; 16] = hello.boot_id.as_slice().try_into().map_err(|_| {
        Rejection::Protocol(
            RejectReason::BadHandshake,
            format!(
                "handshake boot id has {} bytes, expected 16",
                hello.boot_id.len()
            ),
        )
    })?;
    info!(
        %peer,
        collector_pid = hello.pid,
        version = %hello.software_version,
        hostname = %hello.hostname,
        "collector connected"
    );

    let mut out = Outgoing { sequence: 0 };
    out.send(framed, Body::Handshake(agent_handshake())).await?;
    out.send(
        framed,
        Body::Credit(CreditGrant {
            records: ctx.pending_records,
        }),
    )
    .await?;
    session.handshaken = true;
    ctx.stats.collector_connected.store(true, Ordering::Relaxed);

    // Batches handed to the storage thread and not acknowledged yet, in
    // sequence order, and their encoded size.
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut in_flight_bytes = 0_usize;
    let failure = ConnectionFailure::default();
    loop {
        let room = in_flight.is_empty()
            || (in_flight.len() < MAX_IN_FLIGHT && in_flight_bytes < MAX_IN_FLIGHT_BYTES);
        let envelope = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                // Stop reading; acknowledge what is being stored. procmond
                // may be stopping too: a closed socket ends this quietly.
                while !in_flight.is_empty() {
                    let first = oldest_outcome(&mut in_flight).await;
                    if acknowledge(framed, &mut out, &mut in_flight, &mut in_flight_bytes, first)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                return Ok(());
            }
            first = oldest_outcome(&mut in_flight), if !in_flight.is_empty() => {
                acknowledge(framed, &mut out, &mut in_flight, &mut in_flight_bytes, first).await?;
                continue;
            }
            next = framed.next(), if room => match next {
                None => {
                    // The collector closed its end; what it sent is stored
                    // either way.
                    return Ok(());
                }
                Some(frame) => frame?,
            },
        };
        check_version(&envelope)?;
        if envelope.sequence <= last_seq {
            return Err(Rejection::Protocol(
                RejectReason::SequenceRepeat,
                format!(
                    "sequence {} repeats or goes back (last {last_seq})",
                    envelope.sequence
                ),
            ));
        }
        if envelope.sequence != last_seq + 1 {
            // Counted every time, a warning once per connection.
            ctx.stats.reject(RejectReason::SequenceGap);
            session.gaps += 1;
            if session.gaps == 1 {
                warn!(%peer, reason = RejectReason::SequenceGap.as_str(), expected = last_seq + 1, got = envelope.sequence, "sequence gap from collector");
            } else {
                debug!(%peer, gaps = session.gaps, expected = last_seq + 1, got = envelope.sequence, "sequence gap from collector");
            }
        }
        last_seq = envelope.sequence;
        match envelope.body {
            Some(Body::ScanBatch(batch)) => {
                let bytes = prost::Message::encoded_len(&batch);
                let reply = ctx
                    .ingest
                    .submit(boot_id, batch, &failure)
                    .await
                    .map_err(|e| Rejection::Store(e.to_string()))?;
                in_flight_bytes += bytes;
                in_flight.push_back(InFlight {
                    sequence: envelope.sequence,
                    bytes,
                    reply,
                });
            }
            other => {
                return Err(Rejection::Protocol(
                    RejectReason::UnexpectedMessage,
                    format!("unexpected {} from a collector", body_name(other.as_ref())),
                ));
            }
        }
    }
}

/// A batch the storage thread has, waiting to be acknowledged.
struct InFlight {
    sequence: u64,
    bytes: usize,
    reply: oneshot::Receiver<Stored>,
}

/// The outcome of the oldest batch in flight, once it has one (the caller
/// checks there is a batch).
async fn oldest_outcome(in_flight: &mut VecDeque<InFlight>) -> Option<Stored> {
    match in_flight.front_mut() {
        Some(first) => (&mut first.reply).await.ok(),
        None => None,
    }
}

/// Acknowledges the oldest batch, whose outcome is `first` (`None`: the
/// storage thread is gone), and every later one whose outcome is there
/// already, with one ack (acks are cumulative) and one credit grant. A
/// batch that was not stored ends the connection: what came before it is
/// acknowledged, nothing after it.
async fn acknowledge(
    framed: &mut Conn,
    out: &mut Outgoing,
    in_flight: &mut VecDeque<InFlight>,
    in_flight_bytes: &mut usize,
    first: Option<Stored>,
) -> Result<(), Rejection> {
    let mut outcome = first;
    let mut acked: Option<u64> = None;
    let mut records = 0_u64;
    let mut failure = None;
    while let Some(oldest) = in_flight.pop_front() {
        let stored = match outcome.take() {
            Some(Ok(stored)) => stored,
            Some(Err(e)) => {
                failure = Some(Rejection::Store(e.to_string()));
                break;
            }
            None => {
                failure = Some(Rejection::Store(IngestClosed.to_string()));
                break;
            }
        };
        acked = Some(oldest.sequence);
        records += stored.records;
        *in_flight_bytes -= oldest.bytes;
        match in_flight.front_mut().map(|next| next.reply.try_recv()) {
            Some(Ok(next)) => outcome = Some(next),
            Some(Err(oneshot::error::TryRecvError::Closed)) => outcome = None,
            Some(Err(oneshot::error::TryRecvError::Empty)) | None => break,
        }
    }
    // What was stored before a failure is acknowledged all the same.
    if let Some(sequence) = acked {
        out.send(framed, Body::Ack(Ack { sequence })).await?;
        out.send(framed, Body::Credit(CreditGrant { records }))
            .await?;
    }
    failure.map_or(Ok(()), Err)
}

fn check_version(envelope: &Envelope) -> Result<(), Rejection> {
    if envelope.version != PROTOCOL_MAJOR {
        return Err(Rejection::Protocol(
            RejectReason::WrongVersion,
            format!(
                "peer speaks protocol version {}, this agent speaks {PROTOCOL_MAJOR}; run matching procmond and sentinelagent versions",
                envelope.version
            ),
        ));
    }
    Ok(())
}

fn check_handshake(envelope: Envelope) -> Result<Handshake, Rejection> {
    check_version(&envelope)?;
    let Some(Body::Handshake(hello)) = envelope.body else {
        return Err(Rejection::Protocol(
            RejectReason::BadHandshake,
            format!(
                "first message is {}, expected a handshake",
                body_name(envelope.body.as_ref())
            ),
        ));
    };
    if hello.protocol_major != PROTOCOL_MAJOR {
        return Err(Rejection::Protocol(
            RejectReason::WrongVersion,
            format!(
                "collector speaks protocol {}.{}, this agent speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}; run matching versions",
                hello.protocol_major, hello.protocol_minor
            ),
        ));
    }
    if hello.role() != Role::Collector {
        return Err(Rejection::Protocol(
            RejectReason::BadHandshake,
            format!("peer says it is {:?}, expected a collector", hello.role()),
        ));
    }
    Ok(hello)
}

fn agent_handshake() -> Handshake {
    Handshake {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        role: Role::Agent.into(),
        software_version: sentineld_common::VERSION.to_owned(),
        capabilities: Vec::new(),
        boot_id: sentineld_common::host::boot_id().to_vec(),
        hostname: sentineld_common::host::hostname(),
        pid: std::process::id(),
    }
}

fn body_name(body: Option<&Body>) -> &'static str {
    match body {
        None => "an empty envelope",
        Some(Body::Handshake(_)) => "a handshake",
        Some(Body::ScanBatch(_)) => "a scan batch",
        Some(Body::Ack(_)) => "an ack",
        Some(Body::Credit(_)) => "a credit grant",
    }
}
