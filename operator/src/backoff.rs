//! Exponential backoff with jitter, capped, reset on success: an iterator of delays, as kube-runtime's
//! `DefaultBackoff`. Used per object for failed reconciles and for reconnecting to the engine.

use std::time::Duration;

/// Exponential backoff: `initial * 2^n`, capped at `max`, each delay scaled by a random factor in
/// `[1 - jitter, 1 + jitter]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `initial` to `max` with ±`jitter` (0.0..=1.0).
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        Self {
            initial,
            max,
            jitter: jitter.clamp(0.0, 1.0),
            attempt: 0,
        }
    }

    /// The backoff for failed reconciles: 1 s doubling to 5 min, ±20 %.
    pub fn for_reconcile() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(300), 0.2)
    }

    /// The backoff for engine reconnects: 200 ms doubling to 10 s, ±20 %.
    pub fn for_engine() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(10), 0.2)
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.attempt = self.attempt.saturating_add(1);
        let base = self.initial.saturating_mul(factor).min(self.max);
        Some(jitter(base, self.jitter))
    }
}

/// `d` scaled by a random factor in `[1 - spread, 1 + spread]`.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    let f = 1.0 + spread * (fastrand::f64() * 2.0 - 1.0);
    d.mul_f64(f.max(0.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10), 0.0);
        let first: Vec<u64> = b.by_ref().take(6).map(|d| d.as_secs()).collect();
        assert_eq!(first, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10), 0.2);
        for _ in 0..1000 {
            let d = b.next().expect("endless");
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::for_reconcile();
        let last = b.by_ref().take(100).last().expect("endless");
        assert!(last <= Duration::from_secs(360));
    }
}
