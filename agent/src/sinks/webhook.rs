//! HTTP POST of each alert's JSON to a URL, over http or https (rustls).
//!
//! 2xx is delivered; 408, 429 and 5xx, connection errors, closed
//! connections and timeouts are retried; any other status is a permanent
//! failure (redirects are not followed).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::sinks::alert::Alert;
use crate::sinks::settings::WebhookSettings;
use crate::sinks::sink::{Retry, Sink};

/// Most bytes of a response body read (the rest is discarded).
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Most characters of a failed response's body kept in the error.
const MAX_ERROR_BODY: usize = 200;

/// Why the webhook sink could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookBuildError {
    #[error("could not read CA certificates from `{}`; give a PEM file", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("`{}` holds no usable CA certificate; give a PEM file with at least one", path.display())]
    NoCaCertificate { path: PathBuf },
    #[error(
        "could not load the system's CA certificates; install them (ca-certificates) or set `ca_file`"
    )]
    NativeRoots(#[source] io::Error),
    #[error("could not set up TLS")]
    Tls(#[source] rustls::Error),
}

/// Why the webhook sink did not deliver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("could not encode the alert as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("webhook answered {status}{}", body_suffix(body))]
    Status { status: StatusCode, body: String },
    #[error("webhook did not answer within {timeout:?}")]
    Timeout { timeout: Duration },
    #[error("could not build the webhook request")]
    Build(#[source] hyper::http::Error),
    #[error("could not send the alert to the webhook")]
    Request(#[source] hyper_util::client::legacy::Error),
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl Retry for WebhookError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Encode(_) | Self::Build(_) => false,
            Self::Status { status, .. } => is_retryable_status(*status),
            Self::Timeout { .. } | Self::Request(_) => true,
        }
    }
}

/// 408, 429 and 5xx may succeed later; other failures will not.
pub fn is_retryable_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The running webhook sink.
pub struct WebhookSink {
    settings: WebhookSettings,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.settings.redacted_url())
            .field("timeout", &self.settings.timeout())
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// Builds the client. For an https url this loads the CA certificates:
    /// the `ca_file` when set, else the system's.
    pub fn new(settings: WebhookSettings) -> Result<Self, WebhookBuildError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match (settings.is_https(), settings.ca_file()) {
            (true, None) => builder
                .with_provider_and_native_roots(provider)
                .map_err(WebhookBuildError::NativeRoots)?,
            (true, Some(path)) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                    .map_err(|source| WebhookBuildError::CaFile {
                        path: path.to_path_buf(),
                        source,
                    })?;
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(WebhookBuildError::NoCaCertificate {
                        path: path.to_path_buf(),
                    });
                }
                builder.with_tls_config(tls_config(provider, roots)?)
            }
            // Plain http never uses TLS.
            (false, _) => {
                builder.with_tls_config(tls_config(provider, rustls::RootCertStore::empty())?)
            }
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.timeout()));
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(Self { settings, client })
    }

    async fn post(&self, body: Bytes) -> Result<(), WebhookError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.settings.url().clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("sentineld/", env!("CARGO_PKG_VERSION"))),
            )
            .body(Full::new(body));
        let request = request.map_err(WebhookError::Build)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(WebhookError::Request)?;
        let status = response.status();
        // Read the body so the connection can be reused; a bad body does
        // not change what the status said.
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let body: String = String::from_utf8_lossy(&body)
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_ERROR_BODY)
            .collect();
        Err(WebhookError::Status { status, body })
    }
}

