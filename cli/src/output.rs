//! Rendering rows as an aligned table, a JSON array or CSV, and the small
//! formatting helpers the tables use.

use std::borrow::Cow;
use std::io::{self, Write};

use serde::Serialize;

/// Which side of its column a cell sticks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    pub(crate) header: &'static str,
    pub(crate) align: Align,
}

impl Column {
    pub(crate) const fn left(header: &'static str) -> Column {
        Column {
            header,
            align: Align::Left,
        }
    }

    pub(crate) const fn right(header: &'static str) -> Column {
        Column {
            header,
            align: Align::Right,
        }
    }
}

/// Space between two table columns.
const GAP: &str = "  ";

/// Writes a header and rows as aligned columns. Cells are escaped with
/// [`escape_for_terminal`]; the last column is not padded, so long command
/// lines do not leave trailing blanks.
pub(crate) fn write_table(
    out: &mut dyn Write,
    columns: &[Column],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let headers: Vec<&str> = columns.iter().map(|c| c.header).collect();
    let aligns: Vec<Align> = columns.iter().map(|c| c.align).collect();
    write_table_with(out, &headers, &aligns, rows)
}

/// [`write_table`] with headers known only at run time (`query`).
pub(crate) fn write_table_with(
    out: &mut dyn Write,
    headers: &[&str],
    aligns: &[Align],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let rows: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|row| row.iter().map(|c| escape_for_terminal(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    write_table_line(out, aligns, &widths, headers)?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(AsRef::as_ref).collect();
        write_table_line(out, aligns, &widths, &cells)?;
    }
    Ok(())
}

fn write_table_line(
    out: &mut dyn Write,
    aligns: &[Align],
    widths: &[usize],
    cells: &[&str],
) -> io::Result<()> {
    let mut line = String::new();
    let last = aligns.len().saturating_sub(1);
    for (i, ((align, width), cell)) in aligns.iter().zip(widths).zip(cells).enumerate() {
        if i > 0 {
            line.push_str(GAP);
        }
        let pad = width.saturating_sub(cell.chars().count());
        match align {
            Align::Right => {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
            Align::Left if i == last => line.push_str(cell),
            Align::Left => {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// Writes rows as one JSON array, one object per line, so the output is
/// both valid JSON and easy to read or grep. No rows give `[]`.
pub(crate) fn write_json<T: Serialize>(out: &mut dyn Write, rows: &[T]) -> io::Result<()> {
    if rows.is_empty() {
        return out.write_all(b"[]\n");
    }
    out.write_all(b"[\n")?;
    for (i, row) in rows.iter().enumerate() {
        serde_json::to_writer(&mut *out, row)?;
        out.write_all(if i + 1 < rows.len() { b",\n" } else { b"\n" })?;
    }
    out.write_all(b"]\n")
}

/// Writes a header row and data rows as CSV (RFC 4180 quoting, `\n` line
/// ends).
pub(crate) fn write_csv<I>(out: &mut dyn Write, header: &[&str], rows: I) -> io::Result<()>
where
    I: IntoIterator<Item = Vec<String>>,
{
    write_csv_record(out, header.iter().copied())?;
    for row in rows {
        write_csv_record(out, row.iter().map(String::as_str))?;
    }
    Ok(())
}

fn write_csv_record<'a>(
    out: &mut dyn Write,
    fields: impl Iterator<Item = &'a str>,
) -> io::Result<()> {
    let mut line = String::new();
    for (i, field) in fields.enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&csv_field(field));
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// Quotes a CSV field when it holds a comma, a double quote or a line
/// break, doubling the quotes inside.
pub(crate) fn csv_field(field: &str) -> Cow<'_, str> {
    if field.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

/// A CSV cell for an optional value: empty when absent.
pub(crate) fn csv_opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// Characters that could make a terminal show something other than the
/// data: control characters (escape sequences, line breaks) and the Unicode
/// marks that reorder text. A process chooses its own command line, so a
/// table must not pass these through.
fn is_unsafe_for_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Escapes [unsafe](is_unsafe_for_terminal) characters as `\n`, `\t`,
/// `\u{1b}` and the like; other text is returned as is.
pub(crate) fn escape_for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_for_terminal) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_for_terminal(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// A byte count for people, in powers of 1024: `512B`, `4.2K`, `156M`,
/// `1.3G`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    // Precision loss above 2^53 bytes does not show at one decimal.
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // `{:.1}` of 9.96 is "10.0": switch to no decimals from there on.
    if value < 9.95 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// A duration in microseconds for people: `850us`, `12.3ms`, `1.20s`.
pub(crate) fn human_micros(micros: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let value = micros as f64;
    if micros < 1_000 {
        format!("{micros}us")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", value / 1_000.0)
    } else {
        format!("{:.2}s", value / 1_000_000.0)
    }
}

/// A command line as one field: the arguments joined by single spaces.
pub(crate) fn join_cmdline(cmdline: &[String]) -> String {
    cmdline.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_table(columns: &[Column], rows: &[Vec<String>]) -> String {
        let mut out = Vec::new();
        write_table(&mut out, columns, rows).expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("table is UTF-8")
    }

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn table_aligns_columns_and_leaves_last_unpadded() {
        let columns = [
            Column::right("PID"),
            Column::left("USER"),
            Column::left("CMD"),
        ];
        let text = render_table(
            &columns,
            &[
                row(&["1", "root", "/sbin/init"]),
                row(&["12345", "al", "sh"]),
            ],
        );
        assert_eq!(
            text,
            "  PID  USER  CMD\n    1  root  /sbin/init\n12345  al    sh\n"
        );
    }

    #[test]
    fn table_escapes_control_characters() {
        let text = render_table(&[Column::left("CMD")], &[row(&["evil\x1b[2J\nnext"])]);
        assert_eq!(text, "CMD\nevil\\u{1b}[2J\\nnext\n");
        assert_eq!(escape_for_terminal("a\u{202e}b"), "a\\u{202e}b");
        assert!(matches!(
            escape_for_terminal("plain text é"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn table_widths_count_characters_not_bytes() {
        let text = render_table(
            &[Column::left("NAME"), Column::left("X")],
            &[row(&["ééééé", "1"]), row(&["a", "2"])],
        );
        assert_eq!(text, "NAME   X\nééééé  1\na      2\n");
    }

    #[test]
    fn json_is_one_array_with_one_object_per_line() {
        #[derive(Serialize)]
        struct R {
            a: u32,
            s: &'static str,
        }
        let mut out = Vec::new();
        write_json(&mut out, &[R { a: 1, s: "x\"y" }, R { a: 2, s: "" }]).expect("vec write");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "[\n{\"a\":1,\"s\":\"x\\\"y\"},\n{\"a\":2,\"s\":\"\"}\n]\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed.as_array().map(Vec::len), Some(2));

        let mut empty = Vec::new();
        write_json::<R>(&mut empty, &[]).expect("vec write");
        assert_eq!(empty, b"[]\n");
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(""), "");

        let mut out = Vec::new();
        write_csv(
            &mut out,
            &["pid", "cmdline"],
            [row(&["7", "sh -c 'a, \"b\"'"])],
        )
        .expect("vec write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "pid,cmdline\n7,\"sh -c 'a, \"\"b\"\"'\"\n"
        );
    }

    #[test]
    fn csv_opt_is_empty_when_absent() {
        assert_eq!(csv_opt(Some(3)), "3");
        assert_eq!(csv_opt::<u32>(None), "");
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1024), "1.0K");
        assert_eq!(human_bytes(4_404_019), "4.2M");
        assert_eq!(human_bytes(10_444_800), "10M");
        assert_eq!(human_bytes(163_577_856), "156M");
        assert_eq!(human_bytes(1_395_864_371), "1.3G");
        assert_eq!(human_bytes(u64::MAX), "16E");
    }

    #[test]
    fn human_micros_picks_a_unit() {
        assert_eq!(human_micros(850), "850us");
        assert_eq!(human_micros(12_340), "12.3ms");
        assert_eq!(human_micros(1_200_000), "1.20s");
    }

    #[test]
    fn cmdline_joins_with_spaces() {
        assert_eq!(join_cmdline(&[]), "");
        assert_eq!(
            join_cmdline(&["ls".into(), "-l".into(), "a b".into()]),
            "ls -l a b"
        );
    }
}
