//! From sqlparser's AST to the typed expression tree in
//! [`crate::rules::sql::expr`], checking columns, functions and types.

use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectNamePart, Query,
    UnaryOperator, Value as AstValue,
};
use sqlparser::tokenizer::Location;

use crate::rules::record::{Column, SqlType};
use crate::rules::sql::MAX_DEPTH;
use crate::rules::sql::error::{CompileError, CompileErrorKind, Position, closest};
use crate::rules::sql::expr::{CmpOp, Lit, Pred, Scalar};
use crate::rules::sql::like::{LikeMatcher, contains_finder};

/// Names of the supported functions, for suggestions and help.
pub const FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "length",
    "basename",
    "dirname",
    "substr",
    "left",
    "coalesce",
    "regexp_like",
    "contains",
    "argv",
];

/// A compiled expression: a predicate, or a scalar with its type.
pub(crate) enum Typed {
    Pred(Pred),
    Scalar(Scalar, SqlType),
}

impl Typed {
    pub(crate) fn into_scalar(self) -> (Scalar, SqlType) {
        match self {
            Typed::Pred(p) => (Scalar::Pred(Box::new(p)), SqlType::Bool),
            Typed::Scalar(s, t) => (s, t),
        }
    }
}

fn err<T>(kind: CompileErrorKind, at: &Expr) -> Result<T, CompileError> {
    Err(CompileError::new(kind, pos(at)))
}

fn loc(l: Location) -> Option<Position> {
    Position::from_location(l)
}

/// Position of the query's SELECT keyword, without walking its expressions.
pub(crate) fn query_pos(q: &Query) -> Option<Position> {
    q.body
        .as_select()
        .and_then(|s| loc(s.select_token.0.span.start))
}

/// Position of an expression: its leftmost leaf, found without recursion so
/// that hostile, deeply nested input cannot exhaust the stack.
pub(crate) fn pos(mut e: &Expr) -> Option<Position> {
    loop {
        e = match e {
            Expr::Identifier(i) => return loc(i.span.start),
            Expr::CompoundIdentifier(parts) => {
                return parts.first().and_then(|i| loc(i.span.start));
            }
            Expr::Value(v) => return loc(v.span.start),
            Expr::Function(f) => {
                return f.name.0.first().and_then(|p| match p {
                    ObjectNamePart::Identifier(i) => loc(i.span.start),
                    ObjectNamePart::Function(f) => loc(f.name.span.start),
                });
            }
            Expr::Subquery(q) | Expr::Exists { subquery: q, .. } => return query_pos(q),
            Expr::BinaryOp { left, .. } => left,
            Expr::Nested(x)
            | Expr::UnaryOp { expr: x, .. }
            | Expr::IsNull(x)
            | Expr::IsNotNull(x)
            | Expr::IsTrue(x)
            | Expr::IsNotTrue(x)
            | Expr::IsFalse(x)
            | Expr::IsNotFalse(x)
            | Expr::IsUnknown(x)
            | Expr::IsNotUnknown(x)
            | Expr::IsDistinctFrom(x, _)
            | Expr::IsNotDistinctFrom(x, _)
            | Expr::InList { expr: x, .. }
            | Expr::InSubquery { expr: x, .. }
            | Expr::Between { expr: x, .. }
            | Expr::Like { expr: x, .. }
            | Expr::ILike { expr: x, .. }
            | Expr::SimilarTo { expr: x, .. }
            | Expr::RLike { expr: x, .. }
            | Expr::Cast { expr: x, .. }
            | Expr::Collate { expr: x, .. }
            | Expr::Substring { expr: x, .. } => x,
            Expr::Case { case_token, .. } => return loc(case_token.0.span.start),
            _ => return None,
        };
    }
}

/// Short, non-recursive description of an operand for error messages.
fn describe(e: &Expr, ty: SqlType) -> String {
    let what = match e {
        Expr::Identifier(i) => format!("column `{}`", i.value),
        Expr::CompoundIdentifier(p) => format!(
            "column `{}`",
            p.last().map(|i| i.value.as_str()).unwrap_or_default()
        ),
        Expr::Value(v) => format!("literal {}", v.value),
        Expr::Function(f) => format!("`{}(...)`", f.name),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } if matches!(**expr, Expr::Value(_)) => "a negative number".to_owned(),
        _ => "an expression".to_owned(),
    };
    format!("{what} ({ty})")
}

