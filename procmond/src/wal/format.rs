//! The WAL's on-disk pieces: segment names, entry frames and the ack file.
//!
//! Everything here is pure encoding and decoding over byte slices and
//! readers; the file handling and the invariants live in [`crate::wal`].

use std::io::{self, Read};

use bytes::BytesMut;
use prost::Message as _;
use prost::encoding::{encoded_len_varint, key_len};
use sentineld_proto::PROTOCOL_MAJOR;
use sentineld_proto::codec::{self, FrameError, HEADER_LEN, MAX_FRAME_LEN};
use sentineld_proto::v1::{Ack, Envelope, ScanBatch, envelope::Body};

/// Segment files are `wal-<first id, 20 digits>.log`.
const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";
const SEGMENT_DIGITS: usize = 20;
/// The acknowledgement watermark.
pub(crate) const ACK_FILE: &str = "ack";
/// Held locked (advisory) by the process that owns the directory.
pub(crate) const LOCK_FILE: &str = "lock";
/// Suffix of files being written before a rename; leftovers are deleted on
/// open (the file they were to replace is still intact).
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Largest valid ack file (an ack frame is about 20 bytes).
const ACK_MAX_LEN: usize = 64;

/// Field numbers in `Envelope` and `ScanBatch` (see `sentineld.proto`).
const ENVELOPE_VERSION: u32 = 1;
const ENVELOPE_SEQUENCE: u32 = 2;
const ENVELOPE_SCAN_BATCH: u32 = 11;
const BATCH_SAMPLES: u32 = 10;
const BATCH_SAMPLES_DROPPED: u32 = 13;

/// The file name of the segment whose first entry id is `first`.
pub(crate) fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The first id a segment file name stands for, or `None` for any other
/// name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes one entry: batch `batch` under WAL id `id`.
pub(crate) fn encode_entry(id: u64, batch: &ScanBatch) -> Result<Vec<u8>, FrameError> {
    let envelope = Envelope {
        version: PROTOCOL_MAJOR,
        sequence: id,
        body: Some(Body::ScanBatch(batch.clone())),
    };
    codec::encode_to_vec(&envelope)
}

/// Size of the frame [`encode_entry`] makes for id `id` and a batch whose
/// own encoding is `batch_len` bytes, computed without encoding.
pub(crate) fn frame_len(id: u64, batch_len: usize) -> usize {
    let version = if PROTOCOL_MAJOR == 0 {
        0
    } else {
        key_len(ENVELOPE_VERSION) + encoded_len_varint(u64::from(PROTOCOL_MAJOR))
    };
    let sequence = if id == 0 {
        0
    } else {
        key_len(ENVELOPE_SEQUENCE) + encoded_len_varint(id)
    };
    let body = key_len(ENVELOPE_SCAN_BATCH) + encoded_len_varint(batch_len as u64) + batch_len;
    HEADER_LEN + version + sequence + body
}

/// Whether a batch is worth nothing once its samples are gone: it holds no
/// record and is not the last chunk of its scan (which carries the scan's
/// totals and is kept).
pub(crate) fn droppable_without_samples(batch: &ScanBatch) -> bool {
    batch.started.is_empty()
        && batch.updated.is_empty()
        && batch.exited.is_empty()
        && !batch.last_chunk
}

/// Bytes the frame of `batch` (id `id`) shrinks by when its samples are
/// dropped: the whole frame when the batch is then
/// [`droppable_without_samples`], 0 when it has no samples.
pub(crate) fn reclaimable(id: u64, batch: &ScanBatch) -> usize {
    if batch.samples.is_empty() {
        return 0;
    }
    let full = batch.encoded_len();
    let whole = frame_len(id, full);
    if droppable_without_samples(batch) {
        return whole;
    }
    whole - frame_len(id, stripped_len(batch))
}

/// `batch` without its samples, which it counts in `samples_dropped`.
pub(crate) fn stripped(batch: &ScanBatch) -> ScanBatch {
    ScanBatch {
        samples: Vec::new(),
        samples_dropped: dropped_after_strip(batch),
        ..batch.clone()
    }
}

fn dropped_after_strip(batch: &ScanBatch) -> u32 {
    let n = u32::try_from(batch.samples.len()).unwrap_or(u32::MAX);
    batch.samples_dropped.saturating_add(n)
}

