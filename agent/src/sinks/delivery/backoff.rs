//! Exponential backoff with full jitter.

use std::time::Duration;

/// The wait before retry number `retry` (1 for the first retry): a random
/// time in `0..=min(max, base * 2^(retry-1))`.
pub(crate) fn delay(base: Duration, max: Duration, retry: u32) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let cap = base.saturating_mul(factor).min(max);
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=cap_nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_under_the_growing_cap() {
        let base = Duration::from_millis(200);
        let max = Duration::from_secs(30);
        for _ in 0..200 {
            assert!(delay(base, max, 1) <= base);
            assert!(delay(base, max, 3) <= base * 4);
            assert!(delay(base, max, 40) <= max);
            assert!(delay(base, max, u32::MAX) <= max);
        }
    }

    #[test]
    fn is_jittered() {
        let base = Duration::from_secs(1);
        let first = delay(base, base, 1);
        assert!((0..50).any(|_| delay(base, base, 1) != first));
    }
}
