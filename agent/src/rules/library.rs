//! The rules the agent runs, and how they change at run time.
//!
//! At start every rule file must load: an error stops the agent with every
//! problem listed, so an operator learns of it at once. At a reload each file
//! is checked on its own: a file that does not load is refused with its
//! errors and its last good version (if any) stays in force, while the
//! other files' changes take effect. A reload whose files each load but that
//! clash together (the same rule id in two files) is refused whole and the
//! rule set in force stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::rules::engine::RuleSet;
use crate::rules::file::{RuleDef, RuleFileError, read_rule_file, rule_files};
use crate::rules::pack;
use crate::rules::record::Column;

/// Columns that change with every sample; rules reading them are evaluated
/// on samples too, not only when an instance appears or changes.
const SAMPLE_COLUMNS: &[Column] = &[
    Column::CpuPercent,
    Column::RssBytes,
    Column::VmsBytes,
    Column::Threads,
    Column::OpenFds,
    Column::Status,
    Column::ListeningPorts,
];

/// The sources of the rule set and the last good version of each file.
#[derive(Debug)]
pub struct RuleLibrary {
    dir: Option<PathBuf>,
    builtin: bool,
    files: BTreeMap<PathBuf, Vec<RuleDef>>,
}

/// What a reload did.
#[derive(Debug)]
pub struct Reload {
    /// The new rule set, or `None` when nothing could change.
    pub set: Option<RuleSet>,
    /// What was refused: files kept at their last good version, or the
    /// reason the whole reload was refused.
    pub refused: Vec<RuleFileError>,
}

