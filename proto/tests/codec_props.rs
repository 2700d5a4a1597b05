//! Property tests for the frame codec and the envelope decoder: round
//! trip, arbitrary splits of the byte stream, detection of corrupted and
//! truncated frames, and no panic on any input. The case counts are
//! bounded so the pass runs in CI on every change.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use bytes::BytesMut;
use proptest::prelude::*;
use prost::Message as _;
use sentineld_proto::FrameCodec;
use sentineld_proto::codec::{self, FrameError, HEADER_LEN};
use sentineld_proto::v1::{
    Ack, CreditGrant, Envelope, ExeInfo, InstanceRef, ProcessRecord, Sample, ScanBatch,
    envelope::Body,
};
use tokio_util::codec::Decoder as _;

const MAX: usize = 1 << 20;

fn instance() -> impl Strategy<Value = InstanceRef> {
    (any::<u32>(), any::<i64>()).prop_map(|(pid, start_time)| InstanceRef { pid, start_time })
}

fn sample() -> impl Strategy<Value = Sample> {
    (instance(), any::<u64>(), any::<u32>(), "[a-zA-Z]{0,8}").prop_map(
        |(instance, rss, threads, status)| Sample {
            instance: Some(instance),
            cpu_percent: (threads % 400) as f32 / 4.0,
            rss_bytes: rss,
            vms_bytes: rss / 2,
            threads,
            open_fds: Some(threads % 1024),
            status,
            listening_ports: vec![threads % 65_536],
            swap_bytes: threads.is_multiple_of(2).then_some(rss / 2),
        },
    )
}

fn record() -> impl Strategy<Value = ProcessRecord> {
    (
        instance(),
        any::<u32>(),
        "\\PC{0,20}",
        "\\PC{0,40}",
        proptest::collection::vec("\\PC{0,30}", 0..6),
        proptest::option::of(any::<u32>()),
        proptest::collection::vec(any::<u8>(), 32),
        sample(),
    )
        .prop_map(
            |(instance, ppid, name, exe, cmdline, uid, sha, sample)| ProcessRecord {
                instance: Some(instance),
                ppid,
                name,
                exe,
                cmdline,
                uid,
                user: "root".into(),
                exe_info: Some(ExeInfo {
                    sha256: sha,
                    hash_status: 1,
                    ..ExeInfo::default()
                }),
                container_id: String::new(),
                parent_start_time: 0,
                sample: Some(sample),
            },
        )
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let body = prop_oneof![
        any::<u64>().prop_map(|sequence| Body::Ack(Ack { sequence })),
        any::<u64>().prop_map(|records| Body::Credit(CreditGrant { records })),
        (
            any::<u64>(),
            proptest::collection::vec(record(), 0..4),
            proptest::collection::vec(instance(), 0..4),
            proptest::collection::vec(sample(), 0..8),
        )
            .prop_map(
                |(scan_seq, started, exited, samples)| Body::ScanBatch(ScanBatch {
                    scan_seq,
                    last_chunk: true,
                    started,
                    exited,
                    samples,
                    ..ScanBatch::default()
                })
            ),
    ];
    (any::<u32>(), any::<u64>(), body).prop_map(|(version, sequence, body)| Envelope {
        version,
        sequence,
        body: Some(body),
    })
}

fn encode_all(envelopes: &[Envelope]) -> BytesMut {
    let mut buf = BytesMut::new();
    for e in envelopes {
        codec::encode(e, &mut buf, MAX).unwrap();
    }
    buf
}

