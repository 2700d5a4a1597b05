//! Validated sink settings: what a command-line spec (`spec.rs`) or a config
//! file entry (`config.rs`) turns into. A value of these types is always
//! usable: every check that needs no I/O has been done.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::Uri;

/// Default bound of each sink's queue.
pub const DEFAULT_QUEUE: NonZeroUsize = NonZeroUsize::new(1_000).expect("1000 is not zero");
/// Largest queue a sink may be given.
pub const MAX_QUEUE: usize = 1_000_000;
/// Default number of attempts per alert, the first one included.
pub const DEFAULT_MAX_ATTEMPTS: NonZeroU32 = NonZeroU32::new(5).expect("5 is not zero");
/// Most attempts per alert a sink may be given.
pub const MAX_ATTEMPTS: u32 = 100;
/// Default first retry delay bound.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Default longest retry delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default consecutive failures that open the circuit breaker.
pub const DEFAULT_BREAKER_THRESHOLD: NonZeroU32 = NonZeroU32::new(5).expect("5 is not zero");
/// Default time the breaker stays open before a probe.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);
/// Default size at which the file sink rotates: 64 MiB.
pub const DEFAULT_MAX_BYTES: NonZeroU64 = NonZeroU64::new(64 << 20).expect("64 MiB is not zero");
/// Default number of rotated files the file sink keeps.
pub const DEFAULT_KEEP: u32 = 5;
/// Most rotated files the file sink may keep.
pub const MAX_KEEP: u32 = 100;
/// Default per-request timeout of the webhook sink.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest per-request timeout of the webhook sink.
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// Default syslog datagram socket.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";
/// Default syslog APP-NAME.
pub const DEFAULT_APP_NAME: &str = "sentineld";

/// A setting that cannot be used, found without any I/O.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    #[error("file path `{0}` names no file; give a path like /var/log/sentineld/alerts.jsonl")]
    FilePath(PathBuf),
    #[error("`keep` is {0}; keep at most {MAX_KEEP} rotated files")]
    Keep(u32),
    #[error("`max_bytes` must be at least 1")]
    MaxBytes,
    #[error("webhook url `{url}` {reason}")]
    WebhookUrl { url: String, reason: &'static str },
    #[error("webhook timeout must be more than 0 and at most {}s", MAX_WEBHOOK_TIMEOUT.as_secs())]
    WebhookTimeout,
    #[error("syslog address `{address}` {reason}; use udp://HOST:PORT or unix:/PATH")]
    SyslogAddress {
        address: String,
        reason: &'static str,
    },
    #[error("unknown syslog facility `{0}`; use one of {FACILITY_NAMES}")]
    Facility(String),
    #[error("syslog app name `{0}` must be 1 to 48 printable ASCII characters without spaces")]
    AppName(String),
    #[error("`queue` must be between 1 and {MAX_QUEUE}")]
    Queue,
    #[error("`max_attempts` must be between 1 and {MAX_ATTEMPTS}")]
    MaxAttempts,
    #[error("`backoff_base` must be more than 0 and at most `backoff_max`")]
    Backoff,
    #[error("`breaker_threshold` must be at least 1")]
    BreakerThreshold,
}

/// One sink, ready to be started by the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSettings {
    target: SinkTarget,
    delivery: DeliveryPolicy,
}

impl SinkSettings {
    pub fn new(target: SinkTarget, delivery: DeliveryPolicy) -> Self {
        Self { target, delivery }
    }

    /// The sink with the default delivery policy.
    pub fn with_defaults(target: SinkTarget) -> Self {
        Self::new(target, DeliveryPolicy::default())
    }

    pub fn target(&self) -> &SinkTarget {
        &self.target
    }

    pub fn delivery(&self) -> &DeliveryPolicy {
        &self.delivery
    }

    /// The name used in delivery records, stats and logs, e.g.
    /// `file:/var/log/alerts.jsonl` or `webhook:https://host/path`.
    pub fn name(&self) -> String {
        self.target.name()
    }
}

/// Where a sink delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkTarget {
    Stdout,
    File(FileSettings),
    Syslog(SyslogSettings),
    Webhook(WebhookSettings),
}

