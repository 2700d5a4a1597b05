//! Compares criterion results with a committed baseline of medians, or
//! writes that baseline.
//!
//! criterion keeps each benchmark's latest run in
//! `target/criterion/**/new/estimates.json`; the baseline
//! (`docs/perf-baseline.json`) maps each bench id to its median in
//! nanoseconds. A bench whose median grew by more than the threshold
//! (10 % by default) is flagged. The comparison is advisory: the exit code
//! is 0 unless `--strict` is given.
//!
//! `target/criterion` keeps the results of every bench ever run there, so
//! the output says how old the results are; `--max-age` or bench-id
//! filters leave out those not from the run at hand.
//!
//! ```sh
//! cargo bench -p sentineld-benches --bench codec --bench store -- --quick
//! cargo run --release -p sentineld-benches --bin bench-baseline            # compare
//! cargo run --release -p sentineld-benches --bin bench-baseline -- --write --note "..."
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use serde::{Deserialize, Serialize};

/// Compare the latest criterion results with the baseline, or (--write)
/// store them as the baseline.
#[derive(Debug, Parser)]
#[command(name = "bench-baseline")]
struct Args {
    /// criterion's output directory. Default: $CARGO_TARGET_DIR/criterion,
    /// else the workspace's target/criterion.
    #[arg(long, value_name = "DIR")]
    criterion: Option<PathBuf>,

    /// The baseline file. Default: the workspace's docs/perf-baseline.json.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,

    /// Flag a bench whose median grew by more than PCT percent.
    #[arg(long, value_name = "PCT", default_value_t = 10.0)]
    threshold: f64,

    /// Exit with 1 when a bench regressed (by default the comparison only
    /// reports).
    #[arg(long, conflicts_with = "write")]
    strict: bool,

    /// Write the results into the baseline instead of comparing: benches in
    /// the results replace their entries, the others are kept.
    #[arg(long)]
    write: bool,

    /// With --write: where and how the results were taken (machine,
    /// command, date), kept in the baseline.
    #[arg(long, value_name = "TEXT", requires = "write")]
    note: Option<String>,

    /// Leave out results older than this (e.g. 30m, 2h): criterion's
    /// directory also holds earlier runs of benches not run this time.
    #[arg(long, value_name = "DURATION", value_parser = sentineld_common::time::parse_duration)]
    max_age: Option<Duration>,

    /// Only bench ids containing one of these strings.
    #[arg(value_name = "FILTER")]
    filters: Vec<String>,
}

/// `docs/perf-baseline.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Baseline {
    /// Where and how the medians were taken.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    note: String,
    /// Bench id (criterion's full id) → median, nanoseconds.
    median_ns: BTreeMap<String, u64>,
}

/// One bench's latest criterion result.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measured {
    median_ns: f64,
    /// When criterion wrote it.
    taken: SystemTime,
}

/// The parts of criterion's `estimates.json` read here.
#[derive(Debug, Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Debug, Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// The part of criterion's `benchmark.json` read here.
#[derive(Debug, Deserialize)]
struct BenchmarkId {
    full_id: String,
}

fn workspace_root() -> PathBuf {
    let benches = Path::new(env!("CARGO_MANIFEST_DIR"));
    benches.parent().unwrap_or(benches).to_path_buf()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))
}

/// Every bench's latest result under `root`, by id.
fn results(root: &Path) -> Result<BTreeMap<String, Measured>, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if entry.file_name() != "new" {
                dirs.push(path);
                continue;
            }
            let estimates = path.join("estimates.json");
            if !estimates.is_file() {
                continue;
            }
            let id = match read_json::<BenchmarkId>(&path.join("benchmark.json")) {
                Ok(b) => b.full_id,
                Err(_) => dir
                    .strip_prefix(root)
                    .unwrap_or(&dir)
                    .to_string_lossy()
                    .into_owned(),
            };
            let median_ns = read_json::<Estimates>(&estimates)?.median.point_estimate;
            let taken = std::fs::metadata(&estimates)
                .and_then(|m| m.modified())
                .map_err(|e| format!("cannot read {}: {e}", estimates.display()))?;
            out.insert(id, Measured { median_ns, taken });
        }
    }
    Ok(out)
}

/// A duration in nanoseconds, with a unit that keeps 3 or 4 digits.
fn show(ns: f64) -> String {
    let (value, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    let decimals = if value >= 100.0 { 1 } else { 2 };
    format!("{value:.decimals$} {unit}")
}

/// How long ago `t` was, roughly.
fn age(t: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs_f64();
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} days", secs / 86_400.0)
    }
}

/// The comparison table and the number of regressions in it.
fn compare(
    baseline: &BTreeMap<String, u64>,
    current: &BTreeMap<String, f64>,
    threshold: f64,
) -> (String, usize) {
    let width = baseline
        .keys()
        .chain(current.keys())
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut text = String::new();
    let mut regressed = 0;
    let _ = writeln!(
        text,
        "{:width$}  {:>11}  {:>11}  {:>9}",
        "bench", "baseline", "current", "change"
    );
    for (id, &now) in current {
        let Some(&then) = baseline.get(id) else {
            let _ = writeln!(
                text,
                "{id:width$}  {:>11}  {:>11}  {:>9}  not in the baseline",
                "",
                show(now),
                ""
            );
            continue;
        };
        #[expect(clippy::cast_precision_loss, reason = "nanoseconds well below 2^53")]
        let then = then as f64;
        let change = (now - then) / then * 100.0;
        let flag = if change > threshold {
            regressed += 1;
            "  REGRESSED"
        } else if change < -threshold {
            "  faster"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "{id:width$}  {:>11}  {:>11}  {:>+8.1}%{flag}",
            show(then),
            show(now),
            // Rounded as printed, and + 0.0 turns -0.0 into 0.0: an
            // unchanged bench reads +0.0%.
            (change * 10.0).round() / 10.0 + 0.0
        );
    }
    for id in baseline.keys().filter(|id| !current.contains_key(*id)) {
        let _ = writeln!(text, "{id:width$}  not in these results");
    }
    (text, regressed)
}

