//! Places in a queue level's ready range.
//!
//! Lease statements walk a level's ready index in (ready time, id) order, so every "start the
//! scan after here" value — a backend's scan hint, a shared floor — is such a pair, compared
//! lexicographically like the index compares its keys.

/// A place in a queue level's ready range, in lease order: (ready_at in microseconds, id).
pub type Position = (i64, i64);

/// Before every message: where a scan from the start of the range begins.
pub const START: Position = (i64::MIN, i64::MIN);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_before_every_place() {
        for p in [(i64::MIN, i64::MIN + 1), (i64::MIN + 1, i64::MIN), (0, 1), (i64::MAX, i64::MAX)] {
            assert!(START < p, "{p:?}");
        }
    }

    #[test]
    fn time_orders_before_id() {
        assert!((1, i64::MAX) < (2, i64::MIN));
        assert!((5, 1) < (5, 2));
    }
}