/// Whether values of the two types can be compared.
fn comparable(a: SqlType, b: SqlType) -> bool {
    a == SqlType::Null
        || b == SqlType::Null
        || (a.is_numeric() && b.is_numeric())
        || (a == b && matches!(a, SqlType::Text | SqlType::Bool))
}

fn list_hint(ty: SqlType) -> &'static str {
    match ty {
        SqlType::TextList => {
            " (lists cannot be compared: use `cmdline_str`, `argv(n)` or `contains(cmdline, '...')`)"
        }
        SqlType::IntList => " (lists cannot be compared: use `contains(listening_ports, n)`)",
        _ => "",
    }
}

fn type_mismatch(verb: &str, l: &Expr, lt: SqlType, r: &Expr, rt: SqlType) -> CompileErrorKind {
    let hint = if list_hint(lt).is_empty() {
        list_hint(rt)
    } else {
        list_hint(lt)
    };
    CompileErrorKind::Type(format!(
        "cannot {verb} {} with {}{hint}",
        describe(l, lt),
        describe(r, rt)
    ))
}

/// Compiles an expression that must be boolean (WHERE, AND/OR operands).
pub(crate) fn compile_pred(e: &Expr, depth: usize) -> Result<Pred, CompileError> {
    match compile(e, depth)? {
        Typed::Pred(p) => Ok(p),
        Typed::Scalar(Scalar::Lit(Lit::Null), _) => Ok(Pred::Const(None)),
        Typed::Scalar(s, SqlType::Bool) => Ok(Pred::Scalar(s)),
        Typed::Scalar(_, ty) => err(
            CompileErrorKind::Type(format!(
                "expected a boolean condition, found {}",
                describe(e, ty)
            )),
            e,
        ),
    }
}

