#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use proptest::prelude::*;

use crate::rules::record::Record;
use crate::rules::sql::{
    CompileError, CompileErrorKind, Position, Value, compile_query, compile_rule,
};

fn rec() -> Record {
    Record {
        pid: 42,
        ppid: 1,
        name: "bash".into(),
        exe: Some("/usr/bin/bash".into()),
        cmdline: vec!["bash".into(), "-c".into(), "echo hi".into()],
        uid: Some(1000),
        user: None,
        status: "running".into(),
        cpu_percent: 1.5,
        listening_ports: vec![22, 8080],
        hash_status: "ok".into(),
        ..Record::default()
    }
}

/// Whether `cond` (a WHERE condition) matches `rec()`.
fn w(cond: &str) -> bool {
    wr(cond, &rec())
}

fn wr(cond: &str, r: &Record) -> bool {
    compile_rule(&format!("SELECT * FROM processes WHERE {cond}"))
        .unwrap_or_else(|e| panic!("{cond}: {e}"))
        .matches(r)
}

fn compile_err(sql: &str) -> CompileError {
    compile_rule(sql).unwrap_err()
}

fn at(line: u64, column: u64) -> Option<Position> {
    Some(Position { line, column })
}

#[test]
fn unknown_column_with_suggestion_and_position() {
    let e = compile_err("SELECT * FROM processes\nWHERE nmae = 'x'");
    assert_eq!(e.position, at(2, 7));
    assert_eq!(
        e.to_string(),
        "line 2, column 7: unknown column `nmae` (did you mean `name`?)"
    );
    let e = compile_err("SELECT * FROM processes WHERE zzzzzz = 1");
    assert_eq!(
        e.kind,
        CompileErrorKind::UnknownColumn {
            name: "zzzzzz".into(),
            suggestion: None
        }
    );
    // Unknown columns in the projection are errors too.
    let e = compile_err("SELECT nam FROM processes");
    assert_eq!(e.position, at(1, 8));
}

#[test]
fn unknown_function() {
    let e = compile_err("SELECT * FROM processes WHERE lowr(name) = 'x'");
    assert_eq!(e.position, at(1, 31));
    assert_eq!(
        e.kind.to_string(),
        "unknown function `lowr` (did you mean `lower`?)"
    );
    let e = compile_err("SELECT * FROM processes WHERE lower(name, exe) = 'x'");
    assert_eq!(
        e.kind.to_string(),
        "function `lower` takes 1 argument, got 2 arguments"
    );
}

