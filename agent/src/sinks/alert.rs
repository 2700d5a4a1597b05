//! The alert as the sinks deliver it, the agent stores it and the CLI prints
//! it. Its JSON form is the wire format of every sink.

use serde::{Deserialize, Serialize};

/// One alert raised by a rule against a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable hex id: the same alert always has the same id.
    pub id: String,
    pub rule_id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub tags: Vec<String>,
    /// When the alert was raised, RFC 3339 in UTC.
    pub time: String,
    /// Host name of the machine that raised it.
    pub host: String,
    /// The process that matched, as the agent describes it.
    pub process: serde_json::Value,
    /// Its parent, when known.
    pub parent: Option<serde_json::Value>,
}

/// How bad an alert is: the severity of the rule that raised it.
pub use crate::rules::Severity;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::sinks::testutil::sample;

    #[test]
    fn json_round_trip() {
        let alert = sample();
        let json = serde_json::to_string(&alert).unwrap();
        assert!(json.contains(r#""severity":"high""#), "{json}");
        let back: Alert = serde_json::from_str(&json).unwrap();
        assert_eq!(back, alert);
    }

    #[test]
    fn severity_parse_display_order() {
        for sev in Severity::ALL {
            assert_eq!(sev.to_string().parse::<Severity>().unwrap(), sev);
        }
        assert_eq!("CRITICAL".parse::<Severity>().unwrap(), Severity::Critical);
        let err = "urgent".parse::<Severity>().unwrap_err();
        assert!(err.to_string().contains("urgent"));
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::High < Severity::Critical);
    }
}
