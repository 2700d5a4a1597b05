//! Telling the service manager (systemd, `Type=notify`) how a daemon is
//! doing: ready, stopping, and alive (watchdog).
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is unset, so the daemons call
//! them unconditionally. A failed notification is logged at debug level and
//! otherwise ignored: the service manager's view is never a reason to stop.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// The variables a service manager sets for the process it started; a child
/// the daemon starts itself must not inherit them (it would notify on the
/// parent's behalf).
pub const SERVICE_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// `READY=1` with a one-line status.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `RELOADING=1` with the monotonic time systemd asks for.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => tracing::debug!(error = %e, "cannot read the monotonic clock"),
    }
}

/// The watchdog the service manager asked for (`WATCHDOG_USEC`, for this
/// process when `WATCHDOG_PID` is set): pings are due at half its period.
#[derive(Debug, Clone)]
pub struct Watchdog {
    every: Duration,
    last: Option<Instant>,
}

impl Watchdog {
    /// `None` when no watchdog is asked for.
    pub fn from_env() -> Option<Watchdog> {
        let period = sd_notify::watchdog_enabled()?;
        if period.is_zero() {
            return None;
        }
        Some(Watchdog {
            every: period / 2,
            last: None,
        })
    }

    /// How often pings are due: half the watchdog period.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Sends `WATCHDOG=1`.
    pub fn ping(&mut self) {
        send(&[NotifyState::Watchdog]);
        self.last = Some(Instant::now());
    }

    /// Sends `WATCHDOG=1` unless one was sent less than [`Self::every`] ago.
    pub fn ping_if_due(&mut self) {
        if self.last.is_none_or(|last| last.elapsed() >= self.every) {
            self.ping();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_are_rate_limited() {
        let mut w = Watchdog {
            every: Duration::from_secs(3600),
            last: None,
        };
        w.ping_if_due();
        let first = w.last;
        assert!(first.is_some());
        w.ping_if_due();
        assert_eq!(w.last, first, "a second ping within the period is not sent");
    }
}
