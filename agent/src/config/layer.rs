//! The settings as one source gives them: every key optional, unknown keys
//! refused, every value checked as it is read.
//!
//! The same shape serves every layer (defaults, system file, user file,
//! environment, flags) and their merge, so a value is checked the same way
//! wherever it comes from.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::config::CollectorMode;
use crate::sinks::config::SinkConfig;

/// Every key, in the order `--print-config` and the docs list them, with
/// the flag that sets it (`None`: files and environment only).
pub const KEYS: [(&str, Option<&str>); 19] = [
    ("state_dir", Some("--state-dir")),
    ("socket", Some("--socket")),
    ("scan_interval", Some("--scan-interval")),
    ("collector", Some("--collector")),
    ("procmond", Some("--procmond")),
    ("max_connections", Some("--max-connections")),
    ("collector_uids", Some("--collector-uid")),
    ("max_pending_records", Some("--max-pending-records")),
    ("retention_days", Some("--retention-days")),
    ("rules_dir", Some("--rules-dir")),
    ("no_builtin_rules", Some("--no-builtin-rules")),
    ("hash_deny_list", Some("--hash-deny-list")),
    ("alert_sinks", Some("--alert-sink")),
    ("sinks", None),
    ("metrics_listen", Some("--metrics-listen")),
    ("metrics_allow_remote", Some("--metrics-allow-remote")),
    ("metrics_top_n", Some("--metrics-top-n")),
    ("user", Some("--user")),
    ("allow_root", Some("--allow-root")),
];

/// The flag that sets `key`, if any.
pub fn flag_of(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|(k, _)| *k == key).and_then(|(_, f)| *f)
}

/// Bounds of the integer keys.
pub const MAX_CONNECTIONS: (u64, u64) = (1, 1024);
pub const METRICS_TOP_N: (u64, u64) = (1, 10_000);
pub const MAX_PENDING_RECORDS: (u64, u64) = (1, 10_000_000);
/// 0 keeps everything; at most 100 years.
pub const RETENTION_DAYS: (u64, u64) = (0, 36_500);

/// One source's settings. `None` is "this source does not say".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "duration",
        serialize_with = "serialize_duration"
    )]
    pub scan_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<CollectorMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procmond: Option<PathBuf>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_connections"
    )]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_uids: Option<Vec<u32>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_pending_records"
    )]
    pub max_pending_records: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "retention_days"
    )]
    pub retention_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_builtin_rules: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_deny_list: Option<PathBuf>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "specs"
    )]
    pub alert_sinks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinks: Option<Vec<SinkConfig>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "listen"
    )]
    pub metrics_listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_allow_remote: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "metrics_top_n"
    )]
    pub metrics_top_n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_root: Option<bool>,
}

/// `Some(d)` as `"1s"`, `"250ms"`: the form files use.
fn serialize_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

/// A present value is deserialized with `visitor`; an explicit null (YAML
/// `~`) is "not set".
fn optional<'de, D, V>(d: D, visitor: V) -> Result<Option<V::Value>, D::Error>
where
    D: Deserializer<'de>,
    V: Visitor<'de>,
{
    struct Opt<V>(V);
    impl<'de, V: Visitor<'de>> Visitor<'de> for Opt<V> {
        type Value = Option<V::Value>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self.0).map(Some)
        }
    }
    d.deserialize_option(Opt(visitor))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with a unit, such as 1s, 250ms or 2m")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        sentineld_common::time::parse_duration(v).map_err(E::custom)
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    optional(d, DurationVisitor)
}

/// An integer within bounds.
struct Bounded(u64, u64);

impl Bounded {
    fn check<E: de::Error>(&self, v: u64, unexpected: Unexpected<'_>) -> Result<u64, E> {
        if v < self.0 || v > self.1 {
            return Err(E::invalid_value(unexpected, &self));
        }
        Ok(v)
    }
}

impl Visitor<'_> for &Bounded {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer from {} to {}", self.0, self.1)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        self.check(v, Unexpected::Unsigned(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(u) => self.check(u, Unexpected::Signed(v)),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }
}

impl<'de> Visitor<'de> for Bounded {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (&self).expecting(f)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        (&self).visit_u64(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        (&self).visit_i64(v)
    }
}

/// A bounded integer that fits a `u32` (the bounds make sure).
fn bounded_u32<'de, D: Deserializer<'de>>(
    d: D,
    (min, max): (u64, u64),
) -> Result<Option<u32>, D::Error> {
    optional(d, Bounded(min, max))?
        .map(|v| u32::try_from(v).map_err(|_| de::Error::custom("too large")))
        .transpose()
}

fn max_connections<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded_u32(d, MAX_CONNECTIONS)
}

fn metrics_top_n<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded_u32(d, METRICS_TOP_N)
}

fn retention_days<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded_u32(d, RETENTION_DAYS)
}

