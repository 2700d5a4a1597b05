//! Compile errors for rule and query SQL.

use std::fmt;

/// A position in the SQL text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, starting at 1.
    pub line: u64,
    /// Column, starting at 1 (in characters).
    pub column: u64,
}

impl Position {
    pub(crate) fn from_location(loc: sqlparser::tokenizer::Location) -> Option<Position> {
        (loc.line > 0).then_some(Position {
            line: loc.line,
            column: loc.column,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// What is wrong with a piece of SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileErrorKind {
    /// The text is longer than the engine accepts.
    #[error("sql is {len} bytes long, more than the {max} allowed: shorten it")]
    TooLong {
        /// Length of the text.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// sqlparser could not parse the text.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// Expressions are nested deeper than the engine accepts.
    #[error("expression is nested too deeply (more than {max} levels): simplify it")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// Not exactly one statement.
    #[error("expected exactly one statement, found {0}")]
    StatementCount(usize),
    /// Something other than `SELECT ... FROM processes`.
    #[error("only SELECT ... FROM processes is allowed")]
    NotSelectFromProcesses,
    /// A table other than `processes`.
    #[error("unknown table `{0}`: the only table is `processes`")]
    UnknownTable(String),
    /// A join or several tables.
    #[error("joins are not allowed: select from `processes` only")]
    Join,
    /// A subquery anywhere.
    #[error("subqueries are not allowed")]
    Subquery,
    /// A clause the mode does not support.
    #[error("{clause} is not allowed {context}")]
    ClauseNotAllowed {
        /// e.g. `GROUP BY`.
        clause: &'static str,
        /// e.g. `in a rule` or `in a query`.
        context: &'static str,
    },
    /// A column that does not exist.
    #[error("unknown column `{name}`{}", suggest(.suggestion))]
    UnknownColumn {
        /// The name as written.
        name: String,
        /// The closest known column, if any is close.
        suggestion: Option<&'static str>,
    },
    /// A function that does not exist.
    #[error("unknown function `{name}`{}", suggest(.suggestion))]
    UnknownFunction {
        /// The name as written.
        name: String,
        /// The closest known function, if any is close.
        suggestion: Option<&'static str>,
    },
    /// Wrong number or kind of arguments.
    #[error("function `{function}` takes {expected}, got {got}")]
    Arguments {
        /// Function name.
        function: &'static str,
        /// e.g. `1 argument`.
        expected: &'static str,
        /// What was given.
        got: String,
    },
    /// An argument or operand of the wrong type.
    #[error("{0}")]
    Type(String),
    /// A pattern that must be a string literal is not.
    #[error("the pattern of {0} must be a string literal")]
    PatternNotLiteral(&'static str),
    /// `regexp_like` with an invalid regular expression.
    #[error("invalid regular expression: {0}")]
    InvalidRegex(String),
    /// A LIKE pattern or ESCAPE clause that cannot be compiled.
    #[error("invalid LIKE pattern: {0}")]
    InvalidLike(String),
    /// Syntax sqlparser accepts but the engine does not support.
    #[error("{0} is not supported")]
    Unsupported(String),
    /// The thread that compiles SQL could not be started.
    #[error("cannot start the sql compiler thread: {0}")]
    ParserThread(String),
    /// A LIMIT that is not a non-negative integer literal.
    #[error("LIMIT must be a non-negative integer literal")]
    BadLimit,
}

fn suggest(s: &Option<&'static str>) -> String {
    s.map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// An error compiling rule or query SQL, with its position when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Where in the SQL, when the parser reported it.
    pub position: Option<Position>,
    /// What is wrong.
    pub kind: CompileErrorKind,
}

impl CompileError {
    pub(crate) fn new(kind: CompileErrorKind, position: Option<Position>) -> CompileError {
        CompileError { position, kind }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{p}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for CompileError {}

/// Turns a sqlparser error into a compile error, moving the
/// " at Line: L, Column: C" suffix into the position; errors at the end of
/// input (which sqlparser reports without a location) point just past the
/// last character of `sql`.
pub(crate) fn from_parser_error(err: sqlparser::parser::ParserError, sql: &str) -> CompileError {
    use sqlparser::parser::ParserError;
    let msg = match err {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => {
            return CompileError::new(
                CompileErrorKind::TooDeep {
                    max: crate::rules::sql::PARSER_RECURSION_LIMIT,
                },
                None,
            );
        }
    };
    let (text, position) = split_location(&msg);
    let position = position.or_else(|| text.ends_with("found: EOF").then(|| end_of(sql)));
    CompileError::new(CompileErrorKind::Syntax(text.to_owned()), position)
}

/// The position just past the last character of `text`.
fn end_of(text: &str) -> Position {
    let last_line = text.rsplit('\n').next().unwrap_or("");
    let line = text.matches('\n').count() + 1;
    Position {
        line: u64::try_from(line).unwrap_or(u64::MAX),
        column: u64::try_from(last_line.chars().count() + 1).unwrap_or(u64::MAX),
    }
}

fn split_location(msg: &str) -> (&str, Option<Position>) {
    let Some(at) = msg.rfind(" at Line: ") else {
        return (msg, None);
    };
    let rest = &msg[at + " at Line: ".len()..];
    let parsed = rest.split_once(", Column: ").and_then(|(l, c)| {
        Some(Position {
            line: l.trim().parse().ok()?,
            column: c.trim().parse().ok()?,
        })
    });
    match parsed {
        Some(p) => (&msg[..at], Some(p)),
        None => (msg, None),
    }
}

/// Edit distance counting an adjacent transposition as one edit
/// (optimal string alignment), for "did you mean" suggestions.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate within a distance that scales with the name's length.
pub(crate) fn closest<'c>(
    name: &str,
    candidates: impl Iterator<Item = &'c str>,
) -> Option<&'c str> {
    let max = (name.chars().count() / 3).max(1);
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use crate::rules::sql::error::{closest, edit_distance, split_location};

    #[test]
    fn distances_and_suggestions() {
        assert_eq!(edit_distance("nmae", "name"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("nmae", ["name", "exe"].into_iter()), Some("name"));
        assert_eq!(closest("zzzz", ["name", "exe"].into_iter()), None);
    }

    #[test]
    fn parser_locations_are_split_off() {
        let (m, p) = split_location("Expected: x, found: y at Line: 3, Column: 14");
        assert_eq!(m, "Expected: x, found: y");
        assert_eq!(p.map(|p| (p.line, p.column)), Some((3, 14)));
        assert_eq!(split_location("no location").1, None);
    }
}
