//! `sentinelcli query`: the rules' SQL dialect over the stored processes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;

use sentineld_agent::rules::{Column, Record, Value, compile_query};
use sentineld_agent::store::{
    ParentRef, Parts, Scope, Snapshot, StoreReader, StoredBytes, StoredProcess,
};
use sentineld_proto::v1::ProcessRecord;

use crate::args::QueryArgs;
use crate::output::{self, Align};
use crate::{CliError, Context, Format};

/// Rows a query prints at most without a LIMIT of its own.
const ROW_CAP: usize = 100_000;

/// The columns that hold the parent's fields.
pub(crate) const PARENT_COLUMNS: [Column; 4] = [
    Column::ParentName,
    Column::ParentExe,
    Column::ParentUser,
    Column::ParentCmdline,
];

/// The records rules and queries see, read from one snapshot of the store:
/// the live processes, or every stored instance.
pub(crate) struct Records<'r> {
    snapshot: Snapshot<'r>,
    scope: Scope,
    /// Parents looked up lately: siblings share one, and tend to be read
    /// close together (they start close together).
    parents: RefCell<HashMap<ParentRef, Option<Rc<ProcessRecord>>>>,
}

/// Parents [`Records`] remembers at most (then it starts over).
const PARENT_CACHE: usize = 16_384;

/// One process in scope, as read: [`Candidate::decode`] builds its record
/// from the parts a caller needs.
pub(crate) enum Candidate<'a> {
    Stored(&'a StoredBytes<'a>),
    Live(&'a StoredProcess),
}

impl Candidate<'_> {
    /// The record with the columns `parts` fill (the others empty), and
    /// where its parent is.
    pub(crate) fn decode(&self, parts: Parts) -> Result<(Record, ParentRef), CliError> {
        let p = match self {
            Candidate::Stored(bytes) => bytes.decode(parts)?,
            Candidate::Live(p) => (*p).clone(),
        };
        let parent = p.parent_ref();
        Ok((Record::from_stored(p.record, p.latest), parent))
    }
}

impl Records<'_> {
    pub(crate) fn open(reader: &StoreReader, scope: Scope) -> Result<Records<'_>, CliError> {
        Ok(Records {
            snapshot: reader.snapshot()?,
            scope,
            parents: RefCell::default(),
        })
    }

    /// Calls `f` with every process in scope (live ones by pid, all in
    /// store order) until `f` breaks. Nothing is decoded until `f` asks: a
    /// store can hold millions of instances. With `samples` false, no
    /// sample is read (the columns from samples stay empty).
    pub(crate) fn each(
        &self,
        samples: bool,
        mut f: impl FnMut(&Candidate<'_>) -> Result<ControlFlow<()>, CliError>,
    ) -> Result<(), CliError> {
        match self.scope {
            Scope::Live => {
                for p in self.snapshot.live()? {
                    if f(&Candidate::Live(&p))?.is_break() {
                        break;
                    }
                }
            }
            Scope::All => {
                let mut failed = None;
                self.snapshot.each_stored(samples, |stored| {
                    f(&Candidate::Stored(stored)).unwrap_or_else(|e| {
                        failed = Some(e);
                        ControlFlow::Break(())
                    })
                })?;
                if let Some(e) = failed {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Fills `record`'s parent columns from the parent `parent` names, when
    /// it is stored (and, over the live processes, alive).
    pub(crate) fn fill_parent(
        &self,
        record: &mut Record,
        parent: ParentRef,
    ) -> Result<(), CliError> {
        let mut cache = self.parents.borrow_mut();
        let p = match cache.get(&parent) {
            Some(p) => p.clone(),
            None => {
                let p = self.snapshot.parent(parent, self.scope)?.map(Rc::new);
                if cache.len() >= PARENT_CACHE {
                    cache.clear();
                }
                cache.insert(parent, p.clone());
                p
            }
        };
        if let Some(p) = p {
            let instance = p.instance.unwrap_or_default();
            // A process is never its own parent instance.
            if (instance.pid, instance.start_time) != (record.pid, record.start_time) {
                record.set_parent_record(&p);
            }
        }
        Ok(())
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
    let scope = if args.all { Scope::All } else { Scope::Live };
    let records = Records::open(ctx.reader, scope)?;
    let parent_in_filter = PARENT_COLUMNS.iter().any(|&c| query.filter_reads(c));
    let parent_shown = PARENT_COLUMNS.iter().any(|&c| query.reads(c));
    // The WHERE is evaluated as the store is read, on the parts of each
    // process it reads; only a match is decoded whole (what the query
    // shows or sorts by) and kept, and parents are looked up only when
    // some part of the query reads them.
    let filter_parts = Column::parts_read_by(|c| query.filter_reads(c));
    let parts = Column::parts_read_by(|c| query.reads(c));
    let enough = query.enough(ROW_CAP).unwrap_or(usize::MAX);
    let mut matched = Vec::new();
    records.each(parts.sample, |candidate| {
        let (mut record, parent) = candidate.decode(filter_parts)?;
        if parent_in_filter {
            records.fill_parent(&mut record, parent)?;
        }
        if !query.matches(&record) {
            return Ok(ControlFlow::Continue(()));
        }
        if parts != filter_parts {
            (record, _) = candidate.decode(parts)?;
            if parent_in_filter {
                records.fill_parent(&mut record, parent)?;
            }
        }
        if parent_shown && !parent_in_filter {
            records.fill_parent(&mut record, parent)?;
        }
        matched.push(record);
        Ok(if matched.len() < enough {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        })
    })?;
    let result = query.run_capped(&matched, ROW_CAP);
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
