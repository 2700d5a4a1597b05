//! `sentinelcli audit verify|head`: checks procmond's audit ledger and the
//! stored scans against it (`docs/audit-ledger.md`).
//!
//! `verify` walks the hash chain, then matches every ledger scan entry with
//! the stored scan of the same (boot, time, scan number) and compares the
//! scan digest the agent computed over what it received with the one
//! procmond wrote when it collected the scan. Everything found is a
//! problem with its position; the command fails (exit code 1) on any.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sentineld_agent::store::ScanRow;
use sentineld_common::layout::StateLayout;
use sentineld_common::ledger::{self, Entry, EntryKind, VerifyReport};
use sentineld_common::time::rfc3339_millis;
use serde::Serialize;

use crate::args::{AuditCommand, LedgerArgs};
use crate::output;
use crate::{CliError, Context, Format};

/// Most problems listed; past it they are only counted.
const MAX_PROBLEMS: usize = 1000;

/// Problems a table shows; JSON and CSV show all that were listed.
const TABLE_PROBLEMS: usize = 20;

/// The ledger `--ledger` names: a file, or a directory holding
/// `ledger.log`; by default procmond's state directory under the agent's.
pub(crate) fn ledger_path(state_dir: Option<&Path>, args: &LedgerArgs) -> PathBuf {
    let path = args
        .ledger
        .clone()
        .unwrap_or_else(|| StateLayout::resolve(state_dir, None).procmond_dir());
    if path.is_dir() {
        path.join(ledger::FILE_NAME)
    } else {
        path
    }
}

fn read_ledger(path: &Path) -> Result<VerifyReport, CliError> {
    ledger::verify(path).map_err(|e| CliError::Audit(e.to_string()))
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
    /// Ledger entry and line, when the problem is tied to one.
    ledger_seq: Option<u64>,
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
    line: u64,
    bytes: u64,
}