impl SinkTarget {
    /// The sink's display name; a webhook's credentials and query are not
    /// shown.
    pub fn name(&self) -> String {
        match self {
            Self::Stdout => "stdout".to_owned(),
            Self::File(f) => format!("file:{}", f.path.display()),
            Self::Syslog(s) => format!("syslog:{}", s.transport),
            Self::Webhook(w) => format!("webhook:{}", w.redacted_url()),
        }
    }

    /// The short kind name: `stdout`, `file`, `syslog` or `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::File(_) => "file",
            Self::Syslog(_) => "syslog",
            Self::Webhook(_) => "webhook",
        }
    }
}

/// An appended, size-rotated JSON-lines file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    path: PathBuf,
    max_bytes: NonZeroU64,
    keep: u32,
}

impl FileSettings {
    /// Checks that `path` names a file and `keep` is at most [`MAX_KEEP`].
    /// Whether its directory exists is checked when the sink starts.
    pub fn new(path: PathBuf, max_bytes: NonZeroU64, keep: u32) -> Result<Self, SettingsError> {
        if path.file_name().is_none() || path.as_os_str().to_string_lossy().ends_with('/') {
            return Err(SettingsError::FilePath(path));
        }
        if keep > MAX_KEEP {
            return Err(SettingsError::Keep(keep));
        }
        Ok(Self {
            path,
            max_bytes,
            keep,
        })
    }

    /// `path` with the default size limit and number of rotated files.
    pub fn with_defaults(path: PathBuf) -> Result<Self, SettingsError> {
        Self::new(path, DEFAULT_MAX_BYTES, DEFAULT_KEEP)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_bytes(&self) -> NonZeroU64 {
        self.max_bytes
    }

    pub fn keep(&self) -> u32 {
        self.keep
    }
}

/// RFC 5424 messages over a datagram socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    transport: SyslogTransport,
    facility: Facility,
    app_name: String,
}

impl SyslogSettings {
    pub fn new(
        transport: SyslogTransport,
        facility: Facility,
        app_name: String,
    ) -> Result<Self, SettingsError> {
        let printable = app_name.bytes().all(|b| (33..=126).contains(&b));
        if app_name.is_empty() || app_name.len() > 48 || !printable {
            return Err(SettingsError::AppName(app_name));
        }
        Ok(Self {
            transport,
            facility,
            app_name,
        })
    }

    /// `transport` with facility `authpriv` and app name `sentineld`.
    pub fn with_defaults(transport: SyslogTransport) -> Self {
        Self {
            transport,
            facility: Facility::Authpriv,
            app_name: DEFAULT_APP_NAME.to_owned(),
        }
    }

    pub fn transport(&self) -> &SyslogTransport {
        &self.transport
    }

    pub fn facility(&self) -> Facility {
        self.facility
    }

    pub fn app_name(&self) -> &str {
        &self.app_name
    }
}

/// Where syslog datagrams go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTransport {
    /// A local datagram socket, `/dev/log` by default.
    Unix(PathBuf),
    /// UDP to `host:port`; the host is resolved at each (re)connect.
    Udp { host: String, port: u16 },
}

impl Default for SyslogTransport {
    fn default() -> Self {
        Self::Unix(PathBuf::from(DEFAULT_SYSLOG_SOCKET))
    }
}

