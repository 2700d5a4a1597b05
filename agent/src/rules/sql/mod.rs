//! The SQL dialect of rules and queries: `SELECT ... FROM processes WHERE ...`.
//!
//! Text is parsed once by sqlparser (PostgreSQL dialect), checked against an
//! allow-list of statement shapes, columns and functions, type-checked, and
//! compiled into a small expression tree with resolved columns and
//! pre-compiled LIKE and regex matchers.

mod compile;
mod error;
mod expr;
mod like;
mod parse;
mod query;

#[cfg(test)]
mod tests;

use sqlparser::ast::SelectItem;

pub use crate::rules::sql::compile::FUNCTIONS;
pub use crate::rules::sql::error::{CompileError, CompileErrorKind, Position};
pub use crate::rules::sql::query::{DEFAULT_ROW_CAP, Query, QueryResult, Value, compile_query};

use crate::rules::record::{Column, Record};
use crate::rules::sql::compile::{compile, compile_pred};
use crate::rules::sql::expr::Pred;
use crate::rules::sql::parse::{Mode, parse};

/// Longest SQL text accepted, in bytes.
pub const MAX_SQL_LEN: usize = 64 * 1024;
/// Deepest expression nesting accepted by the compiler.
pub(crate) const MAX_DEPTH: usize = 64;
/// sqlparser's own recursion guard (its default): roughly the deepest
/// nesting of parentheses and NOTs it accepts.
pub(crate) const PARSER_RECURSION_LIMIT: usize = 50;
/// Stack of the thread that parses and compiles. sqlparser's recursive
/// descent uses large frames (up to ~100 KiB per nesting level in debug
/// builds), more than a 2 MiB worker thread can spare at its recursion limit.
const COMPILER_STACK: usize = 16 << 20;

/// Runs `f` on a thread with [`COMPILER_STACK`] bytes of stack.
pub(crate) fn on_compiler_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, CompileError> {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("sql-compile".to_owned())
            .stack_size(COMPILER_STACK)
            .spawn_scoped(s, f)
            .map_err(|e| CompileError::new(CompileErrorKind::ParserThread(e.to_string()), None))?;
        Ok(handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

/// The compiled condition of a rule.
#[derive(Debug, Clone)]
pub struct Filter {
    pred: Pred,
}

impl Filter {
    /// Whether the WHERE condition is TRUE for `record` (FALSE and NULL do not match).
    pub fn matches(&self, record: &Record) -> bool {
        self.pred.eval(record) == Some(true)
    }

    /// Whether the condition reads `column`.
    pub fn reads(&self, column: Column) -> bool {
        let mut found = false;
        self.pred.columns(&mut |c| found |= c == column);
        found
    }
}

/// Compiles a rule's `SELECT <projection> FROM processes [WHERE <condition>]`.
///
/// The projection is checked (unknown columns are errors) but does not
/// affect matching.
pub fn compile_rule(sql: &str) -> Result<Filter, CompileError> {
    on_compiler_stack(|| compile_rule_here(sql))?
}

/// [`compile_rule`] on the current thread, which must have a large stack
/// (see [`on_compiler_stack`]).
pub(crate) fn compile_rule_here(sql: &str) -> Result<Filter, CompileError> {
    let parts = parse(sql, Mode::Rule)?;
    for item in &parts.projection {
        match item {
            SelectItem::Wildcard(_) => {}
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                compile(e, 0)?;
            }
            _ => {
                return Err(CompileError::new(
                    CompileErrorKind::Unsupported("this kind of projection".to_owned()),
                    None,
                ));
            }
        }
    }
    let mut pred = match &parts.selection {
        Some(e) => compile_pred(e, 0)?,
        None => Pred::Const(Some(true)),
    };
    pred.order_by_cost();
    Ok(Filter { pred })
}
