//! The circuit breaker: a pure state machine, told the time by its caller.

use serde::{Deserialize, Serialize};
use tokio::time::{Duration, Instant};

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakerState {
    /// Deliveries go through.
    Closed,
    /// Too many consecutive failures: deliveries wait for the cool-down.
    Open,
    /// Cool-down over: one probe goes through; its outcome closes or
    /// reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    half_open: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            consecutive_failures: 0,
            open_until: None,
            half_open: false,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match (self.open_until, self.half_open) {
            (Some(_), _) => BreakerState::Open,
            (None, true) => BreakerState::HalfOpen,
            (None, false) => BreakerState::Closed,
        }
    }

    /// `Ok` if an attempt may go now, else the time to wait for.
    pub(crate) fn check(&mut self, now: Instant) -> Result<(), Instant> {
        match self.open_until {
            Some(until) if now < until => Err(until),
            Some(_) => {
                self.open_until = None;
                self.half_open = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub(crate) fn on_success(&mut self) {
        self.consecutive_failures = 0;
        self.open_until = None;
        self.half_open = false;
    }

    /// Returns whether this failure opened the breaker.
    pub(crate) fn on_failure(&mut self, now: Instant) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.half_open || self.consecutive_failures >= self.threshold {
            self.half_open = false;
            self.open_until = Some(now + self.cooldown);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_probes() {
        let t0 = Instant::now();
        let cooldown = Duration::from_secs(30);
        let mut b = Breaker::new(3, cooldown);
        assert_eq!(b.check(t0), Ok(()));
        assert!(!b.on_failure(t0));
        assert!(!b.on_failure(t0));
        assert!(b.on_failure(t0));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.check(t0 + Duration::from_secs(1)), Err(t0 + cooldown));
        // Cool-down over: one probe.
        assert_eq!(b.check(t0 + cooldown), Ok(()));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // The probe fails: open again at once.
        let t1 = t0 + cooldown;
        assert!(b.on_failure(t1));
        assert_eq!(b.check(t1), Err(t1 + cooldown));
        // The next probe succeeds: closed, and the count starts over.
        assert_eq!(b.check(t1 + cooldown), Ok(()));
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.on_failure(t1 + cooldown));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        assert!(!b.on_failure(t0));
        b.on_success();
        assert!(!b.on_failure(t0));
        assert!(b.on_failure(t0));
    }

    #[test]
    fn state_round_trips_through_u8() {
        for s in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            assert_eq!(BreakerState::from_u8(s.to_u8()), s);
        }
    }
}
