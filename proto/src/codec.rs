//! Frame codec: `u32 LE length | u32 LE CRC-32 (IEEE) | prost payload`.
//!
//! The length is checked against a maximum before any buffer grows, so a
//! hostile length prefix cannot make the reader allocate. An incomplete frame
//! decodes to `Ok(None)` ("need more bytes"); a frame that can never become
//! valid is a [`FrameError`] ("bad bytes"). The byte layout is documented in
//! `docs/wire-format.md`.

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

use crate::v1::Envelope;

/// Bytes before the payload: length then CRC, both `u32` little-endian.
pub const HEADER_LEN: usize = 8;

/// Default largest payload accepted or produced (16 MiB). Collectors split
/// scans into chunks far below this.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Why a byte stream is not a valid sequence of frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error(
        "frame checksum mismatch: header says {expected:#010x}, payload hashes to {actual:#010x}"
    )]
    BadChecksum { expected: u32, actual: u32 },
    #[error("frame payload is not a valid envelope: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("stream ended inside a frame: {have} of {need} bytes received")]
    Truncated { have: usize, need: usize },
    #[error("i/o error on the frame stream: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// A short, stable name for metrics labels and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooLong { .. } => "oversize",
            FrameError::BadChecksum { .. } => "bad_crc",
            FrameError::Decode(_) => "undecodable",
            FrameError::Truncated { .. } => "truncated",
            FrameError::Io(_) => "io",
        }
    }
}

/// What a complete, checked frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: usize,
    pub crc: u32,
}

/// Reads a frame header from the front of `src` without consuming it.
///
/// `Ok(None)` when fewer than [`HEADER_LEN`] bytes are present; an error when
/// the announced length is above `max_len`.
pub fn check_header(src: &[u8], max_len: usize) -> Result<Option<FrameHeader>, FrameError> {
    let Some(header) = src.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut header = header;
    let len = header.get_u32_le() as usize;
    let crc = header.get_u32_le();
    if len > max_len {
        return Err(FrameError::TooLong { len, max: max_len });
    }
    Ok(Some(FrameHeader { len, crc }))
}

/// Encodes `envelope` as one frame appended to `dst`.
pub fn encode(envelope: &Envelope, dst: &mut BytesMut, max_len: usize) -> Result<(), FrameError> {
    let len = envelope.encoded_len();
    if len > max_len {
        return Err(FrameError::TooLong { len, max: max_len });
    }
    dst.reserve(HEADER_LEN + len);
    let header_at = dst.len();
    // Length and a CRC placeholder, then the payload, then the real CRC.
    dst.put_u32_le(u32::try_from(len).map_err(|_| FrameError::TooLong { len, max: max_len })?);
    dst.put_u32_le(0);
    let payload_at = dst.len();
    envelope
        .encode(dst)
        .map_err(|_| FrameError::TooLong { len, max: max_len })?;
    let crc = crc32fast::hash(&dst[payload_at..]);
    dst[header_at + 4..header_at + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Encodes `envelope` into a new frame.
pub fn encode_to_vec(envelope: &Envelope) -> Result<Vec<u8>, FrameError> {
    let mut buf = BytesMut::new();
    encode(envelope, &mut buf, MAX_FRAME_LEN)?;
    Ok(buf.to_vec())
}

/// Decodes one frame from the front of `src`, consuming it.
///
/// `Ok(None)` when `src` holds only part of a frame; the buffer is then left
/// untouched (and reserved for the rest, up to `max_len`).
pub fn decode(src: &mut BytesMut, max_len: usize) -> Result<Option<Envelope>, FrameError> {
    let Some(header) = check_header(src, max_len)? else {
        return Ok(None);
    };
    let total = HEADER_LEN + header.len;
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }
    let payload = &src[HEADER_LEN..total];
    let actual = crc32fast::hash(payload);
    if actual != header.crc {
        return Err(FrameError::BadChecksum {
            expected: header.crc,
            actual,
        });
    }
    let envelope = Envelope::decode(payload)?;
    src.advance(total);
    Ok(Some(envelope))
}

/// [`tokio_util::codec`] adapter over [`encode`] and [`decode`].
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_len: usize,
}

impl FrameCodec {
    pub fn new(max_len: usize) -> Self {
        FrameCodec { max_len }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(MAX_FRAME_LEN)
    }
}

impl Decoder for FrameCodec {
    type Item = Envelope;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, FrameError> {
        decode(src, self.max_len)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, FrameError> {
        match decode(src, self.max_len)? {
            Some(envelope) => Ok(Some(envelope)),
            None if src.is_empty() => Ok(None),
            None => {
                let need =
                    check_header(src, self.max_len)?.map_or(HEADER_LEN, |h| HEADER_LEN + h.len);
                Err(FrameError::Truncated {
                    have: src.len(),
                    need,
                })
            }
        }
    }
}

impl Encoder<&Envelope> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &Envelope, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode(item, dst, self.max_len)
    }
}

impl Encoder<Envelope> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Envelope, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode(&item, dst, self.max_len)
    }
}
