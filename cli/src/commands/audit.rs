//! `sentinelcli audit verify|head`: checks procmond's audit ledger and the
//! stored scans against it (`docs/audit-ledger.md`).
//!
//! `verify` walks the hash chain across the ledger's segments and, as it
//! reads, matches every ledger scan entry with the stored scan of the same
//! (boot, time, scan number) and compares the scan digest the agent
//! computed over what it received with the one procmond wrote when it
//! collected the scan. Everything found is a problem with its position
//! (segment file and line); the command fails (exit code 1) on any. Ledger
//! entries are not kept: memory grows with the stored scans only.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use sentineld_agent::store::ScanRow;
use sentineld_common::layout::StateLayout;
use sentineld_common::ledger::{self, Entry, EntryKind, Located, VerifyReport};
use sentineld_common::time::rfc3339_millis;
use serde::Serialize;

use crate::args::{AuditCommand, LedgerArgs};
use crate::output;
use crate::{CliError, Context, Format};

/// Most problems listed; past it they are only counted.
const MAX_PROBLEMS: usize = 1000;

/// Problems a table shows; JSON and CSV show all that were listed.
const TABLE_PROBLEMS: usize = 20;

/// The ledger `--ledger` names: one segment file, or the directory holding
/// the segments (`ledger.log` and the sealed `ledger.<seq>.log`); by
/// default procmond's state directory under the agent's.
pub(crate) fn ledger_path(state_dir: Option<&Path>, args: &LedgerArgs) -> PathBuf {
    args.ledger
        .clone()
        .unwrap_or_else(|| StateLayout::resolve(state_dir, None).procmond_dir())
}

fn read_ledger(path: &Path, each: impl FnMut(&Located)) -> Result<VerifyReport, CliError> {
    ledger::verify_each(path, each).map_err(|e| CliError::Audit(e.to_string()))
}

/// What kind of problem `verify` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    /// The hash chain breaks: an entry edited, deleted, reordered or
    /// unparseable.
    Chain,
    /// A stored scan differs from its ledger entry.
    ScanDiffers,
    /// A ledger entry within the stored span has no stored scan.
    ScanMissing,
    /// A stored scan within the ledger's span has no ledger entry.
    ScanUnknown,
}

#[derive(Debug, Clone, Serialize)]
struct Problem {
    kind: Kind,
    /// Ledger entry, segment file and line in it, when the problem is tied
    /// to one.
    ledger_seq: Option<u64>,
    ledger_file: Option<String>,
    ledger_line: Option<u64>,
    /// Stored scan, when the problem is tied to one.
    scan_id: Option<u64>,
    message: String,
}

#[derive(Debug, Serialize)]
struct Head {
    seq: u64,
    hash: String,
    time: String,
}

#[derive(Debug, Serialize)]
struct TornTail {
    file: String,
    line: u64,
    bytes: u64,
}

/// The oldest segments were removed by rotation: the chain was checked
/// from `first_seq`, anchored at its `prev`. Not a problem.
#[derive(Debug, Serialize)]
struct Rotated {
    first_seq: u64,
    prev: String,
    file: String,
    message: String,
}

impl Rotated {
    fn of(report: &VerifyReport) -> Option<Rotated> {
        report.rotated.as_ref().map(|r| Rotated {
            first_seq: r.first_seq,
            prev: hex::encode(r.prev),
            file: ledger::file_name(&r.file),
            message: r.to_string(),
        })
    }
}

