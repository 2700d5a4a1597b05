//! Where settings come from: the embedded defaults, the system file, the
//! user file (or the one file `--config` names), `SENTINELD_*` environment
//! variables and the command line, each a figment provider whose metadata
//! says which it is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use crate::config::ConfigError;
use crate::config::layer::{KEYS, Layer, flag_of};

/// Prefix of the environment variables that set keys.
pub const ENV_PREFIX: &str = "SENTINELD_";
/// Moves the system configuration directory (default `/etc/sentineld`);
/// not a key. Tests point it at an empty directory so that a real
/// `/etc/sentineld` cannot change what they see.
pub const SYSTEM_CONFIG_DIR_VAR: &str = "SENTINELD_SYSTEM_CONFIG_DIR";
/// The system configuration directory unless moved.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/sentineld";
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// File names looked for in a configuration directory, in this order.
const FILE_NAMES: [&str; 3] = ["config.toml", "config.yaml", "config.yml"];

/// What a layer is; the metadata name of its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Default,
    SystemFile,
    UserFile,
    /// The file `--config` names.
    NamedFile,
    Env,
    Flag,
}

impl Origin {
    const ALL: [Origin; 6] = [
        Origin::Default,
        Origin::SystemFile,
        Origin::UserFile,
        Origin::NamedFile,
        Origin::Env,
        Origin::Flag,
    ];

    fn name(self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::SystemFile => "system file",
            Origin::UserFile => "user file",
            Origin::NamedFile => "config file",
            Origin::Env => "environment",
            Origin::Flag => "flag",
        }
    }

    fn of(md: &Metadata) -> Option<Origin> {
        Origin::ALL.into_iter().find(|o| o.name() == md.name)
    }
}

/// Where `key` got its value, for messages and `--print-config`:
/// `default`, `system file /etc/sentineld/config.toml`, `environment
/// SENTINELD_SCAN_INTERVAL`, `flag --scan-interval`.
pub fn describe(md: &Metadata, key: &str) -> String {
    match Origin::of(md) {
        Some(Origin::Env) => format!("environment {}", env_var(key)),
        Some(Origin::Flag) => format!("flag {}", flag_of(key).unwrap_or(key)),
        Some(Origin::Default) | None => md.name.to_string(),
        Some(_) => match md.source.as_ref().and_then(|s| s.file_path()) {
            Some(path) => format!("{} {}", md.name, path.display()),
            None => md.name.to_string(),
        },
    }
}

/// The layer as a whole, for messages about it: `config file PATH`,
/// `environment`, `flags`.
pub fn describe_layer(md: &Metadata) -> String {
    match Origin::of(md) {
        Some(Origin::Flag) => "command line".to_owned(),
        _ => match md.source.as_ref().and_then(|s| s.file_path()) {
            Some(path) => format!("{} {}", md.name, path.display()),
            None => md.name.to_string(),
        },
    }
}

/// The environment variable of `key`.
pub fn env_var(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// Settings given as a typed [`Layer`]: the embedded defaults and the
/// command line.
#[derive(Debug)]
pub struct Given {
    pub origin: Origin,
    pub layer: Layer,
}

impl Provider for Given {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.name())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let value = Value::serialize(&self.layer)?;
        let dict = value
            .into_dict()
            .ok_or_else(|| figment::Error::from("settings are not a table".to_owned()))?;
        Ok(Profile::Default.collect(dict))
    }
}

/// A configuration file, read and parsed when found.
#[derive(Debug)]
pub struct FileLayer {
    pub origin: Origin,
    pub path: PathBuf,
    dict: Dict,
}

impl FileLayer {
    /// Reads and parses the file at `path` (TOML for `.toml`, YAML for
    /// `.yaml` and `.yml`).
    pub fn read(origin: Origin, path: &Path) -> Result<FileLayer, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let format = Format::of(path).ok_or_else(|| ConfigError::Format {
            path: path.to_path_buf(),
        })?;
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("{len} bytes; the limit is {MAX_CONFIG_BYTES}"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let dict = match format {
            Format::Toml => toml::from_str::<Dict>(&text).map_err(|e| parse_err(e.to_string()))?,
            // An empty document (or only comments) is an empty table.
            Format::Yaml => serde_saphyr::from_str::<Option<Dict>>(&text)
                .map_err(|e| parse_err(e.to_string()))?
                .unwrap_or_default(),
        };
        Ok(FileLayer {
            origin,
            path: path.to_path_buf(),
            dict,
        })
    }
}

