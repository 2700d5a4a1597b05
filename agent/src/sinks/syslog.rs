//! RFC 5424 syslog messages over a datagram socket (`/dev/log` by default)
//! or UDP. One alert per datagram:
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`
//!
//! PRI is facility * 8 + severity (critical → 2 crit, high → 3 err,
//! medium → 4 warning, low → 5 notice); TIMESTAMP is the alert's time;
//! HOSTNAME the alert's host; MSGID its rule id; MSG the alert as JSON
//! (without a BOM). A missing socket is a delivery error, retried like any
//! other.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{UdpSocket, UnixDatagram};

use crate::sinks::alert::{Alert, Severity};
use crate::sinks::settings::{SyslogSettings, SyslogTransport};
use crate::sinks::sink::{Retry, Sink};

/// Largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;
/// Linux's EMSGSIZE: the datagram is larger than the socket accepts.
const EMSGSIZE: i32 = 90;

/// Why the syslog sink did not deliver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyslogError {
    #[error("could not encode the alert as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("could not resolve syslog host `{target}`")]
    Resolve {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("could not connect to syslog at `{target}`; is a syslog daemon listening?")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("could not send to syslog at `{target}`")]
    Send {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("syslog message of {len} bytes is too large for `{target}`")]
    TooLarge { target: String, len: usize },
}

impl Retry for SyslogError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Encode(_) | Self::TooLarge { .. } => false,
            Self::Send { source, .. } => source.raw_os_error() != Some(EMSGSIZE),
            Self::Resolve { .. } | Self::Connect { .. } => true,
        }
    }
}

#[derive(Debug)]
enum Socket {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

/// The running syslog sink.
#[derive(Debug)]
pub struct SyslogSink {
    settings: SyslogSettings,
    target: String,
    /// Connected lazily; dropped after a send error so the next one
    /// reconnects (syslog daemons restart).
    socket: Option<Socket>,
    pid: u32,
}

impl SyslogSink {
    /// The sink; it connects at the first delivery.
    pub fn new(settings: SyslogSettings) -> Self {
        Self {
            target: settings.transport().to_string(),
            settings,
            socket: None,
            pid: std::process::id(),
        }
    }

    async fn connect(&self) -> Result<Socket, SyslogError> {
        let connect_err = |source| SyslogError::Connect {
            target: self.target.clone(),
            source,
        };
        match self.settings.transport() {
            SyslogTransport::Unix(path) => {
                let socket = UnixDatagram::unbound().map_err(connect_err)?;
                socket.connect(path).map_err(connect_err)?;
                Ok(Socket::Unix(socket))
            }
            SyslogTransport::Udp { host, port } => {
                let resolve_err = |source| SyslogError::Resolve {
                    target: self.target.clone(),
                    source,
                };
                let addr = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(resolve_err)?
                    .next()
                    .ok_or_else(|| resolve_err(io::Error::other("no address found")))?;
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(local).await.map_err(connect_err)?;
                socket.connect(addr).await.map_err(connect_err)?;
                Ok(Socket::Udp(socket))
            }
        }
    }
}

impl Sink for SyslogSink {
    type Error = SyslogError;

    fn max_batch(&self) -> usize {
        1
    }

    async fn send(&mut self, batch: &[Arc<Alert>]) -> Result<(), SyslogError> {
        for alert in batch {
            let msg =
                format_message(alert, &self.settings, self.pid).map_err(SyslogError::Encode)?;
            if matches!(self.settings.transport(), SyslogTransport::Udp { .. })
                && msg.len() > MAX_UDP_PAYLOAD
            {
                return Err(SyslogError::TooLarge {
                    target: self.target.clone(),
                    len: msg.len(),
                });
            }
            let socket = match self.socket.take() {
                Some(s) => s,
                None => self.connect().await?,
            };
            let sent = match &socket {
                Socket::Unix(s) => s.send(&msg).await,
                Socket::Udp(s) => s.send(&msg).await,
            };
            match sent {
                Ok(_) => self.socket = Some(socket),
                Err(source) => {
                    return Err(SyslogError::Send {
                        target: self.target.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The syslog severity of an alert severity.
pub fn syslog_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
    }
}

/// One RFC 5424 message for `alert`.
pub fn format_message(
    alert: &Alert,
    settings: &SyslogSettings,
    pid: u32,
) -> Result<Vec<u8>, serde_json::Error> {
    let pri =
        u16::from(settings.facility().code()) * 8 + u16::from(syslog_severity(alert.severity));
    let now = jiff::Timestamp::now();
    let time = alert.time.parse::<jiff::Timestamp>().unwrap_or(now);
    let time = time.round(jiff::Unit::Microsecond).unwrap_or(time);
    let header = format!(
        "<{pri}>1 {time} {host} {app} {pid} {msgid} - ",
        host = header_field(&alert.host, 255),
        app = settings.app_name(),
        msgid = header_field(&alert.rule_id, 32),
    );
    let mut msg = header.into_bytes();
    serde_json::to_writer(&mut msg, alert)?;
    Ok(msg)
}

/// A header field: printable ASCII without spaces, at most `max` bytes,
/// `-` when empty.
fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if field.is_empty() {
        "-".to_owned()
    } else {
        field
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::sinks::settings::Facility;
    use crate::sinks::testutil::alert;

    /// The parts of an RFC 5424 message without structured data.
    #[derive(Debug)]
    struct Parsed {
        pri: u16,
        version: String,
        timestamp: String,
        host: String,
        app: String,
        procid: String,
        msgid: String,
        sd: String,
        msg: Alert,
    }

    fn parse(datagram: &[u8]) -> Parsed {
        let text = std::str::from_utf8(datagram).unwrap();
        let rest = text.strip_prefix('<').unwrap();
        let (pri, rest) = rest.split_once('>').unwrap();
        let mut parts = rest.splitn(8, ' ');
        let mut next = || parts.next().unwrap().to_owned();
        Parsed {
            pri: pri.parse().unwrap(),
            version: next(),
            timestamp: next(),
            host: next(),
            app: next(),
            procid: next(),
            msgid: next(),
            sd: next(),
            msg: serde_json::from_str(&next()).unwrap(),
        }
    }

    fn check(parsed: &Parsed, facility: u16, severity: u16, id: &str) {
        assert_eq!(parsed.pri, facility * 8 + severity);
        assert_eq!(parsed.version, "1");
        assert_eq!(parsed.timestamp, "2026-05-01T12:00:00Z");
        parsed.timestamp.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(parsed.host, "web-1");
        assert_eq!(parsed.app, "sentineld");
        assert_eq!(parsed.procid, std::process::id().to_string());
        assert_eq!(parsed.msgid, "shell-from-web");
        assert_eq!(parsed.sd, "-");
        assert_eq!(parsed.msg.id, id);
    }

    #[tokio::test]
    async fn udp_to_a_real_socket() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        let transport = SyslogTransport::parse(&format!("udp://127.0.0.1:{port}")).unwrap();
        let settings =
            SyslogSettings::new(transport, Facility::Local0, "sentineld".into()).unwrap();
        let mut sink = SyslogSink::new(settings);
        let mut crit = (*alert("c1")).clone();
        crit.severity = Severity::Critical;
        sink.send(&[alert("h1"), Arc::new(crit)]).await.unwrap();
        let mut buf = vec![0u8; 65_536];
        let n = server.recv(&mut buf).await.unwrap();
        check(&parse(&buf[..n]), 16, 3, "h1");
        let n = server.recv(&mut buf).await.unwrap();
        check(&parse(&buf[..n]), 16, 2, "c1");
    }

    #[tokio::test]
    async fn unix_datagram_socket_in_a_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let settings = SyslogSettings::with_defaults(SyslogTransport::Unix(path.clone()));
        let mut sink = SyslogSink::new(settings);
        let mut low = (*alert("l1")).clone();
        low.severity = Severity::Low;
        sink.send(&[Arc::new(low)]).await.unwrap();
        let mut buf = vec![0u8; 65_536];
        let n = server.recv(&mut buf).await.unwrap();
        check(&parse(&buf[..n]), 10, 5, "l1");

        // The daemon restarts: the sink fails once, then reconnects.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        let err = sink.send(&[alert("m1")]).await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        let server = UnixDatagram::bind(&path).unwrap();
        sink.send(&[alert("m2")]).await.unwrap();
        let n = server.recv(&mut buf).await.unwrap();
        assert_eq!(parse(&buf[..n]).msg.id, "m2");
    }

    #[tokio::test]
    async fn missing_socket_is_a_retryable_delivery_error() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SyslogSettings::with_defaults(SyslogTransport::Unix(dir.path().join("log")));
        let mut sink = SyslogSink::new(settings);
        let err = sink.send(&[alert("a1")]).await.unwrap_err();
        assert!(matches!(err, SyslogError::Connect { .. }), "{err:?}");
        assert!(err.is_retryable());
    }

    #[test]
    fn header_fields_are_sanitised() {
        let mut a = (*alert("x")).clone();
        a.host = "bad host\n".into();
        a.rule_id = String::new();
        a.time = "not a time".into();
        let settings = SyslogSettings::with_defaults(SyslogTransport::default());
        let msg = format_message(&a, &settings, 7).unwrap();
        let p = parse(&msg);
        assert_eq!(p.host, "bad_host_");
        assert_eq!(p.msgid, "-");
        p.timestamp.parse::<jiff::Timestamp>().unwrap();
        assert!(p.timestamp.ends_with('Z'), "{}", p.timestamp);
    }
}