proptest! {
    #[test]
    fn round_trip(envelopes in proptest::collection::vec(envelope(), 1..6)) {
        let mut buf = encode_all(&envelopes);
        let mut decoded = Vec::new();
        while let Some(e) = codec::decode(&mut buf, MAX).unwrap() {
            decoded.push(e);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, envelopes);
    }

    #[test]
    fn arbitrary_splits(
        envelopes in proptest::collection::vec(envelope(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let bytes = encode_all(&envelopes).to_vec();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.push(bytes.len());
        points.sort_unstable();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut from = 0;
        for to in points {
            buf.extend_from_slice(&bytes[from..to]);
            from = to;
            while let Some(e) = codec::decode(&mut buf, MAX).unwrap() {
                decoded.push(e);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, envelopes);
    }

    #[test]
    fn any_single_corrupted_byte_is_detected(
        envelope in envelope(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = encode_all(std::slice::from_ref(&envelope)).to_vec();
        let at = at.index(bytes.len());
        bytes[at] ^= flip;
        let mut buf = BytesMut::from(&bytes[..]);
        match codec::decode(&mut buf, MAX) {
            // A corrupted length can only announce more bytes than exist
            // (incomplete) or too many (oversize); anything else is caught by
            // the CRC or the decoder. It never yields an envelope.
            Ok(None) => prop_assert!(at < 4),
            Ok(Some(e)) => prop_assert!(false, "corruption at byte {at} decoded to {e:?}"),
            Err(FrameError::TooLong { .. }) => prop_assert!(at < 4),
            Err(FrameError::BadChecksum { .. } | FrameError::Decode(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = codec::decode(&mut buf, MAX) {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes through the streaming decoder, in arbitrary pieces,
    /// then end of stream: every outcome is a value or an error.
    #[test]
    fn arbitrary_streams_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.push(bytes.len());
        points.sort_unstable();
        let mut decoder = FrameCodec::new(MAX);
        let mut buf = BytesMut::new();
        let mut from = 0;
        'feed: for to in points {
            buf.extend_from_slice(&bytes[from..to]);
            from = to;
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        let _ = decoder.decode_eof(&mut buf);
    }

    /// A frame whose CRC is right but whose payload is anything: an
    /// envelope or a decode error, nothing else.
    #[test]
    fn any_payload_with_a_valid_crc_is_an_envelope_or_a_decode_error(
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
        match codec::decode(&mut buf, MAX) {
            Ok(Some(_)) => prop_assert!(buf.is_empty()),
            Err(FrameError::Decode(_)) => {}
            other => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    /// The envelope decoder alone never panics on arbitrary bytes.
    #[test]
    fn the_envelope_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Envelope::decode(&bytes[..]);
    }

    /// A valid frame cut anywhere is "need more bytes" (nothing consumed),
    /// and at end of stream it is `Truncated`, never an envelope.
    #[test]
    fn truncated_frames_are_incomplete_and_then_truncated(
        envelope in envelope(),
        at in any::<prop::sample::Index>(),
    ) {
        let bytes = encode_all(std::slice::from_ref(&envelope)).to_vec();
        let cut = at.index(bytes.len());
        let mut buf = BytesMut::from(&bytes[..cut]);
        prop_assert!(codec::decode(&mut buf, MAX).unwrap().is_none());
        prop_assert_eq!(buf.len(), cut);
        let eof = FrameCodec::new(MAX).decode_eof(&mut buf);
        if cut == 0 {
            prop_assert!(matches!(eof, Ok(None)));
        } else {
            prop_assert!(matches!(eof, Err(FrameError::Truncated { .. })), "{eof:?}");
        }
    }

    /// Up to three flipped bits anywhere after the length (CRC or payload)
    /// are always detected: CRC-32 has a Hamming distance of at least 4 for
    /// frames of this size.
    #[test]
    fn flipped_bits_after_the_length_are_detected(
        envelope in envelope(),
        flips in proptest::collection::vec(any::<prop::sample::Index>(), 1..=3),
    ) {
        let mut bytes = encode_all(std::slice::from_ref(&envelope)).to_vec();
        prop_assume!(bytes.len() <= 11_000);
        let bits = (bytes.len() - 4) * 8;
        let mut positions: Vec<usize> = flips.iter().map(|i| 32 + i.index(bits)).collect();
        positions.sort_unstable();
        positions.dedup();
        for bit in positions {
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        let mut buf = BytesMut::from(&bytes[..]);
        match codec::decode(&mut buf, MAX) {
            Err(FrameError::BadChecksum { .. } | FrameError::Decode(_)) => {}
            other => prop_assert!(false, "bit flips not detected: {other:?}"),
        }
    }

    /// Valid frames followed by garbage: every valid frame decodes first.
    #[test]
    fn valid_frames_before_garbage_still_decode(
        envelopes in proptest::collection::vec(envelope(), 1..4),
        garbage in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let mut buf = encode_all(&envelopes);
        buf.extend_from_slice(&garbage);
        let mut decoded = Vec::new();
        while let Ok(Some(e)) = codec::decode(&mut buf, MAX) {
            decoded.push(e);
            if decoded.len() == envelopes.len() {
                break;
            }
        }
        prop_assert_eq!(decoded, envelopes);
    }
}

#[test]
fn oversize_length_is_rejected_before_allocating() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&u32::MAX.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    let capacity = buf.capacity();
    let err = codec::decode(&mut buf, MAX).unwrap_err();
    assert!(
        matches!(err, FrameError::TooLong { len, max } if len == u32::MAX as usize && max == MAX)
    );
    assert_eq!(
        buf.capacity(),
        capacity,
        "no allocation for a rejected length"
    );
}

#[test]
fn incomplete_header_and_payload_are_none() {
    let env = Envelope {
        version: 1,
        sequence: 7,
        body: Some(Body::Ack(Ack { sequence: 3 })),
    };
    let bytes = encode_all(&[env]).to_vec();
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert!(
            codec::decode(&mut buf, MAX).unwrap().is_none(),
            "cut at {cut}"
        );
        assert_eq!(buf.len(), cut, "an incomplete frame is not consumed");
    }
    assert!(bytes.len() > HEADER_LEN);
}

#[test]
fn undecodable_payload_with_valid_crc_is_a_decode_error() {
    let payload = [0xff_u8, 0xff, 0xff, 0xff];
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    assert!(matches!(
        codec::decode(&mut buf, MAX),
        Err(FrameError::Decode(_))
    ));
}
