//! The config-file form of the sinks, e.g. in TOML:
//!
//! ```toml
//! [[sinks]]
//! kind = "webhook"
//! url = "https://hooks.example.com/sentineld"
//! timeout = "5s"
//! queue = 1000
//! max_attempts = 5
//!
//! [[sinks]]
//! kind = "file"
//! path = "/var/log/sentineld/alerts.jsonl"
//! max_bytes = 67108864
//! keep = 5
//!
//! [[sinks]]
//! kind = "syslog"
//! address = "udp://127.0.0.1:514"   # or "unix:/dev/log", the default
//! facility = "local0"               # default "authpriv"
//! ```
//!
//! [`SinkConfig::validate`] is pure and yields the same [`SinkSettings`] as
//! a command-line spec.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::sinks::settings::{
    DEFAULT_APP_NAME, DEFAULT_KEEP, DEFAULT_MAX_BYTES, DEFAULT_WEBHOOK_TIMEOUT, DeliveryPolicy,
    Facility, FileSettings, SettingsError, SinkSettings, SinkTarget, SyslogSettings,
    SyslogTransport, WebhookSettings,
};

/// The kinds of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Stdout,
    File,
    Syslog,
    Webhook,
}

impl SinkKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::File => "file",
            Self::Syslog => "syslog",
            Self::Webhook => "webhook",
        }
    }
}

/// One `[[sinks]]` entry. Fields that do not belong to `kind` are errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub kind: Option<SinkKind>,
    // file
    pub path: Option<PathBuf>,
    pub max_bytes: Option<u64>,
    pub keep: Option<u32>,
    // syslog
    pub address: Option<String>,
    pub facility: Option<String>,
    pub app_name: Option<String>,
    // webhook
    pub url: Option<String>,
    pub timeout: Option<SignedDuration>,
    pub ca_file: Option<PathBuf>,
    // delivery, any kind
    pub queue: Option<usize>,
    pub max_attempts: Option<u32>,
    pub backoff_base: Option<SignedDuration>,
    pub backoff_max: Option<SignedDuration>,
    pub breaker_threshold: Option<u32>,
    pub breaker_cooldown: Option<SignedDuration>,
}

/// A `[[sinks]]` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sink #{index} ({kind}) in the config: {problem}")]
pub struct ConfigError {
    /// 1-based position of the entry.
    pub index: usize,
    pub kind: &'static str,
    pub problem: ConfigProblem,
}

