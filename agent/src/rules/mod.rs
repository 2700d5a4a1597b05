//! The SQL detection-rule engine: records, the SQL dialect, rule files, the
//! built-in pack and the evaluator.

pub mod engine;
pub mod file;
pub mod library;
pub mod pack;
pub mod record;
pub mod sql;

pub use crate::rules::engine::{CompiledRule, ParseSeverityError, RuleSet, Severity};
pub use crate::rules::file::{RuleDef, RuleFileError};
pub use crate::rules::library::RuleLibrary;
pub use crate::rules::record::{Column, DerivedCache, Record, SqlType};
pub use crate::rules::sql::{
    CompileError, CompileErrorKind, Filter, Position, Query, QueryResult, Value, compile_query,
    compile_rule,
};
