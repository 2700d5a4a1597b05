//! Compiled rule sets and their evaluation.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::rules::file::{MAX_RULES, RuleDef, RuleFileError, read_rule_file, rule_files, valid_id};
use crate::rules::pack;
use crate::rules::record::Record;
use crate::rules::sql::{Filter, compile_rule_here, on_compiler_stack};

/// How bad a match is. Ordered from `Low` to `Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Suspicious.
    Medium,
    /// Likely malicious.
    High,
    /// Act now.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity name that is not one of `low`, `medium`, `high`, `critical`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity `{0}`: use low, medium, high or critical")]
pub struct ParseSeverityError(String);

impl FromStr for Severity {
    type Err = ParseSeverityError;

    fn from_str(s: &str) -> Result<Severity, ParseSeverityError> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(ParseSeverityError(s.to_owned())),
        }
    }
}

/// A rule with its compiled condition.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    def: RuleDef,
    filter: Filter,
    source: PathBuf,
}

impl CompiledRule {
    /// Compiles one rule definition; `source` names where it came from.
    pub fn new(def: RuleDef, source: &Path) -> Result<CompiledRule, RuleFileError> {
        match on_compiler_stack(|| Self::new_here(def.clone(), source)) {
            Ok(result) => result,
            Err(error) => Err(RuleFileError::Sql {
                path: source.to_owned(),
                id: def.id,
                error: Box::new(error),
            }),
        }
    }

    /// [`CompiledRule::new`] on the current thread, which must have a large stack.
    fn new_here(def: RuleDef, source: &Path) -> Result<CompiledRule, RuleFileError> {
        let invalid = |reason: &str| RuleFileError::InvalidRule {
            path: source.to_owned(),
            id: def.id.clone(),
            reason: reason.to_owned(),
        };
        if !valid_id(&def.id) {
            return Err(invalid(
                "invalid id: use only letters, digits, `_`, `.` and `-`",
            ));
        }
        if def.title.trim().is_empty() {
            return Err(invalid("title is empty: give the rule a one-line title"));
        }
        if def.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid("a tag is empty: remove it"));
        }
        let filter = compile_rule_here(&def.sql).map_err(|error| RuleFileError::Sql {
            path: source.to_owned(),
            id: def.id.clone(),
            error: Box::new(error),
        })?;
        Ok(CompiledRule {
            def,
            filter,
            source: source.to_owned(),
        })
    }

    /// The rule id.
    pub fn id(&self) -> &str {
        &self.def.id
    }

    /// The one-line title.
    pub fn title(&self) -> &str {
        &self.def.title
    }

    /// What the rule detects.
    pub fn description(&self) -> &str {
        &self.def.description
    }

    /// How bad a match is.
    pub fn severity(&self) -> Severity {
        self.def.severity
    }

    /// MITRE ATT&CK ids and other labels.
    pub fn tags(&self) -> &[String] {
        &self.def.tags
    }

    /// Whether the rule is evaluated.
    pub fn enabled(&self) -> bool {
        self.def.enabled
    }

    /// The rule as written.
    pub fn def(&self) -> &RuleDef {
        &self.def
    }

    /// The file it came from (`<builtin>/...` for the built-in pack).
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Where the rule came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Whether the rule's condition is TRUE for `record` (ignores `enabled`).
    pub fn matches(&self, record: &Record) -> bool {
        self.filter.matches(record)
    }
}

/// A set of compiled rules with a digest of their content.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    /// Indices of enabled rules, in order.
    enabled: Vec<usize>,
    digest: [u8; 32],
}