/// Compiles any expression.
pub(crate) fn compile(e: &Expr, depth: usize) -> Result<Typed, CompileError> {
    if depth > MAX_DEPTH {
        return err(CompileErrorKind::TooDeep { max: MAX_DEPTH }, e);
    }
    let d = depth + 1;
    Ok(match e {
        Expr::Identifier(ident) => {
            let name = if ident.quote_style.is_some() {
                ident.value.clone()
            } else {
                ident.value.to_lowercase()
            };
            column(&name, e)?
        }
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [table, col] if table.value.eq_ignore_ascii_case("processes") => {
                column(&col.value.to_lowercase(), e)?
            }
            _ => {
                let name = parts
                    .iter()
                    .map(|p| p.value.as_str())
                    .collect::<Vec<_>>()
                    .join(".");
                return err(
                    CompileErrorKind::UnknownColumn {
                        name,
                        suggestion: None,
                    },
                    e,
                );
            }
        },
        Expr::Value(v) => literal(&v.value, false, e)?,
        Expr::Nested(inner) => compile(inner, d)?,
        Expr::UnaryOp { op, expr } => match op {
            UnaryOperator::Not => Typed::Pred(Pred::Not(Box::new(compile_pred(expr, d)?))),
            UnaryOperator::Minus | UnaryOperator::Plus => match &**expr {
                Expr::Value(v) => literal(&v.value, *op == UnaryOperator::Minus, e)?,
                _ => {
                    return err(
                        CompileErrorKind::Unsupported(format!(
                            "unary `{op}` on anything but a number literal"
                        )),
                        e,
                    );
                }
            },
            _ => return err(CompileErrorKind::Unsupported(format!("operator `{op}`")), e),
        },
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And | BinaryOperator::Or => {
                let mut operands = Vec::new();
                for operand in flatten(e, op) {
                    operands.push(compile_pred(operand, d)?);
                }
                Typed::Pred(if *op == BinaryOperator::And {
                    Pred::And(operands.into_boxed_slice())
                } else {
                    Pred::Or(merge_contains(operands).into_boxed_slice())
                })
            }
            BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq => {
                let op = match op {
                    BinaryOperator::Eq => CmpOp::Eq,
                    BinaryOperator::NotEq => CmpOp::NotEq,
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::LtEq => CmpOp::LtEq,
                    BinaryOperator::Gt => CmpOp::Gt,
                    _ => CmpOp::GtEq,
                };
                let (l, lt) = compile(left, d)?.into_scalar();
                let (r, rt) = compile(right, d)?.into_scalar();
                if !comparable(lt, rt) {
                    return err(type_mismatch("compare", left, lt, right, rt), e);
                }
                Typed::Pred(Pred::Cmp { op, l, r })
            }
            _ => {
                return err(
                    CompileErrorKind::Unsupported(format!(
                        "operator `{op}` (supported: = <> != < <= > >= AND OR NOT)"
                    )),
                    e,
                );
            }
        },
        Expr::IsNull(x) | Expr::IsNotNull(x) => {
            let (s, _) = compile(x, d)?.into_scalar();
            Typed::Pred(Pred::IsNull {
                e: s,
                negated: matches!(e, Expr::IsNotNull(_)),
            })
        }
        Expr::IsTrue(x)
        | Expr::IsNotTrue(x)
        | Expr::IsFalse(x)
        | Expr::IsNotFalse(x)
        | Expr::IsUnknown(x)
        | Expr::IsNotUnknown(x) => {
            let (value, negated) = match e {
                Expr::IsTrue(_) => (Some(true), false),
                Expr::IsNotTrue(_) => (Some(true), true),
                Expr::IsFalse(_) => (Some(false), false),
                Expr::IsNotFalse(_) => (Some(false), true),
                Expr::IsUnknown(_) => (None, false),
                _ => (None, true),
            };
            Typed::Pred(Pred::Is {
                e: Box::new(compile_pred(x, d)?),
                value,
                negated,
            })
        }
        Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
            let (l, lt) = compile(a, d)?.into_scalar();
            let (r, rt) = compile(b, d)?.into_scalar();
            if !comparable(lt, rt) {
                return err(type_mismatch("compare", a, lt, b, rt), e);
            }
            Typed::Pred(Pred::Distinct {
                l,
                r,
                negated: matches!(e, Expr::IsNotDistinctFrom(..)),
            })
        }
        Expr::InList {
            expr,
            list,
            negated,
        } => {
            let (s, ty) = compile(expr, d)?.into_scalar();
            let mut items = Vec::with_capacity(list.len());
            for item in list {
                let (i, it) = compile(item, d)?.into_scalar();
                if !comparable(ty, it) {
                    return err(type_mismatch("compare", expr, ty, item, it), item);
                }
                items.push(i);
            }
            let all_text = items
                .iter()
                .all(|i| matches!(i, Scalar::Lit(Lit::Text(_) | Lit::Null)));
            if ty == SqlType::Text && all_text {
                let has_null = items.iter().any(|i| matches!(i, Scalar::Lit(Lit::Null)));
                let set = items
                    .into_iter()
                    .filter_map(|i| match i {
                        Scalar::Lit(Lit::Text(t)) => Some(t),
                        _ => None,
                    })
                    .collect();
                let set: Box<[Box<str>]> = set;
                // `lower(x) IN ('a', 'b')`: compare case-insensitively
                // instead of lowercasing x for every record.
                let (e, fold) = match s {
                    Scalar::Lower(inner) if set.iter().all(|t| **t == *t.to_lowercase()) => {
                        (*inner, true)
                    }
                    other => (other, false),
                };
                Typed::Pred(Pred::InText {
                    e,
                    set,
                    has_null,
                    negated: *negated,
                    fold,
                })
            } else {
                Typed::Pred(Pred::In {
                    e: s,
                    list: items.into_boxed_slice(),
                    negated: *negated,
                })
            }
        }
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let (s, ty) = compile(expr, d)?.into_scalar();
            let (lo, lot) = compile(low, d)?.into_scalar();
            let (hi, hit) = compile(high, d)?.into_scalar();
            if !comparable(ty, lot) {
                return err(type_mismatch("compare", expr, ty, low, lot), e);
            }
            if !comparable(ty, hit) {
                return err(type_mismatch("compare", expr, ty, high, hit), e);
            }
            Typed::Pred(Pred::Between {
                e: s,
                low: lo,
                high: hi,
                negated: *negated,
            })
        }
        Expr::Like {
            negated,
            any,
            expr,
            pattern,
            escape_char,
        }
        | Expr::ILike {
            negated,
            any,
            expr,
            pattern,
            escape_char,
        } => {
            let ci = matches!(e, Expr::ILike { .. });
            let name = if ci { "ILIKE" } else { "LIKE" };
            if *any {
                return err(CompileErrorKind::Unsupported(format!("{name} ANY")), e);
            }
            let (s, ty) = compile(expr, d)?.into_scalar();
            if !matches!(ty, SqlType::Text | SqlType::Null) {
                return err(
                    CompileErrorKind::Type(format!(
                        "{name} needs text, found {}{}",
                        describe(expr, ty),
                        list_hint(ty)
                    )),
                    e,
                );
            }
            let Some(pat) = string_literal(pattern) else {
                return err(CompileErrorKind::PatternNotLiteral(name), pattern);
            };
            let escape = match escape_char.as_deref() {
                None => Some('\\'),
                Some(x) => match string_literal(x) {
                    Some("") => None,
                    Some(s) if s.chars().count() == 1 => s.chars().next(),
                    _ => {
                        return err(
                            CompileErrorKind::InvalidLike(
                                "ESCAPE must be a one-character string literal".to_owned(),
                            ),
                            x,
                        );
                    }
                },
            };
            let matcher = LikeMatcher::new(pat, ci, escape)
                .map_err(|m| CompileError::new(CompileErrorKind::InvalidLike(m), pos(pattern)))?;
            Typed::Pred(Pred::Like {
                e: s,
                matcher,
                negated: *negated,
            })
        }
        Expr::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } => {
            let args: Vec<&Expr> = std::iter::once(&**expr)
                .chain(substring_from.as_deref())
                .chain(substring_for.as_deref())
                .collect();
            function("substr", &args, e, d)?
        }
        // PostgreSQL parses some column names (`user`) as niladic functions.
        Expr::Function(f)
            if f.args == FunctionArguments::None
                && f.parameters == FunctionArguments::None
                && Column::from_name(&f.name.to_string().to_lowercase()).is_some() =>
        {
            column(&f.name.to_string().to_lowercase(), e)?
        }
        Expr::Function(f) => {
            let name = f.name.to_string().to_lowercase();
            let plain = f.parameters == FunctionArguments::None
                && f.within_group.is_empty()
                && f.filter.is_none()
                && f.null_treatment.is_none()
                && f.over.is_none()
                && !f.uses_odbc_syntax;
            if !plain {
                return err(
                    CompileErrorKind::Unsupported(format!(
                        "window, filter or aggregate syntax on `{name}`"
                    )),
                    e,
                );
            }
            let args = match &f.args {
                FunctionArguments::None => Vec::new(),
                FunctionArguments::Subquery(_) => return err(CompileErrorKind::Subquery, e),
                FunctionArguments::List(list) => {
                    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                        return err(
                            CompileErrorKind::Unsupported(format!(
                                "DISTINCT or clauses inside `{name}(...)`"
                            )),
                            e,
                        );
                    }
                    let mut args = Vec::with_capacity(list.args.len());
                    for a in &list.args {
                        match a {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => args.push(x),
                            _ => {
                                return err(
                                    CompileErrorKind::Unsupported(format!(
                                        "named or wildcard arguments to `{name}`"
                                    )),
                                    e,
                                );
                            }
                        }
                    }
                    args
                }
            };
            function(&name, &args, e, d)?
        }
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
            return err(CompileErrorKind::Subquery, e);
        }
        Expr::SimilarTo { .. } | Expr::RLike { .. } => {
            return err(
                CompileErrorKind::Unsupported(
                    "SIMILAR TO / REGEXP (use regexp_like(text, 'pattern'))".to_owned(),
                ),
                e,
            );
        }
        Expr::Case { .. } => return err(CompileErrorKind::Unsupported("CASE".to_owned()), e),
        Expr::Cast { .. } => return err(CompileErrorKind::Unsupported("CAST".to_owned()), e),
        _ => {
            return err(
                CompileErrorKind::Unsupported("this kind of expression".to_owned()),
                e,
            );
        }
    })
}

