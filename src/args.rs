//! Checking SQL arguments that arrive as PostgreSQL types. The rules themselves live in
//! courier_core (names, timing, policy); this module converts the pgrx values, applies the rule
//! and raises the rule's error, so every API function rejects bad input the same way: an ERROR
//! with a specific SQLSTATE, a message naming the argument, and nothing changed.

use courier_core::limits::MAX_BATCH;
use courier_core::name::validate_queue_name;
use courier_core::policy::{self, QueueSettings};
use courier_core::{CourierError, ErrorKind, timing};
use pgrx::prelude::*;

use crate::errors::{OrRaise, arg, raise};
use crate::pg;
use crate::settings;

/// The argument an error names: `payload`, or an element of an array argument (`payloads[3]`),
/// spelled out only when there is an error to report, not for every element checked.
#[derive(Clone, Copy)]
pub struct Argument<'a>(pub &'a str, pub Option<usize>);

impl<'a> Argument<'a> {
    pub fn whole(name: &'a str) -> Self {
        Argument(name, None)
    }

    /// The element at 0-based `index`, named 1-based as SQL arrays count.
    pub fn element(name: &'a str, index: usize) -> Self {
        Argument(name, Some(index))
    }
}

impl std::fmt::Display for Argument<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            None => f.write_str(self.0),
            Some(i) => write!(f, "{}[{}]", self.0, i + 1),
        }
    }
}

/// Returns the queue name argument after checking it against the naming rule.
#[track_caller]
pub fn queue_name<'a>(value: Option<&'a str>, argument: &str) -> &'a str {
    let name = arg(value, argument);
    validate_queue_name(name, argument).or_raise();
    name
}

/// Validates a visibility timeout argument and returns it in microseconds.
#[track_caller]
pub fn visibility_timeout(value: Interval, argument: &str) -> i64 {
    timing::visibility_timeout(argument, pg::interval_usecs(value)).or_raise()
}

/// Validates a delay argument (zero allowed) and returns it in microseconds.
#[track_caller]
pub fn delay(value: Interval, argument: &str) -> i64 {
    timing::delay(argument, pg::interval_usecs(value)).or_raise()
}

/// A window-like interval (dedup_window, retention, retry_base, retry_max), in microseconds.
#[track_caller]
pub fn window(value: Interval, argument: &str) -> i64 {
    policy::window(argument, pg::interval_usecs(value)).or_raise()
}

/// A retention argument: zero turns retention off.
#[track_caller]
pub fn retention(value: Interval) -> Option<i64> {
    if pg::interval_usecs(value) == 0 { None } else { Some(window(value, "retention")) }
}

/// A max_attempts argument, checked by the same rule a stored queue's settings are.
#[track_caller]
pub fn max_attempts(value: i32) -> i32 {
    QueueSettings { max_attempts: value, ..QueueSettings::default() }.validate().or_raise();
    value
}

/// A batch size, 1 to `max`.
#[track_caller]
pub fn batch_size(value: Option<i32>, argument: &str, max: i32) -> i32 {
    timing::batch_size(argument, i64::from(arg(value, argument)), max).or_raise()
}

/// Validates a lease's wait: zero or positive, at most courier.max_wait; no waiting under a
/// transaction snapshot, where new messages could never become visible.
#[track_caller]
pub fn wait(value: Interval) -> i64 {
    let usecs = pg::interval_usecs(value);
    if usecs < 0 {
        raise(CourierError::invalid("wait must not be negative"));
    }
    let max = settings::max_wait_usecs();
    if usecs > i128::from(max) {
        raise(
            CourierError::invalid(format!(
                "wait must be at most {} (courier.max_wait)",
                timing::describe_usecs(max)
            ))
            .with_hint(
                "A waiting lease holds back vacuum while it waits; loop in the client for longer waits.",
            ),
        );
    }
    if usecs > 0 && pg::uses_transaction_snapshot() {
        raise(
            CourierError::new(
                ErrorKind::InvalidTransactionState,
                "lease cannot wait at REPEATABLE READ or SERIALIZABLE isolation",
            )
            .with_detail("The transaction's snapshot would never show messages committed while it waits.")
            .with_hint("Wait in a READ COMMITTED transaction, or pass wait => '0'."),
        );
    }
    usecs as i64
}

/// Checks a batch array: one-dimensional, 1 to MAX_BATCH elements.
#[track_caller]
pub fn batch_shape(dimensions: i32, len: usize, argument: &str) {
    one_dimensional(dimensions, argument);
    if len == 0 {
        raise(CourierError::invalid(format!("{argument} must not be empty")));
    }
    if len > MAX_BATCH as usize {
        raise(CourierError::invalid(format!("{argument} has {len} elements, the maximum is {MAX_BATCH}")));
    }
}

/// Checks an array that runs parallel to `payloads` (one element per payload).
#[track_caller]
pub fn parallel_shape(dimensions: i32, len: usize, payloads: usize, argument: &str) {
    one_dimensional(dimensions, argument);
    if len != payloads {
        raise(CourierError::invalid(format!(
            "{argument} must have one element per payload ({payloads} payloads, {len} {argument})"
        )));
    }
}

#[track_caller]
fn one_dimensional(dimensions: i32, argument: &str) {
    if dimensions > 1 {
        raise(CourierError::invalid(format!("{argument} must be a one-dimensional array")));
    }
}
