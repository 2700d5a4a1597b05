//! `sentinelcli query`: the rules' SQL dialect over the stored processes.

use std::ops::ControlFlow;

use sentineld_agent::rules::{Record, Value, compile_query};
use sentineld_agent::store::{StoreReader, StoredProcess};

use crate::args::QueryArgs;
use crate::output::{self, Align};
use crate::{CliError, Context, Format};

/// Rows a query prints at most without a LIMIT of its own.
const ROW_CAP: usize = 100_000;

/// The records rules and queries see: the live processes, or with `all`
/// every stored instance, each with its parent's fields when the parent is
/// stored too.
pub(crate) fn records(reader: &StoreReader, all: bool) -> Result<Vec<Record>, CliError> {
    let mut records = Records::default();
    if all {
        reader.each_instance(|i| {
            records.push(&i.process);
            ControlFlow::Continue(())
        })?;
    } else {
        for p in reader.live()? {
            records.push(&p);
        }
    }
    Ok(records.finish())
}

/// Records in the making. Each stored process becomes its record as soon
/// as it is read (the decoded process and its view are dropped then: a
/// store can hold a million instances); parents are filled in at the end,
/// when every instance is known.
#[derive(Default)]
struct Records {
    records: Vec<Record>,
    /// Per record: (boot, ppid, the parent's start time or 0).
    parents: Vec<([u8; 16], u32, i64)>,
    /// (boot, pid, start time, index) of every record, sorted at the end
    /// to find parents by binary search.
    keys: Vec<([u8; 16], u32, i64, usize)>,
}

impl Records {
    fn push(&mut self, p: &StoredProcess) {
        let instance = p.record.instance.unwrap_or_default();
        self.keys.push((
            p.boot_id,
            instance.pid,
            instance.start_time,
            self.records.len(),
        ));
        self.parents
            .push((p.boot_id, p.record.ppid, p.record.parent_start_time));
        self.records.push(Record::from_view(&p.view(), None));
    }

    /// The records with their parents' fields, as
    /// `Record::from_view(view, Some(parent's view))` fills them. The
    /// parent is the instance with the recorded parent start time, or,
    /// when none was recorded, the latest-started instance with the ppid
    /// (the last read among equals).
    fn finish(self) -> Vec<Record> {
        let Records {
            mut records,
            parents,
            mut keys,
        } = self;
        keys.sort_unstable();
        // The last key at or before (boot, pid, start, index), if it has
        // that boot and pid.
        let last_before = |boot: [u8; 16], pid: u32, (start, index): (i64, usize)| {
            let n = keys.partition_point(|&k| k <= (boot, pid, start, index));
            n.checked_sub(1)
                .map(|n| keys[n])
                .filter(|&(b, p, _, _)| (b, p) == (boot, pid))
        };
        for (i, (boot, ppid, parent_start)) in parents.into_iter().enumerate() {
            let parent = if parent_start != 0 {
                last_before(boot, ppid, (parent_start, usize::MAX))
                    .filter(|&(_, _, s, _)| s == parent_start)
            } else {
                last_before(boot, ppid, (i64::MAX, usize::MAX))
            };
            let Some((_, _, _, j)) = parent else { continue };
            // Distinct: a process is never its own parent instance.
            if let Ok([child, parent]) = records.get_disjoint_mut([i, j]) {
                child.set_parent(parent);
            }
        }
        records
    }
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

#[cfg(test)]
mod tests {
    use sentineld_agent::rules::Record;
    use sentineld_agent::store::StoredProcess;
    use sentineld_proto::v1::{InstanceRef, ProcessRecord};

    use crate::commands::query::Records;

    fn process(boot: u8, pid: u32, start: i64, ppid: u32, parent_start: i64) -> StoredProcess {
        StoredProcess {
            boot_id: [boot; 16],
            record: ProcessRecord {
                instance: Some(InstanceRef {
                    pid,
                    start_time: start,
                }),
                ppid,
                parent_start_time: parent_start,
                name: format!("p{pid}@{start}"),
                exe: format!("/bin/p{pid}"),
                cmdline: vec![format!("p{pid}"), "-x".to_owned()],
                user: "alice".to_owned(),
                ..ProcessRecord::default()
            },
            latest: None,
        }
    }

    #[test]
    fn parents_by_start_time_else_the_latest_instance_of_the_ppid() {
        let processes = [
            process(1, 30, 400, 10, 0),
            process(1, 10, 100, 1, 0),
            process(1, 20, 200, 10, 100),
            process(1, 10, 300, 1, 0),
            process(1, 31, 500, 10, 150),
            process(2, 40, 600, 10, 0),
        ];
        // Per process, the index of its parent: pid 20 names the start
        // time of the first pid 10; pid 30 names none, so the latest pid 10;
        // pid 31 names a start time no pid 10 has; pid 40 is on another
        // boot; pid 1 is not stored.
        let parents = [Some(3), None, Some(1), None, None, None];
        let mut records = Records::default();
        for p in &processes {
            records.push(p);
        }
        let records = records.finish();
        assert_eq!(records.len(), processes.len());
        for ((record, p), parent) in records.iter().zip(&processes).zip(parents) {
            let parent_view = parent.map(|j: usize| processes[j].view());
            let expected = Record::from_view(&p.view(), parent_view.as_ref());
            // Every field, so a parent field added to `from_view` and not
            // here fails.
            assert_eq!(format!("{record:?}"), format!("{expected:?}"));
        }
    }
}
