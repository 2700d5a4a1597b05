//! LIKE / ILIKE patterns, compiled once into an allocation-free matcher.
//!
//! `%` matches any run of characters, `_` exactly one character, and the
//! escape character (backslash unless an `ESCAPE` clause names another) makes
//! the next character literal. Case-insensitive matching folds ASCII; a
//! pattern with non-ASCII letters under ILIKE falls back to a regex with
//! Unicode case folding.

use aho_corasick::AhoCorasick;
use regex::{Regex, RegexBuilder};

/// One compiled LIKE pattern.
#[derive(Debug, Clone)]
pub(crate) struct LikeMatcher {
    imp: Imp,
}

#[derive(Debug, Clone)]
enum Imp {
    /// Case-sensitive, no `_`: fast paths over `str` methods.
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    /// Case-insensitive (ASCII), no `_`.
    ExactCi(Box<[u8]>),
    PrefixCi(Box<[u8]>),
    SuffixCi(Box<[u8]>),
    ContainsCi {
        needle: Box<str>,
        finder: AhoCorasick,
    },
    /// The general case: segments separated by `%`.
    General {
        segments: Vec<Segment>,
        /// No `%` at all: the single segment must cover the whole text.
        whole: bool,
        /// Leading `%`.
        open_start: bool,
        /// Trailing `%`.
        open_end: bool,
        ci: bool,
    },
    Regex(Regex),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Byte(u8),
    AnyChar,
}

type Segment = Vec<Tok>;

/// What a pattern parses into before choosing a strategy.
#[derive(Debug, PartialEq)]
enum Piece {
    Lit(char),
    One,
    Many,
}

fn parse(pattern: &str, escape: Option<char>) -> Result<Vec<Piece>, String> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(next) => out.push(Piece::Lit(next)),
                None => {
                    return Err(format!(
                        "pattern `{pattern}` ends with the escape character `{c}`: escape it as `{c}{c}`"
                    ));
                }
            }
        } else if c == '%' {
            if out.last() != Some(&Piece::Many) {
                out.push(Piece::Many);
            }
        } else if c == '_' {
            out.push(Piece::One);
        } else {
            out.push(Piece::Lit(c));
        }
    }
    Ok(out)
}

impl LikeMatcher {
    /// Compiles `pattern`; `ci` for ILIKE; `escape` is the escape character
    /// (`None` for no escaping).
    pub(crate) fn new(pattern: &str, ci: bool, escape: Option<char>) -> Result<Self, String> {
        let pieces = parse(pattern, escape)?;
        if ci
            && pieces
                .iter()
                .any(|p| matches!(p, Piece::Lit(c) if !c.is_ascii()))
        {
            return Ok(LikeMatcher {
                imp: Imp::Regex(to_regex(&pieces)?),
            });
        }
        let has_one = pieces.contains(&Piece::One);
        let many = pieces.iter().filter(|p| **p == Piece::Many).count();
        let open_start = pieces.first() == Some(&Piece::Many);
        let open_end = pieces.len() > 1 && pieces.last() == Some(&Piece::Many);
        if !has_one {
            let lit: String = pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Lit(c) => Some(*c),
                    _ => None,
                })
                .collect::<String>();
            let fast = match (many, open_start, open_end, ci) {
                (0, _, _, false) => Some(Imp::Exact(lit.into())),
                (1, false, true, false) => Some(Imp::Prefix(lit.into())),
                (1, true, false, false) => Some(Imp::Suffix(lit.into())),
                (2, true, true, false) => Some(Imp::Contains(lit.into())),
                // A lone `%`: contains the empty string, i.e. anything.
                (1, true, _, false) => Some(Imp::Contains(lit.into())),
                (0, _, _, true) => Some(Imp::ExactCi(lit.into_bytes().into())),
                (1, false, true, true) => Some(Imp::PrefixCi(lit.into_bytes().into())),
                (1, true, false, true) => Some(Imp::SuffixCi(lit.into_bytes().into())),
                (2, true, true, true) | (1, true, _, true) => Some(Imp::ContainsCi {
                    finder: contains_finder(std::slice::from_ref(&lit), true)?,
                    needle: lit.into(),
                }),
                _ => None,
            };
            if let Some(imp) = fast {
                return Ok(LikeMatcher { imp });
            }
        }
        let mut segments = vec![Vec::new()];
        for p in &pieces {
            match p {
                Piece::Many => segments.push(Vec::new()),
                Piece::One => push_tok(&mut segments, Tok::AnyChar),
                Piece::Lit(c) => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        push_tok(&mut segments, Tok::Byte(b));
                    }
                }
            }
        }
        if open_start {
            segments.remove(0);
        }
        if open_end {
            segments.pop();
        }
        Ok(LikeMatcher {
            imp: Imp::General {
                segments,
                whole: many == 0,
                open_start,
                open_end,
                ci,
            },
        })
    }

    /// For `%literal%` patterns: the literal and whether matching ignores
    /// case. Lets an OR of several such patterns share one automaton.
    pub(crate) fn contains_literal(&self) -> Option<(&str, bool)> {
        match &self.imp {
            Imp::Contains(s) => Some((s, false)),
            Imp::ContainsCi { needle, .. } => Some((needle, true)),
            _ => None,
        }
    }

    /// Whether `text` matches the whole pattern.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        match &self.imp {
            Imp::Exact(s) => text == &**s,
            Imp::Prefix(s) => text.starts_with(&**s),
            Imp::Suffix(s) => text.ends_with(&**s),
            Imp::Contains(s) => text.contains(&**s),
            Imp::ExactCi(s) => bytes.eq_ignore_ascii_case(s),
            Imp::PrefixCi(s) => bytes
                .get(..s.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(s)),
            Imp::SuffixCi(s) => bytes
                .len()
                .checked_sub(s.len())
                .and_then(|start| bytes.get(start..))
                .is_some_and(|h| h.eq_ignore_ascii_case(s)),
            Imp::ContainsCi { finder, .. } => finder.is_match(text),
            Imp::Regex(re) => re.is_match(text),
            Imp::General {
                segments,
                whole,
                open_start,
                open_end,
                ci,
            } => general_match(
                text.as_bytes(),
                segments,
                *whole,
                *open_start,
                *open_end,
                *ci,
            ),
        }
    }
}

