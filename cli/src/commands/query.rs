//! `sentinelcli query`: the rules' SQL dialect over the stored processes.

use std::collections::HashMap;

use sentineld_agent::rules::{Record, Value, compile_query};
use sentineld_agent::store::{StoreReader, StoredProcess};
use sentineld_proto::view::ProcessView;

use crate::args::QueryArgs;
use crate::output::{self, Align};
use crate::{CliError, Context, Format};

/// Rows a query prints at most without a LIMIT of its own.
const ROW_CAP: usize = 100_000;

/// The records rules and queries see: the live processes, or with `all`
/// every stored instance, each with its parent's fields when the parent is
/// stored too.
pub(crate) fn records(reader: &StoreReader, all: bool) -> Result<Vec<Record>, CliError> {
    let processes: Vec<StoredProcess> = if all {
        reader
            .instances(None)?
            .into_iter()
            .map(|i| i.process)
            .collect()
    } else {
        reader.live()?
    };
    let views: Vec<ProcessView> = processes.iter().map(StoredProcess::view).collect();
    // (boot, pid, start time) → index, and (boot, pid) → the latest start.
    let mut exact: HashMap<([u8; 16], u32, i64), usize> = HashMap::new();
    let mut by_pid: HashMap<([u8; 16], u32), (i64, usize)> = HashMap::new();
    for (i, p) in processes.iter().enumerate() {
        let instance = p.record.instance.unwrap_or_default();
        exact.insert((p.boot_id, instance.pid, instance.start_time), i);
        let slot = by_pid
            .entry((p.boot_id, instance.pid))
            .or_insert((instance.start_time, i));
        if instance.start_time >= slot.0 {
            *slot = (instance.start_time, i);
        }
    }
    Ok(processes
        .iter()
        .zip(&views)
        .map(|(p, view)| {
            let ppid = p.record.ppid;
            let parent = if p.record.parent_start_time != 0 {
                exact.get(&(p.boot_id, ppid, p.record.parent_start_time))
            } else {
                by_pid.get(&(p.boot_id, ppid)).map(|(_, i)| i)
            };
            Record::from_view(view, parent.map(|&i| &views[i]))
        })
        .collect())
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

pub(crate) fn run(ctx: &mut Context<'_>, args: &QueryArgs) -> Result<(), CliError> {
    let query = compile_query(&args.sql).map_err(|e| CliError::Query(e.to_string()))?;
    let records = records(ctx.reader, args.all)?;
    let result = query.run_capped(&records, ROW_CAP);
    if result.truncated {
        // On stderr in every format: a cut JSON or CSV result must not pass
        // for a whole one unnoticed.
        let _ = writeln!(
            ctx.diag,
            "sentinelcli: only the first {ROW_CAP} rows are shown; add a LIMIT or a WHERE"
        );
    }
    match ctx.format {
        Format::Json => {
            let objects: Vec<serde_json::Map<String, serde_json::Value>> = result
                .rows
                .iter()
                .map(|row| {
                    result
                        .columns
                        .iter()
                        .cloned()
                        .zip(
                            row.iter()
                                .map(|v| serde_json::to_value(v).unwrap_or_default()),
                        )
                        .collect()
                })
                .collect();
            output::write_json(ctx.out, &objects)?;
        }
        Format::Csv => {
            let header: Vec<&str> = result.columns.iter().map(String::as_str).collect();
            output::write_csv(
                ctx.out,
                &header,
                result.rows.iter().map(|r| r.iter().map(cell).collect()),
            )?;
        }
        Format::Table => {
            if result.rows.is_empty() {
                ctx.note("no rows");
                return Ok(());
            }
            let header: Vec<&str> = result.columns.iter().map(String::as_str).collect();
            let aligns: Vec<Align> = result.rows[0]
                .iter()
                .map(|v| match v {
                    Value::Int(_) | Value::Float(_) => Align::Right,
                    _ => Align::Left,
                })
                .collect();
            let rows: Vec<Vec<String>> = result
                .rows
                .iter()
                .map(|r| r.iter().map(cell).collect())
                .collect();
            output::write_table_with(ctx.out, &header, &aligns, &rows)?;
        }
    }
    Ok(())
}
