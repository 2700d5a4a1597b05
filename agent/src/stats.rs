//! Counters of the agent's work, shared by its tasks. Every counted event
//! is also logged where it happens, so logs and counters agree.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why a frame or connection was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Oversize,
    BadCrc,
    Undecodable,
    Truncated,
    WrongVersion,
    BadHandshake,
    HandshakeTimeout,
    UnexpectedMessage,
    SequenceGap,
    SequenceRepeat,
    Io,
}

impl RejectReason {
    pub const ALL: [RejectReason; 11] = [
        RejectReason::Oversize,
        RejectReason::BadCrc,
        RejectReason::Undecodable,
        RejectReason::Truncated,
        RejectReason::WrongVersion,
        RejectReason::BadHandshake,
        RejectReason::HandshakeTimeout,
        RejectReason::UnexpectedMessage,
        RejectReason::SequenceGap,
        RejectReason::SequenceRepeat,
        RejectReason::Io,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversize => "oversize",
            RejectReason::BadCrc => "bad_crc",
            RejectReason::Undecodable => "undecodable",
            RejectReason::Truncated => "truncated",
            RejectReason::WrongVersion => "wrong_version",
            RejectReason::BadHandshake => "bad_handshake",
            RejectReason::HandshakeTimeout => "handshake_timeout",
            RejectReason::UnexpectedMessage => "unexpected_message",
            RejectReason::SequenceGap => "sequence_gap",
            RejectReason::SequenceRepeat => "sequence_repeat",
            RejectReason::Io => "io",
        }
    }

    fn index(self) -> usize {
        RejectReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is listed in ALL")
    }
}

/// Counters, updated lock-free by the connection and storage tasks.
#[derive(Debug, Default)]
pub struct AgentStats {
    rejected: [AtomicU64; RejectReason::ALL.len()],
    pub records_stored: AtomicU64,
    pub batches_stored: AtomicU64,
    pub scans_stored: AtomicU64,
    pub store_errors: AtomicU64,
    pub collector_restarts: AtomicU64,
    pub collector_connected: AtomicBool,
}

impl AgentStats {
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }
}