/// The result of `verify`, as printed.
#[derive(Debug, Serialize)]
struct Audit {
    /// True only when the chain holds and every stored scan matches.
    intact: bool,
    ledger: String,
    /// The segment files walked, in chain order.
    segments: Vec<String>,
    entries: u64,
    head: Option<Head>,
    /// Set when the oldest segments were rotated away.
    rotated: Option<Rotated>,
    /// A last line without its newline (an append in progress or cut short
    /// by a crash): left out of the check, not a problem.
    torn_tail: Option<TornTail>,
    scans_stored: usize,
    /// Stored scans whose digest equals their ledger entry's.
    scans_matched: usize,
    /// Stored scans that did not arrive whole (procmond's write-ahead log
    /// dropped samples while the agent was away, or a chunk never came):
    /// their digest cannot match, so only their identity was checked.
    scans_not_whole: usize,
    /// Stored scans kept before digests were stored.
    scans_without_digest: usize,
    /// Stored scans older than the ledger's first entry.
    scans_before_ledger: usize,
    /// Ledger entries older than the oldest stored scan (removed by
    /// retention, or collected before this store).
    entries_before_store: usize,
    /// Ledger entries newer than the newest stored scan (not delivered
    /// yet: the agent is away, or they are in flight).
    entries_not_yet_stored: usize,
    problems_total: usize,
    problems: Vec<Problem>,
}

impl Audit {
    fn problem(&mut self, problem: Problem) {
        self.problems_total += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        }
    }
}

type ScanKey = ([u8; 16], i64, u64);

fn describe(e: &Entry) -> String {
    format!(
        "scan {} of boot {} at {}",
        e.scan_seq,
        hex::encode(&e.boot_id[..4]),
        rfc3339_millis(e.time_ms)
    )
}

fn span(span: Option<(i64, i64)>, t: i64) -> Option<(i64, i64)> {
    Some(span.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))))
}

/// Matches ledger entries with the stored `scans` as the chain is read:
/// holds the scans (indexed) and counts, never the entries.
struct Checker<'a> {
    scans: &'a [ScanRow],
    by_key: HashMap<ScanKey, &'a ScanRow>,
    store_span: Option<(i64, i64)>,
    ledger_span: Option<(i64, i64)>,
    matched: HashSet<ScanKey>,
    audit: Audit,
}