#[test]
fn statement_shape_errors() {
    for (sql, kind) in [
        (
            "DELETE FROM processes",
            CompileErrorKind::NotSelectFromProcesses,
        ),
        ("SELECT 1", CompileErrorKind::NotSelectFromProcesses),
        (
            "SELECT * FROM processes UNION SELECT * FROM processes",
            CompileErrorKind::NotSelectFromProcesses,
        ),
        (
            "SELECT * FROM processes; SELECT * FROM processes",
            CompileErrorKind::StatementCount(2),
        ),
        ("", CompileErrorKind::StatementCount(0)),
        (
            "SELECT * FROM procs",
            CompileErrorKind::UnknownTable("procs".into()),
        ),
        (
            "SELECT * FROM processes p JOIN processes q ON p.pid = q.ppid",
            CompileErrorKind::Join,
        ),
        (
            "SELECT * FROM processes p",
            CompileErrorKind::Unsupported(
                "table aliases, hints or arguments on `processes`".into(),
            ),
        ),
        (
            "SELECT * FROM processes JOIN processes ON true",
            CompileErrorKind::Join,
        ),
        ("SELECT * FROM processes, processes", CompileErrorKind::Join),
        (
            "SELECT * FROM (SELECT * FROM processes)",
            CompileErrorKind::Subquery,
        ),
        (
            "SELECT * FROM processes WHERE pid IN (SELECT ppid FROM processes)",
            CompileErrorKind::Subquery,
        ),
        (
            "SELECT * FROM processes WHERE EXISTS (SELECT 1 FROM processes)",
            CompileErrorKind::Subquery,
        ),
        (
            "WITH x AS (SELECT * FROM processes) SELECT * FROM x",
            CompileErrorKind::Subquery,
        ),
        (
            "SELECT name FROM processes GROUP BY name",
            CompileErrorKind::ClauseNotAllowed {
                clause: "GROUP BY",
                context: "in a rule",
            },
        ),
        (
            "SELECT * FROM processes ORDER BY pid",
            CompileErrorKind::ClauseNotAllowed {
                clause: "ORDER BY",
                context: "in a rule",
            },
        ),
        (
            "SELECT * FROM processes LIMIT 1",
            CompileErrorKind::ClauseNotAllowed {
                clause: "LIMIT",
                context: "in a rule",
            },
        ),
        (
            "SELECT DISTINCT name FROM processes",
            CompileErrorKind::ClauseNotAllowed {
                clause: "DISTINCT",
                context: "in a rule",
            },
        ),
    ] {
        assert_eq!(compile_rule(sql).unwrap_err().kind, kind, "{sql}");
    }
    let e = compile_err("SELECT * FROM processes WHERE pid IN (SELECT ppid FROM processes)");
    assert_eq!(
        e.to_string(),
        "line 1, column 31: subqueries are not allowed"
    );
    let e = compile_err("SELECT name FROM processes GROUP BY name");
    assert_eq!(e.position, at(1, 37));
    let e = compile_err("  SELECT * FROM processes HAVING pid > 1");
    assert!(
        matches!(
            e.kind,
            CompileErrorKind::ClauseNotAllowed {
                clause: "HAVING",
                ..
            }
        ),
        "{e}"
    );
    let e = compile_err("SELECT * FROM processes WHERE");
    assert!(matches!(e.kind, CompileErrorKind::Syntax(_)), "{e}");
    assert_eq!(e.position, at(1, 30));
    let e = compile_err("SELECT * FROM processes\n  WHERE name = 'unterminated");
    assert!(matches!(e.kind, CompileErrorKind::Syntax(_)), "{e}");
    assert_eq!(e.position.map(|p| p.line), Some(2));
    let e = compile_err("DROP TABLE processes");
    assert_eq!(
        e.to_string(),
        "line 1, column 1: only SELECT ... FROM processes is allowed"
    );
}

#[test]
fn type_errors_name_both_sides() {
    let e = compile_err("SELECT * FROM processes WHERE name = 5");
    assert_eq!(
        e.to_string(),
        "line 1, column 31: cannot compare column `name` (text) with literal 5 (integer)"
    );
    let e = compile_err("SELECT * FROM processes WHERE pid = 'x'");
    assert!(
        e.to_string()
            .contains("column `pid` (integer) with literal 'x' (text)")
    );
    let e = compile_err("SELECT * FROM processes WHERE name");
    assert_eq!(
        e.kind.to_string(),
        "expected a boolean condition, found column `name` (text)"
    );
    let e = compile_err("SELECT * FROM processes WHERE cmdline = 'x'");
    assert!(e.to_string().contains("lists cannot be compared"), "{e}");
    let e = compile_err("SELECT * FROM processes WHERE pid LIKE '1%'");
    assert!(e.to_string().contains("LIKE needs text"), "{e}");
    let e = compile_err("SELECT * FROM processes WHERE name IN ('a', 1)");
    assert_eq!(e.position, at(1, 45));
    let e = compile_err("SELECT * FROM processes WHERE name LIKE exe");
    assert_eq!(e.kind, CompileErrorKind::PatternNotLiteral("LIKE"));
    let e = compile_err("SELECT * FROM processes WHERE upper(pid) = 'x'");
    assert!(e.to_string().contains("`upper` needs text"), "{e}");
    let e = compile_err("SELECT * FROM processes WHERE pid + 1 = 2");
    assert!(matches!(e.kind, CompileErrorKind::Unsupported(_)), "{e}");
}

#[test]
fn regexp_errors() {
    let e = compile_err("SELECT * FROM processes WHERE regexp_like(name, '(')");
    assert!(matches!(e.kind, CompileErrorKind::InvalidRegex(_)), "{e}");
    assert_eq!(e.position, at(1, 49));
    let e = compile_err("SELECT * FROM processes WHERE regexp_like(name, exe)");
    assert_eq!(e.kind, CompileErrorKind::PatternNotLiteral("regexp_like"));
    let e = compile_err("SELECT * FROM processes WHERE regexp_like(name, 'x', 'q')");
    assert!(e.to_string().contains("unknown flag `q`"), "{e}");
}

