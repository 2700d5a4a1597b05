//! Ad-hoc queries for `sentinelcli query "SELECT ..."`.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;
use sqlparser::ast::{Expr, OrderBySort, SelectItem, WildcardAdditionalOptions};

use crate::rules::record::{Column, Record, Val};
use crate::rules::sql::compile::{compile, compile_pred, pos};
use crate::rules::sql::error::{CompileError, CompileErrorKind};
use crate::rules::sql::expr::{Pred, Scalar, sort_order};
use crate::rules::sql::parse::{Mode, parse};
use crate::rules::sql::{Filter, on_compiler_stack};

/// Rows a query returns when neither LIMIT nor the caller sets a smaller cap.
pub const DEFAULT_ROW_CAP: usize = 10_000;

/// One output value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
    /// A list column (`cmdline`, `listening_ports`); displayed space-separated.
    List(Vec<Value>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
        }
    }
}

impl From<Val<'_>> for Value {
    fn from(v: Val<'_>) -> Value {
        match v {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(b),
            Val::Int(n) => Value::Int(n),
            Val::Float(x) => Value::Float(x),
            Val::Text(t) => Value::Text(t.into_owned()),
            Val::TextList(l) => Value::List(l.iter().map(|s| Value::Text(s.clone())).collect()),
            Val::IntList(l) => Value::List(l.iter().map(|p| Value::Int(i64::from(*p))).collect()),
        }
    }
}

/// What a query returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryResult {
    /// Column names, in projection order.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
    /// More rows matched than the caller's cap allowed (LIMIT does not count).
    pub truncated: bool,
}

#[derive(Debug, Clone)]
struct SortKey {
    e: Scalar,
    desc: bool,
    nulls_first: bool,
}

/// A compiled query.
#[derive(Debug, Clone)]
pub struct Query {
    columns: Vec<String>,
    projection: Vec<Scalar>,
    filter: Filter,
    order: Vec<SortKey>,
    limit: Option<usize>,
}

/// Compiles `SELECT <columns or *> FROM processes [WHERE ...] [ORDER BY ...] [LIMIT n]`.
pub fn compile_query(sql: &str) -> Result<Query, CompileError> {
    on_compiler_stack(|| compile_query_here(sql))?
}

fn compile_query_here(sql: &str) -> Result<Query, CompileError> {
    let parts = parse(sql, Mode::Query)?;
    let mut columns = Vec::new();
    let mut projection = Vec::new();
    for item in &parts.projection {
        match item {
            SelectItem::Wildcard(opts) => {
                if *opts != plain_wildcard(opts) {
                    return Err(CompileError::new(
                        CompileErrorKind::Unsupported("wildcard options".to_owned()),
                        None,
                    ));
                }
                for c in Column::ALL {
                    columns.push(c.name().to_owned());
                    projection.push(Scalar::Col(*c));
                }
            }
            SelectItem::UnnamedExpr(e) => {
                columns.push(default_name(e));
                projection.push(compile(e, 0)?.into_scalar().0);
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                columns.push(alias.value.clone());
                projection.push(compile(expr, 0)?.into_scalar().0);
            }
            _ => {
                return Err(CompileError::new(
                    CompileErrorKind::Unsupported("this kind of projection".to_owned()),
                    None,
                ));
            }
        }
    }
    let filter = Filter {
        pred: match &parts.selection {
            Some(e) => compile_pred(e, 0)?,
            None => Pred::Const(Some(true)),
        },
    };
    let mut order = Vec::new();
    for o in &parts.order_by {
        let desc = match &o.options.sort {
            None | Some(OrderBySort::Asc) => false,
            Some(OrderBySort::Desc) => true,
            Some(OrderBySort::Using(_)) => {
                return Err(CompileError::new(
                    CompileErrorKind::Unsupported("ORDER BY ... USING".to_owned()),
                    pos(&o.expr),
                ));
            }
        };
        if o.with_fill.is_some() {
            return Err(CompileError::new(
                CompileErrorKind::Unsupported("WITH FILL".to_owned()),
                pos(&o.expr),
            ));
        }
        order.push(SortKey {
            e: compile(&o.expr, 0)?.into_scalar().0,
            desc,
            // PostgreSQL: NULLs sort as if larger than every value.
            nulls_first: o.options.nulls_first.unwrap_or(desc),
        });
    }
    let limit = match &parts.limit {
        None => None,
        Some(e) => Some(limit_value(e)?),
    };
    Ok(Query {
        columns,
        projection,
        filter,
        order,
        limit,
    })
}

