//! House rules as tests: the dependency direction between the crates is part
//! of the architecture (docs/ARCHITECTURE.md), so a change that breaks it
//! fails here instead of in review.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;

/// Names in the `[dependencies]` table of a crate's manifest (not dev or
/// build dependencies: those never reach the shipped binary).
fn dependencies(krate: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = std::fs::read_to_string(root.join(krate).join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("read {krate}/Cargo.toml: {e}"));
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]"
                || line.starts_with("[target.") && line.ends_with(".dependencies]");
            continue;
        }
        if in_deps
            && !line.is_empty()
            && !line.starts_with('#')
            && let Some(name) = line.split(['=', '.', ' ']).next()
        {
            out.push(name.to_owned());
        }
    }
    out
}

const INTERNAL: [&str; 4] = [
    "sentineld-proto",
    "sentineld-common",
    "procmond",
    "sentineld-agent",
];

#[test]
fn proto_and_common_depend_on_no_internal_crate() {
    for krate in ["proto", "common"] {
        let deps = dependencies(krate);
        for internal in INTERNAL {
            assert!(
                !deps.iter().any(|d| d == internal),
                "{krate} depends on {internal}"
            );
        }
    }
}

#[test]
fn procmond_links_no_store_rules_http_or_agent() {
    let deps = dependencies("procmond");
    assert!(
        deps.iter().any(|d| d == "sysinfo"),
        "the parser sees procmond's dependencies: {deps:?}"
    );
    for banned in [
        "redb",
        "sentineld-agent",
        "sentineld-cli",
        "sqlparser",
        "axum",
        "hyper",
        "reqwest",
    ] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "procmond depends on {banned}"
        );
    }
}

#[test]
fn cli_never_links_the_collector() {
    let deps = dependencies("cli");
    assert!(deps.iter().any(|d| d == "sentineld-agent"), "{deps:?}");
    for banned in ["procmond", "sysinfo"] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "sentinelcli depends on {banned}"
        );
    }
}