/// Compares or writes; what to print goes to `out`.
fn run(args: &Args, out: &mut String) -> Result<ExitCode, String> {
    let criterion = args.criterion.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace_root().join("target"), PathBuf::from)
            .join("criterion")
    });
    let baseline_path = args
        .baseline
        .clone()
        .unwrap_or_else(|| workspace_root().join("docs/perf-baseline.json"));
    let keep = |id: &str| args.filters.is_empty() || args.filters.iter().any(|f| id.contains(f));

    let mut found = results(&criterion)?;
    let now = SystemTime::now();
    found.retain(|id, m| {
        keep(id)
            && args
                .max_age
                .is_none_or(|max| now.duration_since(m.taken).is_ok_and(|a| a <= max))
    });
    let (Some(oldest), Some(newest)) = (
        found.values().map(|m| m.taken).min(),
        found.values().map(|m| m.taken).max(),
    ) else {
        return Err(format!(
            "no criterion results under {} (with these filters): run `cargo bench -p sentineld-benches` first",
            criterion.display()
        ));
    };
    let _ = writeln!(
        out,
        "results: {} benches in {}, taken {} to {} ago",
        found.len(),
        criterion.display(),
        age(newest),
        age(oldest)
    );
    let current: BTreeMap<String, f64> =
        found.into_iter().map(|(id, m)| (id, m.median_ns)).collect();

    if args.write {
        let mut baseline = if baseline_path.exists() {
            read_json::<Baseline>(&baseline_path)?
        } else {
            Baseline::default()
        };
        if let Some(note) = &args.note {
            note.clone_into(&mut baseline.note);
        }
        let updated = current.len();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a median in nanoseconds, positive and far below 2^64"
        )]
        baseline
            .median_ns
            .extend(current.into_iter().map(|(id, ns)| (id, ns.round() as u64)));
        let mut text = serde_json::to_string_pretty(&baseline)
            .map_err(|e| format!("cannot encode the baseline: {e}"))?;
        text.push('\n');
        std::fs::write(&baseline_path, text)
            .map_err(|e| format!("cannot write {}: {e}", baseline_path.display()))?;
        let _ = writeln!(
            out,
            "wrote {} ({updated} of {} entries from {})",
            baseline_path.display(),
            baseline.median_ns.len(),
            criterion.display()
        );
        return Ok(ExitCode::SUCCESS);
    }

    let mut baseline = read_json::<Baseline>(&baseline_path)
        .map_err(|e| format!("{e} (write one with --write)"))?;
    baseline.median_ns.retain(|id, _| keep(id));
    if !baseline.note.is_empty() {
        let _ = writeln!(out, "baseline: {}", baseline.note);
    }
    let (table, regressed) = compare(&baseline.median_ns, &current, args.threshold);
    out.push_str(&table);
    let threshold = args.threshold;
    if regressed == 0 {
        let _ = writeln!(
            out,
            "no bench is more than {threshold} % slower than the baseline"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        let _ = writeln!(
            out,
            "{regressed} bench(es) more than {threshold} % slower than the baseline \
             (medians; on a shared machine re-run before trusting it)"
        );
        Ok(if args.strict {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut out = String::new();
    let result = run(&args, &mut out);
    // A closed pipe (`bench-baseline | head`) is not an error.
    let _ = std::io::stdout().write_all(out.as_bytes());
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench-baseline: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<T: Copy>(entries: &[(&str, T)]) -> BTreeMap<String, T> {
        entries.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn flags_only_growth_over_the_threshold() {
        let baseline = map(&[("a", 100), ("b", 100), ("c", 100), ("gone", 1)]);
        let current = map(&[("a", 109.0), ("b", 111.0), ("c", 50.0), ("new", 5.0)]);
        let (text, regressed) = compare(&baseline, &current, 10.0);
        assert_eq!(regressed, 1, "{text}");
        let line = |id: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{id} ")))
                .unwrap_or_else(|| panic!("no line for {id} in {text}"))
                .to_owned()
        };
        assert!(!line("a").contains("REGRESSED"));
        assert!(line("b").contains("+11.0%") && line("b").contains("REGRESSED"));
        assert!(line("c").contains("faster"));
        assert!(line("new").contains("not in the baseline"));
        assert!(line("gone").contains("not in these results"));
    }

    #[test]
    fn reads_criterion_output_by_full_id() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let new = dir.path().join("store/started_1000/new");
        std::fs::create_dir_all(&new).expect("dirs");
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":2.0},"median":{"point_estimate":1500.5}}"#,
        )
        .expect("write");
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"store","full_id":"store/started_1000"}"#,
        )
        .expect("write");
        let base = dir.path().join("store/started_1000/base");
        std::fs::create_dir_all(&base).expect("dirs");
        std::fs::write(
            base.join("estimates.json"),
            r#"{"median":{"point_estimate":1.0}}"#,
        )
        .expect("write");
        let found = results(dir.path()).expect("results read");
        let medians: BTreeMap<String, f64> =
            found.into_iter().map(|(id, m)| (id, m.median_ns)).collect();
        assert_eq!(medians, map(&[("store/started_1000", 1500.5)]));
    }

    #[test]
    fn durations_keep_their_digits() {
        assert_eq!(show(531.0), "531.0 ns");
        assert_eq!(show(10_600_000.0), "10.60 ms");
        assert_eq!(show(1_250_000_000.0), "1.25 s");
    }
}
