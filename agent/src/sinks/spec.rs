//! Command-line sink specs, exactly as users type them:
//! `stdout`, `file=PATH`, `syslog`, `syslog=udp://HOST:PORT`,
//! `syslog=unix:/PATH`, `webhook=http://...` or `webhook=https://...`.
//! Every spec gets the default delivery policy; a config file
//! (`config.rs`) can set the rest.

use std::path::PathBuf;

use crate::sinks::settings::{
    FileSettings, SettingsError, SinkSettings, SinkTarget, SyslogSettings, SyslogTransport,
    WebhookSettings,
};

/// The accepted forms, for error messages and `--help`.
pub const SPEC_FORMS: &str = "stdout, file=PATH, syslog, syslog=udp://HOST:PORT, \
                              syslog=unix:/PATH, webhook=http://HOST[:PORT]/PATH, \
                              webhook=https://HOST[:PORT]/PATH";

/// A sink spec that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad sink spec `{spec}`: {reason}; accepted forms: {SPEC_FORMS}")]
pub struct SpecError {
    pub spec: String,
    pub reason: SpecProblem,
}

/// What is wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecProblem {
    #[error("unknown sink kind `{0}`")]
    UnknownKind(String),
    #[error("`{0}` takes no value")]
    UnexpectedValue(&'static str),
    #[error("`{0}` needs a value after `=`")]
    MissingValue(&'static str),
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// Parses one spec into settings with the default delivery policy.
pub fn parse_spec(spec: &str) -> Result<SinkSettings, SpecError> {
    parse_target(spec)
        .map(SinkSettings::with_defaults)
        .map_err(|reason| SpecError {
            spec: spec.to_owned(),
            reason,
        })
}

fn parse_target(spec: &str) -> Result<SinkTarget, SpecProblem> {
    let (kind, value) = match spec.split_once('=') {
        Some((kind, value)) => (kind, Some(value)),
        None => (spec, None),
    };
    let needs = |name| {
        value
            .filter(|v| !v.is_empty())
            .ok_or(SpecProblem::MissingValue(name))
    };
    match kind {
        "stdout" => match value {
            None => Ok(SinkTarget::Stdout),
            Some(_) => Err(SpecProblem::UnexpectedValue("stdout")),
        },
        "file" => {
            let path = PathBuf::from(needs("file")?);
            Ok(SinkTarget::File(FileSettings::with_defaults(path)?))
        }
        "syslog" => {
            let transport = match value {
                None => SyslogTransport::default(),
                Some(_) => SyslogTransport::parse(needs("syslog")?)?,
            };
            Ok(SinkTarget::Syslog(SyslogSettings::with_defaults(transport)))
        }
        "webhook" => Ok(SinkTarget::Webhook(WebhookSettings::with_defaults(needs(
            "webhook",
        )?)?)),
        other => Err(SpecProblem::UnknownKind(other.to_owned())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::sinks::settings::{DEFAULT_WEBHOOK_TIMEOUT, DeliveryPolicy, Facility};

    fn target(spec: &str) -> SinkTarget {
        let settings = parse_spec(spec).unwrap();
        assert_eq!(*settings.delivery(), DeliveryPolicy::default());
        settings.target().clone()
    }

    #[test]
    fn stdout() {
        assert_eq!(target("stdout"), SinkTarget::Stdout);
        assert_eq!(parse_spec("stdout").unwrap().name(), "stdout");
    }

    #[test]
    fn file() {
        let SinkTarget::File(f) = target("file=/var/log/sentineld/alerts.jsonl") else {
            panic!("not a file sink");
        };
        assert_eq!(f.path(), Path::new("/var/log/sentineld/alerts.jsonl"));
        assert_eq!(f.max_bytes().get(), 64 << 20);
        assert_eq!(f.keep(), 5);
        // A relative path is the user's to give; `=` inside the path is kept.
        let SinkTarget::File(f) = target("file=alerts=1.jsonl") else {
            panic!("not a file sink");
        };
        assert_eq!(f.path(), Path::new("alerts=1.jsonl"));
        assert_eq!(
            parse_spec("file=/tmp/a.jsonl").unwrap().name(),
            "file:/tmp/a.jsonl"
        );
    }

    #[test]
    fn syslog_default() {
        let SinkTarget::Syslog(s) = target("syslog") else {
            panic!("not a syslog sink");
        };
        assert_eq!(s.transport(), &SyslogTransport::Unix("/dev/log".into()));
        assert_eq!(s.facility(), Facility::Authpriv);
        assert_eq!(s.app_name(), "sentineld");
        assert_eq!(parse_spec("syslog").unwrap().name(), "syslog:unix:/dev/log");
    }

    #[test]
    fn syslog_udp_and_unix() {
        let SinkTarget::Syslog(s) = target("syslog=udp://127.0.0.1:514") else {
            panic!("not a syslog sink");
        };
        assert_eq!(
            s.transport(),
            &SyslogTransport::Udp {
                host: "127.0.0.1".into(),
                port: 514
            }
        );
        let SinkTarget::Syslog(s) = target("syslog=udp://[::1]:5514") else {
            panic!("not a syslog sink");
        };
        assert_eq!(s.transport().to_string(), "udp://[::1]:5514");
        let SinkTarget::Syslog(s) = target("syslog=udp://logs.internal:514") else {
            panic!("not a syslog sink");
        };
        assert_eq!(s.transport().to_string(), "udp://logs.internal:514");
        let SinkTarget::Syslog(s) = target("syslog=unix:/run/systemd/journal/syslog") else {
            panic!("not a syslog sink");
        };
        assert_eq!(
            s.transport(),
            &SyslogTransport::Unix("/run/systemd/journal/syslog".into())
        );
    }

    #[test]
    fn webhook() {
        let SinkTarget::Webhook(w) = target("webhook=http://127.0.0.1:8080/hook") else {
            panic!("not a webhook sink");
        };
        assert_eq!(w.url().to_string(), "http://127.0.0.1:8080/hook");
        assert_eq!(w.timeout(), DEFAULT_WEBHOOK_TIMEOUT);
        assert!(!w.is_https());
        let SinkTarget::Webhook(w) = target("webhook=https://hooks.example.com/x?token=s3cret")
        else {
            panic!("not a webhook sink");
        };
        assert!(w.is_https());
        assert_eq!(
            parse_spec("webhook=https://hooks.example.com/x?token=s3cret")
                .unwrap()
                .name(),
            "webhook:https://hooks.example.com/x?…"
        );
    }

    #[test]
    fn bad_specs_name_the_spec_and_the_forms() {
        let bad = [
            ("", "unknown sink kind"),
            ("stderr", "unknown sink kind `stderr`"),
            ("STDOUT", "unknown sink kind"),
            ("stdout=x", "`stdout` takes no value"),
            ("stdout=", "`stdout` takes no value"),
            ("file", "`file` needs a value"),
            ("file=", "`file` needs a value"),
            ("file=/var/log/", "names no file"),
            ("syslog=", "`syslog` needs a value"),
            ("syslog=tcp://h:514", "unknown scheme"),
            ("syslog=udp://h", "needs a port"),
            ("syslog=udp://h:0", "port 0"),
            ("syslog=udp://h:99999", "bad port"),
            ("syslog=udp://:514", "needs a host"),
            ("syslog=unix:relative", "absolute socket path"),
            ("webhook", "`webhook` needs a value"),
            ("webhook=ftp://h/x", "http:// or https://"),
            ("webhook=127.0.0.1:8080/hook", "is not a valid url"),
            ("webhook=/hook", "needs a scheme"),
            ("webhook=http://u:p@h/x", "credentials"),
            ("webhook=http:// bad", "not a valid url"),
        ];
        for (spec, want) in bad {
            let err = parse_spec(spec).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "spec {spec:?}: {msg}");
            assert!(msg.contains(&format!("`{spec}`")), "spec {spec:?}: {msg}");
            assert!(msg.contains(SPEC_FORMS), "spec {spec:?}: {msg}");
        }
    }
}
