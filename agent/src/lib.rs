//! sentinelagent: the unprivileged half of SentinelD.
//!
//! It owns the store: it accepts procmond's frames on the collector socket,
//! writes each batch in one redb transaction, and acknowledges it. In
//! standalone mode it also starts and supervises procmond.

pub mod config;
pub mod detect;
pub mod http;
pub(crate) mod ingest;
pub mod lockfile;
pub mod observe;
pub mod privilege;
pub mod reconfigure;
pub mod retention;
pub mod rules;
pub(crate) mod server;
pub mod sinks;
pub mod stats;
pub mod store;
pub(crate) mod supervisor;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::ListenerOptions;
use interprocess::local_socket::tokio::prelude::*;
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::AgentConfig;
use crate::detect::ReloadTrigger;
use crate::lockfile::{LockError, StateLock};
pub use crate::reconfigure::ConfigUpdates;
use crate::sinks::Dispatcher;
use crate::stats::AgentStats;
use crate::store::{Store, StoreError};

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the storage thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot load the rules (fix or remove what is named, or use --rules-dir):\n{0}")]
    Rules(#[from] detect::LoadError),
    #[error(transparent)]
    Privilege(#[from] privilege::PrivilegeError),
    #[error(
        "the socket's directory {dir} is writable by every user, who could replace the socket: \
         put it in a directory only the agent can write (the default is in the state directory)"
    )]
    SocketDirWorldWritable { dir: PathBuf },
    #[error("cannot start the alert sinks: {0}")]
    Sinks(#[from] sinks::delivery::BuildError),
    #[error(
        "cannot serve metrics on {addr}: {source} (pick another --metrics-listen, or --metrics-listen off)"
    )]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