/// The operands of a chain of the same AND/OR operator, left to right,
/// collected without recursion.
fn flatten<'e>(e: &'e Expr, op: &BinaryOperator) -> Vec<&'e Expr> {
    let mut out = Vec::new();
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match x {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                stack.push(right);
                stack.push(left);
            }
            other => out.push(other),
        }
    }
    out
}

/// Merges the `col LIKE '%lit%'` operands of an OR that test the same
/// column with the same case sensitivity into one multi-literal search.
/// The result is the same in three-valued logic: NULL when the column is
/// NULL, else whether any literal occurs. Merged searches go first: they are
/// cheap and often decide the OR.
fn merge_contains(operands: Vec<Pred>) -> Vec<Pred> {
    type Group = ((Column, bool), Vec<String>, Vec<Pred>);
    let key = |p: &Pred| match p {
        Pred::Like {
            e: Scalar::Col(c),
            matcher,
            negated: false,
        } => matcher
            .contains_literal()
            .map(|(lit, ci)| ((*c, ci), lit.to_owned())),
        _ => None,
    };
    let mut groups: Vec<Group> = Vec::new();
    let mut rest = Vec::with_capacity(operands.len());
    for p in operands {
        match key(&p) {
            Some((k, lit)) => match groups.iter_mut().find(|(gk, _, _)| *gk == k) {
                Some((_, lits, preds)) => {
                    lits.push(lit);
                    preds.push(p);
                }
                None => groups.push((k, vec![lit], vec![p])),
            },
            None => rest.push(p),
        }
    }
    let mut merged = Vec::with_capacity(groups.len() + rest.len());
    for ((column, ci), lits, preds) in groups {
        match contains_finder(&lits, ci) {
            Ok(finder) if preds.len() > 1 => merged.push(Pred::AnyContains {
                e: Scalar::Col(column),
                finder,
            }),
            _ => merged.extend(preds),
        }
    }
    merged.extend(rest);
    merged
}

