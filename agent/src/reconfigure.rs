//! Applying a configuration read again at run time (SIGHUP): the alert
//! sinks are replaced, the supervised procmond is restarted with a new scan
//! interval, a new retention period runs a retention pass at once, and
//! every other change is logged as waiting for a restart.

use std::ffi::OsString;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::AgentConfig;
use crate::sinks::Dispatcher;

/// Configurations read again while the agent runs; the caller (SIGHUP in
/// `main`) sends, the agent applies what can change at run time.
pub type ConfigUpdates = mpsc::Receiver<AgentConfig>;

/// What a reload can act on.
pub(crate) struct Targets {
    pub(crate) dispatcher: Dispatcher,
    /// The supervised procmond's arguments (standalone mode); a new value
    /// restarts it.
    pub(crate) procmond_args: Option<watch::Sender<Vec<OsString>>>,
    /// The retention period; a new value runs a retention pass with it.
    pub(crate) retention_days: watch::Sender<u32>,
}

/// Applies each configuration from `updates` until `shutdown`.
pub(crate) async fn apply_updates(
    mut updates: ConfigUpdates,
    mut running: AgentConfig,
    targets: Targets,
    shutdown: CancellationToken,
) {
    loop {
        let new = tokio::select! {
            update = updates.recv() => match update {
                Some(config) => config,
                None => return,
            },
            () = shutdown.cancelled() => return,
        };
        apply(&mut running, &new, &targets).await;
    }
}

async fn apply(running: &mut AgentConfig, new: &AgentConfig, targets: &Targets) {
    let changes = running.changes(new);
    if changes == Default::default() {
        info!("configuration reloaded; unchanged");
        return;
    }
    if changes.sinks {
        match targets.dispatcher.replace(&new.sinks).await {
            Ok(()) => {
                running.sinks = new.sinks.clone();
                info!(sinks = ?targets.dispatcher.sink_names(), "alert sinks reloaded");
            }
            Err(e) => error!(
                "alert sinks not reloaded; the sinks in force stay: {}",
                sentineld_common::error_chain(&e)
            ),
        }
    }
    if changes.scan_interval {
        let interval = humantime::format_duration(new.scan_interval).to_string();
        match &targets.procmond_args {
            Some(args) => {
                running.scan_interval = new.scan_interval;
                args.send_replace(crate::procmond_args(running));
                info!(
                    scan_interval = %interval,
                    "scan interval changed; restarting procmond with it"
                );
            }
            None => warn!(
                scan_interval = %interval,
                "scan interval changed, but procmond runs separately (collector = external): \
                 restart it with --scan-interval {interval}"
            ),
        }
    }
    if changes.retention_days {
        running.retention_days = new.retention_days;
        targets.retention_days.send_replace(new.retention_days);
        info!(
            retention_days = new.retention_days,
            "retention period changed; applying it now"
        );
    }
    if !changes.need_restart.is_empty() {
        warn!(
            keys = %changes.need_restart.join(", "),
            "configuration changed; these take effect when the agent restarts"
        );
    }
}
