//! `sentinelcli rules list|validate|test`: the rules, without the agent.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;

use sentineld_agent::rules::{Column as SqlColumn, RuleFileError, RuleLibrary, RuleSet};
use sentineld_agent::store::{Scope, StoreReader};
use serde::Serialize;

use crate::args::{RuleFileArgs, RuleSourceArgs, RulesCommand};
use crate::commands::query::{PARENT_COLUMNS, Records};
use crate::output::{self, Column};
use crate::{CliError, Format};

const LIST_FIELDS: &[&str] = &["id", "severity", "enabled", "tags", "source", "title"];
const LIST_COLUMNS: &[Column] = &[
    Column::left("ID"),
    Column::left("SEVERITY"),
    Column::left("ENABLED"),
    Column::left("TAGS"),
    Column::left("SOURCE"),
    Column::left("TITLE"),
];

const TEST_FIELDS: &[&str] = &["rule_id", "severity", "pid", "start_time", "name", "exe"];
const TEST_COLUMNS: &[Column] = &[
    Column::left("RULE"),
    Column::left("SEVERITY"),
    Column::right("PID"),
    Column::left("STARTED"),
    Column::left("NAME"),
    Column::left("EXE"),
];

#[derive(Debug, Serialize)]
struct ListRow {
    id: String,
    severity: String,
    enabled: bool,
    tags: Vec<String>,
    source: String,
    title: String,
    description: String,
    sql: String,
}

#[derive(Debug, Serialize)]
struct Hit {
    rule_id: String,
    severity: String,
    pid: u32,
    start_time: String,
    name: String,
    exe: Option<String>,
}

fn errors(errors: Vec<RuleFileError>) -> CliError {
    CliError::Rules(
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Runs a `rules` subcommand. Only `test` opens the store.
pub(crate) fn run(
    command: &RulesCommand,
    store_path: &Path,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        RulesCommand::List(args) => list(args, format, out),
        RulesCommand::Validate(args) => validate(args, format, out),
        RulesCommand::Test(args) => test(args, store_path, format, out),
    }
}

fn list(args: &RuleSourceArgs, format: Format, out: &mut dyn Write) -> Result<(), CliError> {
    let dir = args
        .rules_dir
        .clone()
        .unwrap_or_else(sentineld_common::layout::default_rules_dir);
    let (_, set) = RuleLibrary::load(Some(&dir), !args.no_builtin_rules).map_err(errors)?;
    let rows: Vec<ListRow> = set
        .rules()
        .iter()
        .map(|r| ListRow {
            id: r.id().to_owned(),
            severity: r.severity().to_string(),
            enabled: r.enabled(),
            tags: r.tags().to_vec(),
            source: r.source().display().to_string(),
            title: r.title().to_owned(),
            description: r.description().to_owned(),
            sql: r.def().sql.clone(),
        })
        .collect();
    let cells = |r: &ListRow| {
        vec![
            r.id.clone(),
            r.severity.clone(),
            r.enabled.to_string(),
            r.tags.join(" "),
            r.source.clone(),
            r.title.clone(),
        ]
    };
    match format {
        Format::Json => output::write_json(out, &rows)?,
        Format::Csv => output::write_csv(out, LIST_FIELDS, rows.iter().map(cells))?,
        Format::Table => {
            let cells: Vec<Vec<String>> = rows.iter().map(cells).collect();
            output::write_table(out, LIST_COLUMNS, &cells)?;
        }
    }
    Ok(())
}

fn validate(args: &RuleFileArgs, format: Format, out: &mut dyn Write) -> Result<(), CliError> {
    let set = RuleSet::from_file(&args.file).map_err(errors)?;
    if !args.no_builtin_rules {
        let builtin = RuleSet::builtin();
        let clashes: Vec<String> = set
            .rules()
            .iter()
            .filter(|r| builtin.get(r.id()).is_some())
            .map(|r| {
                format!(
                    "{}: rule `{}` has the id of a built-in rule: sentinelagent refuses it; give it another id (or run the agent with --no-builtin-rules)",
                    args.file.display(),
                    r.id()
                )
            })
            .collect();
        if !clashes.is_empty() {
            return Err(CliError::Rules(clashes.join("\n")));
        }
    }
    match format {
        Format::Json => {
            let ids: Vec<&str> = set.rules().iter().map(|r| r.id()).collect();
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({"file": args.file.display().to_string(), "valid": true, "rules": ids}),
            )
            .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Csv | Format::Table => writeln!(
            out,
            "{}: {} rules, valid (digest {})",
            args.file.display(),
            set.len(),
            set.digest_hex()
        )?,
    }
    Ok(())
}

fn test(
    args: &RuleFileArgs,
    store_path: &Path,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let set = RuleSet::from_file(&args.file).map_err(errors)?;
    let reader = StoreReader::open(store_path)?;
    let records = Records::open(&reader, Scope::All)?;
    let reads = |c: SqlColumn| set.rules().iter().any(|r| r.filter().reads(c));
    let reads_parent = PARENT_COLUMNS.iter().any(|&c| reads(c));
    // What the rules read, and what a hit shows.
    let parts =
        SqlColumn::parts_read_by(|c| reads(c) || matches!(c, SqlColumn::Name | SqlColumn::Exe));
    let mut hits = Vec::new();
    let mut instances = 0_u64;
    records.each(parts.sample, |candidate| {
        instances += 1;
        let (mut record, parent) = candidate.decode(parts)?;
        if reads_parent {
            records.fill_parent(&mut record, parent)?;
        }
        for rule in set.matching(&record) {
            hits.push(Hit {
                rule_id: rule.id().to_owned(),
                severity: rule.severity().to_string(),
                pid: record.pid,
                start_time: sentineld_common::time::rfc3339_secs(record.start_time),
                name: record.name.clone(),
                exe: record.exe.clone(),
            });
        }
        Ok(ControlFlow::Continue(()))
    })?;
    let cells = |h: &Hit| {
        vec![
            h.rule_id.clone(),
            h.severity.clone(),
            h.pid.to_string(),
            h.start_time.clone(),
            h.name.clone(),
            h.exe.clone().unwrap_or_default(),
        ]
    };
    match format {
        Format::Json => output::write_json(out, &hits)?,
        Format::Csv => output::write_csv(out, TEST_FIELDS, hits.iter().map(cells))?,
        Format::Table => {
            let cells: Vec<Vec<String>> = hits.iter().map(cells).collect();
            output::write_table(out, TEST_COLUMNS, &cells)?;
            writeln!(
                out,
                "{} matches over {} stored instances",
                hits.len(),
                instances
            )?;
        }
    }
    Ok(())
}
