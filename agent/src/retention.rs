//! The retention task: a pass over the store at start-up, every
//! [`PASS_EVERY`], and at once when a reload changes the retention period.
//! The pass itself ([`crate::store::Pruner`]) runs on a blocking thread in
//! bounded transactions and stops between two of them at shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::stats::AgentStats;
use crate::store::Pruner;

/// Default days the store keeps what is no longer live.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// Time between two passes.
pub const PASS_EVERY: Duration = Duration::from_secs(60 * 60);

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The cutoff of a `days` retention at `now_ms`: what is older goes.
pub fn cutoff_ms(now_ms: i64, days: u32) -> i64 {
    now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS))
}

/// Runs passes until `shutdown`; `days` carries the retention period (0:
/// keep everything) and wakes the task when a reload changes it.
pub(crate) async fn run(
    pruner: Pruner,
    mut days: watch::Receiver<u32>,
    stats: Arc<AgentStats>,
    shutdown: CancellationToken,
) {
    loop {
        let period = *days.borrow_and_update();
        if period == 0 {
            info!("retention off (retention_days = 0): the store keeps everything");
        } else {
            pass(&pruner, period, &stats, &shutdown).await;
        }
        tokio::select! {
            () = tokio::time::sleep(PASS_EVERY) => {}
            changed = days.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}

async fn pass(pruner: &Pruner, days: u32, stats: &AgentStats, shutdown: &CancellationToken) {
    let cutoff = cutoff_ms(sentineld_common::time::now_millis(), days);
    let worker = pruner.clone();
    let token = shutdown.clone();
    let started = std::time::Instant::now();
    let result =
        tokio::task::spawn_blocking(move || worker.prune(cutoff, || token.is_cancelled())).await;
    let took = started.elapsed();
    match result {
        Ok(Ok(pruned)) => {
            stats.retention_passes.fetch_add(1, Ordering::Relaxed);
            stats
                .retention_pruned_samples
                .fetch_add(pruned.samples, Ordering::Relaxed);
            stats
                .retention_pruned_instances
                .fetch_add(pruned.instances, Ordering::Relaxed);
            stats
                .retention_pruned_scans
                .fetch_add(pruned.scans, Ordering::Relaxed);
            if pruned.is_empty() {
                debug!(retention_days = days, ?took, "retention: nothing to remove");
            } else {
                info!(
                    retention_days = days,
                    samples = pruned.samples,
                    instances = pruned.instances,
                    scans = pruned.scans,
                    transactions = pruned.transactions,
                    interrupted = pruned.interrupted,
                    ?took,
                    "retention: removed what is older than the retention period"
                );
            }
        }
        Ok(Err(e)) => {
            stats.retention_failures.fetch_add(1, Ordering::Relaxed);
            error!(
                "retention pass failed (retried in {}): {}",
                humantime::format_duration(PASS_EVERY),
                sentineld_common::error_chain(&e)
            );
        }
        Err(e) => {
            stats.retention_failures.fetch_add(1, Ordering::Relaxed);
            error!(error = %e, "retention pass did not finish");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_is_days_before_now_and_never_overflows() {
        assert_eq!(cutoff_ms(10 * DAY_MS, 3), 7 * DAY_MS);
        assert_eq!(cutoff_ms(i64::MIN + 5, 36_500), i64::MIN);
    }
}
