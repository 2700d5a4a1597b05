//! The compiled form of an expression and its evaluation.
//!
//! Compilation resolves columns, checks types and compiles patterns once;
//! evaluation walks this small tree without allocating, except where a
//! function must build a new string (`lower`, `upper`).

use std::borrow::Cow;
use std::cmp::Ordering;

use regex::Regex;

use crate::rules::record::{Column, Record, Val, basename, dirname};
use crate::rules::sql::like::LikeMatcher;

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(Box<str>),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::NotEq => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::LtEq => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::GtEq => ord != Ordering::Less,
        }
    }
}

/// A boolean-valued expression, evaluated in SQL three-valued logic
/// (`None` is `NULL`).
#[derive(Debug, Clone)]
pub(crate) enum Pred {
    Const(Option<bool>),
    /// A boolean-typed scalar, e.g. the `exe_deleted` column.
    Scalar(Scalar),
    And(Box<[Pred]>),
    Or(Box<[Pred]>),
    Not(Box<Pred>),
    IsNull {
        e: Scalar,
        negated: bool,
    },
    /// `e IS [NOT] TRUE|FALSE|UNKNOWN`; `value` `None` is UNKNOWN.
    Is {
        e: Box<Pred>,
        value: Option<bool>,
        negated: bool,
    },
    /// `l IS [NOT] DISTINCT FROM r`.
    Distinct {
        l: Scalar,
        r: Scalar,
        negated: bool,
    },
    Cmp {
        op: CmpOp,
        l: Scalar,
        r: Scalar,
    },
    Like {
        e: Scalar,
        matcher: LikeMatcher,
        negated: bool,
    },
    Regex {
        e: Scalar,
        re: Regex,
    },
    In {
        e: Scalar,
        list: Box<[Scalar]>,
        negated: bool,
    },
    /// `IN` over text literals only (the common case), compared by `==`.
    InText {
        e: Scalar,
        set: Box<[Box<str>]>,
        has_null: bool,
        negated: bool,
        /// `lower(e) IN (...)` with all-lowercase literals: `e` is the
        /// argument of `lower`, compared without building a lowercase copy.
        fold: bool,
    },
    /// Several `%literal%` LIKEs on one value, OR-ed: one automaton pass.
    AnyContains {
        e: Scalar,
        finder: aho_corasick::AhoCorasick,
    },
    Between {
        e: Scalar,
        low: Scalar,
        high: Scalar,
        negated: bool,
    },
    /// `contains(list, item)`.
    Contains {
        list: Scalar,
        item: Scalar,
    },
}

/// A value-producing expression.
#[derive(Debug, Clone)]
pub(crate) enum Scalar {
    Col(Column),
    Lit(Lit),
    Pred(Box<Pred>),
    Lower(Box<Scalar>),
    Upper(Box<Scalar>),
    Length(Box<Scalar>),
    Basename(Box<Scalar>),
    Dirname(Box<Scalar>),
    /// 1-based character substring; `start` may be < 1 as in PostgreSQL.
    Substr {
        e: Box<Scalar>,
        start: i64,
        len: Option<i64>,
    },
    Coalesce(Box<[Scalar]>),
    /// Element `n` (0-based) of `cmdline`.
    Argv(usize),
}

impl Scalar {
    /// Calls `f` with every column the value reads.
    pub(crate) fn columns(&self, f: &mut dyn FnMut(Column)) {
        match self {
            Scalar::Col(c) => f(*c),
            Scalar::Argv(_) => f(Column::Cmdline),
            Scalar::Lit(_) => {}
            Scalar::Pred(p) => p.columns(f),
            Scalar::Lower(e)
            | Scalar::Upper(e)
            | Scalar::Length(e)
            | Scalar::Basename(e)
            | Scalar::Dirname(e)
            | Scalar::Substr { e, .. } => e.columns(f),
            Scalar::Coalesce(es) => es.iter().for_each(|e| e.columns(f)),
        }
    }

    /// A rough relative cost of producing this value (see [`Pred::cost`]).
    fn cost(&self) -> u32 {
        match self {
            Scalar::Col(_) | Scalar::Lit(_) | Scalar::Argv(_) => 1,
            Scalar::Pred(p) => p.cost(),
            Scalar::Lower(e) | Scalar::Upper(e) => 4 + e.cost(),
            Scalar::Length(e) | Scalar::Basename(e) | Scalar::Dirname(e) => 1 + e.cost(),
            Scalar::Substr { e, .. } => 2 + e.cost(),
            Scalar::Coalesce(es) => es.iter().map(Scalar::cost).sum(),
        }
    }
}