fn plain_wildcard(opts: &WildcardAdditionalOptions) -> WildcardAdditionalOptions {
    WildcardAdditionalOptions {
        wildcard_token: opts.wildcard_token.clone(),
        ..WildcardAdditionalOptions::default()
    }
}

fn limit_value(e: &Expr) -> Result<usize, CompileError> {
    let bad = || CompileError::new(CompileErrorKind::BadLimit, pos(e));
    match e {
        Expr::Value(v) => match &v.value {
            sqlparser::ast::Value::Number(s, _) => s.parse::<usize>().map_err(|_| bad()),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// PostgreSQL-like output names: the column, the function, or `?column?`.
fn default_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => i.value.to_lowercase(),
        Expr::CompoundIdentifier(p) => p
            .last()
            .map_or_else(|| "?column?".to_owned(), |i| i.value.to_lowercase()),
        Expr::Function(f) => f.name.to_string().to_lowercase(),
        Expr::Nested(inner) if matches!(**inner, Expr::Identifier(_)) => default_name(inner),
        _ => "?column?".to_owned(),
    }
}

impl Query {
    /// Output column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The LIMIT, if the query has one.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Whether the WHERE condition is TRUE for `record`: the rows
    /// [`Query::run_capped`] picks from.
    pub fn matches(&self, record: &Record) -> bool {
        self.filter.matches(record)
    }

    /// Whether the WHERE condition reads `column`.
    pub fn filter_reads(&self, column: Column) -> bool {
        self.filter.reads(column)
    }

    /// Whether any part of the query (output, WHERE, ORDER BY) reads
    /// `column`.
    pub fn reads(&self, column: Column) -> bool {
        let mut found = self.filter_reads(column);
        let mut check = |c| found |= c == column;
        for e in self
            .projection
            .iter()
            .chain(self.order.iter().map(|k| &k.e))
        {
            e.columns(&mut check);
        }
        found
    }

    /// How many matching records decide the result of
    /// [`Query::run_capped`] with `cap`: without ORDER BY the first ones
    /// (one more than are returned, to tell whether rows were cut), so a
    /// caller can stop reading there; `None` when every match counts.
    pub fn enough(&self, cap: usize) -> Option<usize> {
        let want = self.limit.map_or(cap, |l| l.min(cap));
        self.order.is_empty().then(|| want.saturating_add(1))
    }

    /// Runs the query, returning at most [`DEFAULT_ROW_CAP`] rows.
    pub fn run<'a>(&self, records: impl IntoIterator<Item = &'a Record>) -> QueryResult {
        self.run_capped(records, DEFAULT_ROW_CAP)
    }

    /// Runs the query, returning at most `cap` rows (and at most LIMIT).
    pub fn run_capped<'a>(
        &self,
        records: impl IntoIterator<Item = &'a Record>,
        cap: usize,
    ) -> QueryResult {
        let want = self.limit.map_or(cap, |l| l.min(cap));
        let capped_by_caller = self.limit.is_none_or(|l| l > cap);
        let matching = records.into_iter().filter(|r| self.matches(r));
        let (picked, more): (Vec<&Record>, bool) = if self.order.is_empty() {
            let mut picked = Vec::new();
            let mut more = false;
            for r in matching {
                if picked.len() == want {
                    more = true;
                    break;
                }
                picked.push(r);
            }
            (picked, more)
        } else {
            let mut keyed: Vec<(Vec<Val<'_>>, &Record)> = matching
                .map(|r| (self.order.iter().map(|k| k.e.eval(r)).collect(), r))
                .collect();
            keyed.sort_by(|(a, _), (b, _)| self.compare_keys(a, b));
            let more = keyed.len() > want;
            (keyed.into_iter().take(want).map(|(_, r)| r).collect(), more)
        };
        let rows = picked
            .into_iter()
            .map(|r| {
                self.projection
                    .iter()
                    .map(|p| Value::from(p.eval(r)))
                    .collect()
            })
            .collect();
        QueryResult {
            columns: self.columns.clone(),
            rows,
            truncated: more && capped_by_caller,
        }
    }

    fn compare_keys(&self, a: &[Val<'_>], b: &[Val<'_>]) -> Ordering {
        for (k, (x, y)) in self.order.iter().zip(a.iter().zip(b)) {
            let ord = match (matches!(x, Val::Null), matches!(y, Val::Null)) {
                (true, true) => Ordering::Equal,
                (true, false) if k.nulls_first => Ordering::Less,
                (true, false) => Ordering::Greater,
                (false, true) if k.nulls_first => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    let o = sort_order(x, y);
                    if k.desc { o.reverse() } else { o }
                }
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }
}
