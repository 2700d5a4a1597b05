//! `sentinelcli scans`: the stored scans, newest first.

use sentineld_agent::store::ScanRow;
use sentineld_common::time::rfc3339_millis;
use serde::Serialize;

use crate::args::{DEFAULT_TABLE_SCANS, ScansArgs};
use crate::output::{self, Column};
use crate::{CliError, Context, Format};

/// CSV columns, in the order of the JSON object's fields.
pub(crate) const FIELDS: &[&str] = &[
    "scan_id",
    "time",
    "process_count",
    "duration_us",
    "started",
    "exited",
    "snapshot",
];

const COLUMNS: &[Column] = &[
    Column::right("SCAN"),
    Column::left("TIME"),
    Column::right("PROCS"),
    Column::right("DURATION"),
    Column::right("STARTED"),
    Column::right("EXITED"),
    Column::left("SNAPSHOT"),
];

/// One scan as printed.
#[derive(Debug, Serialize)]
struct Row {
    scan_id: u64,
    /// When the scan started, RFC 3339 with milliseconds.
    time: String,
    process_count: u32,
    duration_us: u64,
    started: u32,
    exited: u32,
    snapshot: bool,
}

impl Row {
    fn new(scan: &ScanRow) -> Row {
        Row {
            scan_id: scan.scan_id,
            time: rfc3339_millis(scan.time_ms),
            process_count: scan.process_count,
            duration_us: scan.duration_us,
            started: scan.started,
            exited: scan.exited,
            snapshot: scan.snapshot,
        }
    }

    fn csv(&self) -> Vec<String> {
        vec![
            self.scan_id.to_string(),
            self.time.clone(),
            self.process_count.to_string(),
            self.duration_us.to_string(),
            self.started.to_string(),
            self.exited.to_string(),
            self.snapshot.to_string(),
        ]
    }

    fn table(&self) -> Vec<String> {
        vec![
            self.scan_id.to_string(),
            self.time.clone(),
            self.process_count.to_string(),
            output::human_micros(self.duration_us),
            self.started.to_string(),
            self.exited.to_string(),
            if self.snapshot { "yes" } else { "no" }.to_owned(),
        ]
    }
}

/// How many scans to read: `--all` means all, `--limit` its count, and
/// otherwise a table shows the newest few while JSON and CSV get all.
fn limit(args: &ScansArgs, format: Format) -> Option<usize> {
    if args.all {
        return None;
    }
    match (args.limit, format) {
        (Some(n), _) => Some(n),
        (None, Format::Table) => Some(DEFAULT_TABLE_SCANS),
        (None, Format::Json | Format::Csv) => None,
    }
}

pub(crate) fn run(ctx: &mut Context<'_>, args: &ScansArgs) -> Result<(), CliError> {
    let rows: Vec<Row> = ctx
        .reader
        .scans(limit(args, ctx.format))?
        .iter()
        .map(Row::new)
        .collect();
    if rows.is_empty() {
        let note = format!(
            "{} holds no scan yet: is sentinelagent running with this --state-dir?",
            ctx.store_path.display()
        );
        ctx.note(&note);
    }
    match ctx.format {
        Format::Json => output::write_json(ctx.out, &rows)?,
        Format::Csv => output::write_csv(ctx.out, FIELDS, rows.iter().map(Row::csv))?,
        Format::Table if rows.is_empty() => {}
        Format::Table => {
            let cells: Vec<Vec<String>> = rows.iter().map(Row::table).collect();
            output::write_table(ctx.out, COLUMNS, &cells)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan() -> ScanRow {
        ScanRow {
            scan_id: 9,
            time_ms: 1_500,
            process_count: 300,
            duration_us: 12_340,
            started: 3,
            exited: 1,
            snapshot: true,
            boot_id: [0; 16],
            scan_seq: 4,
            chunks: 1,
            chunks_sent: 1,
            samples_dropped: 0,
            digest: None,
        }
    }

    #[test]
    fn row_fields_match_the_csv_header() {
        let row = Row::new(&scan());
        let json = serde_json::to_value(&row).expect("serializes");
        let mut keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = FIELDS.to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
        assert_eq!(json["time"], "1970-01-01T00:00:01.500Z");
        assert_eq!(
            row.csv(),
            [
                "9",
                "1970-01-01T00:00:01.500Z",
                "300",
                "12340",
                "3",
                "1",
                "true"
            ]
        );
        assert_eq!(row.table()[3], "12.3ms");
        assert_eq!(row.table()[6], "yes");
    }

    #[test]
    fn default_limit_depends_on_the_format() {
        let args = |limit, all| ScansArgs { limit, all };
        assert_eq!(
            limit(&args(None, false), Format::Table),
            Some(DEFAULT_TABLE_SCANS)
        );
        assert_eq!(limit(&args(None, false), Format::Json), None);
        assert_eq!(limit(&args(None, false), Format::Csv), None);
        assert_eq!(limit(&args(Some(3), false), Format::Json), Some(3));
        assert_eq!(limit(&args(None, true), Format::Table), None);
    }
}