impl Provider for FileLayer {
    fn metadata(&self) -> Metadata {
        Metadata::from(self.origin.name(), self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Toml,
    Yaml,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// The `SENTINELD_*` variables: each sets the key named by the rest of its
/// name, lowercased. Values are read as figment reads them: `true`, `42`,
/// `[a, b]`, otherwise a string. Empty values are ignored.
#[derive(Debug)]
pub struct EnvLayer {
    dict: Dict,
}

impl EnvLayer {
    /// From `vars` (the process environment, or a test's).
    pub fn new(vars: &[(OsString, OsString)]) -> Result<EnvLayer, ConfigError> {
        let mut dict = Dict::new();
        for (name, value) in vars {
            let Some(name) = name.to_str() else { continue };
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == SYSTEM_CONFIG_DIR_VAR || value.is_empty() {
                continue;
            }
            let value = value.to_str().ok_or_else(|| ConfigError::Invalid {
                origin: format!("environment {name}"),
                key: key.to_ascii_lowercase(),
                message: "not valid UTF-8".to_owned(),
            })?;
            let key = key.to_ascii_lowercase();
            if !KEYS.iter().any(|(k, _)| *k == key) {
                return Err(ConfigError::UnknownKey {
                    origin: format!("environment {name}"),
                    suggestion: suggest(&key).map(env_var),
                    key,
                    within: None,
                });
            }
            let parsed: Value = value
                .parse()
                .unwrap_or_else(|_| Value::from(value.to_owned()));
            dict.insert(key, parsed);
        }
        Ok(EnvLayer { dict })
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(Origin::Env.name())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// The configuration file in `dir`, if there is one; two candidates (say
/// `config.toml` and `config.yaml`) are an error rather than a guess.
pub fn find_in(dir: &Path) -> Result<Option<PathBuf>, ConfigError> {
    let mut found = FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.exists());
    let first = found.next();
    if let (Some(first), Some(second)) = (&first, found.next()) {
        return Err(ConfigError::Ambiguous {
            first: first.clone(),
            second,
        });
    }
    Ok(first)
}

/// The user configuration directory: `$XDG_CONFIG_HOME/sentineld` (when
/// absolute, as the XDG spec asks), else `~/.config/sentineld`; `None`
/// without either.
pub fn user_config_dir(
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let xdg = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    match xdg {
        Some(dir) => Some(dir.join("sentineld")),
        None => home
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|h| h.join(".config/sentineld")),
    }
}

/// The closest key to a misspelt `key`, if one is close.
pub fn suggest(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|(k, _)| (*k, edit_distance(key, k)))
        .filter(|(k, d)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("scan_intervall"), Some("scan_interval"));
        assert_eq!(suggest("state-dir"), Some("state_dir"));
        assert_eq!(suggest("colour"), None);
    }

    #[test]
    fn env_keys_and_values() {
        let env = EnvLayer::new(&vars(&[
            ("SENTINELD_SCAN_INTERVAL", "2s"),
            ("SENTINELD_METRICS_TOP_N", "9"),
            ("SENTINELD_ALERT_SINKS", "[stdout, \"file=/a b\"]"),
            ("SENTINELD_STATE_DIR", ""),
            ("SENTINELD_SYSTEM_CONFIG_DIR", "/x"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        let layer: Layer = figment::Figment::from(env).extract().unwrap();
        assert_eq!(layer.scan_interval, Some(std::time::Duration::from_secs(2)));
        assert_eq!(layer.metrics_top_n, Some(9));
        assert_eq!(
            layer.alert_sinks,
            Some(vec!["stdout".to_owned(), "file=/a b".to_owned()])
        );
        assert_eq!(layer.state_dir, None, "an empty variable is not set");
    }

    #[test]
    fn unknown_env_var_is_named_with_a_suggestion() {
        let err = EnvLayer::new(&vars(&[("SENTINELD_SCAN_INTERVALL", "1s")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("SENTINELD_SCAN_INTERVALL"), "{text}");
        assert!(text.contains("SENTINELD_SCAN_INTERVAL?"), "{text}");
    }

    #[test]
    fn user_dir_follows_xdg() {
        assert_eq!(
            user_config_dir(Some("/x".into()), Some("/home/u".into())),
            Some(PathBuf::from("/x/sentineld"))
        );
        assert_eq!(
            user_config_dir(Some("relative".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.config/sentineld"))
        );
        assert_eq!(user_config_dir(None, None), None);
    }

    #[test]
    fn two_candidates_are_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_in(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("config.yaml"), "").unwrap();
        assert_eq!(
            find_in(dir.path()).unwrap(),
            Some(dir.path().join("config.yaml"))
        );
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        assert!(matches!(
            find_in(dir.path()),
            Err(ConfigError::Ambiguous { .. })
        ));
    }
}
