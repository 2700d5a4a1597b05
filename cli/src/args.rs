//! The command line: global flags and one subcommand per query.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// sentinelcli: read what sentinelagent stored. Opens the store read-only,
/// so it works while the agent runs and never changes anything.
#[derive(Debug, Parser)]
#[command(name = "sentinelcli", version = sentineld_common::VERSION)]
pub struct Cli {
    /// The agent's state directory (the store is DIR/store.redb). Default:
    /// /var/lib/sentineld as root, the XDG state directory otherwise.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Output format: an aligned table, a JSON array of objects, or CSV with
    /// a header row.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people; control characters are escaped.
    Table,
    /// One JSON array of objects (one object per line).
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// What to show.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Processes alive at the latest scan, sorted by pid.
    Ps(PsArgs),
    /// Samples of one pid (every instance that had it), oldest first.
    History(HistoryArgs),
    /// Scans, newest first.
    Scans(ScansArgs),
    /// Runs a SQL query over the processes alive at the latest scan (the
    /// rules' dialect: `SELECT cols FROM processes [WHERE ..] [ORDER BY ..]
    /// [LIMIT n]`).
    Query(QueryArgs),
    /// Stored alerts, newest first, with their delivery attempts in JSON.
    Alerts(AlertsArgs),
    /// Lists, validates or tests detection rules; needs no running agent.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Checks procmond's audit ledger and the stored scans against it, or
    /// prints its head hash to keep elsewhere.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Checks the ledger's hash chain and that every stored scan matches
    /// its ledger entry; exit code 0 only when all holds, 1 when something
    /// does not (each problem is printed with its position).
    Verify(LedgerArgs),
    /// Prints the last entry's number, hash and time (anchor it elsewhere
    /// to detect a rewritten chain later). Needs no store.
    Head(LedgerArgs),
}

/// Which ledger `audit` reads.
#[derive(Debug, Clone, Args)]
pub struct LedgerArgs {
    /// The directory holding the ledger's segments (`ledger.log` and the
    /// sealed `ledger.<seq>.log`), or one segment file. Default: procmond's
    /// state directory under --state-dir (DIR/procmond).
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
}

/// Arguments of `query`.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// The query, e.g. "SELECT pid, name, exe FROM processes WHERE
    /// exe_dir = '/tmp'".
    #[arg(value_name = "SQL")]
    pub sql: String,

    /// Query every stored instance (exited ones too), not just the live ones.
    #[arg(long)]
    pub all: bool,
}

/// Arguments of `alerts`; given together, an alert must match all of them.
#[derive(Debug, Clone, Default, Args)]
pub struct AlertsArgs {
    /// Only alerts raised since this time: an RFC 3339 time
    /// (2026-01-31T08:00:00Z) or a duration back from now (30m, 2h, 7d).
    #[arg(long, value_name = "TIME|DURATION", value_parser = Since::parse)]
    pub since: Option<Since>,

    /// Only alerts of this severity or higher: low, medium, high, critical.
    #[arg(long, value_name = "LEVEL", value_parser = crate::commands::alerts::parse_severity)]
    pub severity: Option<sentineld_agent::sinks::Severity>,

    /// Only alerts of this rule id.
    #[arg(long, value_name = "ID")]
    pub rule: Option<String>,

    /// Show at most N alerts.
    #[arg(long, value_name = "N", value_parser = parse_limit)]
    pub limit: Option<usize>,
}

/// A point in time given as a time or as a duration back from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since(i64);

impl Since {
    /// Parses `2026-01-31T08:00:00Z` or `30m`.
    pub fn parse(text: &str) -> Result<Since, String> {
        if let Ok(t) = text.parse::<jiff::Timestamp>() {
            return Ok(Since(t.as_millisecond()));
        }
        match sentineld_common::time::parse_duration(text) {
            Ok(d) => {
                let back = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                Ok(Since(
                    sentineld_common::time::now_millis().saturating_sub(back),
                ))
            }
            Err(_) => Err(format!(
                "{text:?} is neither an RFC 3339 time (2026-01-31T08:00:00Z) nor a duration (30m, 2h, 7d)"
            )),
        }
    }

    /// Unix milliseconds.
    pub fn as_millis(self) -> i64 {
        self.0
    }
}