/// What is wrong with a `[[sinks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    #[error("`kind` is required; use one of stdout, file, syslog, webhook")]
    MissingKind,
    #[error("`{0}` is required for this kind")]
    Missing(&'static str),
    #[error("`{0}` is not a setting of this kind; remove it")]
    NotForKind(&'static str),
    #[error("`{0}` must not be negative")]
    Negative(&'static str),
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// Validates every entry; the first bad one is the error.
pub fn validate_all(configs: &[SinkConfig]) -> Result<Vec<SinkSettings>, ConfigError> {
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| c.validate(i + 1))
        .collect()
}

impl SinkConfig {
    /// Checks the entry (`index` is its 1-based position, for the error)
    /// without any I/O.
    pub fn validate(&self, index: usize) -> Result<SinkSettings, ConfigError> {
        let kind_name = self.kind.map_or("no kind", SinkKind::as_str);
        self.validate_inner().map_err(|problem| ConfigError {
            index,
            kind: kind_name,
            problem,
        })
    }

    fn validate_inner(&self) -> Result<SinkSettings, ConfigProblem> {
        let kind = self.kind.ok_or(ConfigProblem::MissingKind)?;
        self.reject_foreign(kind)?;
        let target = match kind {
            SinkKind::Stdout => SinkTarget::Stdout,
            SinkKind::File => {
                let path = self.path.clone().ok_or(ConfigProblem::Missing("path"))?;
                let max_bytes = match self.max_bytes {
                    Some(n) => NonZeroU64::new(n).ok_or(SettingsError::MaxBytes)?,
                    None => DEFAULT_MAX_BYTES,
                };
                SinkTarget::File(FileSettings::new(
                    path,
                    max_bytes,
                    self.keep.unwrap_or(DEFAULT_KEEP),
                )?)
            }
            SinkKind::Syslog => {
                let transport = match &self.address {
                    Some(a) => SyslogTransport::parse(a)?,
                    None => SyslogTransport::default(),
                };
                let facility = match &self.facility {
                    Some(f) => f.parse::<Facility>()?,
                    None => Facility::Authpriv,
                };
                let app_name = self.app_name.as_deref().unwrap_or(DEFAULT_APP_NAME);
                SinkTarget::Syslog(SyslogSettings::new(
                    transport,
                    facility,
                    app_name.to_owned(),
                )?)
            }
            SinkKind::Webhook => {
                let url = self.url.as_deref().ok_or(ConfigProblem::Missing("url"))?;
                let timeout = duration("timeout", self.timeout)?.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
                SinkTarget::Webhook(WebhookSettings::new(url, timeout, self.ca_file.clone())?)
            }
        };
        Ok(SinkSettings::new(target, self.policy()?))
    }

    fn policy(&self) -> Result<DeliveryPolicy, ConfigProblem> {
        let mut policy = DeliveryPolicy::default();
        if let Some(q) = self.queue {
            policy = policy.with_queue(q)?;
        }
        if let Some(a) = self.max_attempts {
            policy = policy.with_max_attempts(a)?;
        }
        let base = duration("backoff_base", self.backoff_base)?;
        let max = duration("backoff_max", self.backoff_max)?;
        if base.is_some() || max.is_some() {
            policy = policy.with_backoff(
                base.unwrap_or(policy.backoff_base()),
                max.unwrap_or(policy.backoff_max()),
            )?;
        }
        let threshold = self.breaker_threshold;
        let cooldown = duration("breaker_cooldown", self.breaker_cooldown)?;
        if threshold.is_some() || cooldown.is_some() {
            policy = policy.with_breaker(
                threshold.unwrap_or(policy.breaker_threshold().get()),
                cooldown.unwrap_or(policy.breaker_cooldown()),
            )?;
        }
        Ok(policy)
    }

    /// Fields set that belong to another kind.
    fn reject_foreign(&self, kind: SinkKind) -> Result<(), ConfigProblem> {
        let fields: [(&'static str, bool, SinkKind); 9] = [
            ("path", self.path.is_some(), SinkKind::File),
            ("max_bytes", self.max_bytes.is_some(), SinkKind::File),
            ("keep", self.keep.is_some(), SinkKind::File),
            ("address", self.address.is_some(), SinkKind::Syslog),
            ("facility", self.facility.is_some(), SinkKind::Syslog),
            ("app_name", self.app_name.is_some(), SinkKind::Syslog),
            ("url", self.url.is_some(), SinkKind::Webhook),
            ("timeout", self.timeout.is_some(), SinkKind::Webhook),
            ("ca_file", self.ca_file.is_some(), SinkKind::Webhook),
        ];
        match fields.iter().find(|(_, set, owner)| *set && *owner != kind) {
            Some((name, _, _)) => Err(ConfigProblem::NotForKind(name)),
            None => Ok(()),
        }
    }
}

fn duration(
    name: &'static str,
    value: Option<SignedDuration>,
) -> Result<Option<Duration>, ConfigProblem> {
    value
        .map(|d| Duration::try_from(d).map_err(|_| ConfigProblem::Negative(name)))
        .transpose()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::sinks::spec::parse_spec;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        sinks: Vec<SinkConfig>,
    }

    fn parse(toml_text: &str) -> Vec<SinkConfig> {
        toml::from_str::<File>(toml_text).unwrap().sinks
    }

    #[test]
    fn full_example_validates() {
        let configs = parse(
            r#"
            [[sinks]]
            kind = "webhook"
            url = "http://127.0.0.1:8080/hook"
            timeout = "2s"
            queue = 50
            max_attempts = 3
            backoff_base = "10ms"
            backoff_max = "1s"
            breaker_threshold = 2
            breaker_cooldown = "1m"

            [[sinks]]
            kind = "file"
            path = "/var/log/sentineld/alerts.jsonl"
            max_bytes = 4096
            keep = 2

            [[sinks]]
            kind = "syslog"
            address = "udp://127.0.0.1:514"
            facility = "local0"

            [[sinks]]
            kind = "stdout"
            "#,
        );
        let settings = validate_all(&configs).unwrap();
        let SinkTarget::Webhook(w) = settings[0].target() else {
            panic!("not a webhook");
        };
        assert_eq!(w.timeout(), Duration::from_secs(2));
        let p = settings[0].delivery();
        assert_eq!(p.queue().get(), 50);
        assert_eq!(p.max_attempts().get(), 3);
        assert_eq!(p.backoff_base(), Duration::from_millis(10));
        assert_eq!(p.backoff_max(), Duration::from_secs(1));
        assert_eq!(p.breaker_threshold().get(), 2);
        assert_eq!(p.breaker_cooldown(), Duration::from_secs(60));
        let SinkTarget::File(f) = settings[1].target() else {
            panic!("not a file");
        };
        assert_eq!((f.max_bytes().get(), f.keep()), (4096, 2));
        let SinkTarget::Syslog(s) = settings[2].target() else {
            panic!("not syslog");
        };
        assert_eq!(s.facility(), Facility::Local0);
        assert_eq!(settings[3].target(), &SinkTarget::Stdout);
    }

    #[test]
    fn same_settings_as_spec() {
        let from_config = parse(
            r#"
            [[sinks]]
            kind = "syslog"
            address = "udp://127.0.0.1:514"
            [[sinks]]
            kind = "file"
            path = "/tmp/a.jsonl"
            [[sinks]]
            kind = "webhook"
            url = "https://h.example/x"
            "#,
        );
        let from_config = validate_all(&from_config).unwrap();
        let from_spec: Vec<_> = [
            "syslog=udp://127.0.0.1:514",
            "file=/tmp/a.jsonl",
            "webhook=https://h.example/x",
        ]
        .iter()
        .map(|s| parse_spec(s).unwrap())
        .collect();
        assert_eq!(from_config, from_spec);
    }

    #[test]
    fn unknown_field_is_rejected_by_serde() {
        let err = toml::from_str::<File>(
            r#"
            [[sinks]]
            kind = "stdout"
            colour = true
            "#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        assert!(toml::from_str::<File>("[[sinks]]\nkind = \"kafka\"\n").is_err());
    }

    #[test]
    fn bad_entries() {
        let cases = [
            ("[[sinks]]\npath = \"/a\"", "`kind` is required"),
            ("[[sinks]]\nkind = \"file\"", "`path` is required"),
            ("[[sinks]]\nkind = \"webhook\"", "`url` is required"),
            (
                "[[sinks]]\nkind = \"stdout\"\nurl = \"http://h/\"",
                "`url` is not a setting",
            ),
            (
                "[[sinks]]\nkind = \"file\"\npath = \"/a\"\nfacility = \"local0\"",
                "`facility`",
            ),
            (
                "[[sinks]]\nkind = \"file\"\npath = \"/a\"\nmax_bytes = 0",
                "max_bytes",
            ),
            (
                "[[sinks]]\nkind = \"syslog\"\nfacility = \"kern\"",
                "unknown syslog facility",
            ),
            (
                "[[sinks]]\nkind = \"webhook\"\nurl = \"http://h/\"\ntimeout = \"-1s\"",
                "negative",
            ),
            ("[[sinks]]\nkind = \"stdout\"\nqueue = 0", "`queue`"),
            (
                "[[sinks]]\nkind = \"stdout\"\nbackoff_base = \"1m\"",
                "backoff_base",
            ),
        ];
        for (text, want) in cases {
            let err = validate_all(&parse(text)).unwrap_err();
            assert_eq!(err.index, 1);
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
    }
}