#[test]
fn comparisons() {
    assert!(w("name = 'bash'"));
    assert!(w("name <> 'sh'"));
    assert!(w("name != 'sh'"));
    assert!(w("pid > 41 AND pid >= 42 AND pid < 43 AND pid <= 42"));
    assert!(w("cpu_percent > 1"));
    assert!(w("cpu_percent < 1.6"));
    assert!(w("pid = 42.0"));
    assert!(w("name > 'a' AND name < 'c'"));
    assert!(w("NOT exe_deleted"));
    assert!(w("exe_deleted = false"));
    assert!(w("pid BETWEEN 40 AND 50"));
    assert!(w("pid NOT BETWEEN 1 AND 10"));
    assert!(!w("uid = -5"));
    assert!(w("start_time > -1"));
    assert!(w("PID = 42"), "unquoted identifiers are case-insensitive");
    assert!(w("\"pid\" = 42"));
    assert!(w("processes.pid = 42"));
}

#[test]
fn three_valued_logic() {
    // user is NULL.
    assert!(!w("user = 'root'"));
    assert!(!w("user <> 'root'"));
    assert!(!w("NOT (user = 'root')"));
    assert!(w("user IS NULL"));
    assert!(!w("user IS NOT NULL"));
    assert!(w("(user = 'root') IS UNKNOWN"));
    assert!(w("(user = 'root') IS NOT TRUE"));
    assert!(!w("(user = 'root') IS FALSE"));
    // NULL OR TRUE is TRUE; NULL AND TRUE is NULL; NULL AND FALSE is FALSE.
    assert!(w("user = 'root' OR pid = 42"));
    assert!(!w("user = 'root' AND pid = 42"));
    assert!(w("NOT (user = 'root' AND pid = 0)"));
    assert!(!w("NOT (user = 'root' OR pid = 0)"));
    assert!(!w("NULL"));
    assert!(!w("NOT NULL"));
    assert!(!w("pid = NULL"));
    // IN with NULLs.
    assert!(w("pid IN (1, NULL, 42)"));
    assert!(!w("pid IN (1, NULL)"));
    assert!(!w("pid NOT IN (1, NULL)"));
    assert!(!w("user IN ('a')"));
    assert!(!w("user NOT IN ('a')"));
    // IS DISTINCT FROM is NULL-safe.
    assert!(w("user IS DISTINCT FROM 'root'"));
    assert!(w("user IS NOT DISTINCT FROM NULL"));
    assert!(!w("name IS DISTINCT FROM 'bash'"));
    // LIKE and functions on NULL are NULL.
    assert!(!w("user LIKE '%'"));
    assert!(!w("user NOT LIKE '%'"));
    assert!(!w("lower(user) = 'x'"));
    assert!(w("coalesce(user, 'nobody') = 'nobody'"));
    assert!(w("coalesce(user, name) = 'bash'"));
    assert!(!w("user BETWEEN 'a' AND 'z'"));
}

#[test]
fn in_lists() {
    assert!(w("name IN ('sh', 'bash')"));
    assert!(!w("name IN ('sh', 'zsh')"));
    assert!(w("name NOT IN ('sh', 'zsh')"));
    assert!(w("pid IN (41, 42)"));
    assert!(w("pid IN (42.0)"));
    assert!(w("lower(name) IN ('bash')"));
}

#[test]
fn like_and_ilike() {
    assert!(w("exe LIKE '/usr/%'"));
    assert!(w("exe LIKE '%/bash'"));
    assert!(w("exe LIKE '/usr/bin/bas_'"));
    assert!(!w("exe LIKE '/USR/%'"));
    assert!(w("exe ILIKE '/USR/%'"));
    assert!(w("exe NOT LIKE '/tmp/%'"));
    assert!(!w("exe NOT ILIKE '/USR/%'"));
    assert!(w("cmdline_str LIKE 'bash -c echo hi'"));
    let mut r = rec();
    r.name = "a_b%c".into();
    assert!(wr(r"name LIKE 'a\_b\%c'", &r));
    assert!(!wr(r"name LIKE 'a\_b\%x'", &r));
    r.name = "axb%c".into();
    assert!(!wr(r"name LIKE 'a\_b%'", &r));
    assert!(!wr("name LIKE 'a!_b%' ESCAPE '!'", &r));
    assert!(wr("name LIKE 'axb!%c' ESCAPE '!'", &r));
    let e = compile_err(r"SELECT * FROM processes WHERE name LIKE 'abc\'");
    assert!(matches!(e.kind, CompileErrorKind::InvalidLike(_)), "{e}");
}

