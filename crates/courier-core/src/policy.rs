//! Per-queue settings and per-message options, with their defaults and bounds.
//!
//! `create_queue` and `alter_queue` both go through [`QueueSettings::validate`], so a setting can
//! never be stored that a later call would reject.

use crate::error::CourierError;
use crate::limits::{MAX_DELAY_USECS, USECS_PER_DAY, USECS_PER_SEC};
use crate::retry::RetryPolicy;
use crate::timing::describe_usecs;

/// Default visibility timeout of a queue: how long a lease hides a message unless the lease asks
/// for another. SQS's default is also 30 seconds.
pub const DEFAULT_VISIBILITY_TIMEOUT_USECS: i64 = 30 * USECS_PER_SEC;
/// Default number of deliveries before a message is dead-lettered (River and graphile-worker use
/// the same). 0 means unlimited.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 25;
pub const MAX_MAX_ATTEMPTS: i32 = 1_000_000;
pub const DEFAULT_RETRY_BASE_USECS: i64 = USECS_PER_SEC;
pub const DEFAULT_RETRY_MAX_USECS: i64 = 15 * 60 * USECS_PER_SEC;
pub const DEFAULT_RETRY_JITTER: f64 = 0.2;
/// Default dedup window: one day. Long enough for the retries of most webhook senders within a
/// day; queues fed by senders that retry for days (Stripe: 3 days) should raise it.
pub const DEFAULT_DEDUP_WINDOW_USECS: i64 = USECS_PER_DAY;
/// Longest dedup window, retention and retry cap: a year, like delays.
pub const MAX_WINDOW_USECS: i64 = MAX_DELAY_USECS;
/// Dedup keys are at most this many bytes (SQS allows 128 characters; URLs need more).
pub const MAX_DEDUP_KEY_BYTES: usize = 512;

#[derive(Clone, Debug, PartialEq)]
pub struct QueueSettings {
    pub visibility_timeout_usecs: i64,
    /// 0 = unlimited.
    pub max_attempts: i32,
    pub retry: RetryPolicy,
    pub dedup_window_usecs: i64,
    /// None = completed messages are not kept.
    pub retention_usecs: Option<i64>,
}

/// The settings `create_queue` gives a queue for every argument left out. The SQL declaration of
/// `create_queue` spells the same values as its argument defaults; a test checks they agree.
impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            visibility_timeout_usecs: DEFAULT_VISIBILITY_TIMEOUT_USECS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry: RetryPolicy {
                base_usecs: DEFAULT_RETRY_BASE_USECS,
                max_usecs: DEFAULT_RETRY_MAX_USECS,
                jitter: DEFAULT_RETRY_JITTER,
            },
            dedup_window_usecs: DEFAULT_DEDUP_WINDOW_USECS,
            retention_usecs: None,
        }
    }
}

impl QueueSettings {
    pub fn validate(&self) -> Result<(), CourierError> {
        crate::timing::visibility_timeout("visibility_timeout", i128::from(self.visibility_timeout_usecs))?;
        if self.max_attempts < 0 || self.max_attempts > MAX_MAX_ATTEMPTS {
            return Err(CourierError::invalid(format!(
                "max_attempts must be between 0 (unlimited) and {MAX_MAX_ATTEMPTS}, not {}",
                self.max_attempts
            )));
        }
        positive_window("retry_base", self.retry.base_usecs)?;
        positive_window("retry_max", self.retry.max_usecs)?;
        if self.retry.max_usecs < self.retry.base_usecs {
            return Err(CourierError::invalid(format!(
                "retry_max ({}) must not be shorter than retry_base ({})",
                describe_usecs(self.retry.max_usecs),
                describe_usecs(self.retry.base_usecs)
            )));
        }
        if !(0.0..=1.0).contains(&self.retry.jitter) {
            return Err(CourierError::invalid(format!(
                "retry_jitter must be between 0 and 1, not {}",
                self.retry.jitter
            )));
        }
        positive_window("dedup_window", self.dedup_window_usecs)?;
        if let Some(r) = self.retention_usecs {
            positive_window("retention", r)?;
        }
        Ok(())
    }
}