/// An automaton finding any of `needles`, ignoring ASCII case if `ci`.
pub(crate) fn contains_finder(needles: &[String], ci: bool) -> Result<AhoCorasick, String> {
    AhoCorasick::builder()
        .ascii_case_insensitive(ci)
        .build(needles)
        .map_err(|e| e.to_string())
}

fn push_tok(segments: &mut [Segment], tok: Tok) {
    if let Some(last) = segments.last_mut() {
        last.push(tok);
    }
}

fn to_regex(pieces: &[Piece]) -> Result<Regex, String> {
    let mut re = String::from("(?is)^");
    for p in pieces {
        match p {
            Piece::Many => re.push_str(".*"),
            Piece::One => re.push('.'),
            Piece::Lit(c) => re.push_str(&regex::escape(c.encode_utf8(&mut [0u8; 4]))),
        }
    }
    re.push('$');
    RegexBuilder::new(&re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string())
}

/// Length in bytes of the UTF-8 sequence starting with `b`.
fn char_len(b: u8) -> usize {
    match b {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Matches `seg` at `pos`; returns the end position.
fn match_at(hay: &[u8], pos: usize, seg: &[Tok], ci: bool) -> Option<usize> {
    let mut i = pos;
    for tok in seg {
        match tok {
            Tok::Byte(b) => {
                let h = *hay.get(i)?;
                if h != *b && !(ci && h.eq_ignore_ascii_case(b)) {
                    return None;
                }
                i += 1;
            }
            Tok::AnyChar => {
                let h = *hay.get(i)?;
                i += char_len(h);
                if i > hay.len() {
                    return None;
                }
            }
        }
    }
    Some(i)
}

fn is_boundary(hay: &[u8], i: usize) -> bool {
    i >= hay.len() || (hay[i] & 0xC0) != 0x80
}

/// Leftmost match of `seg` at or after `from`; returns (start, end).
fn find(hay: &[u8], from: usize, seg: &[Tok], ci: bool) -> Option<(usize, usize)> {
    (from..=hay.len())
        .filter(|&i| is_boundary(hay, i))
        .find_map(|i| match_at(hay, i, seg, ci).map(|end| (i, end)))
}

fn general_match(
    hay: &[u8],
    segments: &[Segment],
    whole: bool,
    open_start: bool,
    open_end: bool,
    ci: bool,
) -> bool {
    if whole {
        let seg = segments.first().map_or(&[][..], Vec::as_slice);
        return match_at(hay, 0, seg, ci) == Some(hay.len());
    }
    let mut segs = segments;
    let mut pos = 0;
    if !open_start {
        let Some((first, rest)) = segs.split_first() else {
            return true;
        };
        match match_at(hay, 0, first, ci) {
            Some(end) => pos = end,
            None => return false,
        }
        segs = rest;
    }
    let last = if open_end {
        None
    } else {
        match segs.split_last() {
            Some((last, rest)) => {
                segs = rest;
                Some(last)
            }
            None => None,
        }
    };
    for seg in segs {
        match find(hay, pos, seg, ci) {
            Some((_, end)) => pos = end,
            None => return false,
        }
    }
    match last {
        None => true,
        // Segments are fixed-length in characters, so any start at or after
        // `pos` that ends exactly at the end of the text will do.
        Some(last) => (pos..=hay.len())
            .filter(|&i| is_boundary(hay, i))
            .any(|i| match_at(hay, i, last, ci) == Some(hay.len())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use proptest::prelude::*;

    use crate::rules::sql::like::LikeMatcher;

    fn m(p: &str, ci: bool, s: &str) -> bool {
        LikeMatcher::new(p, ci, Some('\\')).unwrap().is_match(s)
    }

    #[test]
    fn wildcards() {
        let cases = [
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("a%", "abc", true),
            ("a%", "ba", false),
            ("%c", "abc", true),
            ("%b%", "abc", true),
            ("%x%", "abc", false),
            ("%", "", true),
            ("%%", "x", true),
            ("", "", true),
            ("", "a", false),
            ("a_c", "abc", true),
            ("a_c", "ac", false),
            ("a_c", "aéc", true),
            ("_", "é", true),
            ("__", "é", false),
            ("a%b%c", "axxbyyc", true),
            ("a%b%c", "axxcyyb", false),
            ("a%bc", "abcbc", true),
            ("%aa", "aaa", true),
            ("a%a", "a", false),
            ("%a_b%", "xxaxbxx", true),
            ("%a_b", "aab", true),
            ("kworker%", "kworker/0:1", true),
            ("/tmp/%", "/tmp/x", true),
            ("/tmp/%", "/tmpx", false),
            ("%/.%/%", "/home/u/.cache/x", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(m(p, false, s), want, "{s:?} LIKE {p:?}");
        }
    }

    #[test]
    fn escaping() {
        assert!(m(r"100\%", false, "100%"));
        assert!(!m(r"100\%", false, "1000"));
        assert!(m(r"a\_b", false, "a_b"));
        assert!(!m(r"a\_b", false, "axb"));
        assert!(m(r"%\\%", false, r"x\y"));
        assert!(LikeMatcher::new(r"abc\", false, Some('\\')).is_err());
        // A custom escape character, and none at all.
        assert!(
            LikeMatcher::new("a!%", false, Some('!'))
                .unwrap()
                .is_match("a%")
        );
        assert!(
            LikeMatcher::new(r"a\%", false, None)
                .unwrap()
                .is_match(r"a\xyz")
        );
    }

    #[test]
    fn case_insensitive() {
        assert!(m("%XMRIG%", true, "/tmp/xmrig"));
        assert!(m("abc", true, "ABC"));
        assert!(!m("abc", false, "ABC"));
        assert!(m("a_C", true, "AbC"));
        assert!(m("%stratum+TCP://%", true, "x stratum+tcp://pool"));
        // Non-ASCII patterns use Unicode folding.
        assert!(m("%ÉTÉ%", true, "un été"));
        assert!(!m("%été%", false, "un ÉTÉ"));
    }

    fn to_regex(p: &str) -> String {
        let mut re = String::from("(?s)^");
        for c in p.chars() {
            match c {
                '%' => re.push_str(".*"),
                '_' => re.push('.'),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        re
    }

    proptest! {
        #[test]
        fn agrees_with_regex(p in "[ab%_é]{0,8}", s in "[abé]{0,10}") {
            let want = regex::Regex::new(&to_regex(&p)).unwrap().is_match(&s);
            prop_assert_eq!(LikeMatcher::new(&p, false, None).unwrap().is_match(&s), want);
            let upper = s.to_ascii_uppercase();
            prop_assert_eq!(LikeMatcher::new(&p, true, None).unwrap().is_match(&upper), want);
        }
    }
}