fn not3(v: Option<bool>) -> Option<bool> {
    v.map(|b| !b)
}

impl Pred {
    /// Puts the operands of every AND and OR cheapest first, so evaluation
    /// short-circuits before the costly ones (regexes, automata) where it
    /// can. Both are commutative in three-valued logic and nothing here has
    /// side effects, so the result is unchanged; only the work is.
    pub(crate) fn order_by_cost(&mut self) {
        match self {
            Pred::And(ps) | Pred::Or(ps) => {
                for p in ps.iter_mut() {
                    p.order_by_cost();
                }
                ps.sort_by_key(Pred::cost);
            }
            Pred::Not(p) => p.order_by_cost(),
            Pred::Is { e, .. } => e.order_by_cost(),
            _ => {}
        }
    }

    /// Calls `f` with every column the predicate reads.
    pub(crate) fn columns(&self, f: &mut dyn FnMut(Column)) {
        match self {
            Pred::Const(_) => {}
            Pred::Scalar(e)
            | Pred::IsNull { e, .. }
            | Pred::Like { e, .. }
            | Pred::Regex { e, .. }
            | Pred::InText { e, .. }
            | Pred::AnyContains { e, .. } => e.columns(f),
            Pred::Cmp { l, r, .. } | Pred::Distinct { l, r, .. } => {
                l.columns(f);
                r.columns(f);
            }
            Pred::In { e, list, .. } => {
                e.columns(f);
                list.iter().for_each(|s| s.columns(f));
            }
            Pred::Between { e, low, high, .. } => {
                e.columns(f);
                low.columns(f);
                high.columns(f);
            }
            Pred::Contains { list, item } => {
                list.columns(f);
                item.columns(f);
            }
            Pred::Not(p) | Pred::Is { e: p, .. } => p.columns(f),
            Pred::And(ps) | Pred::Or(ps) => ps.iter().for_each(|p| p.columns(f)),
        }
    }

    /// A rough relative cost of evaluating this predicate on one record.
    fn cost(&self) -> u32 {
        match self {
            Pred::Const(_) => 0,
            Pred::Scalar(s) | Pred::IsNull { e: s, .. } => s.cost(),
            Pred::Cmp { l, r, .. } | Pred::Distinct { l, r, .. } => 1 + l.cost() + r.cost(),
            Pred::Like { e, .. } => 3 + e.cost(),
            Pred::InText { e, set, .. } => {
                2 + e.cost() + u32::try_from(set.len() / 4).unwrap_or(u32::MAX)
            }
            Pred::In { e, list, .. } => 2 + e.cost() + list.iter().map(Scalar::cost).sum::<u32>(),
            Pred::Between { e, low, high, .. } => 2 + e.cost() + low.cost() + high.cost(),
            Pred::Contains { list, item } => 3 + list.cost() + item.cost(),
            Pred::AnyContains { e, .. } => 8 + e.cost(),
            Pred::Regex { e, .. } => 20 + e.cost(),
            Pred::Not(p) | Pred::Is { e: p, .. } => p.cost(),
            Pred::And(ps) | Pred::Or(ps) => ps.iter().map(Pred::cost).sum(),
        }
    }