impl<'a> Checker<'a> {
    fn new(ledger: &Path, scans: &'a [ScanRow]) -> Checker<'a> {
        Checker {
            scans,
            by_key: scans
                .iter()
                .map(|s| ((s.boot_id, s.time_ms, s.scan_seq), s))
                .collect(),
            store_span: scans.iter().map(|s| s.time_ms).fold(None, span),
            ledger_span: None,
            matched: HashSet::new(),
            audit: Audit {
                intact: false,
                ledger: ledger.display().to_string(),
                segments: Vec::new(),
                entries: 0,
                head: None,
                rotated: None,
                torn_tail: None,
                scans_stored: scans.len(),
                scans_matched: 0,
                scans_not_whole: 0,
                scans_without_digest: 0,
                scans_before_ledger: 0,
                entries_before_store: 0,
                entries_not_yet_stored: 0,
                problems_total: 0,
                problems: Vec::new(),
            },
        }
    }

    /// Checks one ledger entry against the store.
    fn entry(&mut self, located: &Located) {
        let e = &located.entry;
        if e.kind != EntryKind::Scan {
            return;
        }
        self.ledger_span = span(self.ledger_span, e.time_ms);
        let audit = &mut self.audit;
        let key = (e.boot_id, e.time_ms, e.scan_seq);
        let Some(scan) = self.by_key.get(&key) else {
            match self.store_span {
                Some((lo, _)) if e.time_ms < lo => audit.entries_before_store += 1,
                Some((_, hi)) if e.time_ms > hi => audit.entries_not_yet_stored += 1,
                None => audit.entries_not_yet_stored += 1,
                Some(_) => audit.problem(Problem {
                    kind: Kind::ScanMissing,
                    ledger_seq: Some(e.seq),
                    ledger_file: Some(ledger::file_name(&located.file)),
                    ledger_line: Some(located.line),
                    scan_id: None,
                    message: format!(
                        "ledger entry {} ({}, {}) has no stored scan: deleted from the store, or never delivered",
                        e.seq,
                        located.position(),
                        describe(e)
                    ),
                }),
            }
            return;
        };
        self.matched.insert(key);
        let mut differs = Vec::new();
        if scan.process_count != e.process_count {
            differs.push(format!(
                "process count {} in the store, {} in the ledger",
                scan.process_count, e.process_count
            ));
        }
        match scan.digest {
            None => audit.scans_without_digest += 1,
            Some(_) if !scan.is_whole() => audit.scans_not_whole += 1,
            Some(d) if d == e.digest => {}
            Some(_) => differs.push("its digest differs".to_owned()),
        }
        if differs.is_empty() {
            if scan.digest.is_some() && scan.is_whole() {
                audit.scans_matched += 1;
            }
        } else {
            audit.problem(Problem {
                kind: Kind::ScanDiffers,
                ledger_seq: Some(e.seq),
                ledger_file: Some(ledger::file_name(&located.file)),
                ledger_line: Some(located.line),
                scan_id: Some(scan.scan_id),
                message: format!(
                    "stored scan {} differs from ledger entry {} ({}, {}): {}",
                    scan.scan_id,
                    e.seq,
                    located.position(),
                    describe(e),
                    differs.join("; ")
                ),
            });
        }
    }

    /// The verdict, once the whole chain (`report`) was read.
    fn finish(mut self, report: &VerifyReport) -> Audit {
        let audit = &mut self.audit;
        audit.segments = report.files.iter().map(|f| ledger::file_name(f)).collect();
        audit.entries = report.entries;
        audit.head = report.last.as_ref().map(|l| Head {
            seq: l.entry.seq,
            hash: hex::encode(l.entry.hash),
            time: rfc3339_millis(l.entry.time_ms),
        });
        audit.rotated = Rotated::of(report);
        audit.torn_tail = report.torn_tail.map(|t| TornTail {
            file: report
                .files
                .last()
                .map_or_else(String::new, |f| ledger::file_name(f)),
            line: t.line,
            bytes: t.bytes,
        });
        if let Some(b) = &report.first_break {
            audit.problem(Problem {
                kind: Kind::Chain,
                ledger_seq: None,
                ledger_file: Some(b.file_name()),
                ledger_line: Some(b.at.line()),
                scan_id: None,
                message: format!("the hash chain breaks in {}: {}", b.file_name(), b.at),
            });
        }
        for scan in self.scans {
            if self
                .matched
                .contains(&(scan.boot_id, scan.time_ms, scan.scan_seq))
            {
                continue;
            }
            match self.ledger_span {
                Some((lo, _)) if scan.time_ms < lo => audit.scans_before_ledger += 1,
                None => audit.scans_before_ledger += 1,
                Some(_) => audit.problem(Problem {
                    kind: Kind::ScanUnknown,
                    ledger_seq: None,
                    ledger_file: None,
                    ledger_line: None,
                    scan_id: Some(scan.scan_id),
                    message: format!(
                        "stored scan {} (scan {} at {}) has no ledger entry: added to the store, or its entry was deleted",
                        scan.scan_id,
                        scan.scan_seq,
                        rfc3339_millis(scan.time_ms)
                    ),
                }),
            }
        }
        // Chain order: the break first, then by ledger entry.
        audit.problems.sort_by_key(|p| {
            (
                p.kind != Kind::Chain,
                p.ledger_seq.unwrap_or(u64::MAX),
                p.scan_id,
            )
        });
        audit.intact = audit.problems_total == 0;
        self.audit
    }
}

const PROBLEM_FIELDS: &[&str] = &[
    "kind",
    "ledger_seq",
    "ledger_file",
    "ledger_line",
    "scan_id",
    "message",
];

fn write_report(out: &mut dyn Write, format: Format, audit: &Audit) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, audit)?;
            writeln!(out)
        }
        Format::Csv => output::write_csv(
            out,
            PROBLEM_FIELDS,
            audit.problems.iter().map(|p| {
                vec![
                    serde_json::to_value(p.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    output::csv_opt(p.ledger_seq),
                    p.ledger_file.clone().unwrap_or_default(),
                    output::csv_opt(p.ledger_line),
                    output::csv_opt(p.scan_id),
                    p.message.clone(),
                ]
            }),
        ),
        Format::Table => {
            writeln!(out, "ledger:   {}", audit.ledger)?;
            if audit.segments.len() > 1 {
                writeln!(
                    out,
                    "segments: {} ({} to {})",
                    audit.segments.len(),
                    audit.segments[0],
                    audit.segments[audit.segments.len() - 1]
                )?;
            }
            match &audit.head {
                Some(h) => writeln!(
                    out,
                    "entries:  {} (head: entry {} at {}, {})",
                    audit.entries, h.seq, h.time, h.hash
                )?,
                None => writeln!(out, "entries:  0")?,
            }
            if let Some(r) = &audit.rotated {
                writeln!(out, "rotated:  {}", r.message)?;
            }
            if let Some(t) = &audit.torn_tail {
                writeln!(
                    out,
                    "          last line {} of {} ({} bytes) is incomplete: an append in progress or cut short, not checked",
                    t.line, t.file, t.bytes
                )?;
            }
            writeln!(
                out,
                "scans:    {} stored, {} match their ledger entry",
                audit.scans_stored, audit.scans_matched
            )?;
            let notes = [
                (
                    audit.scans_not_whole,
                    "arrived incomplete (samples dropped by procmond's full write-ahead log, or a lost chunk): identity checked, digest not comparable",
                ),
                (
                    audit.scans_without_digest,
                    "stored before digests were kept",
                ),
                (
                    audit.scans_before_ledger,
                    "stored before the ledger's first entry",
                ),
                (
                    audit.entries_before_store,
                    "ledger entries older than the oldest stored scan (retention)",
                ),
                (
                    audit.entries_not_yet_stored,
                    "ledger entries newer than the newest stored scan (not delivered yet)",
                ),
            ];
            for (n, text) in notes {
                if n > 0 {
                    writeln!(out, "          {n} {text}")?;
                }
            }
            for p in audit.problems.iter().take(TABLE_PROBLEMS) {
                writeln!(out, "PROBLEM:  {}", p.message)?;
            }
            if audit.problems_total > TABLE_PROBLEMS {
                writeln!(
                    out,
                    "          ... and {} more (--format json lists up to {MAX_PROBLEMS})",
                    audit.problems_total - TABLE_PROBLEMS
                )?;
            }
            writeln!(
                out,
                "result:   {}",
                if audit.intact { "intact" } else { "NOT intact" }
            )
        }
    }
}