/// The result of `verify`, as printed.
#[derive(Debug, Serialize)]
struct Audit {
    /// True only when the chain holds and every stored scan matches.
    intact: bool,
    ledger: String,
    entries: usize,
    head: Option<Head>,
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

/// Checks `report` (the ledger at `ledger`) against the stored `scans`.
fn check(ledger: &Path, report: &VerifyReport, scans: &[ScanRow]) -> Audit {
    let mut audit = Audit {
        intact: false,
        ledger: ledger.display().to_string(),
        entries: report.entries.len(),
        head: report.entries.last().map(|l| Head {
            seq: l.entry.seq,
            hash: hex::encode(l.entry.hash),
            time: rfc3339_millis(l.entry.time_ms),
        }),
        torn_tail: report.torn_tail.map(|t| TornTail {
            line: t.line,
            bytes: t.bytes,
        }),
        scans_stored: scans.len(),
        scans_matched: 0,
        scans_not_whole: 0,
        scans_without_digest: 0,
        scans_before_ledger: 0,
        entries_before_store: 0,
        entries_not_yet_stored: 0,
        problems_total: 0,
        problems: Vec::new(),
    };
    if let Some(b) = report.first_break {
        let line = match b {
            ledger::Break::Unparseable { line }
            | ledger::Break::Edited { line, .. }
            | ledger::Break::Deleted { line, .. }
            | ledger::Break::Reordered { line, .. }
            | ledger::Break::BadPrev { line, .. } => line,
        };
        audit.problem(Problem {
            kind: Kind::Chain,
            ledger_seq: None,
            ledger_line: Some(line),
            scan_id: None,
            message: format!("the hash chain breaks: {b}"),
        });
    }

    let entries: Vec<_> = report
        .entries
        .iter()
        .filter(|l| l.entry.kind == EntryKind::Scan)
        .collect();
    let ledger_span = entries
        .iter()
        .map(|l| l.entry.time_ms)
        .fold(None, |span: Option<(i64, i64)>, t| {
            Some(span.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))))
        });
    let store_span = scans
        .iter()
        .map(|s| s.time_ms)
        .fold(None, |span: Option<(i64, i64)>, t| {
            Some(span.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))))
        });
    let by_key: HashMap<ScanKey, &ScanRow> = scans
        .iter()
        .map(|s| ((s.boot_id, s.time_ms, s.scan_seq), s))
        .collect();

    let mut matched = std::collections::HashSet::new();
    for located in &entries {
        let e = &located.entry;
        let key = (e.boot_id, e.time_ms, e.scan_seq);
        let Some(scan) = by_key.get(&key) else {
            match store_span {
                Some((lo, _)) if e.time_ms < lo => audit.entries_before_store += 1,
                Some((_, hi)) if e.time_ms > hi => audit.entries_not_yet_stored += 1,
                None => audit.entries_not_yet_stored += 1,
                Some(_) => audit.problem(Problem {
                    kind: Kind::ScanMissing,
                    ledger_seq: Some(e.seq),
                    ledger_line: Some(located.line),
                    scan_id: None,
                    message: format!(
                        "ledger entry {} (line {}, {}) has no stored scan: deleted from the store, or never delivered",
                        e.seq,
                        located.line,
                        describe(e)
                    ),
                }),
            }
            continue;
        };
        matched.insert(key);
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
                ledger_line: Some(located.line),
                scan_id: Some(scan.scan_id),
                message: format!(
                    "stored scan {} differs from ledger entry {} (line {}, {}): {}",
                    scan.scan_id,
                    e.seq,
                    located.line,
                    describe(e),
                    differs.join("; ")
                ),
            });
        }
    }

    for scan in scans {
        if matched.contains(&(scan.boot_id, scan.time_ms, scan.scan_seq)) {
            continue;
        }
        match ledger_span {
            Some((lo, _)) if scan.time_ms < lo => audit.scans_before_ledger += 1,
            None => audit.scans_before_ledger += 1,
            Some(_) => audit.problem(Problem {
                kind: Kind::ScanUnknown,
                ledger_seq: None,
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
    audit.problems.sort_by_key(|p| {
        (
            p.kind != Kind::Chain,
            p.ledger_line.unwrap_or(u64::MAX),
            p.scan_id,
        )
    });
    audit.intact = audit.problems_total == 0;
    audit
}

const PROBLEM_FIELDS: &[&str] = &["kind", "ledger_seq", "ledger_line", "scan_id", "message"];

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
                    output::csv_opt(p.ledger_line),
                    output::csv_opt(p.scan_id),
                    p.message.clone(),
                ]
            }),
        ),
        Format::Table => {
            writeln!(out, "ledger:   {}", audit.ledger)?;
            match &audit.head {
                Some(h) => writeln!(
                    out,
                    "entries:  {} (head: entry {} at {}, {})",
                    audit.entries, h.seq, h.time, h.hash
                )?,
                None => writeln!(out, "entries:  0")?,
            }
            if let Some(t) = &audit.torn_tail {
                writeln!(
                    out,
                    "          last line {} ({} bytes) is incomplete: an append in progress or cut short, not checked",
                    t.line, t.bytes
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
    let report = read_ledger(ledger)?;
    let scans = ctx.reader.scans(None)?;
    let audit = check(ledger, &report, &scans);
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

/// `audit head`: the last entry's sequence number and hash, to anchor
/// elsewhere. Needs no store.
pub(crate) fn head(ledger: &Path, format: Format, out: &mut dyn Write) -> Result<(), CliError> {
    let report = read_ledger(ledger)?;
    let Some(last) = report.entries.last() else {
        return Err(CliError::Audit(format!(
            "the ledger {} has no entries yet: procmond writes one per scan",
            ledger.display()
        )));
    };
    let head = Head {
        seq: last.entry.seq,
        hash: hex::encode(last.entry.hash),
        time: rfc3339_millis(last.entry.time_ms),
    };
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, &head).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Csv => output::write_csv(
            out,
            &["seq", "hash", "time"],
            std::iter::once(vec![head.seq.to_string(), head.hash, head.time]),
        )?,
        Format::Table => writeln!(out, "{} {} {}", head.seq, head.hash, head.time)?,
    }
    if !report.is_intact() {
        return Err(CliError::AuditFailed(
            "the ledger's chain is broken: run `sentinelcli audit verify`".to_owned(),
        ));
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
    use sentineld_common::ledger::{Located, NewEntry, ZERO_HASH};

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
                Located { line: seq, entry }
            })
            .collect()
    }

    fn report(entries: Vec<Located>) -> VerifyReport {
        VerifyReport {
            entries,
            first_break: None,
            torn_tail: None,
        }
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

    fn run(report: &VerifyReport, scans: &[ScanRow]) -> Audit {
        check(Path::new("ledger.log"), report, scans)
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
        r.first_break = Some(ledger::Break::Edited { seq: 2, line: 2 });
        let mut scans: Vec<_> = (1..=3).map(row).collect();
        scans[0].digest = Some([0xee; 32]);
        let audit = run(&r, &scans);
        assert_eq!(audit.problems[0].kind, Kind::Chain);
        assert!(audit.problems[0].message.contains("line 2"));
        assert_eq!(audit.problems_total, 2);
    }
}
