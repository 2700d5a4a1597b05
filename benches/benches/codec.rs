//! Frame codec throughput: encoding and decoding a realistic scan batch.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sentineld_proto::codec::{self, MAX_FRAME_LEN};
use sentineld_proto::v1::{
    Envelope, ExeInfo, InstanceRef, ProcessRecord, Sample, ScanBatch, envelope::Body,
};

fn sample(pid: u32) -> Sample {
    Sample {
        instance: Some(InstanceRef {
            pid,
            start_time: 1_790_000_000 + i64::from(pid),
        }),
        cpu_percent: 1.5,
        rss_bytes: 12_345_678,
        vms_bytes: 98_765_432,
        threads: 4,
        open_fds: Some(17),
        status: "S".into(),
        listening_ports: Vec::new(),
        swap_bytes: None,
    }
}

fn record(pid: u32) -> ProcessRecord {
    ProcessRecord {
        instance: sample(pid).instance,
        ppid: 1,
        name: format!("worker-{pid}"),
        exe: "/usr/lib/example/bin/worker".into(),
        cmdline: vec![
            "/usr/lib/example/bin/worker".into(),
            "--config".into(),
            "/etc/example/worker.toml".into(),
            format!("--id={pid}"),
        ],
        uid: Some(1000),
        user: "svc".into(),
        exe_info: Some(ExeInfo {
            sha256: vec![0xab; 32],
            hash_status: 1,
            size: 1 << 20,
            inode: 42,
            device: 2049,
            mtime: 1_780_000_000,
            ..ExeInfo::default()
        }),
        container_id: String::new(),
        parent_start_time: 1_789_999_000,
        sample: Some(sample(pid)),
    }
}

fn batch(started: u32, samples: u32) -> Envelope {
    Envelope {
        version: 1,
        sequence: 7,
        body: Some(Body::ScanBatch(ScanBatch {
            scan_seq: 3,
            last_chunk: true,
            time_ms: 1_790_000_000_000,
            started: (0..started).map(record).collect(),
            samples: (0..samples).map(sample).collect(),
            ..ScanBatch::default()
        })),
    }
}

fn bench_codec(c: &mut Criterion) {
    for (label, env, records) in [
        ("started_1000", batch(1000, 0), 1000u64),
        ("samples_1000", batch(0, 1000), 1000u64),
    ] {
        let mut group = c.benchmark_group(format!("codec/{label}"));
        group.throughput(Throughput::Elements(records));
        let mut buf = BytesMut::with_capacity(1 << 20);
        group.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                codec::encode(black_box(&env), &mut buf, MAX_FRAME_LEN).expect("fits");
            })
        });
        buf.clear();
        codec::encode(&env, &mut buf, MAX_FRAME_LEN).expect("fits");
        let frame = buf.clone();
        group.bench_function("decode", |b| {
            b.iter(|| {
                let mut src = frame.clone();
                black_box(
                    codec::decode(&mut src, MAX_FRAME_LEN)
                        .expect("valid")
                        .expect("complete"),
                )
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