#[test]
fn merged_or_of_contains_keeps_semantics() {
    assert!(w("cmdline_str LIKE '%zzz%' OR cmdline_str LIKE '%echo%'"));
    assert!(!w("cmdline_str LIKE '%zzz%' OR cmdline_str LIKE '%ECHO%'"));
    assert!(w("cmdline_str ILIKE '%zzz%' OR cmdline_str ILIKE '%ECHO%'"));
    assert!(w(
        "cmdline_str LIKE '%zzz%' OR name = 'bash' OR cmdline_str LIKE '%yyy%'"
    ));
    assert!(!w("cmdline_str LIKE '%zzz%' OR cmdline_str LIKE '%yyy%'"));
    // NULL in, NULL out: neither the OR nor its negation matches.
    assert!(!w("user LIKE '%a%' OR user LIKE '%b%'"));
    assert!(!w("NOT (user LIKE '%a%' OR user LIKE '%b%')"));
    assert!(w("(user LIKE '%a%' OR user LIKE '%b%') IS UNKNOWN"));
    // Wildcards inside the literal are not merged as text.
    assert!(w(r"cmdline_str LIKE '%e_ho%' OR cmdline_str LIKE '%\%%'"));
}

#[test]
fn lower_in_compares_without_copying() {
    let mut r = rec();
    r.name = "BaSh".into();
    assert!(wr("lower(name) IN ('zsh', 'bash')", &r));
    assert!(!wr("lower(name) NOT IN ('zsh', 'bash')", &r));
    assert!(
        !wr("lower(name) IN ('Bash')", &r),
        "lower() never yields uppercase"
    );
    r.name = "ÉTÉ".into();
    assert!(wr("lower(name) IN ('été')", &r));
    assert!(!wr("lower(user) IN ('x')", &r));
}

#[test]
fn regexp_like_matches() {
    assert!(w(r"regexp_like(cmdline_str, '^bash\s+-c\b')"));
    assert!(!w(r"regexp_like(cmdline_str, '^BASH')"));
    assert!(w(r"regexp_like(cmdline_str, '^BASH', 'i')"));
    assert!(!w("regexp_like(user, '.*')"));
    assert!(w("NOT regexp_like(name, 'zsh')"));
}

#[test]
fn functions() {
    assert!(w("lower('BaSh') = name"));
    assert!(w("upper(name) = 'BASH'"));
    assert!(w("length(name) = 4"));
    assert!(w("length(cmdline) = 3 AND argc = 3"));
    assert!(w("length(listening_ports) = 2"));
    assert!(w("basename(exe) = 'bash' AND exe_name = 'bash'"));
    assert!(w("dirname(exe) = '/usr/bin' AND exe_dir = '/usr/bin'"));
    assert!(w("substr(exe, 2, 3) = 'usr'"));
    assert!(w("substring(exe from 2 for 3) = 'usr'"));
    assert!(w("left(exe, 4) = '/usr'"));
    assert!(w("argv(0) = 'bash' AND argv(2) = 'echo hi'"));
    assert!(w("argv(3) IS NULL"));
    assert!(w("contains(cmdline, '-c')"));
    assert!(!w("contains(cmdline, '-x')"));
    assert!(w("contains(listening_ports, 8080)"));
    assert!(!w("contains(listening_ports, 443)"));
    assert!(
        w("LOWER(name) = 'bash'"),
        "function names are case-insensitive"
    );
    let e = compile_err("SELECT * FROM processes WHERE contains(cmdline, 1)");
    assert!(e.to_string().contains("`contains` needs a list"), "{e}");
    let e = compile_err("SELECT * FROM processes WHERE argv(-1) = 'x'");
    assert!(e.to_string().contains("non-negative"), "{e}");
}

