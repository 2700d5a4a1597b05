//! procmond's write-ahead log recovery on an arbitrary segment file and
//! ack file: opening must truncate or skip what is bad, never panic, and
//! every entry it then offers for replay must read back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use procmond::wal::{Wal, WalConfig};

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into the ack file and the segment.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split).min(rest.len());
    let (ack, segment) = rest.split_at(cut);
    let dir = tempfile::tempdir().expect("a temp dir");
    let wal_dir = dir.path().join("wal");
    std::fs::create_dir(&wal_dir).expect("the WAL dir");
    std::fs::write(wal_dir.join("ack"), ack).expect("the ack file");
    std::fs::write(wal_dir.join("wal-00000000000000000001.log"), segment)
        .expect("the segment");
    let Ok((mut wal, _report)) = Wal::open(&wal_dir, WalConfig::default()) else {
        return;
    };
    for entry in wal.unacked() {
        if entry.is_err() {
            break;
        }
    }
    // What was recovered can be appended to and acknowledged.
    let id = wal
        .append(&sentineld_proto::v1::ScanBatch::default())
        .expect("append after recovery");
    wal.ack(id).expect("ack after recovery");
});