impl RuleLibrary {
    /// Loads the built-in pack (if `builtin`) and every rule file in `dir`
    /// (a missing directory holds none). Any error fails the load.
    pub fn load(
        dir: Option<&Path>,
        builtin: bool,
    ) -> Result<(RuleLibrary, RuleSet), Vec<RuleFileError>> {
        let mut library = RuleLibrary {
            dir: dir.map(Path::to_path_buf),
            builtin,
            files: BTreeMap::new(),
        };
        let mut errors = Vec::new();
        for path in library.current_files(&mut errors) {
            match read_rule_file(&path) {
                Ok(defs) => {
                    library.files.insert(path, defs);
                }
                Err(e) => errors.push(e),
            }
        }
        // Compile what did parse too, so every problem is reported at once.
        match library.build() {
            Ok(set) if errors.is_empty() => Ok((library, set)),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// Reads the sources again; see the module comment for what is kept.
    pub fn reload(&mut self) -> Reload {
        let mut refused = Vec::new();
        let mut files = BTreeMap::new();
        for path in self.current_files(&mut refused) {
            let checked = read_rule_file(&path).map_err(|e| vec![e]).and_then(|defs| {
                // Compile the file alone, so its own errors stay its own.
                RuleSet::from_defs(defs.iter().cloned().map(|d| (path.clone(), d))).map(|_| defs)
            });
            match checked {
                Ok(defs) => {
                    files.insert(path, defs);
                }
                Err(e) => {
                    refused.extend(e);
                    if let Some(old) = self.files.get(&path) {
                        files.insert(path, old.clone());
                    }
                }
            }
        }
        let previous = std::mem::replace(&mut self.files, files);
        match self.build() {
            Ok(set) => Reload {
                set: Some(set),
                refused,
            },
            Err(errors) => {
                self.files = previous;
                refused.extend(errors);
                Reload { set: None, refused }
            }
        }
    }

    /// The rule files in the directory now; a missing directory has none.
    fn current_files(&self, errors: &mut Vec<RuleFileError>) -> Vec<PathBuf> {
        match &self.dir {
            Some(dir) if dir.is_dir() => match rule_files(dir) {
                Ok(files) => files,
                Err(e) => {
                    errors.push(e);
                    // Unreadable now: keep what was loaded.
                    self.files.keys().cloned().collect()
                }
            },
            _ => Vec::new(),
        }
    }

    fn build(&self) -> Result<RuleSet, Vec<RuleFileError>> {
        let mut defs = Vec::new();
        if self.builtin {
            defs.extend(pack::builtin_with_source());
        }
        for (path, file) in &self.files {
            defs.extend(file.iter().cloned().map(|d| (path.clone(), d)));
        }
        RuleSet::from_defs(defs)
    }
}

/// Whether an enabled rule of `set` reads a column that samples change.
pub fn reads_samples(set: &RuleSet) -> bool {
    set.rules()
        .iter()
        .filter(|r| r.enabled())
        .any(|r| SAMPLE_COLUMNS.iter().any(|&c| r.filter().reads(c)))
}

/// The enabled rules of `set` that read a column samples change: the ones
/// worth running again when only a sample arrived. `None` when there are
/// none.
pub fn sample_rules(set: &RuleSet) -> Option<RuleSet> {
    let defs: Vec<(PathBuf, RuleDef)> = set
        .rules()
        .iter()
        .filter(|r| r.enabled() && SAMPLE_COLUMNS.iter().any(|&c| r.filter().reads(c)))
        .map(|r| (r.source().to_path_buf(), r.def().clone()))
        .collect();
    if defs.is_empty() {
        return None;
    }
    // These rules compiled a moment ago as part of `set`.
    RuleSet::from_defs(defs).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
    use super::*;

    const GOOD: &str = "rules:\n  - id: t.one\n    title: t\n    description: d\n    severity: low\n    sql: SELECT * FROM processes WHERE name = 'one'\n";
    const BAD: &str = "rules:\n  - id: t.one\n    title: t\n    description: d\n    severity: low\n    sql: SELECT * FROM processes WHERE nmae = 'one'\n";
    const TWO: &str = "rules:\n  - id: t.two\n    title: t\n    description: d\n    severity: high\n    sql: SELECT * FROM processes WHERE cpu_percent > 90\n";

    #[test]
    fn a_bad_file_at_start_fails_the_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), BAD).unwrap();
        let errors = RuleLibrary::load(Some(dir.path()), false).unwrap_err();
        assert!(errors[0].to_string().contains("nmae"), "{}", errors[0]);
    }

    #[test]
    fn a_bad_file_keeps_its_last_good_version_and_others_still_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        let (mut library, set) = RuleLibrary::load(Some(dir.path()), false).unwrap();
        assert_eq!(set.len(), 1);
        assert!(!reads_samples(&set));

        std::fs::write(dir.path().join("a.yaml"), BAD).unwrap();
        std::fs::write(dir.path().join("b.yaml"), TWO).unwrap();
        let reload = library.reload();
        assert_eq!(reload.refused.len(), 1);
        assert!(reload.refused[0].to_string().contains("a.yaml"));
        let set = reload.set.unwrap();
        assert!(set.get("t.one").is_some(), "last good version stays");
        assert!(set.get("t.two").is_some(), "the good new file takes effect");
        assert!(reads_samples(&set));
    }

    #[test]
    fn a_clash_between_files_refuses_the_whole_reload() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        let (mut library, _) = RuleLibrary::load(Some(dir.path()), false).unwrap();
        std::fs::write(dir.path().join("b.yaml"), GOOD).unwrap();
        let reload = library.reload();
        assert!(reload.set.is_none());
        assert!(reload.refused[0].to_string().contains("t.one"));
        // The clash gone, the next reload succeeds.
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        assert_eq!(library.reload().set.unwrap().len(), 1);
    }

    #[test]
    fn only_rules_that_read_sample_columns_run_on_samples() {
        let dir = tempfile::tempdir().unwrap();
        let literal = GOOD.replace("name = 'one'", "name = 'status' OR exe = 'threads'");
        std::fs::write(dir.path().join("a.yaml"), literal).unwrap();
        let (_, set) = RuleLibrary::load(Some(dir.path()), false).unwrap();
        assert!(!reads_samples(&set), "words in strings are not columns");
        std::fs::write(dir.path().join("b.yaml"), TWO).unwrap();
        let (_, set) = RuleLibrary::load(Some(dir.path()), false).unwrap();
        assert!(reads_samples(&set));
        let pack = RuleSet::builtin();
        let on_samples = sample_rules(&pack).map_or(0, |s| s.len());
        assert!(
            on_samples < pack.len() / 4,
            "only a few built-in rules run on every sample: {on_samples}"
        );
    }

    #[test]
    fn every_error_at_start_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), BAD).unwrap();
        std::fs::write(dir.path().join("b.yaml"), "rules: [").unwrap();
        let errors = RuleLibrary::load(Some(dir.path()), false).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn a_missing_directory_holds_no_rules() {
        let (_, set) = RuleLibrary::load(Some(Path::new("/nonexistent/rules.d")), true).unwrap();
        assert_eq!(set.len(), RuleSet::builtin().len());
    }
}
