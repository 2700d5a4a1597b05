//! The collector socket: accepts connections, checks every frame, hands
//! batches to the storage thread and acknowledges them once committed.
//!
//! Connections are bounded by a semaphore; a peer that does not complete its
//! handshake in time, sends a bad frame or breaks the protocol is counted by
//! reason, logged once with its credentials, and disconnected. Nothing a peer
//! sends can make the agent panic or grow without bound: frame lengths are
//! checked before allocation and each connection holds at most one frame.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::prelude::*;
use sentineld_proto::v1::{Ack, CreditGrant, Envelope, Handshake, Role, ScanBatch, envelope::Body};
use sentineld_proto::{FrameCodec, FrameError, PROTOCOL_MAJOR, PROTOCOL_MINOR};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::ingest::IngestHandle;
use crate::stats::{AgentStats, RejectReason};

/// Records the collector may have in flight before its first ack.
pub(crate) const INITIAL_CREDITS: u64 = 1_000;

pub(crate) struct ServerContext {
    pub(crate) ingest: IngestHandle,
    pub(crate) stats: Arc<AgentStats>,
    pub(crate) handshake_timeout: Duration,
}

/// Who is on the other end of a connection, for logs.
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
            _ => f.write_str("unknown peer"),
        }
    }
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

/// Accepts connections until `shutdown`, then waits for the open ones to
/// finish the batch they are storing.
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
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match stream {
            Ok(stream) => {
                backoff = Duration::from_millis(10);
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    handle(stream, &ctx, &shutdown).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(error = %e, "cannot accept a collector connection");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

async fn handle(stream: LocalSocketStream, ctx: &ServerContext, shutdown: &CancellationToken) {
    let peer = Peer::of(&stream);
    debug!(%peer, "collector connection accepted");
    let mut framed = Framed::new(stream, FrameCodec::default());
    let result = connection(&mut framed, ctx, peer, shutdown).await;
    ctx.stats
        .collector_connected
        .store(false, Ordering::Relaxed);
    match result {
        Ok(()) => info!(%peer, "collector disconnected"),
        Err(rejection) => {
            if let Some(reason) = rejection.reason() {
                ctx.stats.reject(reason);
                warn!(%peer, reason = reason.as_str(), error = %rejection, "collector connection closed");
            } else {
                warn!(%peer, error = %rejection, "collector connection closed");
            }
        }
    }
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
    peer: Peer,
    shutdown: &CancellationToken,
) -> Result<(), Rejection> {
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
            records: INITIAL_CREDITS,
        }),
    )
    .await?;
    ctx.stats.collector_connected.store(true, Ordering::Relaxed);

    loop {
        let envelope = tokio::select! {
            next = framed.next() => match next {
                None => return Ok(()),
                Some(frame) => frame?,
            },
            () = shutdown.cancelled() => return Ok(()),
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
            ctx.stats.reject(RejectReason::SequenceGap);
            warn!(%peer, expected = last_seq + 1, got = envelope.sequence, "sequence gap from collector");
        }
        last_seq = envelope.sequence;
        match envelope.body {
            Some(Body::ScanBatch(batch)) => {
                let records = batch_records(&batch);
                let stored = ctx
                    .ingest
                    .store(boot_id, batch)
                    .await
                    .map_err(|e| Rejection::Store(e.to_string()))?;
                stored.map_err(|e| Rejection::Store(e.to_string()))?;
                out.send(
                    framed,
                    Body::Ack(Ack {
                        sequence: envelope.sequence,
                    }),
                )
                .await?;
                out.send(framed, Body::Credit(CreditGrant { records }))
                    .await?;
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

fn batch_records(batch: &ScanBatch) -> u64 {
    (batch.started.len() + batch.exited.len() + batch.samples.len() + batch.updated.len()) as u64
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