#[test]
fn derived_and_flag_columns() {
    let mut r = rec();
    r.exe = Some("/memfd:x (deleted)".into());
    assert!(wr("exe_deleted", &r));
    r.exe = None;
    assert!(wr("exe_name IS NULL AND exe_dir IS NULL", &r));
    r.hash_changed = true;
    assert!(wr("hash_changed AND NOT hash_denied", &r));
}

#[test]
fn rule_without_where_matches_everything() {
    assert!(
        compile_rule("SELECT * FROM processes")
            .unwrap()
            .matches(&rec())
    );
    assert!(
        compile_rule("select pid, name AS n from PROCESSES where true")
            .unwrap()
            .matches(&rec())
    );
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    let deep = format!(
        "SELECT * FROM processes WHERE {}pid = 1{}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    let e = compile_err(&deep);
    assert!(matches!(e.kind, CompileErrorKind::TooDeep { .. }), "{e}");
    let nots = format!(
        "SELECT * FROM processes WHERE {}pid = 1",
        "NOT ".repeat(10_000)
    );
    assert!(compile_rule(&nots).is_err());
    let minus = format!(
        "SELECT * FROM processes WHERE pid = {}1",
        "-".repeat(10_000)
    );
    assert!(compile_rule(&minus).is_err());
    let long = format!("SELECT * FROM processes WHERE {}", "x".repeat(100_000));
    assert!(matches!(
        compile_err(&long).kind,
        CompileErrorKind::TooLong { .. }
    ));
    // Moderate nesting still works.
    let ok = format!(
        "SELECT * FROM processes WHERE {}pid = 42{}",
        "(".repeat(20),
        ")".repeat(20)
    );
    assert!(compile_rule(&ok).unwrap().matches(&rec()));
}

#[test]
fn long_flat_chains_compile() {
    // Long AND/OR chains are flattened, not nested.
    let terms: Vec<String> = (0..4_000).map(|i| format!("pid = {i}")).collect();
    let sql = format!("SELECT * FROM processes WHERE {}", terms.join(" OR "));
    assert!(sql.len() < crate::rules::sql::MAX_SQL_LEN);
    assert!(compile_rule(&sql).unwrap().matches(&rec()));
}

#[test]
fn query_projection_order_limit() {
    let records: Vec<Record> = [(3, "c", Some(5)), (1, "a", None), (2, "b", Some(7))]
        .into_iter()
        .map(|(pid, name, uid)| Record {
            pid,
            name: name.into(),
            uid,
            cmdline: vec![name.into(), "-x".into()],
            ..Record::default()
        })
        .collect();
    let q =
        compile_query("SELECT pid, name AS n, lower(name), uid = 5 FROM processes ORDER BY pid")
            .unwrap();
    let res = q.run(&records);
    assert_eq!(res.columns, ["pid", "n", "lower", "?column?"]);
    assert_eq!(
        res.rows,
        vec![
            vec![
                Value::Int(1),
                Value::Text("a".into()),
                Value::Text("a".into()),
                Value::Null
            ],
            vec![
                Value::Int(2),
                Value::Text("b".into()),
                Value::Text("b".into()),
                Value::Bool(false)
            ],
            vec![
                Value::Int(3),
                Value::Text("c".into()),
                Value::Text("c".into()),
                Value::Bool(true)
            ],
        ]
    );
    let res = compile_query("SELECT pid FROM processes ORDER BY pid DESC LIMIT 2")
        .unwrap()
        .run(&records);
    assert_eq!(res.rows, vec![vec![Value::Int(3)], vec![Value::Int(2)]]);
    assert!(!res.truncated);
    // NULLs last ascending, first descending, as in PostgreSQL.
    let uids = |sql: &str| -> Vec<Value> {
        compile_query(sql)
            .unwrap()
            .run(&records)
            .rows
            .into_iter()
            .map(|mut r| r.remove(0))
            .collect()
    };
    assert_eq!(
        uids("SELECT uid FROM processes ORDER BY uid"),
        [Value::Int(5), Value::Int(7), Value::Null]
    );
    assert_eq!(
        uids("SELECT uid FROM processes ORDER BY uid DESC"),
        [Value::Null, Value::Int(7), Value::Int(5)]
    );
    assert_eq!(
        uids("SELECT uid FROM processes ORDER BY uid NULLS FIRST"),
        [Value::Null, Value::Int(5), Value::Int(7)]
    );
    assert_eq!(
        uids("SELECT uid FROM processes WHERE name <> 'b' ORDER BY name DESC"),
        [Value::Int(5), Value::Null]
    );
    let star = compile_query("SELECT * FROM processes WHERE pid = 2")
        .unwrap()
        .run(&records);
    assert_eq!(star.columns.len(), crate::rules::record::Column::ALL.len());
    assert_eq!(star.columns[0], "pid");
    assert_eq!(star.rows.len(), 1);
    let cmd = star.columns.iter().position(|c| c == "cmdline").unwrap();
    assert_eq!(star.rows[0][cmd].to_string(), "b -x");
    // Without ORDER BY, rows come in input order; the caller's cap truncates.
    let capped = compile_query("SELECT name FROM processes")
        .unwrap()
        .run_capped(&records, 2);
    assert_eq!(capped.rows.len(), 2);
    assert!(capped.truncated);
    let limited = compile_query("SELECT name FROM processes LIMIT 1")
        .unwrap()
        .run(&records);
    assert_eq!(limited.rows, vec![vec![Value::Text("c".into())]]);
    assert!(!limited.truncated);
    let zero = compile_query("SELECT name FROM processes LIMIT 0")
        .unwrap()
        .run(&records);
    assert!(zero.rows.is_empty());
}

#[test]
fn query_errors() {
    let e = compile_query("SELECT name FROM processes LIMIT 'x'").unwrap_err();
    assert_eq!(e.kind, CompileErrorKind::BadLimit);
    assert_eq!(e.position, at(1, 34));
    let e = compile_query("SELECT name FROM processes LIMIT 1 OFFSET 2").unwrap_err();
    assert!(matches!(e.kind, CompileErrorKind::Unsupported(_)), "{e}");
    let e = compile_query("SELECT name FROM processes GROUP BY name").unwrap_err();
    assert_eq!(
        e.kind,
        CompileErrorKind::ClauseNotAllowed {
            clause: "GROUP BY",
            context: "in a query"
        }
    );
    let e = compile_query("SELECT name FROM processes ORDER BY nmae").unwrap_err();
    assert!(e.to_string().contains("did you mean `name`"), "{e}");
}

#[test]
fn value_display_and_serialize() {
    assert_eq!(Value::Null.to_string(), "NULL");
    assert_eq!(Value::Float(1.5).to_string(), "1.5");
    assert_eq!(
        Value::List(vec![Value::Int(22), Value::Int(80)]).to_string(),
        "22 80"
    );
    let res =
        compile_query("SELECT pid, user, listening_ports, cpu_percent, exe_deleted FROM processes")
            .unwrap()
            .run([&rec()]);
    assert_eq!(
        serde_json::to_string(&res).unwrap(),
        r#"{"columns":["pid","user","listening_ports","cpu_percent","exe_deleted"],"rows":[[42,null,[22,8080],1.5,false]],"truncated":false}"#
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = compile_rule(&s);
        let _ = compile_query(&s);
    }

    #[test]
    fn sqlish_text_never_panics(
        parts in proptest::collection::vec(
            proptest::sample::select(vec![
                "SELECT", "*", "FROM", "processes", "WHERE", "name", "pid", "=", "<>", "(", ")",
                "AND", "OR", "NOT", "LIKE", "ILIKE", "'%a_'", "'x'", "1", "-", "NULL", "IN", ",",
                "IS", "lower(", "regexp_like(", "'('", "argv(", "ORDER BY", "LIMIT", "cmdline",
                "BETWEEN", "TRUE", "coalesce(", "substr(", "exe", "ESCAPE", "'\\\\'", "1.5",
            ]),
            0..40,
        )
    ) {
        let sql = parts.join(" ");
        if let Ok(f) = compile_rule(&sql) {
            let _ = f.matches(&rec());
            let _ = f.matches(&Record::default());
        }
        if let Ok(q) = compile_query(&sql) {
            let _ = q.run([&rec(), &Record::default()]);
        }
    }
}
