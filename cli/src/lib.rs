//! sentinelcli: the read-only command line of SentinelD.
//!
//! It opens the agent's store through [`StoreReader`], which uses redb's
//! read-only mode: it works while sentinelagent runs and cannot change the
//! store. Every command reads, filters and prints; nothing else.

mod args;
pub(crate) mod commands;
pub(crate) mod output;
pub(crate) mod tree;

use std::error::Error as StdError;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sentineld_agent::store::{StoreError, StoreReader};
use sentineld_common::layout::StateLayout;

pub use crate::args::{
    AlertsArgs, AuditCommand, Cli, Command, Format, HistoryArgs, LedgerArgs, PsArgs, QueryArgs,
    RuleFileArgs, RuleSourceArgs, RulesCommand, ScansArgs, Since,
};

/// Why a command could not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The store could not be opened or read; the message names the path.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The SQL of `query` is not valid; the message has the position.
    #[error("invalid query: {0}")]
    Query(String),
    /// A rule file is not valid; one line per problem.
    #[error("{0}")]
    Rules(String),
    /// The audit ledger cannot be read; the message names the path.
    #[error("{0}")]
    Audit(String),
    /// `audit verify` found the ledger or the store not intact; the
    /// problems are in the output (exit code 1).
    #[error("audit failed: {0}")]
    AuditFailed(String),
    /// Writing the results failed (a closed pipe too, see [`is_broken_pipe`]).
    #[error("cannot write the output")]
    Output(#[from] io::Error),
}

/// Where a command reads from and writes to.
pub(crate) struct Context<'a> {
    pub(crate) reader: &'a StoreReader,
    pub(crate) store_path: &'a Path,
    pub(crate) format: Format,
    /// Results.
    pub(crate) out: &'a mut dyn Write,
    /// Notes for people (only in table format), such as "no samples".
    pub(crate) diag: &'a mut dyn Write,
}

impl Context<'_> {
    /// Writes a note to `diag` in table format. A note that cannot be
    /// written is dropped: it is not part of the results.
    pub(crate) fn note(&mut self, text: &str) {
        if self.format == Format::Table {
            let _ = writeln!(self.diag, "sentinelcli: {text}");
        }
    }
}

/// The store file for `--state-dir` (or the default state directory).
pub fn store_path(state_dir: Option<&Path>) -> PathBuf {
    StateLayout::resolve(state_dir, None).store()
}

/// Runs one parsed command line: results go to `out`, notes for people to
/// `diag`. The caller flushes `out`.
pub fn execute(cli: &Cli, out: &mut dyn Write, diag: &mut dyn Write) -> Result<(), CliError> {
    let path = store_path(cli.state_dir.as_deref());
    if let Command::Rules(command) = &cli.command {
        return commands::rules::run(command, &path, cli.format, out);
    }
    if let Command::Audit(AuditCommand::Head(args)) = &cli.command {
        let ledger = commands::audit::ledger_path(cli.state_dir.as_deref(), args);
        return commands::audit::head(&ledger, cli.format, out);
    }
    let reader = StoreReader::open(&path)?;
    let mut ctx = Context {
        reader: &reader,
        store_path: &path,
        format: cli.format,
        out,
        diag,
    };
    match &cli.command {
        Command::Ps(args) => commands::ps::run(&mut ctx, args),
        Command::History(args) => commands::history::run(&mut ctx, args),
        Command::Scans(args) => commands::scans::run(&mut ctx, args),
        Command::Query(args) => commands::query::run(&mut ctx, args),
        Command::Alerts(args) => commands::alerts::run(&mut ctx, args),
        Command::Audit(command) => {
            let ledger = commands::audit::ledger_path(
                cli.state_dir.as_deref(),
                commands::audit::ledger_of(command),
            );
            commands::audit::verify(&mut ctx, &ledger)
        }
        Command::Rules(_) => unreachable!("handled before the store is opened"),
    }
}

pub use sentineld_common::error_chain;

/// True when `error` or one of its causes is a closed pipe: the reader of
/// stdout went away (`sentinelcli ps | head`), which is not a failure.
pub fn is_broken_pipe(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed: {0}")]
    struct Repeats(#[source] io::Error);

    #[test]
    fn chain_joins_causes_without_repeating_them() {
        let e = CliError::Output(io::Error::other("disk on fire"));
        assert_eq!(error_chain(&e), "cannot write the output: disk on fire");
        let e = Repeats(io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer failed: inner");
    }

    #[test]
    fn broken_pipe_is_recognised_through_the_chain() {
        let pipe = CliError::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&pipe));
        assert!(is_broken_pipe(&Repeats(io::Error::from(
            io::ErrorKind::BrokenPipe
        ))));
        assert!(!is_broken_pipe(&CliError::Output(io::Error::other("full"))));
    }

    #[test]
    fn store_lives_in_the_state_dir() {
        assert_eq!(
            store_path(Some(Path::new("/s"))),
            Path::new("/s/store.redb")
        );
    }
}