fn tls_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: rustls::RootCertStore,
) -> Result<rustls::ClientConfig, WebhookBuildError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(WebhookBuildError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Sink for WebhookSink {
    type Error = WebhookError;

    fn max_batch(&self) -> usize {
        1
    }

    async fn send(&mut self, batch: &[Arc<Alert>]) -> Result<(), WebhookError> {
        for alert in batch {
            let body = serde_json::to_vec(&**alert).map_err(WebhookError::Encode)?;
            let timeout = self.settings.timeout();
            tokio::time::timeout(timeout, self.post(Bytes::from(body)))
                .await
                .map_err(|_| WebhookError::Timeout { timeout })??;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::sinks::testutil::{Reply, TestServer, alert};

    fn sink(url: &str, timeout_ms: u64) -> WebhookSink {
        let settings = WebhookSettings::new(url, Duration::from_millis(timeout_ms), None).unwrap();
        WebhookSink::new(settings).unwrap()
    }

    #[tokio::test]
    async fn posts_the_alert_json() {
        let server = TestServer::start(vec![Reply::Status(200)]).await;
        let mut sink = sink(&server.url("http", "/hook?token=t"), 5_000);
        sink.send(&[alert("a1")]).await.unwrap();
        let req = &server.captured()[0];
        assert!(
            req.head.starts_with("POST /hook?token=t HTTP/1.1\r\n"),
            "{}",
            req.head
        );
        assert_eq!(req.header("content-type").unwrap(), "application/json");
        let back: Alert = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(back.id, "a1");
    }

    #[tokio::test]
    async fn statuses_are_classified() {
        for (code, retryable) in [
            (500, true),
            (503, true),
            (408, true),
            (429, true),
            (400, false),
            (404, false),
            (301, false),
        ] {
            let server = TestServer::start(vec![Reply::Status(code)]).await;
            let mut sink = sink(&server.url("http", "/"), 5_000);
            let err = sink.send(&[alert("a1")]).await.unwrap_err();
            assert!(matches!(err, WebhookError::Status { status, .. } if status.as_u16() == code));
            assert_eq!(err.is_retryable(), retryable, "{code}");
        }
    }

    #[tokio::test]
    async fn transport_failures_are_retryable() {
        let server = TestServer::start(vec![Reply::Close]).await;
        let err = sink(&server.url("http", "/"), 5_000)
            .send(&[alert("a1")])
            .await
            .unwrap_err();
        assert!(matches!(err, WebhookError::Request(_)), "{err:?}");
        assert!(err.is_retryable());

        let server = TestServer::start(vec![Reply::Hang]).await;
        let err = sink(&server.url("http", "/"), 100)
            .send(&[alert("a1")])
            .await
            .unwrap_err();
        assert!(matches!(err, WebhookError::Timeout { .. }), "{err:?}");
        assert!(err.is_retryable());

        // Nobody listens on a port just released.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = sink(&format!("http://127.0.0.1:{port}/"), 5_000)
            .send(&[alert("a1")])
            .await
            .unwrap_err();
        assert!(matches!(err, WebhookError::Request(_)), "{err:?}");
        assert!(err.is_retryable());
        assert!(
            crate::sinks::sink::error_chain(&err).contains("onnect"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn https_with_a_ca_file() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let server = TestServer::start_with(vec![Reply::Status(204)], Some(acceptor)).await;
        let url = format!("https://localhost:{}/hook", server.addr.port());

        let settings = WebhookSettings::new(&url, Duration::from_secs(5), Some(ca)).unwrap();
        WebhookSink::new(settings)
            .unwrap()
            .send(&[alert("tls1")])
            .await
            .unwrap();
        let back: Alert = serde_json::from_slice(&server.captured()[0].body).unwrap();
        assert_eq!(back.id, "tls1");

        // Without the CA the server is not trusted, and that is retried
        // like any connection error.
        let other_ca = dir.path().join("other.pem");
        let other = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        std::fs::write(&other_ca, other.pem()).unwrap();
        let settings = WebhookSettings::new(&url, Duration::from_secs(5), Some(other_ca)).unwrap();
        let err = WebhookSink::new(settings)
            .unwrap()
            .send(&[alert("tls2")])
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert_eq!(server.count(), 1);
    }

    #[test]
    fn bad_ca_file_is_a_build_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("empty.pem");
        std::fs::write(&ca, "not a pem").unwrap();
        let settings =
            WebhookSettings::new("https://h/", Duration::from_secs(1), Some(ca)).unwrap();
        let err = WebhookSink::new(settings).unwrap_err();
        assert!(
            matches!(err, WebhookBuildError::NoCaCertificate { .. }),
            "{err:?}"
        );
        let missing = dir.path().join("missing.pem");
        let settings =
            WebhookSettings::new("https://h/", Duration::from_secs(1), Some(missing)).unwrap();
        let err = WebhookSink::new(settings).unwrap_err();
        assert!(matches!(err, WebhookBuildError::CaFile { .. }), "{err:?}");
    }
}