    /// Evaluates to TRUE, FALSE or NULL.
    pub(crate) fn eval(&self, r: &Record) -> Option<bool> {
        match self {
            Pred::Const(v) => *v,
            Pred::Scalar(s) => match s.eval(r) {
                Val::Bool(b) => Some(b),
                _ => None,
            },
            Pred::And(ps) => {
                let mut unknown = false;
                for p in ps.iter() {
                    match p.eval(r) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                if unknown { None } else { Some(true) }
            }
            Pred::Or(ps) => {
                let mut unknown = false;
                for p in ps.iter() {
                    match p.eval(r) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                if unknown { None } else { Some(false) }
            }
            Pred::Not(p) => not3(p.eval(r)),
            Pred::IsNull { e, negated } => Some(matches!(e.eval(r), Val::Null) != *negated),
            Pred::Is { e, value, negated } => Some((e.eval(r) == *value) != *negated),
            Pred::Distinct { l, r: rhs, negated } => {
                let (a, b) = (l.eval(r), rhs.eval(r));
                let same = match (&a, &b) {
                    (Val::Null, Val::Null) => true,
                    (Val::Null, _) | (_, Val::Null) => false,
                    _ => compare(&a, &b) == Some(Ordering::Equal),
                };
                Some(same == *negated)
            }
            Pred::Cmp { op, l, r: rhs } => {
                let (a, b) = (l.eval(r), rhs.eval(r));
                match (op, &a, &b) {
                    // Equality of text checks lengths before bytes.
                    (CmpOp::Eq, Val::Text(x), Val::Text(y)) => Some(x == y),
                    (CmpOp::NotEq, Val::Text(x), Val::Text(y)) => Some(x != y),
                    _ => compare(&a, &b).map(|o| op.holds(o)),
                }
            }
            Pred::Like {
                e,
                matcher,
                negated,
            } => match e.eval(r) {
                Val::Text(t) => Some(matcher.is_match(&t) != *negated),
                _ => None,
            },
            Pred::Regex { e, re } => match e.eval(r) {
                Val::Text(t) => Some(re.is_match(&t)),
                _ => None,
            },
            Pred::In { e, list, negated } => {
                let v = e.eval(r);
                if matches!(v, Val::Null) {
                    return None;
                }
                let mut unknown = false;
                for item in list.iter() {
                    match compare(&v, &item.eval(r)) {
                        Some(Ordering::Equal) => return Some(!*negated),
                        None => unknown = true,
                        Some(_) => {}
                    }
                }
                if unknown { None } else { Some(*negated) }
            }
            Pred::InText {
                e,
                set,
                has_null,
                negated,
                fold,
            } => match e.eval(r) {
                Val::Text(t) => {
                    let found = if !*fold {
                        set.iter().any(|s| s.len() == t.len() && **s == *t)
                    } else if t.is_ascii() {
                        set.iter().any(|s| {
                            s.len() == t.len() && s.as_bytes().eq_ignore_ascii_case(t.as_bytes())
                        })
                    } else {
                        let lower = t.to_lowercase();
                        set.iter().any(|s| **s == *lower)
                    };
                    if found {
                        Some(!*negated)
                    } else if *has_null {
                        None
                    } else {
                        Some(*negated)
                    }
                }
                _ => None,
            },
            Pred::AnyContains { e, finder } => match e.eval(r) {
                Val::Text(t) => Some(finder.is_match(t.as_ref())),
                _ => None,
            },
            Pred::Between {
                e,
                low,
                high,
                negated,
            } => {
                let v = e.eval(r);
                let ge = compare(&v, &low.eval(r)).map(|o| o != Ordering::Less);
                let le = compare(&v, &high.eval(r)).map(|o| o != Ordering::Greater);
                let inside = match (ge, le) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
                if *negated { not3(inside) } else { inside }
            }
            Pred::Contains { list, item } => {
                let item = item.eval(r);
                match (list.eval(r), &item) {
                    (Val::Null, _) | (_, Val::Null) => None,
                    (Val::TextList(l), Val::Text(t)) => Some(l.iter().any(|s| s == t)),
                    (Val::IntList(l), Val::Int(n)) => Some(l.iter().any(|p| i64::from(*p) == *n)),
                    _ => None,
                }
            }
        }
    }
}

impl Scalar {
    /// Evaluates to a value borrowing from the record or the compiled tree.
    /// Columns, the common leaf, are read inline.
    #[inline]
    pub(crate) fn eval<'a>(&'a self, r: &'a Record) -> Val<'a> {
        match self {
            Scalar::Col(c) => r.get(*c),
            other => other.eval_node(r),
        }
    }

    fn eval_node<'a>(&'a self, r: &'a Record) -> Val<'a> {
        match self {
            Scalar::Col(c) => r.get(*c),
            Scalar::Lit(l) => match l {
                Lit::Null => Val::Null,
                Lit::Bool(b) => Val::Bool(*b),
                Lit::Int(n) => Val::Int(*n),
                Lit::Float(f) => Val::Float(*f),
                Lit::Text(t) => Val::Text(Cow::Borrowed(t)),
            },
            Scalar::Pred(p) => p.eval(r).map_or(Val::Null, Val::Bool),
            Scalar::Lower(e) => map_text(e.eval(r), |t| {
                if t.chars().any(char::is_uppercase) {
                    Cow::Owned(t.to_lowercase())
                } else {
                    t
                }
            }),
            Scalar::Upper(e) => map_text(e.eval(r), |t| {
                if t.chars().any(char::is_lowercase) {
                    Cow::Owned(t.to_uppercase())
                } else {
                    t
                }
            }),
            Scalar::Length(e) => match e.eval(r) {
                Val::Text(t) => Val::Int(count(t.chars().count())),
                Val::TextList(l) => Val::Int(count(l.len())),
                Val::IntList(l) => Val::Int(count(l.len())),
                _ => Val::Null,
            },
            Scalar::Basename(e) => map_text(e.eval(r), |t| match t {
                Cow::Borrowed(s) => Cow::Borrowed(basename(s)),
                Cow::Owned(s) => Cow::Owned(basename(&s).to_owned()),
            }),
            Scalar::Dirname(e) => map_text(e.eval(r), |t| match t {
                Cow::Borrowed(s) => Cow::Borrowed(dirname(s)),
                Cow::Owned(s) => Cow::Owned(dirname(&s).to_owned()),
            }),
            Scalar::Substr { e, start, len } => map_text(e.eval(r), |t| match t {
                Cow::Borrowed(s) => Cow::Borrowed(substr(s, *start, *len)),
                Cow::Owned(s) => Cow::Owned(substr(&s, *start, *len).to_owned()),
            }),
            Scalar::Coalesce(items) => items
                .iter()
                .map(|i| i.eval(r))
                .find(|v| !matches!(v, Val::Null))
                .unwrap_or(Val::Null),
            Scalar::Argv(n) => r
                .cmdline
                .get(*n)
                .map_or(Val::Null, |s| Val::Text(Cow::Borrowed(s))),
        }
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn map_text<'a>(v: Val<'a>, f: impl FnOnce(Cow<'a, str>) -> Cow<'a, str>) -> Val<'a> {
    match v {
        Val::Text(t) => Val::Text(f(t)),
        _ => Val::Null,
    }
}

/// PostgreSQL `substr(s, start, len)`: characters are numbered from 1, and a
/// start before 1 shortens the result.
pub(crate) fn substr(s: &str, start: i64, len: Option<i64>) -> &str {
    let end = len.map(|l| start.saturating_add(l.max(0)));
    let from = usize::try_from(start.saturating_sub(1).max(0)).unwrap_or(usize::MAX);
    let to = end.map(|e| usize::try_from(e.saturating_sub(1).max(0)).unwrap_or(usize::MAX));
    let byte_at = |n: usize| s.char_indices().nth(n).map_or(s.len(), |(i, _)| i);
    let b_from = byte_at(from);
    match to {
        Some(to) if to <= from => "",
        Some(to) => &s[b_from..byte_at(to)],
        None => &s[b_from..],
    }
}

/// SQL comparison of two values of compatible types; `None` when either is
/// NULL (or the types cannot be compared, which compilation rules out).
pub(crate) fn compare(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        #[expect(
            clippy::cast_precision_loss,
            reason = "SQL compares mixed numbers as floats"
        )]
        (Val::Int(x), Val::Float(y)) => (*x as f64).partial_cmp(y),
        #[expect(
            clippy::cast_precision_loss,
            reason = "SQL compares mixed numbers as floats"
        )]
        (Val::Float(x), Val::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(y),
        (Val::Text(x), Val::Text(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A total order for ORDER BY, NULLs placed by the caller.
pub(crate) fn sort_order(a: &Val<'_>, b: &Val<'_>) -> Ordering {
    fn rank(v: &Val<'_>) -> u8 {
        match v {
            Val::Null => 0,
            Val::Bool(_) => 1,
            Val::Int(_) | Val::Float(_) => 2,
            Val::Text(_) => 3,
            Val::TextList(_) => 4,
            Val::IntList(_) => 5,
        }
    }
    match (a, b) {
        (Val::Float(x), Val::Float(y)) => x.total_cmp(y),
        (Val::TextList(x), Val::TextList(y)) => x.cmp(y),
        (Val::IntList(x), Val::IntList(y)) => x.cmp(y),
        _ => compare(a, b).unwrap_or_else(|| rank(a).cmp(&rank(b))),
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::sql::expr::substr;

    #[test]
    fn substr_like_postgres() {
        assert_eq!(substr("abcdef", 1, Some(3)), "abc");
        assert_eq!(substr("abcdef", 2, None), "bcdef");
        assert_eq!(substr("abcdef", 0, Some(3)), "ab");
        assert_eq!(substr("abcdef", -5, Some(3)), "");
        assert_eq!(substr("abcdef", 5, Some(10)), "ef");
        assert_eq!(substr("abcdef", 10, Some(1)), "");
        assert_eq!(substr("éab", 1, Some(1)), "é");
        assert_eq!(substr("ab", 1, Some(0)), "");
    }
}