pub(crate) fn verify(ctx: &mut Context<'_>, ledger: &Path) -> Result<(), CliError> {
    let scans = ctx.reader.scans(None)?;
    let mut checker = Checker::new(ledger, &scans);
    let report = read_ledger(ledger, |l| checker.entry(l))?;
    let audit = checker.finish(&report);
    write_report(ctx.out, ctx.format, &audit)?;
    if audit.intact {
        Ok(())
    } else {
        let first = audit
            .problems
            .first()
            .map_or_else(String::new, |p| format!(": {}", p.message));
        Err(CliError::AuditFailed(format!(
            "{} problem(s) found{first}",
            audit.problems_total
        )))
    }
}

/// What `audit head` prints.
#[derive(Debug, Serialize)]
struct HeadOut {
    seq: u64,
    hash: String,
    time: String,
    /// Set when the oldest segments were rotated away.
    rotated: Option<Rotated>,
}

/// `audit head`: the last entry's sequence number and hash, to anchor
/// elsewhere. Needs no store.
pub(crate) fn head(ledger: &Path, format: Format, out: &mut dyn Write) -> Result<(), CliError> {
    let report = read_ledger(ledger, |_| {})?;
    let Some(last) = &report.last else {
        return Err(CliError::Audit(format!(
            "the ledger {} has no entries yet: procmond writes one per scan",
            ledger.display()
        )));
    };
    let head = HeadOut {
        seq: last.entry.seq,
        hash: hex::encode(last.entry.hash),
        time: rfc3339_millis(last.entry.time_ms),
        rotated: Rotated::of(&report),
    };
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, &head).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Csv => output::write_csv(
            out,
            &[
                "seq",
                "hash",
                "time",
                "checked_from_seq",
                "checked_from_prev",
            ],
            std::iter::once(vec![
                head.seq.to_string(),
                head.hash,
                head.time,
                output::csv_opt(head.rotated.as_ref().map(|r| r.first_seq)),
                head.rotated.map(|r| r.prev).unwrap_or_default(),
            ]),
        )?,
        Format::Table => {
            writeln!(out, "{} {} {}", head.seq, head.hash, head.time)?;
            if let Some(r) = &head.rotated {
                writeln!(out, "rotated: {}", r.message)?;
            }
        }
    }
    if let Some(b) = &report.first_break {
        return Err(CliError::AuditFailed(format!(
            "the ledger's chain is broken in {}: {}: run `sentinelcli audit verify`",
            b.file_name(),
            b.at
        )));
    }
    Ok(())
}