/// `rules` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RulesCommand {
    /// The rules the agent would load: the built-in pack and the rules
    /// directory.
    List(RuleSourceArgs),
    /// Checks a rule file (YAML or TOML) and reports every error with its
    /// position; exit code 0 only when it is valid.
    Validate(RuleFileArgs),
    /// Runs a rule file over every stored instance and prints what would
    /// have fired.
    Test(RuleFileArgs),
}

/// Where `rules list` looks.
#[derive(Debug, Clone, Args)]
pub struct RuleSourceArgs {
    /// The rules directory. Default: the agent's default
    /// (/etc/sentineld/rules.d as root, else $XDG_CONFIG_HOME/sentineld/rules.d).
    #[arg(long, value_name = "DIR")]
    pub rules_dir: Option<PathBuf>,

    /// Leave out the built-in pack.
    #[arg(long)]
    pub no_builtin_rules: bool,
}

/// A rule file argument.
#[derive(Debug, Clone, Args)]
pub struct RuleFileArgs {
    /// The rule file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The agent runs without the built-in pack: do not check the file's
    /// rule ids against it.
    #[arg(long)]
    pub no_builtin_rules: bool,
}

/// Filters of `ps`; given together, a process must match all of them.
#[derive(Debug, Clone, Default, Args)]
pub struct PsArgs {
    /// Only processes whose name (or executable file name) contains TEXT,
    /// ignoring case.
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,

    /// Only the process with this pid.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Only processes of this user name, or of this numeric uid.
    #[arg(long, value_name = "USER|UID")]
    pub user: Option<String>,

    /// Only processes whose executable's SHA-256 starts with these hex
    /// digits (case does not matter).
    #[arg(long, value_name = "HEX", value_parser = parse_sha256_prefix)]
    pub sha256: Option<String>,

    /// Show parent/child relationships: indented in a table, a `depth` field
    /// (rows in tree order) in JSON and CSV.
    #[arg(long)]
    pub tree: bool,

    /// Add a PORTS column to the table: the TCP ports each process listens
    /// on and the UDP ports it has bound (JSON and CSV always carry
    /// `listening_ports`).
    #[arg(long)]
    pub ports: bool,
}

/// Arguments of `history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The process id.
    #[arg(value_name = "PID")]
    pub pid: u32,

    /// Show only the newest N samples (still oldest first). Default: all
    /// that the store keeps.
    #[arg(long, value_name = "N", value_parser = parse_limit)]
    pub limit: Option<usize>,
}

/// Arguments of `scans`.
#[derive(Debug, Clone, Args)]
pub struct ScansArgs {
    /// Show at most N scans. Default: 20 in a table, all of them in JSON
    /// and CSV.
    #[arg(long, value_name = "N", value_parser = parse_limit, conflicts_with = "all")]
    pub limit: Option<usize>,

    /// Show every stored scan, whatever the format.
    #[arg(long)]
    pub all: bool,
}

/// Scans shown in a table when neither `--limit` nor `--all` is given.
pub(crate) const DEFAULT_TABLE_SCANS: usize = 20;

fn parse_limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a count (expected e.g. 10)")),
    }
}

/// Accepts 1 to 64 hex digits and returns them in lowercase, the form the
/// store's hashes are shown in.
fn parse_sha256_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{text:?} is not a SHA-256 prefix (expected 1 to 64 hexadecimal digits)"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_must_be_positive_counts() {
        assert_eq!(parse_limit("5"), Ok(5));
        assert!(parse_limit("0").is_err());
        assert!(parse_limit("-1").unwrap_err().contains("not a count"));
    }

    #[test]
    fn sha256_prefix_is_lowercased_hex() {
        assert_eq!(parse_sha256_prefix("ABcd01"), Ok("abcd01".to_owned()));
        assert!(parse_sha256_prefix("").is_err());
        assert!(parse_sha256_prefix("xyz").is_err());
        assert!(parse_sha256_prefix(&"a".repeat(65)).is_err());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli =
            Cli::try_parse_from(["sentinelcli", "ps", "--format", "json", "--state-dir", "/x"])
                .expect("valid command line");
        assert_eq!(cli.format, Format::Json);
        assert_eq!(cli.state_dir.as_deref(), Some(std::path::Path::new("/x")));
        assert!(matches!(cli.command, Command::Ps(_)));
    }

    #[test]
    fn scans_limit_and_all_conflict() {
        let err = Cli::try_parse_from(["sentinelcli", "scans", "--all", "--limit", "3"])
            .expect_err("--all and --limit together are refused");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