fn create_private_dir(path: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| AgentError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

/// A socket in a directory anyone may write (`/tmp`) can be removed and
/// replaced by anyone: refused, whatever the sticky bit says.
fn refuse_world_writable(dir: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir)
        .map_err(|source| AgentError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o002 != 0 {
        return Err(AgentError::SocketDirWorldWritable {
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

fn listen(path: &Path) -> Result<LocalSocketListener, AgentError> {
    let err = |source| AgentError::Listen {
        path: path.to_path_buf(),
        source,
    };
    // The state lock is held, so a socket file left here belongs to a dead
    // agent of this state directory: remove it rather than fail.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let name = path.to_fs_name::<GenericFilePath>().map_err(err)?;
    ListenerOptions::new()
        .name(name)
        // Owner and group: under systemd procmond (root, without
        // CAP_DAC_OVERRIDE) reaches the agent user's socket through its
        // group (SupplementaryGroups= in procmond.service). The directory
        // is 0700 and the agent checks every peer's uid.
        .mode(0o660)
        .create_tokio()
        .map_err(err)
}

/// Runs the agent until `shutdown` is cancelled, then stops procmond,
/// finishes the batches in flight and returns.
///
/// `reload` asks for the rules to be read again (the caller wires SIGHUP to
/// it; changes in the rules directory trigger it too). `updates` brings
/// configurations read again: what can change at run time is applied, the
/// rest is logged as needing a restart ([`reconfigure`]).
///
/// Under systemd (`Type=notify`) it reports ready once the store is open
/// and the socket bound, pings the watchdog if one is set, and reports
/// stopping on shutdown.
pub async fn run(
    config: AgentConfig,
    shutdown: CancellationToken,
    reload: ReloadTrigger,
    updates: ConfigUpdates,
) -> Result<(), AgentError> {
    let layout = &config.layout;
    // Decided first, so a missing user stops the agent before anything
    // starts.
    let drop_to = privilege::plan(config.user.as_deref(), config.allow_root)?;
    create_private_dir(&layout.state_dir)?;
    let _lock = StateLock::acquire(&layout.lock())?;
    if let Some(dir) = layout.socket.parent() {
        create_private_dir(dir)?;
        refuse_world_writable(dir)?;
    }
    let rules = detect::load(&config.rules)?;
    info!(
        rules = rules.1.rules.len(),
        enabled = rules.1.rules.enabled_len(),
        builtin = config.rules.builtin,
        dir = %config.rules.dir.as_deref().map(|d| d.display().to_string()).unwrap_or_default(),
        "rules loaded"
    );
    let store = Store::open(&layout.store())?;
    let stats = Arc::new(AgentStats::default());
    let (dispatcher, deliveries) = Dispatcher::start(&config.sinks, shutdown.clone()).await?;
    info!(sinks = ?dispatcher.sink_names(), "alert sinks started");
    let state = Arc::new(observe::AgentState::new(
        Arc::clone(&stats),
        dispatcher.clone(),
        store::StoreReader::from_writer(&store),
    ));
    let http = match config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?;
            let mut http_config = http::HttpConfig::new(config.scan_interval);
            http_config.top_n = config.metrics_top_n;
            let source: Arc<dyn http::StateSource> = state.clone();
            Some(tokio::spawn(http::serve(
                listener,
                source,
                http_config,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let sinks = dispatcher.clone();
    let (detect, detector) = detect::spawn(
        config.rules.clone(),
        rules,
        store.alert_writer(),
        dispatcher,
        deliveries,
        Arc::clone(&stats),
        reload,
        state,
    )
    .map_err(AgentError::Thread)?;
    let (retention_days, retention_rx) = tokio::sync::watch::channel(config.retention_days);
    let retention = tokio::spawn(retention::run(
        store.pruner(),
        retention_rx,
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    let (ingest, writer) =
        ingest::spawn(store, Arc::clone(&stats), Some(detect)).map_err(AgentError::Thread)?;
    let listener = listen(&layout.socket)?;
    info!(
        state_dir = %layout.state_dir.display(),
        socket = %layout.socket.display(),
        "sentinelagent listening"
    );

    if config.procmond.is_some() {
        // Made here, root's, so procmond finds it whoever owns the state
        // directory by the time it starts.
        create_private_dir(&layout.procmond_dir())?;
    }
    let mut procmond_args_tx = None;
    let unprivileged = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let supervisor = config.procmond.clone().map(|program| {
        let (args_tx, args) = tokio::sync::watch::channel(procmond_args(&config));
        // Once root is dropped, a new scan interval cannot restart procmond
        // with its privileges: the reload says a restart is needed.
        if drop_to.is_none() {
            procmond_args_tx = Some(args_tx);
        }
        let spec = supervisor::Supervised {
            program,
            args,
            stop_timeout: config.stop_timeout,
            started: Some(started_tx),
            unprivileged: Arc::clone(&unprivileged),
        };
        tokio::spawn(supervisor::supervise(
            spec,
            Arc::clone(&stats),
            shutdown.clone(),
        ))
    });
    if let Some(target) = &drop_to {
        // procmond is started with root's capabilities first (or there is
        // none to start: external mode).
        if supervisor.is_some() {
            let _ = started.await;
        }
        // The socket (and its directory, which may be a shared one) stays
        // root's: procmond, root without CAP_DAC_OVERRIDE, connects as its
        // owner; the listening socket is already open.
        let owned = privilege::owned_paths(
            &layout.state_dir,
            &[layout.procmond_dir(), layout.socket.clone()],
        );
        privilege::hand_over(&owned, target)?;
        unprivileged.store(true, std::sync::atomic::Ordering::Relaxed);
        privilege::drop_to(target)?;
    }
    let reconfigure = tokio::spawn(reconfigure::apply_updates(
        updates,
        config.clone(),
        reconfigure::Targets {
            dispatcher: sinks,
            procmond_args: procmond_args_tx,
            retention_days,
        },
        shutdown.clone(),
    ));
    sentineld_common::notify::ready("listening");
    let watchdog = sentineld_common::notify::Watchdog::from_env()
        .map(|watchdog| tokio::spawn(ping_watchdog(watchdog, shutdown.clone())));

    let ctx = Arc::new(server::ServerContext {
        ingest,
        stats: Arc::clone(&stats),
        handshake_timeout: config.handshake_timeout,
        collector_uids: config.collector_uids.clone(),
        pending_records: config.max_pending_records,
        reject_log: server::RejectLog::default(),
    });
    server::serve(listener, ctx, config.max_connections, shutdown.clone()).await;
    sentineld_common::notify::stopping();
    let _ = reconfigure.await;
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }

    if let Some(supervisor) = supervisor {
        let _ = supervisor.await;
    }
    if let Some(http) = http {
        let _ = http.await;
    }
    let _ = retention.await;
    // Every handle is gone once the server returned: the writer drains and
    // ends, then the detector (its last sender gone) stores the sinks' last
    // delivery records and ends.
    let _ = tokio::task::spawn_blocking(move || {
        let _ = writer.join();
        let _ = detector.join();
    })
    .await;
    let _ = std::fs::remove_file(&layout.socket);
    info!("sentinelagent stopped");
    Ok(())
}

/// Pings the service manager's watchdog from the runtime until `shutdown`:
/// a stalled runtime misses the pings and systemd restarts the agent.
async fn ping_watchdog(
    mut watchdog: sentineld_common::notify::Watchdog,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(watchdog.every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => watchdog.ping(),
            () = shutdown.cancelled() => return,
        }
    }
}

pub(crate) fn procmond_args(config: &AgentConfig) -> Vec<OsString> {
    let layout = &config.layout;
    vec![
        "--state-dir".into(),
        layout.procmond_dir().into_os_string(),
        "--socket".into(),
        layout.socket.clone().into_os_string(),
        "--scan-interval".into(),
        humantime::format_duration(config.scan_interval)
            .to_string()
            .into(),
        "--exit-with-parent".into(),
    ]
}
