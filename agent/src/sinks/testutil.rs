//! Helpers shared by the sinks' tests.

use std::sync::Arc;

use crate::sinks::alert::{Alert, Severity};

/// An alert with every field set.
pub(crate) fn sample() -> Alert {
    Alert {
        id: "9f2c4e1a7b3d5f60".into(),
        rule_id: "shell-from-web".into(),
        title: "shell spawned by web server".into(),
        description: "nginx started /bin/sh".into(),
        severity: Severity::High,
        tags: vec!["execution".into(), "T1059".into()],
        time: "2026-05-01T12:00:00Z".into(),
        host: "web-1".into(),
        process: serde_json::json!({"pid": 4242, "name": "sh"}),
        parent: Some(serde_json::json!({"pid": 100, "name": "nginx"})),
    }
}

/// The sample alert with its id set to `id`.
pub(crate) fn alert(id: &str) -> Arc<Alert> {
    Arc::new(Alert {
        id: id.to_owned(),
        ..sample()
    })
}

/// What the test HTTP server does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Answer with this status and `connection: close`.
    Status(u16),
    /// Read the request and never answer.
    Hang,
    /// Read the request and close the connection without answering.
    Close,
}

/// One request the test server read.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Captured {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers the n-th request with
/// `script[n]` (the last entry repeats) and keeps what it read.
#[derive(Debug)]
pub(crate) struct TestServer {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) requests: Arc<std::sync::Mutex<Vec<Captured>>>,
}

impl TestServer {
    pub(crate) async fn start(script: Vec<Reply>) -> Self {
        Self::start_with(script, None).await
    }

    /// With `tls`, every connection is TLS first.
    pub(crate) async fn start_with(
        script: Vec<Reply>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test server binds");
        let addr = listener.local_addr().expect("bound socket has an address");
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let script = Arc::new(script);
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, script, counter, tls) =
                    (seen.clone(), script.clone(), counter.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, seen, script, counter).await;
                            }
                        }
                        None => serve(stream, seen, script, counter).await,
                    }
                });
            }
        });
        Self { addr, requests }
    }

    pub(crate) fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    pub(crate) fn count(&self) -> usize {
        self.requests.lock().expect("lock is not poisoned").len()
    }

    pub(crate) fn captured(&self) -> Vec<Captured> {
        self.requests.lock().expect("lock is not poisoned").clone()
    }
}

async fn serve<S>(
    mut stream: S,
    seen: Arc<std::sync::Mutex<Vec<Captured>>>,
    script: Arc<Vec<Reply>>,
    counter: Arc<std::sync::atomic::AtomicUsize>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 1 << 20 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut captured = Captured {
        head,
        body: buf[head_end..].to_vec(),
    };
    let len: usize = captured
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while captured.body.len() < len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => captured.body.extend_from_slice(&chunk[..n]),
        }
    }
    seen.lock().expect("lock is not poisoned").push(captured);
    let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let reply = script
        .get(n)
        .or(script.last())
        .copied()
        .unwrap_or(Reply::Status(200));
    match reply {
        Reply::Status(code) => {
            let body = if code >= 300 { "nope" } else { "" };
            let response = format!(
                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Reply::Hang => std::future::pending::<()>().await,
        Reply::Close => drop(stream),
    }
}
