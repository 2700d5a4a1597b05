//! The HTTP/1.1 server: accept loop, connection limits and timeouts, and
//! routing by hand (method + path).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::http::api::{self, ApiError, ErrorBody, Query};
use crate::http::metrics::{MetricsFormat, render_metrics};
use crate::http::state::{HistoryError, StateSource};

/// How the endpoint behaves. Build with [`HttpConfig::new`] and adjust.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The scan interval in force: `/healthz` fails when the last scan is
    /// older than three of them.
    pub scan_interval: Duration,
    /// How many processes `/metrics` exports by CPU and by memory (the union
    /// of both sets, so at most twice this). Default 50.
    pub top_n: usize,
    /// Connections served at once; further ones wait in the listen backlog.
    /// Default 64.
    pub max_connections: usize,
    /// Time a client has to send a request's headers. Default 5 s.
    pub header_read_timeout: Duration,
    /// A connection is closed (gracefully) after this long, so slow or idle
    /// clients cannot hold a slot forever. Default 60 s.
    pub connection_max_age: Duration,
    /// On shutdown or at `connection_max_age`, how long an in-flight request
    /// may still take before its connection is dropped. Default 5 s.
    pub shutdown_grace: Duration,
    /// Largest `limit` of `/api/processes/{pid}/history`; larger ones are
    /// clamped. Default 10,000.
    pub max_history_limit: usize,
}

impl HttpConfig {
    /// Defaults, with the agent's scan interval.
    pub fn new(scan_interval: Duration) -> Self {
        Self {
            scan_interval,
            top_n: 50,
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            connection_max_age: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            max_history_limit: 10_000,
        }
    }
}

/// Largest request head (request line and headers) read, in bytes; larger
/// ones are answered with 431 by hyper. hyper's minimum is 8 KiB.
const MAX_HEAD_BYTES: usize = 16 * 1024;

#[derive(Debug)]
struct Context {
    state: Arc<dyn StateSource>,
    config: HttpConfig,
}

impl std::fmt::Debug for dyn StateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateSource")
    }
}

/// Serves `/metrics`, `/healthz` and `/api/...` on `listener` until
/// `shutdown` is cancelled, then stops accepting, lets in-flight requests
/// finish for up to `config.shutdown_grace`, and returns.
///
/// Never returns early: accept errors (e.g. out of file descriptors) are
/// logged and retried with a backoff.
pub async fn serve(
    listener: TcpListener,
    state: Arc<dyn StateSource>,
    config: HttpConfig,
    shutdown: CancellationToken,
) {
    match listener.local_addr() {
        Ok(addr) => info!(%addr, top_n = config.top_n, "serving metrics and the process api"),
        Err(e) => warn!(error = %e, "serving metrics, but the listen address is unknown"),
    }
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let grace = config.shutdown_grace;
    let context = Arc::new(Context { state, config });
    let initial_backoff = Duration::from_millis(10);
    let mut backoff = initial_backoff;
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = initial_backoff;
                tracker.spawn(connection(
                    stream,
                    peer,
                    Arc::clone(&context),
                    shutdown.clone(),
                    permit,
                ));
            }
            Err(e) => {
                warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accepting an http connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    tracker.close();
    // Each connection bounds itself by the same grace; this is a backstop.
    if tokio::time::timeout(grace + Duration::from_secs(1), tracker.wait())
        .await
        .is_err()
    {
        warn!(
            connections = tracker.len(),
            "http connections still open after the shutdown grace period"
        );
    }
    info!("http endpoint stopped");
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<Context>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let io = TokioIo::new(stream);
    let config = &context.config;
    let service_context = Arc::clone(&context);
    let service = service_fn(move |request| {
        let context = Arc::clone(&service_context);
        async move { Ok::<_, Infallible>(route(&context, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let max_age = tokio::time::sleep(config.connection_max_age);
    tokio::pin!(max_age);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "http connection ended with an error");
            }
            return;
        }
        () = shutdown.cancelled() => {}
        () = &mut max_age => debug!(%peer, "closing an http connection at its maximum age"),
    }
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(config.shutdown_grace, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(%peer, error = %e, "http connection ended with an error"),
        Err(_elapsed) => debug!(%peer, "dropping an http connection after the grace period"),
    }
}

type HttpResponse = Response<Full<Bytes>>;

/// The routes, for 405 vs 404.
enum Route<'a> {
    Metrics,
    Health,
    Processes,
    History(&'a str),
    Groups,
}

fn match_path(path: &str) -> Option<Route<'_>> {
    match path {
        "/metrics" => Some(Route::Metrics),
        "/healthz" => Some(Route::Health),
        "/api/processes" => Some(Route::Processes),
        "/api/groups" => Some(Route::Groups),
        _ => path
            .strip_prefix("/api/processes/")
            .and_then(|rest| rest.strip_suffix("/history"))
            .filter(|pid| !pid.contains('/'))
            .map(Route::History),
    }
}

