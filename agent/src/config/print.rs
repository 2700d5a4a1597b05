//! `--print-config`: the merged configuration as a TOML file, each value
//! followed by where it came from.

use std::fmt::Write as _;

use serde_json::Value as Json;

use crate::config::layer::KEYS;
use crate::config::sources::{self, Origin};
use crate::config::{CollectorMode, Loaded};

impl Loaded {
    /// Where `key` got its value: `default`, `system file PATH`, `user file
    /// PATH`, `config file PATH`, `environment SENTINELD_KEY`, `flag --key`.
    pub fn source_of(&self, key: &str) -> String {
        self.figment
            .find_metadata(key)
            .map_or_else(|| "default".to_owned(), |md| sources::describe(md, key))
    }

    /// The merged configuration as TOML, every key with its source in a
    /// trailing comment. Paths that depend on who runs the agent show the
    /// value they resolved to.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# sentinelagent configuration: the merged result of every layer.\n");
        out.push_str("# Precedence, highest first: flag, environment, ");
        out.push_str(
            if self.searched.iter().any(|s| s.origin == Origin::NamedFile) {
                "config file (--config), default.\n"
            } else {
                "user file, system file, default.\n"
            },
        );
        for s in &self.searched {
            let what = match s.origin {
                Origin::SystemFile => "system file",
                Origin::UserFile => "user file",
                _ => "config file",
            };
            let _ = match &s.found {
                Some(path) => writeln!(out, "# {what}: {}", path.display()),
                None => writeln!(
                    out,
                    "# {what}: none in {} (config.toml, config.yaml or config.yml)",
                    s.place.display()
                ),
            };
        }
        out.push('\n');

        let merged = serde_json::to_value(&self.merged).unwrap_or(Json::Null);
        let config = &self.config;
        for (key, _) in KEYS {
            let value = match key {
                "state_dir" => Json::from(config.layout.state_dir.display().to_string()),
                "socket" => Json::from(config.layout.socket.display().to_string()),
                "procmond" => match &config.procmond {
                    Some(path) => Json::from(path.display().to_string()),
                    None => {
                        let _ = writeln!(
                            out,
                            "# procmond: not started by the agent (collector = \"{}\")",
                            collector_name(config.collector)
                        );
                        continue;
                    }
                },
                "rules_dir" => match &config.rules.dir {
                    Some(dir) => Json::from(dir.display().to_string()),
                    None => Json::Null,
                },
                "collector_uids" => Json::from(config.collector_uids.clone()),
                // Rendered last, as tables.
                "sinks" => continue,
                _ => merged.get(key).cloned().unwrap_or(Json::Null),
            };
            if value.is_null() {
                let _ = writeln!(out, "# {key}: not set");
                continue;
            }
            let _ = writeln!(out, "{key} = {}  # {}", inline(&value), self.source_of(key));
        }
        if self.merged.alert_sinks.as_ref().is_none_or(Vec::is_empty)
            && self.merged.sinks.as_ref().is_none_or(Vec::is_empty)
        {
            out.push_str("# no alert_sinks and no [[sinks]]: alerts go to stdout\n");
        }

        let sinks = self
            .figment
            .find_value("sinks")
            .ok()
            .and_then(|v| serde_json::to_value(v).ok());
        if let Some(Json::Array(entries)) = sinks {
            let source = self.source_of("sinks");
            for entry in entries {
                let _ = writeln!(out, "\n[[sinks]]  # {source}");
                if let Json::Object(fields) = entry {
                    for (name, value) in fields {
                        if !value.is_null() {
                            let _ = writeln!(out, "{name} = {}", inline(&value));
                        }
                    }
                }
            }
        }
        out
    }
}

fn collector_name(mode: CollectorMode) -> &'static str {
    match mode {
        CollectorMode::Standalone => "standalone",
        CollectorMode::External => "external",
    }
}

/// A value in TOML's inline syntax. JSON strings are valid TOML basic
/// strings.
fn inline(value: &Json) -> String {
    match value {
        Json::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Json::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k} = {}", inline(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        other => other.to_string(),
    }
}