fn positive_window(argument: &str, usecs: i64) -> Result<(), CourierError> {
    if usecs <= 0 {
        return Err(CourierError::invalid(format!("{argument} must be positive")));
    }
    if usecs > MAX_WINDOW_USECS {
        return Err(CourierError::invalid(format!(
            "{argument} must be at most {}",
            describe_usecs(MAX_WINDOW_USECS)
        )));
    }
    Ok(())
}

/// A window-like interval argument (dedup_window, retention, retry_base, retry_max).
pub fn window(argument: &str, usecs: i128) -> Result<i64, CourierError> {
    let clamped = usecs.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    if usecs > i128::from(MAX_WINDOW_USECS) {
        return Err(CourierError::invalid(format!(
            "{argument} must be at most {}",
            describe_usecs(MAX_WINDOW_USECS)
        )));
    }
    positive_window(argument, clamped)?;
    Ok(clamped)
}

pub fn dedup_key(key: &str, argument: &str) -> Result<(), CourierError> {
    if key.is_empty() {
        return Err(CourierError::invalid(format!("{argument} must not be empty")));
    }
    if key.len() > MAX_DEDUP_KEY_BYTES {
        return Err(CourierError::invalid(format!(
            "{argument} is too long ({} bytes, the maximum is {MAX_DEDUP_KEY_BYTES})",
            key.len()
        )));
    }
    Ok(())
}

/// Priorities are stored as smallint; higher is leased first.
pub fn priority(value: i32, argument: &str) -> Result<i16, CourierError> {
    i16::try_from(value).map_err(|_| {
        CourierError::invalid(format!(
            "{argument} must be between {} and {}, not {value}",
            i16::MIN,
            i16::MAX
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> QueueSettings {
        QueueSettings::default()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(defaults().validate(), Ok(()));
    }

    #[test]
    fn each_setting_is_checked() {
        type Case = (fn(&mut QueueSettings), &'static str);
        let cases: Vec<Case> = vec![
            (|s| s.max_attempts = -1, "max_attempts must be between 0 (unlimited) and 1000000, not -1"),
            (|s| s.retry.base_usecs = 0, "retry_base must be positive"),
            (
                |s| s.retry.max_usecs = USECS_PER_SEC / 2,
                "retry_max (500000 microseconds) must not be shorter than retry_base (1 second)",
            ),
            (|s| s.retry.jitter = 1.5, "retry_jitter must be between 0 and 1, not 1.5"),
            (|s| s.retry.jitter = f64::NAN, "retry_jitter must be between 0 and 1, not NaN"),
            (|s| s.dedup_window_usecs = -1, "dedup_window must be positive"),
            (|s| s.retention_usecs = Some(MAX_WINDOW_USECS + 1), "retention must be at most 365 days"),
        ];
        for (mutate, message) in cases {
            let mut s = defaults();
            mutate(&mut s);
            assert_eq!(s.validate().unwrap_err().message, message);
        }
    }

    #[test]
    fn dedup_keys_and_priorities() {
        assert!(dedup_key("evt_123", "dedup_key").is_ok());
        assert!(dedup_key("", "dedup_key").is_err());
        assert!(dedup_key(&"k".repeat(512), "dedup_key").is_ok());
        assert!(dedup_key(&"k".repeat(513), "dedup_key").is_err());
        assert_eq!(priority(32767, "priority"), Ok(32767));
        assert_eq!(priority(-32768, "priority"), Ok(-32768));
        assert_eq!(
            priority(40000, "priority").unwrap_err().message,
            "priority must be between -32768 and 32767, not 40000"
        );
    }

    #[test]
    fn window_bounds() {
        assert_eq!(window("dedup_window", 1), Ok(1));
        assert!(window("dedup_window", 0).is_err());
        assert!(window("dedup_window", i128::MAX).is_err());
        assert!(window("dedup_window", i128::MIN).is_err());
    }
}
