//! Parsing with sqlparser and the statement-level allow-list:
//! `SELECT <projection> FROM processes [WHERE ...]`, plus ORDER BY and
//! LIMIT in query mode.

use sqlparser::ast::{
    Expr, GroupByExpr, LimitClause, ObjectNamePart, OrderByExpr, OrderByKind, Query, Select,
    SelectFlavor, SelectItem, SetExpr, Statement, TableFactor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::rules::sql::compile::{pos, query_pos};
use crate::rules::sql::error::{CompileError, CompileErrorKind, Position, from_parser_error};
use crate::rules::sql::{MAX_SQL_LEN, PARSER_RECURSION_LIMIT};

/// Which statement shapes are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Rule,
    Query,
}

impl Mode {
    fn context(self) -> &'static str {
        match self {
            Mode::Rule => "in a rule",
            Mode::Query => "in a query",
        }
    }
}

/// The parts of an allowed statement.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) projection: Vec<SelectItem>,
    pub(crate) selection: Option<Expr>,
    pub(crate) order_by: Vec<OrderByExpr>,
    pub(crate) limit: Option<Expr>,
}

fn fail<T>(kind: CompileErrorKind, position: Option<Position>) -> Result<T, CompileError> {
    Err(CompileError::new(kind, position))
}

fn not_allowed<T>(
    clause: &'static str,
    mode: Mode,
    position: Option<Position>,
) -> Result<T, CompileError> {
    fail(
        CompileErrorKind::ClauseNotAllowed {
            clause,
            context: mode.context(),
        },
        position,
    )
}

/// Parses `sql` and checks it against the allow-list for `mode`.
pub(crate) fn parse(sql: &str, mode: Mode) -> Result<Parts, CompileError> {
    if sql.len() > MAX_SQL_LEN {
        return fail(
            CompileErrorKind::TooLong {
                len: sql.len(),
                max: MAX_SQL_LEN,
            },
            None,
        );
    }
    let dialect = PostgreSqlDialect {};
    let mut statements = Parser::new(&dialect)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| from_parser_error(e, sql))?;
    if statements.len() != 1 {
        return fail(CompileErrorKind::StatementCount(statements.len()), None);
    }
    let Some(Statement::Query(query)) = statements.pop() else {
        return fail(
            CompileErrorKind::NotSelectFromProcesses,
            Some(first_pos(sql)),
        );
    };
    let query = *query;
    let at = query_pos(&query);
    let Query {
        with,
        body,
        order_by,
        limit_clause,
        fetch,
        locks,
        for_clause,
        settings,
        format_clause,
        pipe_operators,
    } = query;
    if with.is_some() {
        return fail(CompileErrorKind::Subquery, Some(first_pos(sql)));
    }
    let select = match *body {
        SetExpr::Select(s) => *s,
        SetExpr::Query(_) => return fail(CompileErrorKind::Subquery, Some(first_pos(sql))),
        _ => {
            return fail(
                CompileErrorKind::NotSelectFromProcesses,
                Some(first_pos(sql)),
            );
        }
    };
    if fetch.is_some()
        || !locks.is_empty()
        || for_clause.is_some()
        || settings.is_some()
        || format_clause.is_some()
        || !pipe_operators.is_empty()
    {
        return fail(CompileErrorKind::NotSelectFromProcesses, at);
    }
    let order_by = match order_by {
        None => Vec::new(),
        Some(o) => {
            let first = match &o.kind {
                OrderByKind::Expressions(v) => v.first().and_then(|x| pos(&x.expr)),
                OrderByKind::All(_) => at,
            };
            if mode == Mode::Rule {
                return not_allowed("ORDER BY", mode, first);
            }
            match o.kind {
                OrderByKind::Expressions(v) if o.interpolate.is_none() => v,
                _ => {
                    return fail(
                        CompileErrorKind::Unsupported("ORDER BY ALL / INTERPOLATE".to_owned()),
                        first,
                    );
                }
            }
        }
    };
    let limit = match limit_clause {
        None => None,
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            let p = limit.as_ref().and_then(pos);
            if mode == Mode::Rule {
                return not_allowed("LIMIT", mode, p.or(at));
            }
            if let Some(o) = offset {
                return fail(
                    CompileErrorKind::Unsupported("OFFSET".to_owned()),
                    pos(&o.value),
                );
            }
            if !limit_by.is_empty() {
                return fail(CompileErrorKind::Unsupported("LIMIT BY".to_owned()), p);
            }
            limit
        }
        Some(LimitClause::OffsetCommaLimit { limit, .. }) => {
            if mode == Mode::Rule {
                return not_allowed("LIMIT", mode, pos(&limit));
            }
            return fail(
                CompileErrorKind::Unsupported("LIMIT offset, count".to_owned()),
                pos(&limit),
            );
        }
    };
    let (projection, selection) = check_select(select, mode, at)?;
    Ok(Parts {
        projection,
        selection,
        order_by,
        limit,
    })
}