fn column(name: &str, e: &Expr) -> Result<Typed, CompileError> {
    match Column::from_name(name) {
        Some(c) => Ok(Typed::Scalar(Scalar::Col(c), c.sql_type())),
        None => err(
            CompileErrorKind::UnknownColumn {
                name: name.to_owned(),
                suggestion: closest(name, Column::ALL.iter().map(|c| c.name())),
            },
            e,
        ),
    }
}

fn literal(v: &AstValue, negate: bool, e: &Expr) -> Result<Typed, CompileError> {
    let number = |s: &str| -> Option<Typed> {
        if let Ok(n) = s.parse::<i64>() {
            let n = if negate { n.checked_neg()? } else { n };
            return Some(Typed::Scalar(Scalar::Lit(Lit::Int(n)), SqlType::Int));
        }
        let f = s.parse::<f64>().ok().filter(|f| f.is_finite())?;
        let f = if negate { -f } else { f };
        Some(Typed::Scalar(Scalar::Lit(Lit::Float(f)), SqlType::Float))
    };
    match v {
        AstValue::Number(s, _) => number(s).ok_or_else(|| {
            CompileError::new(
                CompileErrorKind::Unsupported(format!("number literal `{s}` (out of range)")),
                pos(e),
            )
        }),
        _ if negate => err(
            CompileErrorKind::Unsupported("unary minus on anything but a number".to_owned()),
            e,
        ),
        AstValue::SingleQuotedString(s) | AstValue::EscapedStringLiteral(s) => Ok(Typed::Scalar(
            Scalar::Lit(Lit::Text(s.as_str().into())),
            SqlType::Text,
        )),
        AstValue::Boolean(b) => Ok(Typed::Scalar(Scalar::Lit(Lit::Bool(*b)), SqlType::Bool)),
        AstValue::Null => Ok(Typed::Scalar(Scalar::Lit(Lit::Null), SqlType::Null)),
        AstValue::DoubleQuotedString(_) => err(
            CompileErrorKind::Unsupported(
                "double-quoted strings (use single quotes for text)".to_owned(),
            ),
            e,
        ),
        other => err(
            CompileErrorKind::Unsupported(format!("literal `{other}`")),
            e,
        ),
    }
}

