//! The SentinelD wire protocol.
//!
//! This is the only crate that knows the wire format: the protobuf messages
//! (generated from `proto/sentineld.proto`) and the frame codec that carries
//! them on the collector socket and in procmond's write-ahead log.

pub mod audit;
pub mod codec;
pub mod view;

/// Generated protobuf messages, package `sentineld.v1`.
#[allow(
    missing_debug_implementations,
    unused_qualifications,
    reason = "generated code"
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sentineld.v1.rs"));
}

pub use codec::{FrameCodec, FrameError, HEADER_LEN, MAX_FRAME_LEN};

/// Major protocol version. Peers on another major version refuse each other.
pub const PROTOCOL_MAJOR: u32 = 1;
/// Minor protocol version: additions that older peers can ignore.
pub const PROTOCOL_MINOR: u32 = 0;
