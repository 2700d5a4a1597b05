//! Standalone mode: the agent starts procmond, restarts it with backoff when
//! it dies, and stops it (SIGTERM, then SIGKILL after a grace period) on
//! shutdown. Processes are only ever signalled by the pid the agent started.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::stats::AgentStats;

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A procmond that ran this long before dying restarts without delay growth.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Supervised {
    pub(crate) program: PathBuf,
    /// procmond's arguments; a new value restarts it with them.
    pub(crate) args: watch::Receiver<Vec<OsString>>,
    pub(crate) stop_timeout: Duration,
    /// Told once the first procmond has been started (or failed to start):
    /// the agent drops root after it.
    pub(crate) started: Option<tokio::sync::oneshot::Sender<()>>,
    /// Set once the agent has dropped root: a procmond it started again
    /// could not open its root-owned state, so a dead one is reported, not
    /// restarted (the service manager restarts the agent, or runs procmond
    /// itself).
    pub(crate) unprivileged: Arc<std::sync::atomic::AtomicBool>,
}

/// Runs procmond until `shutdown`, restarting it whenever it exits or its
/// arguments change.
pub(crate) async fn supervise(
    mut spec: Supervised,
    stats: Arc<AgentStats>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let started = Instant::now();
        let args = spec.args.borrow_and_update().clone();
        let spawned = spawn(&spec.program, &args);
        if let Some(started) = spec.started.take() {
            let _ = started.send(());
        }
        match spawned {
            Ok(mut child) => {
                let pid = child.id();
                info!(pid, program = %spec.program.display(), "procmond started");
                let args_changed = async {
                    if spec.args.changed().await.is_err() {
                        // The sender is gone: the arguments never change.
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    () = args_changed => {
                        info!(pid, "procmond's arguments changed; restarting it");
                        stop(&mut child, spec.stop_timeout).await;
                        continue;
                    }
                    status = child.wait() => {
                        let ran = started.elapsed();
                        if ran >= HEALTHY_RUN {
                            backoff = BACKOFF_START;
                        }
                        match status {
                            Ok(status) => warn!(pid, %status, ran_ms = ran.as_millis() as u64, restart_in_ms = backoff.as_millis() as u64, "procmond exited; restarting"),
                            Err(e) => warn!(pid, error = %e, "cannot wait for procmond; restarting"),
                        }
                    }
                    () = shutdown.cancelled() => {
                        stop(&mut child, spec.stop_timeout).await;
                        return;
                    }
                }
            }
            Err(e) => {
                error!(program = %spec.program.display(), error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot start procmond");
            }
        }
        if spec.unprivileged.load(Ordering::Relaxed) {
            error!(
                "procmond is gone and this agent, no longer root, cannot start it with its \
                 privileges: restart sentinelagent, or run procmond as its own service \
                 (packaging/systemd) with --collector external"
            );
            shutdown.cancelled().await;
            return;
        }
        stats.collector_restarts.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn spawn(program: &PathBuf, args: &[OsString]) -> std::io::Result<Child> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // Under systemd the agent is the unit's main process; procmond must not
    // notify (or feed the watchdog) on its behalf.
    for var in sentineld_common::notify::SERVICE_ENV {
        command.env_remove(var);
    }
    // glibc gives procmond's scan thread a malloc arena of its own; with
    // one arena for the whole process its peak RSS at 10,000 processes is
    // about 5 MiB lower (docs/performance.md). An explicit setting wins.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        command.env("MALLOC_ARENA_MAX", "1");
    }
    command.spawn()
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
async fn stop(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return; // already reaped
    };
    let Ok(raw) = i32::try_from(pid) else {
        let _ = child.kill().await;
        return;
    };
    match kill(Pid::from_raw(raw), Signal::SIGTERM) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM) => {
            // The agent dropped root: procmond, started with
            // --exit-with-parent, stops when the agent exits.
            info!(pid, "procmond runs as root; it stops when the agent exits");
            return;
        }
        Err(e) => warn!(pid, error = %e, "cannot send SIGTERM to procmond"),
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => info!(pid, %status, "procmond stopped"),
        Ok(Err(e)) => warn!(pid, error = %e, "cannot wait for procmond"),
        Err(_) => {
            warn!(
                pid,
                grace_ms = grace.as_millis() as u64,
                "procmond did not stop in time; killing it"
            );
            let _ = child.kill().await;
        }
    }
}
