//! The built-in rule pack, compiled into the binary.

use std::path::{Path, PathBuf};

use crate::rules::file::{Format, RuleDef, parse_rules};

#[cfg(test)]
mod tests;

/// One file of the built-in pack.
struct PackFile {
    name: &'static str,
    text: &'static str,
}

const FILES: &[PackFile] = &[PackFile {
    name: "linux.yaml",
    text: include_str!("linux.yaml"),
}];

/// Where built-in rules say they come from in errors and listings.
pub const BUILTIN_DIR: &str = "<builtin>";

/// The built-in rules, in pack order.
pub fn builtin() -> Vec<RuleDef> {
    builtin_with_source().into_iter().map(|(_, r)| r).collect()
}

/// The built-in rules with the pseudo-path of the file each came from.
pub(crate) fn builtin_with_source() -> Vec<(PathBuf, RuleDef)> {
    FILES
        .iter()
        .flat_map(|f| {
            let path = Path::new(BUILTIN_DIR).join(f.name);
            parse_rules(f.text, Format::Yaml, &path)
                .map_err(|e| e.to_string())
                .expect("the built-in pack parses: the pack tests check it")
                .into_iter()
                .map(move |r| (path.clone(), r))
        })
        .collect()
}