/// Which `audit` subcommand runs, and on which ledger.
pub(crate) fn ledger_of(command: &AuditCommand) -> &LedgerArgs {
    match command {
        AuditCommand::Verify(args) | AuditCommand::Head(args) => args,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sentineld_common::ledger::{ChainBreak, NewEntry, ZERO_HASH};

    use super::*;

    const BOOT: [u8; 16] = [7; 16];

    fn chain(n: u64) -> Vec<Located> {
        let mut prev = ZERO_HASH;
        (1..=n)
            .map(|seq| {
                let new = NewEntry {
                    time_ms: 1_000 * seq as i64,
                    scan_seq: seq,
                    boot_id: BOOT,
                    process_count: 10,
                    started: 1,
                    updated: 0,
                    exited: 0,
                    samples: 9,
                    digest: [seq as u8; 32],
                };
                let entry = Entry::seal(EntryKind::Scan, seq, &new, prev);
                prev = entry.hash;
                Located {
                    file: Arc::from(Path::new("ledger.log")),
                    line: seq,
                    entry,
                }
            })
            .collect()
    }

    fn report(entries: Vec<Located>) -> (VerifyReport, Vec<Located>) {
        let report = VerifyReport {
            files: vec![PathBuf::from("ledger.log")],
            entries: entries.len() as u64,
            last: entries.last().cloned(),
            rotated: None,
            first_break: None,
            torn_tail: None,
        };
        (report, entries)
    }

    fn row(seq: u64) -> ScanRow {
        ScanRow {
            scan_id: seq,
            time_ms: 1_000 * seq as i64,
            process_count: 10,
            duration_us: 1,
            started: 1,
            exited: 0,
            snapshot: false,
            boot_id: BOOT,
            scan_seq: seq,
            chunks: 1,
            chunks_sent: 1,
            samples_dropped: 0,
            digest: Some([seq as u8; 32]),
        }
    }

    fn run((report, entries): &(VerifyReport, Vec<Located>), scans: &[ScanRow]) -> Audit {
        let mut checker = Checker::new(Path::new("ledger.log"), scans);
        for l in entries {
            checker.entry(l);
        }
        checker.finish(report)
    }

    #[test]
    fn matching_store_and_ledger_are_intact() {
        let audit = run(&report(chain(5)), &(1..=5).map(row).collect::<Vec<_>>());
        assert!(audit.intact, "{audit:?}");
        assert_eq!(audit.scans_matched, 5);
    }

    #[test]
    fn an_edited_scan_is_named() {
        let mut scans: Vec<_> = (1..=5).map(row).collect();
        scans[2].digest = Some([0xee; 32]);
        scans[3].process_count = 11;
        let audit = run(&report(chain(5)), &scans);
        assert!(!audit.intact);
        assert_eq!(audit.problems.len(), 2);
        assert_eq!(audit.problems[0].kind, Kind::ScanDiffers);
        assert_eq!(audit.problems[0].scan_id, Some(3));
        assert_eq!(audit.problems[0].ledger_line, Some(3));
        assert!(
            audit.problems[1].message.contains("process count 11"),
            "{:?}",
            audit.problems[1]
        );
    }

    #[test]
    fn a_deleted_scan_inside_the_span_is_missing_but_edges_are_not() {
        // Scan 3 deleted; scan 1 removed by retention; 5 not yet delivered.
        let scans: Vec<_> = [2, 4].into_iter().map(row).collect();
        let audit = run(&report(chain(5)), &scans);
        assert_eq!(audit.problems_total, 1, "{audit:?}");
        assert_eq!(audit.problems[0].kind, Kind::ScanMissing);
        assert_eq!(audit.problems[0].ledger_seq, Some(3));
        assert_eq!(audit.entries_before_store, 1);
        assert_eq!(audit.entries_not_yet_stored, 1);
    }

    #[test]
    fn an_added_scan_is_unknown_and_older_scans_are_not() {
        let mut scans: Vec<_> = (2..=5).map(row).collect();
        let mut forged = row(9);
        forged.time_ms = 3_500;
        scans.push(forged);
        let mut old = row(1);
        old.time_ms = 500;
        old.scan_seq = 77;
        scans.push(old);
        let mut entries = chain(5);
        entries.remove(0);
        let audit = run(&report(entries), &scans);
        assert_eq!(audit.problems_total, 1, "{audit:?}");
        assert_eq!(audit.problems[0].kind, Kind::ScanUnknown);
        assert_eq!(audit.problems[0].scan_id, Some(9));
        assert_eq!(audit.scans_before_ledger, 1);
    }

    #[test]
    fn a_scan_that_arrived_stripped_is_not_a_problem() {
        let mut scans: Vec<_> = (1..=3).map(row).collect();
        scans[1].samples_dropped = 4;
        scans[1].digest = Some([0xee; 32]);
        let audit = run(&report(chain(3)), &scans);
        assert!(audit.intact, "{audit:?}");
        assert_eq!((audit.scans_matched, audit.scans_not_whole), (2, 1));
    }

    #[test]
    fn a_chain_break_comes_first() {
        let mut r = report(chain(3));
        r.0.first_break = Some(ChainBreak {
            file: PathBuf::from("ledger.00000000000000000001.log"),
            at: ledger::Break::Edited { seq: 2, line: 2 },
        });
        let mut scans: Vec<_> = (1..=3).map(row).collect();
        scans[0].digest = Some([0xee; 32]);
        let audit = run(&r, &scans);
        assert_eq!(audit.problems[0].kind, Kind::Chain);
        assert_eq!(
            audit.problems[0].message,
            "the hash chain breaks in ledger.00000000000000000001.log: \
             entry 2 (line 2) was edited: its hash does not match"
        );
        assert_eq!(
            audit.problems[0].ledger_file.as_deref(),
            Some("ledger.00000000000000000001.log")
        );
        assert_eq!(audit.problems_total, 2);
    }

    #[test]
    fn a_rotated_prefix_is_reported_but_not_a_problem() {
        let mut entries = chain(6);
        entries.drain(..2);
        let mut r = report(entries);
        r.0.rotated = Some(ledger::Rotated {
            first_seq: 3,
            prev: r.1[0].entry.prev,
            file: PathBuf::from("ledger.00000000000000000003.log"),
        });
        let scans: Vec<_> = (3..=6).map(row).collect();
        let audit = run(&r, &scans);
        assert!(audit.intact, "{audit:?}");
        let rotated = audit.rotated.as_ref().unwrap();
        assert_eq!(rotated.first_seq, 3);
        assert!(rotated.message.starts_with(
            "entries before 3 were rotated away; checked from entry 3, whose prev is "
        ));
        let mut text = Vec::new();
        write_report(&mut text, Format::Table, &audit).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("rotated:  entries before 3"), "{text}");
        assert!(text.contains("result:   intact"), "{text}");
    }
}
