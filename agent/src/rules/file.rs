//! Rule files: YAML (`.yaml`, `.yml`) or TOML (`.toml`) holding a `rules`
//! list, and the errors that loading them can produce.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rules::engine::Severity;
use crate::rules::sql::CompileError;

/// Largest rule file accepted, in bytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most rules accepted in one rule set, built-in pack included.
pub const MAX_RULES: usize = 10_000;

/// One rule as written in a rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// Unique id, `[A-Za-z0-9_.-]+`.
    pub id: String,
    /// One-line summary shown in alerts.
    pub title: String,
    /// What the rule detects.
    pub description: String,
    /// How bad a match is.
    pub severity: Severity,
    /// MITRE ATT&CK technique ids and other labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Disabled rules are compiled and listed but not evaluated.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// `SELECT ... FROM processes WHERE ...`.
    pub sql: String,
    /// Why a match is suspicious.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    /// Known benign causes of a match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_positives: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFileDoc {
    rules: Vec<RuleDef>,
}

/// An error loading rules; each names the file and, where known, the rule
/// and the position.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleFileError {
    /// The file or directory could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{}: file is {size} bytes, more than the {max} allowed: split it into several files", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file name does not end in `.yaml`, `.yml` or `.toml`.
    #[error("{}: unsupported file type: rule files end in .yaml, .yml or .toml", path.display())]
    UnsupportedExtension {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid YAML/TOML or does not have the rule file shape.
    #[error("{}{}: {message}", path.display(), Loc(*line, *column))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, when the parser reported one.
        line: Option<u64>,
        /// 1-based column, when the parser reported one.
        column: Option<u64>,
        /// What the parser said.
        message: String,
    },
    /// A rule's fields are invalid.
    #[error("{}: rule `{id}`: {reason}", path.display())]
    InvalidRule {
        /// The file.
        path: PathBuf,
        /// The rule id.
        id: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A rule's SQL does not compile; the position is within the SQL text.
    #[error("{}: rule `{id}`: sql {error}", path.display())]
    Sql {
        /// The file.
        path: PathBuf,
        /// The rule id.
        id: String,
        /// The compile error, with its position in the SQL.
        error: Box<CompileError>,
    },
    /// Two rules share an id.
    #[error("rule id `{id}` is defined twice, in {} and in {}: rename one", first.display(), second.display())]
    DuplicateId {
        /// The id.
        id: String,
        /// Where it was first defined.
        first: PathBuf,
        /// Where it was defined again.
        second: PathBuf,
    },
    /// More than [`MAX_RULES`] rules.
    #[error("more than {max} rules: remove or merge some")]
    TooManyRules {
        /// The limit.
        max: usize,
    },
}

/// Formats `:line:column` when known.
struct Loc(Option<u64>, Option<u64>);

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(l), Some(c)) => write!(f, ":{l}:{c}"),
            (Some(l), None) => write!(f, ":{l}"),
            _ => Ok(()),
        }
    }
}

/// Formats a rule file can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Yaml,
    Toml,
}

impl Format {
    /// The format of a file by its extension.
    pub(crate) fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

/// Whether `id` matches `[A-Za-z0-9_.-]+`.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses rule file text; `path` is only used in errors.
pub(crate) fn parse_rules(
    text: &str,
    format: Format,
    path: &Path,
) -> Result<Vec<RuleDef>, RuleFileError> {
    let parse_error = |line, column, message| RuleFileError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
    };
    let doc: RuleFileDoc = match format {
        Format::Yaml => serde_saphyr::from_str(text).map_err(|e| {
            let loc = e.location();
            let message = e.without_snippet().to_string();
            // The plain message carries its own "at line L, column C" suffix.
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m)
                .to_owned();
            parse_error(
                loc.map(|l| l.line()).filter(|l| *l > 0),
                loc.map(|l| l.column()).filter(|c| *c > 0),
                message,
            )
        })?,
        Format::Toml => toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_col(text, s.start))
                .map_or((None, None), |(l, c)| (Some(l), Some(c)));
            parse_error(line, column, e.message().trim().to_owned())
        })?,
    };
    Ok(doc.rules)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (u64, u64) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u64::try_from(line).unwrap_or(u64::MAX),
        u64::try_from(column).unwrap_or(u64::MAX),
    )
}

