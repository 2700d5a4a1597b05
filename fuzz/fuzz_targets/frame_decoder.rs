//! The frame decoder over an arbitrary byte stream, fed in two pieces
//! (the first byte picks the split), then end of stream. Any outcome but a
//! panic or an allocation beyond the frame limit is fine.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sentineld_proto::FrameCodec;
use tokio_util::codec::Decoder;

/// Small, so a hostile length prefix is rejected rather than buffered.
const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split).min(stream.len());
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::new();
    for piece in [&stream[..cut], &stream[cut..]] {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
});
