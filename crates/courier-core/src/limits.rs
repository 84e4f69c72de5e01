//! Documented hard limits. README's "Limits" section lists the same numbers; change both together.

/// Microseconds per second, minute, hour and day, as PostgreSQL counts them for interval
/// comparison (a month is 30 days, a day is 24 hours).
pub const USECS_PER_SEC: i64 = 1_000_000;
pub const USECS_PER_HOUR: i64 = 3_600 * USECS_PER_SEC;
pub const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;

/// Longest visibility timeout a lease may ask for. SQS stops at 12 hours too; longer work should
/// heartbeat with `extend`, so that a crashed worker's message comes back within hours, not days.
pub const MAX_VISIBILITY_TIMEOUT_USECS: i64 = 12 * USECS_PER_HOUR;

/// Longest delay (enqueue `delay`, nack `retry_in`): one year. Anything later is almost certainly
/// a unit mistake (seconds passed as milliseconds) and is rejected rather than silently parked.
pub const MAX_DELAY_USECS: i64 = 365 * USECS_PER_DAY;

/// Most messages one call may enqueue, lease, ack or nack. Keeps a single call's memory bounded
/// (a lease materialises its rows) and its row locks few.
pub const MAX_BATCH: i32 = 1_000;

/// Most dead letters one redrive call moves; call it again for more.
pub const MAX_REDRIVE: i32 = 10 * MAX_BATCH;

/// Queue names are at most this many bytes, like PostgreSQL identifiers (NAMEDATALEN - 1).
pub const MAX_QUEUE_NAME_BYTES: usize = 63;

/// Default for the `courier.max_payload_size` setting, in bytes (the jsonb value's own size).
pub const DEFAULT_MAX_PAYLOAD_BYTES: i32 = 1024 * 1024;

/// Upper bound of `courier.max_payload_size`: a quarter of PostgreSQL's 1 GB field limit, so the
/// setting cannot be raised to values that would only fail later with a less helpful error.
pub const MAX_MAX_PAYLOAD_BYTES: i32 = 256 * 1024 * 1024;

/// Longest `error` text kept by nack; longer texts are truncated (on a character boundary)
/// rather than rejected, because the caller is usually reporting a failure and must not fail.
pub const MAX_ERROR_TEXT_BYTES: usize = 8 * 1024;
