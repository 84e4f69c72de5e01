//! Interval arithmetic and the bounds on every duration argument.
//!
//! PostgreSQL intervals carry months, days and microseconds separately. courier converts them the
//! way PostgreSQL compares intervals (a month is 30 days, a day 24 hours) and then works in plain
//! microseconds, so `'1 day'` always means 86 400 seconds, even across a daylight-saving change.

use crate::error::CourierError;
use crate::limits::{MAX_DELAY_USECS, MAX_VISIBILITY_TIMEOUT_USECS, USECS_PER_DAY, USECS_PER_SEC};

/// Total microseconds of an interval, using 30-day months and 24-hour days.
pub fn interval_usecs(months: i32, days: i32, micros: i64) -> i128 {
    i128::from(months) * 30 * i128::from(USECS_PER_DAY)
        + i128::from(days) * i128::from(USECS_PER_DAY)
        + i128::from(micros)
}

/// Human form of a microsecond count for error messages ("12 hours", "1.5 seconds").
pub fn describe_usecs(usecs: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (USECS_PER_DAY, "day"),
        (3_600 * USECS_PER_SEC, "hour"),
        (60 * USECS_PER_SEC, "minute"),
        (USECS_PER_SEC, "second"),
    ];
    for (size, unit) in UNITS {
        if usecs >= size && usecs % size == 0 {
            let n = usecs / size;
            return format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
        }
    }
    format!("{} microseconds", usecs)
}

/// A visibility timeout: strictly positive, at most 12 hours.
pub fn visibility_timeout(argument: &str, usecs: i128) -> Result<i64, CourierError> {
    if usecs <= 0 {
        return Err(CourierError::invalid(format!("{argument} must be positive")));
    }
    if usecs > i128::from(MAX_VISIBILITY_TIMEOUT_USECS) {
        return Err(CourierError::invalid(format!(
            "{argument} must be at most {}",
            describe_usecs(MAX_VISIBILITY_TIMEOUT_USECS)
        ))
        .with_hint("For longer work, keep the lease alive with courier.extend()."));
    }
    Ok(usecs as i64)
}

/// A delay (enqueue `delay`, nack `retry_in`): zero or positive, at most one year.
pub fn delay(argument: &str, usecs: i128) -> Result<i64, CourierError> {
    if usecs < 0 {
        return Err(CourierError::invalid(format!("{argument} must not be negative")));
    }
    if usecs > i128::from(MAX_DELAY_USECS) {
        return Err(CourierError::invalid(format!(
            "{argument} must be at most {}",
            describe_usecs(MAX_DELAY_USECS)
        )));
    }
    Ok(usecs as i64)
}

/// A batch size between 1 and `max`.
pub fn batch_size(argument: &str, n: i64, max: i32) -> Result<i32, CourierError> {
    if n < 1 || n > i64::from(max) {
        return Err(CourierError::invalid(format!("{argument} must be between 1 and {max}, not {n}")));
    }
    Ok(n as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::limits::MAX_BATCH;

    #[test]
    fn interval_normalisation_matches_postgres_comparison() {
        assert_eq!(interval_usecs(0, 0, 30 * USECS_PER_SEC), 30_000_000);
        assert_eq!(interval_usecs(1, 0, 0), 30 * i128::from(USECS_PER_DAY));
        // '-1 day +25 hours' is one hour.
        assert_eq!(interval_usecs(0, -1, 25 * 3_600 * USECS_PER_SEC), 3_600 * 1_000_000);
        // Extremes cannot overflow.
        let huge = interval_usecs(i32::MAX, i32::MAX, i64::MAX);
        assert!(huge > i128::from(i64::MAX));
    }

    #[test]
    fn visibility_timeout_bounds() {
        assert_eq!(visibility_timeout("vt", 1), Ok(1));
        assert_eq!(
            visibility_timeout("vt", i128::from(MAX_VISIBILITY_TIMEOUT_USECS)),
            Ok(MAX_VISIBILITY_TIMEOUT_USECS)
        );
        for bad in [0, -1, i128::from(MAX_VISIBILITY_TIMEOUT_USECS) + 1, interval_usecs(i32::MAX, 0, 0)] {
            let e = visibility_timeout("visibility_timeout", bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidParameter);
            assert!(e.message.starts_with("visibility_timeout must be"), "{}", e.message);
        }
        assert_eq!(
            visibility_timeout("visibility_timeout", i128::from(MAX_VISIBILITY_TIMEOUT_USECS) + 1)
                .unwrap_err()
                .message,
            "visibility_timeout must be at most 12 hours"
        );
    }

    #[test]
    fn delay_bounds() {
        assert_eq!(delay("delay", 0), Ok(0));
        assert!(delay("delay", -1).is_err());
        assert_eq!(
            delay("delay", i128::from(MAX_DELAY_USECS) + 1).unwrap_err().message,
            "delay must be at most 365 days"
        );
    }

    #[test]
    fn batch_bounds() {
        assert_eq!(batch_size("batch_size", 1, MAX_BATCH), Ok(1));
        assert_eq!(batch_size("batch_size", 1000, MAX_BATCH), Ok(1000));
        for bad in [0, -1, 1001, i64::MAX, i64::MIN] {
            assert!(batch_size("batch_size", bad, MAX_BATCH).is_err());
        }
        assert_eq!(
            batch_size("batch_size", 0, 1000).unwrap_err().message,
            "batch_size must be between 1 and 1000, not 0"
        );
    }

    #[test]
    fn describes_durations() {
        assert_eq!(describe_usecs(USECS_PER_SEC), "1 second");
        assert_eq!(describe_usecs(90 * USECS_PER_SEC), "90 seconds");
        assert_eq!(describe_usecs(120 * USECS_PER_SEC), "2 minutes");
        assert_eq!(describe_usecs(1_500_000), "1500000 microseconds");
    }
}
