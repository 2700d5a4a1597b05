//! `sentinelcli alerts`: stored alerts, newest first.

use sentineld_agent::sinks::{Alert, Severity};
use serde::Serialize;

use crate::args::AlertsArgs;
use crate::output::{self, Column};
use crate::{CliError, Context, Format};

const FIELDS: &[&str] = &[
    "seq", "id", "time", "severity", "rule_id", "pid", "name", "exe", "title",
];

const COLUMNS: &[Column] = &[
    Column::left("TIME"),
    Column::left("SEVERITY"),
    Column::left("RULE"),
    Column::right("PID"),
    Column::left("NAME"),
    Column::left("TITLE"),
];

/// One alert as printed in JSON: the alert as the sinks received it, its
/// sequence number in the store and its delivery attempts.
#[derive(Debug, Serialize)]
struct Row {
    seq: u64,
    #[serde(flatten)]
    alert: Alert,
    deliveries: Vec<serde_json::Value>,
}

impl Row {
    fn pid(&self) -> String {
        self.alert.process["pid"]
            .as_u64()
            .map_or_else(String::new, |p| p.to_string())
    }

    fn process_str(&self, key: &str) -> String {
        self.alert.process[key]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn csv(&self) -> Vec<String> {
        vec![
            self.seq.to_string(),
            self.alert.id.clone(),
            self.alert.time.clone(),
            self.alert.severity.to_string(),
            self.alert.rule_id.clone(),
            self.pid(),
            self.process_str("name"),
            self.process_str("exe"),
            self.alert.title.clone(),
        ]
    }

    fn table(&self) -> Vec<String> {
        vec![
            self.alert.time.clone(),
            self.alert.severity.to_string(),
            self.alert.rule_id.clone(),
            self.pid(),
            self.process_str("name"),
            self.alert.title.clone(),
        ]
    }
}

/// Whether `alert` passes the filters. `since` is unix milliseconds.
fn keep(alert: &Alert, args: &AlertsArgs, since: Option<i64>) -> bool {
    if let Some(min) = args.severity
        && alert.severity < min
    {
        return false;
    }
    if let Some(rule) = &args.rule
        && &alert.rule_id != rule
    {
        return false;
    }
    if let Some(since) = since {
        let at = alert
            .time
            .parse::<jiff::Timestamp>()
            .map_or(i64::MIN, |t| t.as_millisecond());
        if at < since {
            return false;
        }
    }
    true
}

pub(crate) fn run(ctx: &mut Context<'_>, args: &AlertsArgs) -> Result<(), CliError> {
    let since = args.since.as_ref().map(|s| s.as_millis());
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    let mut unreadable = 0usize;
    for stored in ctx.reader.alerts(None)? {
        if rows.len() >= limit {
            break;
        }
        let Ok(alert) = serde_json::from_slice::<Alert>(&stored.json) else {
            unreadable += 1;
            continue;
        };
        if !keep(&alert, args, since) {
            continue;
        }
        let deliveries = if ctx.format == Format::Json {
            ctx.reader
                .deliveries(&alert.id)?
                .iter()
                .filter_map(|d| serde_json::from_slice(d).ok())
                .collect()
        } else {
            Vec::new()
        };
        rows.push(Row {
            seq: stored.seq,
            alert,
            deliveries,
        });
    }
    if unreadable > 0 {
        let note = format!("{unreadable} stored alerts could not be read and are not shown");
        ctx.note(&note);
    }
    if rows.is_empty() {
        ctx.note("no alerts match");
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

/// `--severity`: the lowest severity shown.
pub(crate) fn parse_severity(text: &str) -> Result<Severity, String> {
    text.parse::<Severity>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
    use super::*;
    use crate::args::Since;

    fn alert(rule: &str, severity: Severity, time: &str) -> Alert {
        Alert {
            id: "a".into(),
            rule_id: rule.into(),
            title: "t".into(),
            description: "d".into(),
            severity,
            tags: vec![],
            time: time.into(),
            host: "h".into(),
            process: serde_json::json!({"pid": 7, "name": "x"}),
            parent: None,
        }
    }

    #[test]
    fn filters_by_severity_rule_and_time() {
        let a = alert("r1", Severity::Medium, "2026-01-01T00:00:10Z");
        let mut args = AlertsArgs::default();
        assert!(keep(&a, &args, None));
        args.severity = Some(Severity::High);
        assert!(!keep(&a, &args, None));
        args.severity = Some(Severity::Medium);
        args.rule = Some("r2".into());
        assert!(!keep(&a, &args, None));
        args.rule = Some("r1".into());
        let t = "2026-01-01T00:00:10Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        assert!(keep(&a, &args, Some(t)));
        assert!(!keep(&a, &args, Some(t + 1)));
        assert!(Since::parse("1h").is_ok());
    }

    #[test]
    fn row_fields_match_the_csv_header() {
        let row = Row {
            seq: 1,
            alert: alert("r", Severity::Low, "2026-01-01T00:00:00Z"),
            deliveries: vec![],
        };
        assert_eq!(row.csv().len(), FIELDS.len());
        assert_eq!(row.table().len(), COLUMNS.len());
    }
}
