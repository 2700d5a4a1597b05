//! The protobuf envelope decoder on arbitrary payload bytes, and a
//! re-encode of whatever it accepts (which must decode to the same value).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sentineld_proto::v1::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        let bytes = envelope.encode_to_vec();
        let again = Envelope::decode(bytes.as_slice()).expect("a re-encoded envelope decodes");
        assert_eq!(again, envelope);
    }
});