async fn route(context: &Context, request: Request<Incoming>) -> HttpResponse {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = match match_path(&path) {
        None => error_response(&ApiError::not_found(format!("no such endpoint: {path}"))),
        Some(_) if method != Method::GET && method != Method::HEAD => {
            let mut response = error_response(&ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: format!("method {method} not allowed on {path}: use GET"),
            });
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        Some(route) => match answer(context, route, &request).await {
            Ok(response) => response,
            Err(e) => error_response(&e),
        },
    };
    debug!(
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "http request"
    );
    response
}

async fn answer(
    context: &Context,
    route: Route<'_>,
    request: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(request.uri().query())?;
    let snapshot = context.state.snapshot();
    let now = Instant::now();
    match route {
        Route::Metrics => {
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = MetricsFormat::from_accept(accept);
            let body =
                render_metrics(&snapshot, context.config.top_n, now, format).map_err(|e| {
                    warn!(error = %e, "rendering metrics failed");
                    ApiError::internal(e.to_string())
                })?;
            Ok(with_type(
                StatusCode::OK,
                Bytes::from(body),
                format.content_type(),
            ))
        }
        Route::Health => {
            let (status, body) = api::health(&snapshot, context.config.scan_interval, now);
            json(status, &body)
        }
        Route::Processes => json(StatusCode::OK, &api::processes(&snapshot, &query)),
        Route::Groups => json(StatusCode::OK, &api::group(&snapshot, &query)?),
        Route::History(segment) => {
            let pid = api::parse_pid(segment)?;
            let limit = api::history_limit(&query, context.config.max_history_limit)?;
            let state = Arc::clone(&context.state);
            let points = tokio::task::spawn_blocking(move || state.history(pid, limit))
                .await
                .map_err(|e| {
                    warn!(pid, error = %e, "history reader task failed");
                    ApiError::internal(format!("reading the history of pid {pid} failed"))
                })?;
            match points {
                Ok(points) => json(
                    StatusCode::OK,
                    &HistoryBody {
                        pid,
                        count: points.len(),
                        points: &points,
                    },
                ),
                Err(e @ HistoryError::NotFound { .. }) => Err(ApiError::not_found(e.to_string())),
                Err(e) => {
                    warn!(pid, error = %e, source = ?std::error::Error::source(&e), "reading process history failed");
                    Err(ApiError::internal(e.to_string()))
                }
            }
        }
    }
}

#[derive(Debug, Serialize)]
struct HistoryBody<'a> {
    pid: u32,
    count: usize,
    points: &'a [crate::http::state::HistoryPoint],
}

fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Result<HttpResponse, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| {
        warn!(error = %e, "serializing a json answer failed");
        ApiError::internal("serializing the answer failed")
    })?;
    Ok(with_type(status, Bytes::from(bytes), "application/json"))
}

fn error_response(error: &ApiError) -> HttpResponse {
    let body = serde_json::to_vec(&ErrorBody {
        error: &error.message,
    })
    .unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec());
    with_type(error.status, Bytes::from(body), "application/json")
}