impl RuleSet {
    /// Loads the rule files in `dir` (sorted by name; `.yaml`, `.yml`,
    /// `.toml`; dotfiles skipped) and, if asked, the built-in pack first.
    /// Reports every error found, not just the first.
    pub fn load(dir: Option<&Path>, include_builtin: bool) -> Result<RuleSet, Vec<RuleFileError>> {
        let mut errors = Vec::new();
        let mut defs = Vec::new();
        if include_builtin {
            defs.extend(pack::builtin_with_source());
        }
        if let Some(dir) = dir {
            match rule_files(dir) {
                Ok(files) => {
                    for file in files {
                        match read_rule_file(&file) {
                            Ok(rules) => defs.extend(rules.into_iter().map(|r| (file.clone(), r))),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        Self::build(defs, errors)
    }

    /// Loads a single rule file, without the built-in pack
    /// (`sentinelcli rules validate|test FILE`).
    pub fn from_file(path: &Path) -> Result<RuleSet, Vec<RuleFileError>> {
        match read_rule_file(path) {
            Ok(rules) => Self::from_defs(rules.into_iter().map(|r| (path.to_owned(), r))),
            Err(e) => Err(vec![e]),
        }
    }

    /// Builds a set from definitions and the file each came from.
    pub fn from_defs(
        defs: impl IntoIterator<Item = (PathBuf, RuleDef)>,
    ) -> Result<RuleSet, Vec<RuleFileError>> {
        Self::build(defs.into_iter().collect(), Vec::new())
    }

    /// The built-in pack alone.
    pub fn builtin() -> RuleSet {
        Self::from_defs(pack::builtin_with_source())
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())
            .expect("the built-in pack compiles: the pack tests check it")
    }

    fn build(
        defs: Vec<(PathBuf, RuleDef)>,
        mut errors: Vec<RuleFileError>,
    ) -> Result<RuleSet, Vec<RuleFileError>> {
        if defs.len() > MAX_RULES {
            errors.push(RuleFileError::TooManyRules { max: MAX_RULES });
            return Err(errors);
        }
        // One compiler thread for the whole set rather than one per rule.
        let compiled = match on_compiler_stack(|| Self::compile_with(&defs, CompiledRule::new_here))
        {
            Ok(compiled) => compiled,
            // No big thread to be had: let each rule try for its own (and
            // report the failure per rule if that fails too).
            Err(_) => Self::compile_with(&defs, CompiledRule::new),
        };
        let (rules, more_errors) = compiled;
        errors.extend(more_errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let enabled = (0..rules.len()).filter(|&i| rules[i].enabled()).collect();
        let digest = digest(&rules);
        Ok(RuleSet {
            rules,
            enabled,
            digest,
        })
    }

    fn compile_with(
        defs: &[(PathBuf, RuleDef)],
        compile: impl Fn(RuleDef, &Path) -> Result<CompiledRule, RuleFileError>,
    ) -> (Vec<CompiledRule>, Vec<RuleFileError>) {
        let mut errors = Vec::new();
        let mut seen: HashMap<String, PathBuf> = HashMap::with_capacity(defs.len());
        let mut rules = Vec::with_capacity(defs.len());
        for (source, def) in defs {
            if let Some(first) = seen.get(&def.id) {
                errors.push(RuleFileError::DuplicateId {
                    id: def.id.clone(),
                    first: first.clone(),
                    second: source.clone(),
                });
                continue;
            }
            seen.insert(def.id.clone(), source.clone());
            match compile(def.clone(), source) {
                Ok(rule) => rules.push(rule),
                Err(e) => errors.push(e),
            }
        }
        (rules, errors)
    }

    /// Appends every enabled rule that matches `record` to `out`.
    pub fn evaluate<'s>(&'s self, record: &Record, out: &mut Vec<&'s CompiledRule>) {
        out.extend(self.matching(record));
    }

    /// The enabled rules that match `record`, lazily.
    pub fn matching<'s, 'r>(
        &'s self,
        record: &'r Record,
    ) -> impl Iterator<Item = &'s CompiledRule> + use<'s, 'r> {
        self.enabled
            .iter()
            .map(|&i| &self.rules[i])
            .filter(move |r| r.matches(record))
    }

    /// All rules, enabled or not, in load order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// The rule with this id.
    pub fn get(&self, id: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.id() == id)
    }

    /// Number of rules, enabled or not.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of enabled rules.
    pub fn enabled_len(&self) -> usize {
        self.enabled.len()
    }

    /// SHA-256 over the canonical source of the enabled rules (see [`digest`]).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The digest as lowercase hex.
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }
}

/// The canonical source of a rule set: the enabled rules sorted by id, each
/// as its id, title, description, severity, tag count, tags and SQL, every
/// string preceded by its byte length as a little-endian u64. It changes
/// when a rule that is evaluated changes, not when files are reordered or
/// only notes (rationale, false positives) are edited.
pub fn digest(rules: &[CompiledRule]) -> [u8; 32] {
    let mut enabled: Vec<&CompiledRule> = rules.iter().filter(|r| r.enabled()).collect();
    enabled.sort_by(|a, b| a.id().cmp(b.id()));
    let mut h = Sha256::new();
    let mut put = |s: &str| {
        h.update(u64::try_from(s.len()).unwrap_or(u64::MAX).to_le_bytes());
        h.update(s.as_bytes());
    };
    for r in enabled {
        put(r.id());
        put(r.title());
        put(r.description());
        put(r.severity().as_str());
        put(&r.tags().len().to_string());
        for t in r.tags() {
            put(t);
        }
        put(&r.def().sql);
    }
    h.finalize().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::rules::engine::{RuleSet, Severity};
    use crate::rules::file::{RuleDef, RuleFileError};
    use crate::rules::record::Record;

    fn def(id: &str, sql: &str) -> RuleDef {
        RuleDef {
            id: id.into(),
            title: "t".into(),
            description: "d".into(),
            severity: Severity::Medium,
            tags: vec!["T1".into()],
            enabled: true,
            sql: sql.into(),
            rationale: None,
            false_positives: None,
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn yaml_rule(id: &str, sql: &str) -> String {
        format!(
            "rules:\n  - id: {id}\n    title: T\n    description: D\n    severity: low\n    sql: \"{sql}\"\n"
        )
    }

    #[test]
    fn severity_parses_displays_and_orders() {
        assert_eq!("HIGH".parse::<Severity>().unwrap(), Severity::High);
        assert_eq!(Severity::Critical.to_string(), "critical");
        assert!(Severity::Low < Severity::Medium && Severity::High < Severity::Critical);
        let err = "severe".parse::<Severity>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown severity `severe`: use low, medium, high or critical"
        );
    }

    #[test]
    fn evaluate_skips_disabled_rules() {
        let mut off = def("b", "SELECT * FROM processes WHERE name = 'x'");
        off.enabled = false;
        let set = RuleSet::from_defs([
            (
                PathBuf::from("f"),
                def("a", "SELECT * FROM processes WHERE name = 'x'"),
            ),
            (PathBuf::from("f"), off),
        ])
        .unwrap();
        let rec = Record {
            name: "x".into(),
            ..Record::default()
        };
        let mut out = Vec::new();
        set.evaluate(&rec, &mut out);
        assert_eq!(out.iter().map(|r| r.id()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.enabled_len(), 1);
        assert!(set.get("b").unwrap().matches(&rec));
    }

    #[test]
    fn digest_tracks_enabled_content_not_order() {
        let a = def("a", "SELECT * FROM processes WHERE pid = 1");
        let b = def("b", "SELECT * FROM processes WHERE pid = 2");
        let p = PathBuf::from("f");
        let ab = RuleSet::from_defs([(p.clone(), a.clone()), (p.clone(), b.clone())]).unwrap();
        let ba = RuleSet::from_defs([(p.clone(), b.clone()), (p.clone(), a.clone())]).unwrap();
        assert_eq!(ab.digest(), ba.digest());
        let mut b2 = b.clone();
        b2.sql = "SELECT * FROM processes WHERE pid = 3".into();
        let changed = RuleSet::from_defs([(p.clone(), a.clone()), (p.clone(), b2)]).unwrap();
        assert_ne!(ab.digest(), changed.digest());
        let mut b_off = b.clone();
        b_off.enabled = false;
        let off = RuleSet::from_defs([(p.clone(), a.clone()), (p.clone(), b_off)]).unwrap();
        let only_a = RuleSet::from_defs([(p.clone(), a)]).unwrap();
        assert_eq!(off.digest(), only_a.digest());
        assert_eq!(ab.digest_hex().len(), 64);
    }

    #[test]
    fn load_directory_sorted_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "b.yaml",
            &yaml_rule("b", "SELECT * FROM processes"),
        );
        write(
            dir.path(),
            "a.toml",
            "[[rules]]\nid = \"a\"\ntitle = \"T\"\ndescription = \"D\"\nseverity = \"high\"\nsql = \"SELECT * FROM processes WHERE uid = 0\"\n",
        );
        write(
            dir.path(),
            "c.yml",
            &yaml_rule("c", "SELECT * FROM processes"),
        );
        write(dir.path(), ".hidden.yaml", "garbage: [");
        write(dir.path(), "notes.txt", "garbage");
        let set = RuleSet::load(Some(dir.path()), false).unwrap();
        let ids: Vec<&str> = set.rules().iter().map(|r| r.id()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let with_pack = RuleSet::load(Some(dir.path()), true).unwrap();
        assert_eq!(with_pack.len(), 3 + RuleSet::builtin().len());
        assert!(with_pack.rules()[0].id().starts_with("linux."));
    }

    #[test]
    fn load_reports_every_error() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "1.yaml",
            &yaml_rule("dup", "SELECT * FROM processes"),
        );
        write(
            dir.path(),
            "2.yaml",
            &yaml_rule("dup", "SELECT * FROM processes"),
        );
        write(
            dir.path(),
            "3.yaml",
            &yaml_rule("badsql", "SELECT * FROM processes WHERE nmae = 1"),
        );
        write(dir.path(), "4.yaml", "rules: [");
        write(
            dir.path(),
            "5.yaml",
            &yaml_rule("bad id", "SELECT * FROM processes"),
        );
        write(
            dir.path(),
            "6.yaml",
            &yaml_rule("linux.exec_from_tmp", "SELECT * FROM processes"),
        );
        let errors = RuleSet::load(Some(dir.path()), true).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 5, "{text:#?}");
        assert!(
            matches!(&errors[0], RuleFileError::Parse { path, .. } if path.ends_with("4.yaml"))
        );
        let dup = text.iter().find(|t| t.contains("`dup`")).unwrap();
        assert!(dup.contains("1.yaml") && dup.contains("2.yaml"), "{dup}");
        let sql = text.iter().find(|t| t.contains("badsql")).unwrap();
        assert!(
            sql.ends_with("3.yaml: rule `badsql`: sql line 1, column 31: unknown column `nmae` (did you mean `name`?)"),
            "{sql}"
        );
        assert!(
            text.iter().any(|t| t.contains("rule `bad id`: invalid id")),
            "{text:#?}"
        );
        let builtin = text
            .iter()
            .find(|t| t.contains("linux.exec_from_tmp"))
            .unwrap();
        assert!(
            builtin.contains("<builtin>") && builtin.contains("6.yaml"),
            "{builtin}"
        );
    }

    #[test]
    fn from_file_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        std::fs::write(
            &path,
            yaml_rule("x", "SELECT * FROM processes WHERE argc = 0"),
        )
        .unwrap();
        let set = RuleSet::from_file(&path).unwrap();
        assert_eq!(set.len(), 1);
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, "#".repeat(1024 * 1024 + 1)).unwrap();
        let errors = RuleSet::from_file(&big).unwrap_err();
        assert!(
            matches!(errors[0], RuleFileError::TooLarge { .. }),
            "{}",
            errors[0]
        );
        let txt = dir.path().join("r.txt");
        std::fs::write(&txt, "").unwrap();
        let errors = RuleSet::from_file(&txt).unwrap_err();
        assert!(matches!(
            errors[0],
            RuleFileError::UnsupportedExtension { .. }
        ));
        let missing = RuleSet::load(Some(&dir.path().join("nope")), false).unwrap_err();
        assert!(
            missing[0].to_string().starts_with("cannot read "),
            "{}",
            missing[0]
        );
    }

    #[test]
    fn too_many_rules() {
        let defs = (0..10_001).map(|i| {
            (
                PathBuf::from("f"),
                def(&format!("r{i}"), "SELECT * FROM processes"),
            )
        });
        let errors = RuleSet::from_defs(defs).unwrap_err();
        assert!(matches!(
            errors[0],
            RuleFileError::TooManyRules { max: 10_000 }
        ));
    }

    #[test]
    fn empty_title_is_rejected() {
        let mut d = def("x", "SELECT * FROM processes");
        d.title = " ".into();
        let errors = RuleSet::from_defs([(PathBuf::from("f"), d)]).unwrap_err();
        assert!(
            errors[0].to_string().contains("title is empty"),
            "{}",
            errors[0]
        );
    }
}