impl SyslogTransport {
    /// Parses `udp://HOST:PORT` (HOST may be `[v6]`) or `unix:/PATH`.
    pub fn parse(address: &str) -> Result<Self, SettingsError> {
        let bad = |reason| SettingsError::SyslogAddress {
            address: address.to_owned(),
            reason,
        };
        if let Some(path) = address.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.starts_with('/') || path.len() < 2 {
                return Err(bad("needs an absolute socket path"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let Some(rest) = address.strip_prefix("udp://") else {
            return Err(bad("has an unknown scheme"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(bad("needs a port"));
        };
        let port: u16 = port.parse().map_err(|_| bad("has a bad port"))?;
        if port == 0 {
            return Err(bad("has port 0"));
        }
        let host = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .ok_or_else(|| bad("has a bad IPv6 host"))?,
            None => host,
        };
        if host.is_empty() || host.contains(['/', '[', ']', ' ', '@']) {
            return Err(bad("needs a host"));
        }
        if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("has a bad IPv6 host"));
        }
        Ok(Self::Udp {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for SyslogTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Udp { host, port } if host.contains(':') => write!(f, "udp://[{host}]:{port}"),
            Self::Udp { host, port } => write!(f, "udp://{host}:{port}"),
        }
    }
}

const FACILITY_NAMES: &str =
    "user, daemon, auth, authpriv, local0, local1, local2, local3, local4, local5, local6, local7";

/// Syslog facility (RFC 5424 section 6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facility {
    User,
    Daemon,
    Auth,
    Authpriv,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The facility's number.
    pub fn code(self) -> u8 {
        match self {
            Self::User => 1,
            Self::Daemon => 3,
            Self::Auth => 4,
            Self::Authpriv => 10,
            Self::Local0 => 16,
            Self::Local1 => 17,
            Self::Local2 => 18,
            Self::Local3 => 19,
            Self::Local4 => 20,
            Self::Local5 => 21,
            Self::Local6 => 22,
            Self::Local7 => 23,
        }
    }
}

impl std::str::FromStr for Facility {
    type Err = SettingsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "user" => Self::User,
            "daemon" => Self::Daemon,
            "auth" => Self::Auth,
            "authpriv" => Self::Authpriv,
            "local0" => Self::Local0,
            "local1" => Self::Local1,
            "local2" => Self::Local2,
            "local3" => Self::Local3,
            "local4" => Self::Local4,
            "local5" => Self::Local5,
            "local6" => Self::Local6,
            "local7" => Self::Local7,
            _ => return Err(SettingsError::Facility(s.to_owned())),
        })
    }
}

/// HTTP POST of each alert's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    url: Uri,
    timeout: Duration,
    ca_file: Option<PathBuf>,
}

impl WebhookSettings {
    /// Checks the url (http or https, with a host, without credentials)
    /// and the timeout. `ca_file` (PEM), when given, replaces the system's
    /// CA certificates for an https url; it is read when the sink starts.
    pub fn new(
        url: &str,
        timeout: Duration,
        ca_file: Option<PathBuf>,
    ) -> Result<Self, SettingsError> {
        let bad = |reason| SettingsError::WebhookUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("is not a valid url"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(_) => return Err(bad("must start with http:// or https://")),
            None => return Err(bad("needs a scheme: http:// or https://")),
        }
        let Some(authority) = uri.authority() else {
            return Err(bad("needs a host"));
        };
        if authority.as_str().contains('@') {
            return Err(bad(
                "must not hold credentials; put a token in the path or query",
            ));
        }
        if authority.host().is_empty() {
            return Err(bad("needs a host"));
        }
        if timeout.is_zero() || timeout > MAX_WEBHOOK_TIMEOUT {
            return Err(SettingsError::WebhookTimeout);
        }
        Ok(Self {
            url: uri,
            timeout,
            ca_file,
        })
    }

    /// `url` with the default timeout and the system's CA certificates.
    pub fn with_defaults(url: &str) -> Result<Self, SettingsError> {
        Self::new(url, DEFAULT_WEBHOOK_TIMEOUT, None)
    }

    pub fn url(&self) -> &Uri {
        &self.url
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    pub fn is_https(&self) -> bool {
        self.url.scheme_str() == Some("https")
    }

    /// The url without its query, safe to log and store.
    pub fn redacted_url(&self) -> String {
        let scheme = self.url.scheme_str().unwrap_or("http");
        let authority = self.url.authority().map_or("", |a| a.as_str());
        let query = if self.url.query().is_some() {
            "?…"
        } else {
            ""
        };
        format!("{scheme}://{authority}{}{query}", self.url.path())
    }
}

/// How a sink's queue, retries and circuit breaker behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    queue: NonZeroUsize,
    max_attempts: NonZeroU32,
    backoff_base: Duration,
    backoff_max: Duration,
    breaker_threshold: NonZeroU32,
    breaker_cooldown: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            queue: DEFAULT_QUEUE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
        }
    }
}