pub(crate) fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            AstValue::SingleQuotedString(s) | AstValue::EscapedStringLiteral(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn int_literal(e: &Expr) -> Option<i64> {
    match e {
        Expr::Value(v) => match &v.value {
            AstValue::Number(s, _) => s.parse().ok(),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => int_literal(expr).and_then(i64::checked_neg),
        _ => None,
    }
}

fn arity(
    function: &'static str,
    expected: &'static str,
    ok: bool,
    args: &[&Expr],
    e: &Expr,
) -> Result<(), CompileError> {
    if ok {
        return Ok(());
    }
    err(
        CompileErrorKind::Arguments {
            function,
            expected,
            got: format!(
                "{} argument{}",
                args.len(),
                if args.len() == 1 { "" } else { "s" }
            ),
        },
        e,
    )
}

/// Compiles `arg`, which must be text (or NULL).
fn text_arg(function: &str, arg: &Expr, d: usize) -> Result<Scalar, CompileError> {
    let (s, ty) = compile(arg, d)?.into_scalar();
    if matches!(ty, SqlType::Text | SqlType::Null) {
        Ok(s)
    } else {
        err(
            CompileErrorKind::Type(format!(
                "`{function}` needs text, found {}{}",
                describe(arg, ty),
                list_hint(ty)
            )),
            arg,
        )
    }
}

fn int_arg(function: &'static str, arg: &Expr) -> Result<i64, CompileError> {
    int_literal(arg).ok_or_else(|| {
        CompileError::new(
            CompileErrorKind::Arguments {
                function,
                expected: "an integer literal here",
                got: "something else".to_owned(),
            },
            pos(arg),
        )
    })
}

fn function(name: &str, args: &[&Expr], e: &Expr, d: usize) -> Result<Typed, CompileError> {
    let text = |s| Typed::Scalar(s, SqlType::Text);
    Ok(match name {
        "lower" | "upper" | "basename" | "dirname" => {
            let f: &'static str = FUNCTIONS
                .iter()
                .find(|f| **f == name)
                .copied()
                .unwrap_or("lower");
            arity(f, "1 argument", args.len() == 1, args, e)?;
            let a = Box::new(text_arg(name, args[0], d)?);
            text(match name {
                "lower" => Scalar::Lower(a),
                "upper" => Scalar::Upper(a),
                "basename" => Scalar::Basename(a),
                _ => Scalar::Dirname(a),
            })
        }
        "length" => {
            arity("length", "1 argument", args.len() == 1, args, e)?;
            let (s, ty) = compile(args[0], d)?.into_scalar();
            if !matches!(
                ty,
                SqlType::Text | SqlType::Null | SqlType::TextList | SqlType::IntList
            ) {
                return err(
                    CompileErrorKind::Type(format!(
                        "`length` needs text or a list, found {}",
                        describe(args[0], ty)
                    )),
                    args[0],
                );
            }
            Typed::Scalar(Scalar::Length(Box::new(s)), SqlType::Int)
        }
        "substr" | "substring" => {
            arity(
                "substr",
                "2 or 3 arguments (text, start, length)",
                matches!(args.len(), 2 | 3),
                args,
                e,
            )?;
            let s = text_arg("substr", args[0], d)?;
            let start = int_arg("substr", args[1])?;
            let len = match args.get(2) {
                Some(a) => Some(int_arg("substr", a)?),
                None => None,
            };
            text(Scalar::Substr {
                e: Box::new(s),
                start,
                len,
            })
        }
        "left" => {
            arity("left", "2 arguments (text, n)", args.len() == 2, args, e)?;
            let s = text_arg("left", args[0], d)?;
            let n = int_arg("left", args[1])?;
            if n < 0 {
                return err(
                    CompileErrorKind::Arguments {
                        function: "left",
                        expected: "a non-negative length",
                        got: n.to_string(),
                    },
                    args[1],
                );
            }
            text(Scalar::Substr {
                e: Box::new(s),
                start: 1,
                len: Some(n),
            })
        }
        "coalesce" => {
            arity("coalesce", "at least 1 argument", !args.is_empty(), args, e)?;
            let mut items = Vec::with_capacity(args.len());
            let mut ty = SqlType::Null;
            let mut first = args[0];
            for a in args {
                let (s, t) = compile(a, d)?.into_scalar();
                if !comparable(ty, t) || matches!(t, SqlType::TextList | SqlType::IntList) {
                    return err(type_mismatch("mix", first, ty, a, t), a);
                }
                if ty == SqlType::Null || t == SqlType::Float {
                    ty = t;
                    first = a;
                }
                items.push(s);
            }
            Typed::Scalar(Scalar::Coalesce(items.into_boxed_slice()), ty)
        }
        "regexp_like" => {
            arity(
                "regexp_like",
                "2 or 3 arguments (text, 'pattern'[, 'flags'])",
                matches!(args.len(), 2 | 3),
                args,
                e,
            )?;
            let s = text_arg("regexp_like", args[0], d)?;
            let Some(pattern) = string_literal(args[1]) else {
                return err(CompileErrorKind::PatternNotLiteral("regexp_like"), args[1]);
            };
            let mut builder = regex::RegexBuilder::new(pattern);
            builder.size_limit(1 << 20).dfa_size_limit(1 << 20);
            if let Some(flags) = args.get(2) {
                let Some(flags) = string_literal(flags) else {
                    return err(
                        CompileErrorKind::PatternNotLiteral("regexp_like flags"),
                        flags,
                    );
                };
                for c in flags.chars() {
                    match c {
                        'i' => builder.case_insensitive(true),
                        's' => builder.dot_matches_new_line(true),
                        'm' => builder.multi_line(true),
                        'x' => builder.ignore_whitespace(true),
                        'c' => builder.case_insensitive(false),
                        _ => {
                            return err(
                                CompileErrorKind::InvalidRegex(format!(
                                    "unknown flag `{c}` (supported: i, c, s, m, x)"
                                )),
                                args[2],
                            );
                        }
                    };
                }
            }
            let re = builder.build().map_err(|x| {
                CompileError::new(
                    CompileErrorKind::InvalidRegex(
                        x.to_string().lines().last().unwrap_or("").trim().to_owned()
                            + &format!(" in `{pattern}`"),
                    ),
                    pos(args[1]),
                )
            })?;
            Typed::Pred(Pred::Regex { e: s, re })
        }
        "contains" => {
            arity(
                "contains",
                "2 arguments (list, value)",
                args.len() == 2,
                args,
                e,
            )?;
            let (list, lt) = compile(args[0], d)?.into_scalar();
            let (item, it) = compile(args[1], d)?.into_scalar();
            let ok = matches!(
                (lt, it),
                (SqlType::TextList, SqlType::Text)
                    | (SqlType::IntList, SqlType::Int)
                    | (
                        SqlType::TextList | SqlType::IntList | SqlType::Null,
                        SqlType::Null
                    )
                    | (SqlType::Null, _)
            );
            if !ok {
                return err(
                    CompileErrorKind::Type(format!(
                        "`contains` needs a list and a value of its element type, found {} and {}",
                        describe(args[0], lt),
                        describe(args[1], it)
                    )),
                    e,
                );
            }
            Typed::Pred(Pred::Contains { list, item })
        }
        "argv" => {
            arity(
                "argv",
                "1 argument (index from 0)",
                args.len() == 1,
                args,
                e,
            )?;
            let n = int_arg("argv", args[0])?;
            let Ok(n) = usize::try_from(n) else {
                return err(
                    CompileErrorKind::Arguments {
                        function: "argv",
                        expected: "a non-negative index",
                        got: n.to_string(),
                    },
                    args[0],
                );
            };
            text(Scalar::Argv(n))
        }
        _ => {
            return err(
                CompileErrorKind::UnknownFunction {
                    name: name.to_owned(),
                    suggestion: closest(name, FUNCTIONS.iter().copied()),
                },
                e,
            );
        }
    })
}
