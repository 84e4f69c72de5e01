//! Retry policy: exponential backoff with a cap and jitter.
//!
//! The delay after the n-th failed attempt is `min(max, base * 2^(n-1))`, then shortened by a
//! random fraction of at most `jitter` (so `jitter = 0.2` gives 80–100 % of the delay). Jitter
//! spreads out retries of messages that failed together, so they do not come back as one burst.

/// A queue's retry policy, durations in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub base_usecs: i64,
    pub max_usecs: i64,
    pub jitter: f64,
}

/// Exponent cap: 2^40 times any base of at least a microsecond already exceeds every allowed max.
const MAX_DOUBLINGS: u32 = 40;

impl RetryPolicy {
    /// Delay before the message becomes leasable again after its `attempt`-th attempt failed.
    /// `random` is uniform in [0, 1).
    pub fn delay_usecs(&self, attempt: i32, random: f64) -> i64 {
        let doublings = (attempt.max(1) - 1).min(MAX_DOUBLINGS as i32) as u32;
        let raw = (self.base_usecs as i128) << doublings;
        let capped = raw.min(self.max_usecs as i128) as f64;
        let factor = 1.0 - self.jitter * random.clamp(0.0, 1.0);
        (capped * factor).round() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    #[test]
    fn doubles_until_the_cap() {
        let p = RetryPolicy { base_usecs: SEC, max_usecs: 60 * SEC, jitter: 0.0 };
        let delays: Vec<i64> = (1..=8).map(|a| p.delay_usecs(a, 0.5) / SEC).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = RetryPolicy { base_usecs: 365 * 86_400 * SEC, max_usecs: 365 * 86_400 * SEC, jitter: 0.0 };
        assert_eq!(p.delay_usecs(i32::MAX, 0.0), 365 * 86_400 * SEC);
        assert_eq!(p.delay_usecs(0, 0.0), 365 * 86_400 * SEC);
        assert_eq!(p.delay_usecs(-5, 0.0), 365 * 86_400 * SEC);
    }

    #[test]
    fn jitter_only_shortens_and_stays_in_range() {
        let p = RetryPolicy { base_usecs: 10 * SEC, max_usecs: 10 * SEC, jitter: 0.2 };
        assert_eq!(p.delay_usecs(1, 0.0), 10 * SEC);
        assert_eq!(p.delay_usecs(1, 0.5), 9 * SEC);
        let lowest = p.delay_usecs(1, 0.999_999);
        assert!((8 * SEC..10 * SEC).contains(&lowest), "{lowest}");
    }

    #[test]
    fn full_jitter_can_reach_zero_but_not_below() {
        let p = RetryPolicy { base_usecs: SEC, max_usecs: SEC, jitter: 1.0 };
        assert!(p.delay_usecs(1, 0.999_999_9) >= 0);
        assert!(p.delay_usecs(1, 2.0) >= 0, "random is clamped");
    }
}