impl DeliveryPolicy {
    /// Bound of the sink's queue, 1 to [`MAX_QUEUE`].
    pub fn with_queue(mut self, queue: usize) -> Result<Self, SettingsError> {
        self.queue = NonZeroUsize::new(queue)
            .filter(|q| q.get() <= MAX_QUEUE)
            .ok_or(SettingsError::Queue)?;
        Ok(self)
    }

    /// Attempts per alert, the first included, 1 to [`MAX_ATTEMPTS`].
    pub fn with_max_attempts(mut self, attempts: u32) -> Result<Self, SettingsError> {
        self.max_attempts = NonZeroU32::new(attempts)
            .filter(|a| a.get() <= MAX_ATTEMPTS)
            .ok_or(SettingsError::MaxAttempts)?;
        Ok(self)
    }

    /// Retry delays: the n-th retry waits a random time up to
    /// `min(max, base * 2^(n-1))` (full jitter).
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Result<Self, SettingsError> {
        if base.is_zero() || base > max {
            return Err(SettingsError::Backoff);
        }
        self.backoff_base = base;
        self.backoff_max = max;
        Ok(self)
    }

    /// The breaker opens after `threshold` consecutive failed attempts and
    /// lets one probe through after `cooldown`.
    pub fn with_breaker(
        mut self,
        threshold: u32,
        cooldown: Duration,
    ) -> Result<Self, SettingsError> {
        self.breaker_threshold =
            NonZeroU32::new(threshold).ok_or(SettingsError::BreakerThreshold)?;
        self.breaker_cooldown = cooldown;
        Ok(self)
    }

    pub fn queue(&self) -> NonZeroUsize {
        self.queue
    }

    pub fn max_attempts(&self) -> NonZeroU32 {
        self.max_attempts
    }

    pub fn backoff_base(&self) -> Duration {
        self.backoff_base
    }

    pub fn backoff_max(&self) -> Duration {
        self.backoff_max
    }

    pub fn breaker_threshold(&self) -> NonZeroU32 {
        self.breaker_threshold
    }

    pub fn breaker_cooldown(&self) -> Duration {
        self.breaker_cooldown
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn webhook_name_hides_query() {
        let w = WebhookSettings::with_defaults("https://hooks.example/a/b?token=secret").unwrap();
        assert_eq!(
            SinkTarget::Webhook(w).name(),
            "webhook:https://hooks.example/a/b?…"
        );
    }

    #[test]
    fn webhook_rejects_credentials_and_bad_timeout() {
        assert!(matches!(
            WebhookSettings::with_defaults("http://user:pw@host/x"),
            Err(SettingsError::WebhookUrl { .. })
        ));
        assert_eq!(
            WebhookSettings::new("http://h/", Duration::ZERO, None),
            Err(SettingsError::WebhookTimeout)
        );
    }

    #[test]
    fn policy_bounds() {
        let p = DeliveryPolicy::default();
        assert_eq!(p.with_queue(0), Err(SettingsError::Queue));
        assert_eq!(p.with_queue(MAX_QUEUE + 1), Err(SettingsError::Queue));
        assert_eq!(p.with_max_attempts(0), Err(SettingsError::MaxAttempts));
        assert_eq!(
            p.with_backoff(Duration::from_secs(2), Duration::from_secs(1)),
            Err(SettingsError::Backoff)
        );
        assert_eq!(p.with_queue(7).unwrap().queue().get(), 7);
    }

    #[test]
    fn file_settings_bounds() {
        assert!(FileSettings::with_defaults(PathBuf::from("/var/log/")).is_err());
        assert!(FileSettings::with_defaults(PathBuf::from("/var/log/..")).is_err());
        assert_eq!(
            FileSettings::new(PathBuf::from("/a"), DEFAULT_MAX_BYTES, 101),
            Err(SettingsError::Keep(101))
        );
    }

    #[test]
    fn syslog_app_name() {
        let t = SyslogTransport::default();
        assert!(SyslogSettings::new(t.clone(), Facility::Local0, "a b".into()).is_err());
        assert!(SyslogSettings::new(t, Facility::Local0, "sentineld".into()).is_ok());
    }
}
