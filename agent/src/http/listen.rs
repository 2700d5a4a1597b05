//! `--metrics-listen ADDR`: where the HTTP endpoint listens, or `off`.

use std::net::{Ipv4Addr, SocketAddr};

/// Default `--metrics-listen` value.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9184";

/// Why a `--metrics-listen` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Not `off` and not an `IP:PORT`.
    #[error(
        "invalid metrics listen address `{input}`: expected IP:PORT such as 127.0.0.1:9184 or [::1]:9184, or `off`"
    )]
    Invalid {
        /// The value given.
        input: String,
    },
    /// Not a loopback address, and remote access was not allowed.
    #[error(
        "refusing to serve metrics and the process API on non-loopback address {addr}: \
         use a loopback address such as 127.0.0.1:9184, or allow remote access explicitly"
    )]
    NotLoopback {
        /// The parsed address.
        addr: SocketAddr,
    },
}

/// Parses a `--metrics-listen` value: `off` (any case) gives `Ok(None)`;
/// `IP:PORT` (IPv6 in brackets) or `localhost:PORT` gives the address.
/// Non-loopback addresses (including `0.0.0.0` and `[::]`) are refused unless
/// `allow_remote` is true: the API shows command lines and users.
///
/// # Errors
/// [`ListenError::Invalid`] for anything else, [`ListenError::NotLoopback`]
/// as said above.
pub fn parse_listen(input: &str, allow_remote: bool) -> Result<Option<SocketAddr>, ListenError> {
    let trimmed = input.trim();
    if trimmed.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr = match trimmed.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match trimmed.strip_prefix("localhost:").map(str::parse::<u16>) {
            Some(Ok(port)) => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            _ => {
                return Err(ListenError::Invalid {
                    input: input.to_owned(),
                });
            }
        },
    };
    if !allow_remote && !addr.ip().is_loopback() {
        return Err(ListenError::NotLoopback { addr });
    }
    Ok(Some(addr))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::net::SocketAddr;

    use crate::http::listen::{DEFAULT_LISTEN, ListenError, parse_listen};

    #[test]
    fn accepts_loopback_and_off() {
        let default: SocketAddr = "127.0.0.1:9184".parse().unwrap();
        assert_eq!(parse_listen(DEFAULT_LISTEN, false), Ok(Some(default)));
        assert_eq!(parse_listen("OFF", false), Ok(None));
        assert_eq!(parse_listen(" off ", false), Ok(None));
        assert_eq!(
            parse_listen("[::1]:9000", false),
            Ok(Some("[::1]:9000".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("127.5.6.7:1", false),
            Ok(Some("127.5.6.7:1".parse().unwrap()))
        );
        assert_eq!(parse_listen("localhost:9184", false), Ok(Some(default)));
    }

    #[test]
    fn refuses_remote_unless_allowed() {
        for input in ["0.0.0.0:9184", "[::]:9184", "192.0.2.1:9184"] {
            let err = parse_listen(input, false).unwrap_err();
            assert!(matches!(err, ListenError::NotLoopback { .. }), "{input}");
            assert!(err.to_string().contains("non-loopback"));
            assert!(parse_listen(input, true).unwrap().is_some());
        }
    }

    #[test]
    fn refuses_garbage() {
        for input in [
            "",
            "9184",
            "127.0.0.1",
            "example.com:80",
            "127.0.0.1:99999",
            "on",
        ] {
            let err = parse_listen(input, true).unwrap_err();
            assert!(matches!(err, ListenError::Invalid { .. }), "{input}");
            assert!(
                err.to_string()
                    .starts_with("invalid metrics listen address")
            );
        }
    }
}