/// Reads and parses one rule file, refusing files over [`MAX_FILE_BYTES`].
pub(crate) fn read_rule_file(path: &Path) -> Result<Vec<RuleDef>, RuleFileError> {
    let format = Format::of(path).ok_or_else(|| RuleFileError::UnsupportedExtension {
        path: path.to_owned(),
    })?;
    let io = |error| RuleFileError::Io {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    let size = u64::try_from(text.len()).unwrap_or(u64::MAX);
    if size > MAX_FILE_BYTES {
        let size = std::fs::metadata(path).map_or(size, |m| m.len());
        return Err(RuleFileError::TooLarge {
            path: path.to_owned(),
            size,
            max: MAX_FILE_BYTES,
        });
    }
    parse_rules(&text, format, path)
}

/// The rule files in `dir`: `.yaml`, `.yml` and `.toml` files, dotfiles
/// skipped, sorted by file name.
pub(crate) fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, RuleFileError> {
    let io = |error| RuleFileError::Io {
        path: dir.to_owned(),
        error,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let path = entry.path();
        if name.to_string_lossy().starts_with('.') || Format::of(&path).is_none() {
            continue;
        }
        // Follows symlinks, so a linked rule file counts.
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::path::Path;

    use crate::rules::engine::Severity;
    use crate::rules::file::{Format, RuleFileError, line_col, parse_rules, valid_id};

    const YAML: &str = "\
rules:
  - id: test.one
    title: One
    description: the first
    severity: high
    tags: [T1059]
    sql: SELECT * FROM processes WHERE name = 'x'
  - id: test.two
    title: Two
    description: the second
    severity: low
    enabled: false
    sql: |
      SELECT pid
      FROM processes
      WHERE exe LIKE '/tmp/%'
    rationale: because
    false_positives: none
";

    const TOML: &str = r#"
[[rules]]
id = "test.one"
title = "One"
description = "the first"
severity = "critical"
tags = ["T1059"]
sql = "SELECT * FROM processes WHERE name = 'x'"
"#;

    fn parse(text: &str, f: Format) -> Result<Vec<crate::rules::file::RuleDef>, RuleFileError> {
        parse_rules(text, f, Path::new("x"))
    }

    #[test]
    fn yaml_and_toml_parse() {
        let rules = parse(YAML, Format::Yaml).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].severity, Severity::High);
        assert!(rules[0].enabled);
        assert!(!rules[1].enabled);
        assert_eq!(rules[1].rationale.as_deref(), Some("because"));
        let rules = parse(TOML, Format::Toml).unwrap();
        assert_eq!(rules[0].severity, Severity::Critical);
        assert_eq!(rules[0].tags, ["T1059"]);
    }

    fn parse_err(text: &str, f: Format) -> (Option<u64>, Option<u64>, String) {
        match parse(text, f).unwrap_err() {
            RuleFileError::Parse {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn unknown_field_has_line() {
        let text = YAML.replace(
            "    rationale: because",
            "    rationale: because\n    colour: red",
        );
        let (line, _, msg) = parse_err(&text, Format::Yaml);
        assert_eq!(line, Some(18), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
        let text = TOML.replace("tags =", "colour = \"red\"\ntags =");
        let (line, col, msg) = parse_err(&text, Format::Toml);
        assert_eq!((line, col), (Some(7), Some(1)), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
    }

    #[test]
    fn bad_severity_has_line() {
        let text = YAML.replace("severity: low", "severity: severe");
        let (line, _, msg) = parse_err(&text, Format::Yaml);
        assert_eq!(line, Some(11), "{msg}");
        assert!(msg.contains("severe"), "{msg}");
        let text = TOML.replace("\"critical\"", "\"severe\"");
        let (line, _, msg) = parse_err(&text, Format::Toml);
        assert_eq!(line, Some(6), "{msg}");
    }

    #[test]
    fn malformed_files_have_lines() {
        let (line, _, msg) = parse_err("rules:\n  - id: [unclosed\n", Format::Yaml);
        assert!(line.is_some(), "{msg}");
        let (line, _, msg) = parse_err("[[rules]]\nid = \"x\nsql = 1\n", Format::Toml);
        assert_eq!(line, Some(2), "{msg}");
        let (_, _, msg) = parse_err("rules:\n  - id: a\n", Format::Yaml);
        assert!(msg.contains("missing field"), "{msg}");
    }

    #[test]
    fn error_messages_name_file_and_position() {
        let err = parse_rules("rules: 5\n", Format::Yaml, Path::new("/etc/r.yaml")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/r.yaml:1:"), "{text}");
    }

    #[test]
    fn ids() {
        assert!(valid_id("linux.exec_from-tmp2"));
        assert!(!valid_id(""));
        assert!(!valid_id("a b"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("é"));
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}