/// Position of the first non-blank character, for statement-level errors.
fn first_pos(sql: &str) -> Position {
    let mut line = 1;
    let mut column = 1;
    for c in sql.chars() {
        match c {
            '\n' => {
                line += 1;
                column = 1;
            }
            c if c.is_whitespace() => column += 1,
            _ => break,
        }
    }
    Position { line, column }
}

fn check_select(
    select: Select,
    mode: Mode,
    at: Option<Position>,
) -> Result<(Vec<SelectItem>, Option<Expr>), CompileError> {
    let Select {
        distinct,
        select_modifiers,
        top,
        projection,
        exclude,
        into,
        from,
        lateral_views,
        prewhere,
        selection,
        connect_by,
        group_by,
        cluster_by,
        distribute_by,
        sort_by,
        having,
        named_window,
        qualify,
        value_table_mode,
        flavor,
        ..
    } = select;
    if distinct.is_some() {
        return not_allowed("DISTINCT", mode, at);
    }
    match &group_by {
        GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty() => {}
        GroupByExpr::Expressions(e, _) => {
            return not_allowed("GROUP BY", mode, e.first().and_then(pos).or(at));
        }
        GroupByExpr::All(_) => return not_allowed("GROUP BY", mode, at),
    }
    if let Some(h) = having {
        return not_allowed("HAVING", mode, pos(&h).or(at));
    }
    if select_modifiers.is_some()
        || top.is_some()
        || exclude.is_some()
        || into.is_some()
        || !lateral_views.is_empty()
        || prewhere.is_some()
        || !connect_by.is_empty()
        || !cluster_by.is_empty()
        || !distribute_by.is_empty()
        || !sort_by.is_empty()
        || !named_window.is_empty()
        || qualify.is_some()
        || value_table_mode.is_some()
        || flavor != SelectFlavor::Standard
    {
        return fail(CompileErrorKind::NotSelectFromProcesses, at);
    }
    let mut from = from;
    if from.len() > 1 {
        return fail(CompileErrorKind::Join, factor_pos(&from[1].relation).or(at));
    }
    let Some(table) = from.pop() else {
        return fail(CompileErrorKind::NotSelectFromProcesses, at);
    };
    if let Some(j) = table.joins.first() {
        return fail(CompileErrorKind::Join, factor_pos(&j.relation).or(at));
    }
    match table.relation {
        TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_hints,
        } => {
            let first = name.0.first();
            let ident = match (first, name.0.len()) {
                (Some(ObjectNamePart::Identifier(i)), 1) => i,
                _ => {
                    return fail(
                        CompileErrorKind::UnknownTable(name.to_string()),
                        first.and_then(|p| match p {
                            ObjectNamePart::Identifier(i) => Position::from_location(i.span.start),
                            ObjectNamePart::Function(f) => {
                                Position::from_location(f.name.span.start)
                            }
                        }),
                    );
                }
            };
            let here = Position::from_location(ident.span.start);
            if !ident.value.eq_ignore_ascii_case("processes") {
                return fail(CompileErrorKind::UnknownTable(ident.value.clone()), here);
            }
            if alias.is_some()
                || args.is_some()
                || !with_hints.is_empty()
                || version.is_some()
                || with_ordinality
                || !partitions.is_empty()
                || json_path.is_some()
                || sample.is_some()
                || !index_hints.is_empty()
            {
                return fail(
                    CompileErrorKind::Unsupported(
                        "table aliases, hints or arguments on `processes`".to_owned(),
                    ),
                    here,
                );
            }
        }
        TableFactor::Derived { subquery, .. } => {
            return fail(CompileErrorKind::Subquery, query_pos(&subquery).or(at));
        }
        other => {
            return fail(
                CompileErrorKind::NotSelectFromProcesses,
                factor_pos(&other).or(at),
            );
        }
    }
    Ok((projection, selection))
}

fn factor_pos(f: &TableFactor) -> Option<Position> {
    match f {
        TableFactor::Table { name, .. } => name.0.first().and_then(|p| match p {
            ObjectNamePart::Identifier(i) => Position::from_location(i.span.start),
            ObjectNamePart::Function(f) => Position::from_location(f.name.span.start),
        }),
        TableFactor::Derived { subquery, .. } => query_pos(subquery),
        _ => None,
    }
}