/// The encoded length of [`stripped`]`(batch)`, without building it.
fn stripped_len(batch: &ScanBatch) -> usize {
    let field = |v: u32| {
        if v == 0 {
            0
        } else {
            prost::encoding::uint32::encoded_len(BATCH_SAMPLES_DROPPED, &v)
        }
    };
    let samples = prost::encoding::message::encoded_len_repeated(BATCH_SAMPLES, &batch.samples);
    batch.encoded_len() - samples - field(batch.samples_dropped) + field(dropped_after_strip(batch))
}

/// Why bytes read from a segment are not a valid entry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadEntry {
    /// The file ends inside a frame: a write that did not finish.
    #[error("the file ends inside an entry ({have} of {need} bytes)")]
    Torn { have: usize, need: usize },
    /// The frame codec refused the bytes (oversize length, CRC, decode).
    #[error("{0}")]
    Frame(FrameError),
    /// A valid frame that is not a WAL entry.
    #[error("{0}")]
    NotAnEntry(String),
    #[error("read error: {0}")]
    Io(#[from] io::Error),
}

impl From<FrameError> for BadEntry {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(io) => BadEntry::Io(io),
            other => BadEntry::Frame(other),
        }
    }
}

/// One entry read back from a segment.
#[derive(Debug)]
pub(crate) struct ReadEntry {
    pub(crate) id: u64,
    pub(crate) batch: ScanBatch,
    /// Size of its frame on disk, header included.
    pub(crate) len: usize,
}

/// Reads the next entry from `r`: `Ok(None)` at a clean end (no byte
/// left), an error for a torn or invalid frame.
///
/// The announced length is checked against [`MAX_FRAME_LEN`] by the codec
/// before anything is allocated, and the payload buffer only grows as bytes
/// actually arrive.
pub(crate) fn read_entry<R: Read>(r: &mut R) -> Result<Option<ReadEntry>, BadEntry> {
    let mut header = [0u8; HEADER_LEN];
    let have = read_full(r, &mut header)?;
    if have == 0 {
        return Ok(None);
    }
    if have < HEADER_LEN {
        return Err(BadEntry::Torn {
            have,
            need: HEADER_LEN,
        });
    }
    let Some(checked) = codec::check_header(&header, MAX_FRAME_LEN)? else {
        return Err(BadEntry::Torn {
            have,
            need: HEADER_LEN,
        });
    };
    let need = HEADER_LEN + checked.len;
    let mut frame = Vec::with_capacity(HEADER_LEN);
    frame.extend_from_slice(&header);
    r.take(checked.len as u64).read_to_end(&mut frame)?;
    if frame.len() < need {
        return Err(BadEntry::Torn {
            have: frame.len(),
            need,
        });
    }
    let mut frame = BytesMut::from(frame.as_slice());
    let Some(envelope) = codec::decode(&mut frame, MAX_FRAME_LEN)? else {
        return Err(BadEntry::Torn { have: need, need });
    };
    if envelope.version != PROTOCOL_MAJOR {
        return Err(BadEntry::NotAnEntry(format!(
            "written for protocol version {}, this procmond reads {PROTOCOL_MAJOR}",
            envelope.version
        )));
    }
    match envelope.body {
        Some(Body::ScanBatch(batch)) => Ok(Some(ReadEntry {
            id: envelope.sequence,
            batch,
            len: need,
        })),
        _ => Err(BadEntry::NotAnEntry(
            "the frame holds no scan batch".to_owned(),
        )),
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut have = 0;
    while have < buf.len() {
        match r.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(have)
}

/// The ack file's bytes for watermark `acked`: one frame holding
/// `Envelope { version, body: Ack { sequence: acked } }`.
pub(crate) fn encode_ack(acked: u64) -> Result<Vec<u8>, FrameError> {
    let envelope = Envelope {
        version: PROTOCOL_MAJOR,
        sequence: 0,
        body: Some(Body::Ack(Ack { sequence: acked })),
    };
    codec::encode_to_vec(&envelope)
}

/// The watermark in an ack file's bytes, or `None` when they are not
/// exactly one valid ack frame.
pub(crate) fn decode_ack(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > ACK_MAX_LEN {
        return None;
    }
    let mut buf = BytesMut::from(bytes);
    let envelope = codec::decode(&mut buf, ACK_MAX_LEN).ok()??;
    if !buf.is_empty() || envelope.version != PROTOCOL_MAJOR {
        return None;
    }
    match envelope.body {
        Some(Body::Ack(ack)) => Some(ack.sequence),
        _ => None,
    }
}
