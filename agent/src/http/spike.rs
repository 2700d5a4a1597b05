//! [`SpikeTracker`]: how long processes stay above a CPU threshold.
//!
//! The agent calls [`SpikeTracker::observe`] for every process sample of a
//! scan, then [`SpikeTracker::finish_scan`] once. A spike starts at the first
//! sample above the threshold and ends at the first sample at or below it;
//! its duration (end sample time minus start sample time) goes into a fixed
//! bucket histogram. A process that exits (is not observed in a scan) while
//! spiking ends its spike at its last sample above the threshold. Ongoing
//! spikes are not in the histogram until they end.
//!
//! Bounded: only processes currently spiking are remembered, at most
//! `max_tracked` of them; further ones are ignored (and counted) until
//! room frees up.

use std::collections::HashMap;
use std::time::Instant;

use crate::http::state::{BucketHistogram, CPU_SPIKE_BUCKETS};

/// Default CPU threshold, in percent of one core.
pub const DEFAULT_SPIKE_THRESHOLD_PERCENT: f32 = 60.0;
/// Default bound on processes tracked at once.
pub const DEFAULT_MAX_TRACKED: usize = 4096;

/// Tracks CPU spikes per process instance and records their durations.
#[derive(Debug)]
pub struct SpikeTracker {
    threshold_percent: f32,
    max_tracked: usize,
    /// Keyed by (pid, start time): pids are reused, instances are not.
    active: HashMap<(u32, u64), Spike>,
    histogram: BucketHistogram,
    generation: u64,
    untracked: u64,
}

#[derive(Debug, Clone, Copy)]
struct Spike {
    started: Instant,
    last_above: Instant,
    seen_in: u64,
}

impl Default for SpikeTracker {
    fn default() -> Self {
        Self::new(DEFAULT_SPIKE_THRESHOLD_PERCENT, DEFAULT_MAX_TRACKED)
    }
}

impl SpikeTracker {
    /// A tracker that counts samples strictly above `threshold_percent` as a
    /// spike, remembering at most `max_tracked` spiking processes.
    pub fn new(threshold_percent: f32, max_tracked: usize) -> Self {
        Self {
            threshold_percent,
            max_tracked,
            active: HashMap::new(),
            histogram: BucketHistogram::new(CPU_SPIKE_BUCKETS),
            generation: 0,
            untracked: 0,
        }
    }

    /// One sample of one process. `start_time` is any number that is stable
    /// for the instance (e.g. its start time in clock ticks or Unix ms);
    /// `now` is when the sample was taken.
    pub fn observe(&mut self, pid: u32, start_time: u64, cpu_percent: f32, now: Instant) {
        let key = (pid, start_time);
        let above = cpu_percent > self.threshold_percent;
        if above {
            if let Some(spike) = self.active.get_mut(&key) {
                spike.last_above = now;
                spike.seen_in = self.generation;
            } else if self.active.len() < self.max_tracked {
                self.active.insert(
                    key,
                    Spike {
                        started: now,
                        last_above: now,
                        seen_in: self.generation,
                    },
                );
            } else {
                self.untracked += 1;
            }
        } else if let Some(spike) = self.active.remove(&key) {
            self.record(now.saturating_duration_since(spike.started).as_secs_f64());
        }
    }

    /// Ends a scan: every spiking process not observed since the previous
    /// `finish_scan` has exited; its spike is recorded and forgotten.
    pub fn finish_scan(&mut self) {
        let generation = self.generation;
        let mut ended = Vec::new();
        self.active.retain(|_, spike| {
            let live = spike.seen_in == generation;
            if !live {
                ended.push(
                    spike
                        .last_above
                        .saturating_duration_since(spike.started)
                        .as_secs_f64(),
                );
            }
            live
        });
        for seconds in ended {
            self.record(seconds);
        }
        self.generation = self.generation.wrapping_add(1);
    }

    /// Completed spike durations, in seconds; clone it into
    /// [`crate::http::Snapshot::cpu_spike_seconds`].
    pub fn histogram(&self) -> &BucketHistogram {
        &self.histogram
    }

    /// Processes now being tracked as spiking.
    pub fn tracked(&self) -> usize {
        self.active.len()
    }

    /// Spiking samples ignored because `max_tracked` was reached.
    pub fn untracked_samples(&self) -> u64 {
        self.untracked
    }

    fn record(&mut self, seconds: f64) {
        self.histogram.observe(seconds);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::time::{Duration, Instant};

    use crate::http::spike::SpikeTracker;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn spike_duration_is_recorded_when_it_ends() {
        let t0 = Instant::now();
        let mut tracker = SpikeTracker::new(60.0, 16);
        for (s, cpu) in [(0, 10.0), (5, 70.0), (10, 90.0), (15, 65.0), (20, 30.0)] {
            tracker.observe(1, 100, cpu, at(t0, s));
            tracker.finish_scan();
        }
        assert_eq!(tracker.histogram().count(), 1);
        assert!((tracker.histogram().sum() - 15.0).abs() < 1e-9);
        assert_eq!(tracker.tracked(), 0);
    }

    #[test]
    fn exited_process_ends_its_spike_and_is_forgotten() {
        let t0 = Instant::now();
        let mut tracker = SpikeTracker::new(60.0, 16);
        tracker.observe(7, 1, 99.0, at(t0, 0));
        tracker.observe(8, 1, 99.0, at(t0, 0));
        tracker.finish_scan();
        tracker.observe(7, 1, 99.0, at(t0, 10));
        tracker.observe(8, 1, 99.0, at(t0, 10));
        tracker.finish_scan();
        // pid 8 is gone; pid 7 goes on.
        tracker.observe(7, 1, 99.0, at(t0, 20));
        tracker.finish_scan();
        assert_eq!(tracker.tracked(), 1);
        assert_eq!(tracker.histogram().count(), 1);
        assert!((tracker.histogram().sum() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_reused_pid_is_another_instance() {
        let t0 = Instant::now();
        let mut tracker = SpikeTracker::new(60.0, 16);
        tracker.observe(5, 1, 99.0, at(t0, 0));
        tracker.finish_scan();
        tracker.observe(5, 2, 99.0, at(t0, 30));
        tracker.finish_scan();
        // The first instance exited after one sample: a zero-length spike.
        assert_eq!(tracker.histogram().count(), 1);
        assert_eq!(tracker.tracked(), 1);
    }

    #[test]
    fn tracking_is_bounded() {
        let t0 = Instant::now();
        let mut tracker = SpikeTracker::new(60.0, 2);
        for pid in 0..10 {
            tracker.observe(pid, 0, 99.0, t0);
        }
        assert_eq!(tracker.tracked(), 2);
        assert_eq!(tracker.untracked_samples(), 8);
    }
}
