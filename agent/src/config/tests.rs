#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser as _;

use crate::config::{AgentArgs, ConfigError, Environment, load};

/// An environment with no system or user file unless the test writes one.
fn env(root: &Path, vars: &[(&str, &str)]) -> Environment {
    Environment {
        system_dir: root.join("etc"),
        user_dir: Some(root.join("home")),
        vars: vars
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect(),
    }
}

fn args(list: &[&str]) -> AgentArgs {
    let mut all = vec!["sentinelagent", "--collector", "external"];
    all.extend_from_slice(list);
    AgentArgs::parse_from(all)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn layers_in_order_of_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        &root.join("etc/config.toml"),
        "scan_interval = \"5s\"\nmetrics_top_n = 5\nmax_connections = 5\nrules_dir = \"/sys-rules\"\n",
    );
    write(
        &root.join("home/config.yaml"),
        "scan_interval: 4s\nmetrics_top_n: 4\nmax_connections: 4\n",
    );
    let env = env(
        root,
        &[
            ("SENTINELD_SCAN_INTERVAL", "3s"),
            ("SENTINELD_METRICS_TOP_N", "3"),
        ],
    );
    let loaded = load(&args(&["--scan-interval", "2s"]), &env).unwrap();
    let c = &loaded.config;
    assert_eq!(c.scan_interval, Duration::from_secs(2));
    assert_eq!(c.metrics_top_n, 3);
    assert_eq!(c.max_connections, 4);
    assert_eq!(c.rules.dir, Some(PathBuf::from("/sys-rules")));
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9184".parse().unwrap()));
    assert_eq!(loaded.source_of("scan_interval"), "flag --scan-interval");
    assert_eq!(
        loaded.source_of("metrics_top_n"),
        "environment SENTINELD_METRICS_TOP_N"
    );
    assert_eq!(
        loaded.source_of("max_connections"),
        format!("user file {}", root.join("home/config.yaml").display())
    );
    assert_eq!(
        loaded.source_of("rules_dir"),
        format!("system file {}", root.join("etc/config.toml").display())
    );
    assert_eq!(loaded.source_of("metrics_listen"), "default");
    assert_eq!(loaded.source_of("collector"), "flag --collector");
}

#[test]
fn a_named_file_replaces_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("etc/config.toml"), "metrics_top_n = 5\n");
    write(&root.join("home/config.toml"), "metrics_top_n = 4\n");
    let named = root.join("mine.toml");
    write(&named, "max_connections = 2\n");
    let loaded = load(
        &args(&["--config", named.to_str().unwrap()]),
        &env(root, &[]),
    )
    .unwrap();
    assert_eq!(
        loaded.config.metrics_top_n, 50,
        "neither searched file read"
    );
    assert_eq!(loaded.config.max_connections, 2);
    assert_eq!(
        loaded.source_of("max_connections"),
        format!("config file {}", named.display())
    );
}

#[test]
fn flags_left_out_do_not_hide_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        &root.join("home/config.toml"),
        "metrics_listen = \"off\"\nno_builtin_rules = true\nalert_sinks = \"syslog\"\n",
    );
    let loaded = load(&args(&[]), &env(root, &[])).unwrap();
    assert_eq!(loaded.config.metrics_listen, None);
    assert!(!loaded.config.rules.builtin);
    assert_eq!(loaded.config.sinks.len(), 1);
    assert!(loaded.config.sinks[0].name().starts_with("syslog"));
}

#[test]
fn flag_sinks_add_to_file_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        &root.join("home/config.toml"),
        "[[sinks]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/x\"\n",
    );
    let loaded = load(&args(&["--alert-sink", "stdout"]), &env(root, &[])).unwrap();
    let names: Vec<String> = loaded.config.sinks.iter().map(|s| s.name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(loaded.render().contains("[[sinks]]  # user file"));
}

#[test]
fn errors_name_the_source_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let file = root.join("home/config.toml");
    let cases: [(&str, &[&str]); 6] = [
        (
            "scan_intervall = \"1s\"\n",
            &["config.toml", "scan_intervall", "`scan_interval`"],
        ),
        (
            "scan_interval = 5\n",
            &["config.toml", "`scan_interval`", "a duration with a unit"],
        ),
        (
            "metrics_top_n = \"many\"\n",
            &[
                "config.toml",
                "`metrics_top_n`",
                "an integer from 1 to 10000",
            ],
        ),
        (
            "collector = \"inline\"\n",
            &["`collector`", "standalone, external"],
        ),
        (
            "[[sinks]]\nkind = \"stdout\"\ncolour = 1\n",
            &["config.toml", "`colour` in sinks #1"],
        ),
        (
            "[[sinks]]\nkind = \"webhook\"\n",
            &["config.toml", "`url` is required"],
        ),
    ];
    for (text, wants) in cases {
        write(&file, text);
        let err = load(&args(&[]), &env(root, &[])).unwrap_err().to_string();
        for want in wants {
            assert!(err.contains(want), "{text}: {err}");
        }
    }
    std::fs::remove_file(&file).unwrap();
    let err = load(
        &args(&[]),
        &env(root, &[("SENTINELD_MAX_CONNECTIONS", "0")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("environment SENTINELD_MAX_CONNECTIONS"),
        "{err}"
    );
    assert!(err.contains("from 1 to 1024"), "{err}");
    let err = load(&args(&["--metrics-listen", "10.1.2.3:9"]), &env(root, &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("flag --metrics-listen"), "{err}");
}

#[test]
fn unreadable_and_ambiguous_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A directory where the file should be cannot be read, even as root.
    std::fs::create_dir_all(root.join("etc/config.toml")).unwrap();
    let err = load(&args(&[]), &env(root, &[])).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("etc/config.toml"), "{err}");
    std::fs::remove_dir(root.join("etc/config.toml")).unwrap();

    write(&root.join("home/config.toml"), "");
    write(&root.join("home/config.yml"), "");
    let err = load(&args(&[]), &env(root, &[])).unwrap_err();
    assert!(matches!(err, ConfigError::Ambiguous { .. }), "{err}");

    let missing = root.join("missing.toml");
    let err = load(
        &args(&["--config", missing.to_str().unwrap()]),
        &env(root, &[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.toml"), "{err}");

    let ini = root.join("config.ini");
    write(&ini, "");
    let err = load(&args(&["--config", ini.to_str().unwrap()]), &env(root, &[])).unwrap_err();
    assert!(matches!(err, ConfigError::Format { .. }), "{err}");
}

#[test]
fn changes_sort_what_reloads_from_what_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let old = load(&args(&[]), &env(root, &[])).unwrap().config;
    let new = load(
        &args(&[
            "--scan-interval",
            "3s",
            "--alert-sink",
            "syslog",
            "--metrics-top-n",
            "9",
        ]),
        &env(root, &[]),
    )
    .unwrap()
    .config;
    let changes = old.changes(&new);
    assert!(changes.sinks);
    assert!(changes.scan_interval);
    assert_eq!(changes.need_restart, vec!["metrics_top_n"]);
    assert_eq!(old.changes(&old), Default::default());
}
