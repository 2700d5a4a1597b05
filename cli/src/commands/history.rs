//! `sentinelcli history PID`: the samples of one pid, oldest first.

use sentineld_agent::store::HistoryPoint;
use sentineld_common::time::{rfc3339_millis, rfc3339_secs};
use serde::Serialize;

use crate::args::HistoryArgs;
use crate::output::{self, Column, csv_opt};
use crate::{CliError, Context, Format};

/// CSV columns, in the order of the JSON object's fields.
pub(crate) const FIELDS: &[&str] = &[
    "time",
    "pid",
    "start_time",
    "cpu_percent",
    "rss_bytes",
    "vms_bytes",
    "threads",
    "open_fds",
    "status",
];

const COLUMNS: &[Column] = &[
    Column::left("TIME"),
    Column::right("PID"),
    Column::left("STARTED"),
    Column::right("CPU%"),
    Column::right("RSS"),
    Column::right("VMS"),
    Column::right("THREADS"),
    Column::right("FDS"),
    Column::left("STATUS"),
];

/// One sample as printed.
#[derive(Debug, Serialize)]
struct Row {
    /// When the sample was taken, RFC 3339 with milliseconds.
    time: String,
    pid: u32,
    /// Start of the instance, RFC 3339: tells apart processes that had the
    /// same pid.
    start_time: String,
    cpu_percent: f32,
    rss_bytes: u64,
    vms_bytes: u64,
    threads: u32,
    open_fds: Option<u32>,
    status: String,
}

impl Row {
    fn new(point: &HistoryPoint) -> Row {
        Row {
            time: rfc3339_millis(point.time_ms),
            pid: point.pid,
            start_time: rfc3339_secs(point.start_time),
            cpu_percent: point.sample.cpu_percent,
            rss_bytes: point.sample.rss_bytes,
            vms_bytes: point.sample.vms_bytes,
            threads: point.sample.threads,
            open_fds: point.sample.open_fds,
            status: point.sample.status.clone(),
        }
    }

    fn csv(&self) -> Vec<String> {
        vec![
            self.time.clone(),
            self.pid.to_string(),
            self.start_time.clone(),
            self.cpu_percent.to_string(),
            self.rss_bytes.to_string(),
            self.vms_bytes.to_string(),
            self.threads.to_string(),
            csv_opt(self.open_fds),
            self.status.clone(),
        ]
    }

    fn table(&self) -> Vec<String> {
        vec![
            self.time.clone(),
            self.pid.to_string(),
            self.start_time.clone(),
            format!("{:.1}", self.cpu_percent),
            output::human_bytes(self.rss_bytes),
            output::human_bytes(self.vms_bytes),
            self.threads.to_string(),
            self.open_fds
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            self.status.clone(),
        ]
    }
}

pub(crate) fn run(ctx: &mut Context<'_>, args: &HistoryArgs) -> Result<(), CliError> {
    let rows: Vec<Row> = ctx
        .reader
        .history(args.pid, args.limit)?
        .iter()
        .map(Row::new)
        .collect();
    if rows.is_empty() {
        let note = format!(
            "no samples of pid {} in {}",
            args.pid,
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
    use sentineld_proto::v1::Sample;

    use super::*;

    fn point() -> HistoryPoint {
        HistoryPoint {
            boot_id: [7; 16],
            pid: 42,
            start_time: 1_700_000_000,
            time_ms: 1_700_000_123_456,
            sample: Sample {
                cpu_percent: 12.5,
                rss_bytes: 4096,
                vms_bytes: 1 << 30,
                threads: 4,
                open_fds: None,
                status: "S".to_owned(),
                ..Sample::default()
            },
        }
    }

    #[test]
    fn row_fields_match_the_csv_header() {
        let row = Row::new(&point());
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
        assert_eq!(json["time"], "2023-11-14T22:15:23.456Z");
        assert_eq!(json["start_time"], "2023-11-14T22:13:20Z");
        assert!(json["open_fds"].is_null());
        assert_eq!(row.csv().len(), FIELDS.len());
        assert_eq!(row.csv()[7], "");
    }

    #[test]
    fn table_cells_are_human() {
        let cells = Row::new(&point()).table();
        assert_eq!(cells.len(), COLUMNS.len());
        assert_eq!(cells[3], "12.5");
        assert_eq!(cells[4], "4.0K");
        assert_eq!(cells[5], "1.0G");
        assert_eq!(cells[7], "-");
    }
}