fn max_pending_records<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    optional(d, Bounded(MAX_PENDING_RECORDS.0, MAX_PENDING_RECORDS.1))
}

/// One `--alert-sink` spec or a list of them.
struct Specs;

impl<'de> Visitor<'de> for Specs {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a sink spec or a list of them, such as [\"stdout\", \"file=/var/log/sentineld/alerts.jsonl\"]",
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        Ok(vec![v.to_owned()])
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(spec) = seq.next_element::<String>()? {
            out.push(spec);
        }
        Ok(out)
    }
}

fn specs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    optional(d, Specs)
}

/// `IP:PORT` or `off`; YAML reads a bare `off` as false, which means the
/// same.
struct Listen;

impl Visitor<'_> for Listen {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IP:PORT such as 127.0.0.1:9184, or off")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        // Syntax only here; whether a remote address is allowed depends on
        // metrics_allow_remote, checked once the layers are merged.
        crate::http::parse_listen(v, true).map_err(E::custom)?;
        Ok(v.trim().to_owned())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        if v {
            Err(E::invalid_value(Unexpected::Bool(v), &self))
        } else {
            Ok("off".to_owned())
        }
    }
}

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, Listen)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn toml_layer(text: &str) -> Result<Layer, String> {
        toml::from_str::<Layer>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_reads_from_toml() {
        let layer = toml_layer(
            r#"
            state_dir = "/s"
            socket = "/r/s.sock"
            scan_interval = "250ms"
            collector = "external"
            procmond = "/usr/bin/procmond"
            max_connections = 4
            collector_uids = [0, 998]
            max_pending_records = 500
            retention_days = 7
            rules_dir = "/etc/r"
            no_builtin_rules = true
            hash_deny_list = "/etc/deny"
            alert_sinks = ["stdout", "syslog"]
            metrics_listen = "off"
            metrics_allow_remote = false
            metrics_top_n = 7
            user = "sentineld"
            allow_root = false
            [[sinks]]
            kind = "stdout"
            "#,
        )
        .unwrap();
        assert_eq!(layer.scan_interval, Some(Duration::from_millis(250)));
        assert_eq!(layer.collector, Some(CollectorMode::External));
        assert_eq!(layer.max_connections, Some(4));
        assert_eq!(layer.alert_sinks.as_deref().map(<[_]>::len), Some(2));
        assert_eq!(layer.sinks.as_deref().map(<[_]>::len), Some(1));
        assert_eq!(layer.metrics_listen.as_deref(), Some("off"));
        assert_eq!(layer.collector_uids, Some(vec![0, 998]));
        assert_eq!(layer.max_pending_records, Some(500));
        assert_eq!(layer.retention_days, Some(7));
        assert_eq!(layer.user.as_deref(), Some("sentineld"));
        assert_eq!(layer.allow_root, Some(false));
        // Every key of KEYS is a field: serialized back, all are there.
        let json = serde_json::to_value(&layer).unwrap();
        for (key, _) in KEYS {
            assert!(json.get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let cases = [
            ("scan_interval = 5", "a duration with a unit"),
            ("scan_interval = \"soon\"", "expected e.g. 1s"),
            ("scan_interval = \"0s\"", "greater than zero"),
            ("max_connections = 0", "an integer from 1 to 1024"),
            ("max_connections = -3", "an integer from 1 to 1024"),
            ("metrics_top_n = 10001", "an integer from 1 to 10000"),
            ("retention_days = 36501", "an integer from 0 to 36500"),
            ("retention_days = -1", "an integer from 0 to 36500"),
            ("metrics_listen = \"nowhere\"", "IP:PORT"),
            ("metrics_listen = true", "IP:PORT"),
            ("collector = \"inline\"", "standalone"),
            ("alert_sinks = 3", "a sink spec or a list"),
            ("no_builtin_rules = \"yes\"", "a boolean"),
            ("scan_intervall = \"1s\"", "scan_intervall"),
        ];
        for (text, want) in cases {
            let err = toml_layer(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn a_single_spec_is_a_list_of_one_and_yaml_off_is_off() {
        let layer: Layer =
            serde_saphyr::from_str("alert_sinks: stdout\nmetrics_listen: off\n").unwrap();
        assert_eq!(layer.alert_sinks, Some(vec!["stdout".to_owned()]));
        assert_eq!(layer.metrics_listen.as_deref(), Some("off"));
    }

    #[test]
    fn durations_serialize_in_file_form() {
        let layer = Layer {
            scan_interval: Some(Duration::from_millis(1500)),
            ..Layer::default()
        };
        let json = serde_json::to_value(&layer).unwrap();
        assert_eq!(json["scan_interval"], "1s 500ms");
        let back: Layer = serde_json::from_value(json).unwrap();
        assert_eq!(back, layer);
    }
}
