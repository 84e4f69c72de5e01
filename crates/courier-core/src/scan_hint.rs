//! Scan hints: where a backend's next lease scan of a queue starts.
//!
//! Acked messages leave index entries at the head of the ready range until vacuum removes them,
//! and messages in flight stay in the range, so a scan from the start walks all of them. A lease
//! scan is ordered and takes the first unlocked ready messages, so up to the last one it took
//! nothing was left leasable, and what becomes ready later is ready at or after that point: the
//! next scan may start there.
//!
//! Three kinds of message can still end up behind a hint: one whose lease expired (it keeps its
//! place), one whose enqueuing transaction took its timestamp before the hint but committed after
//! it, and one another session had locked while the scan passed it and then released by rolling
//! back. The lease statement itself rescans from the floor when a hinted scan comes back short;
//! for queues busy enough that every scan is filled, the hint is dropped every
//! [`FULL_SCAN_EVERY_USECS`], which bounds how long such a message waits.

use std::collections::HashMap;
use std::hash::Hash;

use crate::position::{Position, START};

pub use crate::tuning::FULL_SCAN_EVERY_USECS;

/// One queue's hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hint {
    /// Scan after this place.
    after: Position,
    /// When the last scan from the very start was handed out.
    full_scan_at: i64,
}

/// One backend's scan hints, per range: a queue id, or a (queue id, priority) level of a queue
/// that uses several priorities.
///
/// Hints are private to a backend: they only ever save work for the scans of the backend that
/// learned them, so no other backend has to trust them.
#[derive(Clone, Debug)]
pub struct ScanHints<K = i32> {
    full_scan_every_usecs: i64,
    hints: HashMap<K, Hint>,
}

impl<K> Default for ScanHints<K> {
    fn default() -> Self {
        ScanHints { full_scan_every_usecs: FULL_SCAN_EVERY_USECS, hints: HashMap::new() }
    }
}

impl<K: Hash + Eq + Copy> ScanHints<K> {
    /// No hints yet; a queue's hint is dropped once `full_scan_every_usecs` has passed since the
    /// last scan from the start.
    pub fn new(full_scan_every_usecs: i64) -> Self {
        ScanHints { full_scan_every_usecs, hints: HashMap::new() }
    }

    /// Where the next scan of the queue starts at time `now`: after the hint while the last full
    /// scan is younger than the interval, else [`START`], and that full scan is recorded as
    /// happening now.
    ///
    /// A clock reading earlier than the last full scan (the clock stepped back) counts as inside
    /// the interval: the hint is then kept until the clock catches up, and what it skips is found
    /// by the lease statement's rescan from the floor once a hinted scan comes back short.
    pub fn scan_after(&mut self, queue_id: K, now: i64) -> Position {
        match self.hints.get(&queue_id) {
            // saturating: an absurd gap counts as "long ago", never wraps into "just now".
            Some(h) if now.saturating_sub(h.full_scan_at) < self.full_scan_every_usecs => h.after,
            _ => {
                self.hints.insert(queue_id, Hint { after: START, full_scan_at: now });
                START
            }
        }
    }

    /// The lease scan's start: [`Self::scan_after`], but never before the level's shared floor
    /// (`floor`; [`START`] for a queue without one), before which nothing is leasable: another
    /// backend may have raised the floor past this backend's hint.
    pub fn scan_after_floor(&mut self, queue_id: K, now: i64, floor: Position) -> Position {
        self.scan_after(queue_id, now).max(floor)
    }

    /// Records where a lease scan of the queue may resume: the last message it took (None when it
    /// took none, which leaves the hint alone). The hint only moves forward, so a smaller position
    /// from an overlapping scan cannot pull it back; and only for a queue this backend has asked
    /// [`Self::scan_after`] about, which starts every hint at a full scan.
    pub fn remember(&mut self, queue_id: K, resume_after: Option<Position>) {
        if let (Some(p), Some(h)) = (resume_after, self.hints.get_mut(&queue_id)) {
            h.after = h.after.max(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 800_000_000_000_000;

    #[test]
    fn unknown_queue_scans_from_the_start() {
        let mut h = ScanHints::default();
        assert_eq!(h.scan_after(7, T), START);
    }

    #[test]
    fn remembering_for_an_unknown_queue_does_nothing() {
        let mut h = ScanHints::default();
        h.remember(7, Some((T, 5)));
        assert_eq!(h.scan_after(7, T), START, "no hint was created");
        h.remember(8, Some((T, 5)));
        assert_eq!(h.scan_after(7, T + 1), START, "another queue's hint is not this one's");
    }

    #[test]
    fn hint_is_used_within_the_window() {
        let mut h = ScanHints::default();
        assert_eq!(h.scan_after(1, T), START);
        h.remember(1, Some((T - 10, 42)));
        assert_eq!(h.scan_after(1, T + 1), (T - 10, 42));
        assert_eq!(h.scan_after(1, T + FULL_SCAN_EVERY_USECS - 1), (T - 10, 42), "last microsecond");
    }

    #[test]
    fn hint_resets_after_the_window_and_the_window_restarts() {
        let mut h = ScanHints::default();
        h.scan_after(1, T);
        h.remember(1, Some((T, 42)));
        let reset = T + FULL_SCAN_EVERY_USECS;
        assert_eq!(h.scan_after(1, reset), START, "exactly one interval later");
        assert_eq!(h.scan_after(1, reset + 1), START, "reset forgot the hint");
        h.remember(1, Some((T + 5, 43)));
        assert_eq!(
            h.scan_after(1, reset + FULL_SCAN_EVERY_USECS - 1),
            (T + 5, 43),
            "window counts from reset"
        );
        assert_eq!(h.scan_after(1, reset + FULL_SCAN_EVERY_USECS), START);
    }

    #[test]
    fn a_window_does_not_restart_while_the_hint_is_used() {
        let mut h = ScanHints::default();
        h.scan_after(1, T);
        h.remember(1, Some((T, 1)));
        for step in 1..10 {
            assert_eq!(h.scan_after(1, T + step * 10_000), (T, 1));
        }
        assert_eq!(h.scan_after(1, T + FULL_SCAN_EVERY_USECS), START);
    }

    #[test]
    fn remember_only_moves_forward() {
        let mut h = ScanHints::default();
        h.scan_after(1, T);
        h.remember(1, Some((T, 10)));
        h.remember(1, Some((T, 9)));
        h.remember(1, Some((T - 1, 100)));
        h.remember(1, None);
        assert_eq!(h.scan_after(1, T), (T, 10));
        h.remember(1, Some((T, 11)));
        assert_eq!(h.scan_after(1, T), (T, 11));
    }

    #[test]
    fn queues_are_independent() {
        let mut h = ScanHints::default();
        h.scan_after(1, T);
        h.scan_after(2, T + 50_000);
        h.remember(1, Some((T, 1)));
        h.remember(2, Some((T, 2)));
        assert_eq!(h.scan_after(1, T + FULL_SCAN_EVERY_USECS), START);
        assert_eq!(h.scan_after(2, T + FULL_SCAN_EVERY_USECS), (T, 2));
    }

    #[test]
    fn interval_is_configurable() {
        let mut h = ScanHints::new(10);
        h.scan_after(1, T);
        h.remember(1, Some((T, 1)));
        assert_eq!(h.scan_after(1, T + 9), (T, 1));
        assert_eq!(h.scan_after(1, T + 10), START);
    }

    #[test]
    fn a_clock_stepped_back_keeps_the_hint() {
        // Pins the extension's behaviour: negative elapsed time is inside the window.
        let mut h = ScanHints::default();
        h.scan_after(1, T);
        h.remember(1, Some((T, 1)));
        assert_eq!(h.scan_after(1, T - 3_600_000_000), (T, 1));
    }

    #[test]
    fn extreme_clock_readings_do_not_overflow() {
        let mut h = ScanHints::default();
        h.scan_after(1, i64::MIN);
        h.remember(1, Some((0, 1)));
        assert_eq!(h.scan_after(1, i64::MAX), START, "an overflowing gap is long ago");
    }

    #[test]
    fn scan_never_starts_before_the_floor() {
        let mut h = ScanHints::default();
        let floor = (T - 100, 7);
        assert_eq!(h.scan_after_floor(1, T, floor), floor, "full scan starts at the floor");
        h.remember(1, Some((T - 200, 3)));
        assert_eq!(h.scan_after_floor(1, T + 1, floor), floor, "a hint behind the floor");
        h.remember(1, Some((T - 50, 9)));
        assert_eq!(h.scan_after_floor(1, T + 2, floor), (T - 50, 9), "a hint past the floor");
        assert_eq!(h.scan_after_floor(1, T + 3, START), (T - 50, 9), "no floor");
    }

    #[test]
    fn levels_of_one_queue_are_independent() {
        // A queue with several priorities keeps a hint per level: positions of different levels
        // do not compare (a later level may hold older messages), so one must never move another.
        let mut h: ScanHints<(i32, i16)> = ScanHints::default();
        h.scan_after((1, 9), T);
        h.scan_after((1, 5), T);
        h.remember((1, 9), Some((T, 100)));
        h.remember((1, 5), Some((T - 1_000, 7)));
        assert_eq!(h.scan_after((1, 9), T + 1), (T, 100));
        assert_eq!(h.scan_after((1, 5), T + 1), (T - 1_000, 7), "not pulled forward by level 9");
        assert_eq!(h.scan_after((1, 0), T + 1), START, "a level never scanned has no hint");
        assert_eq!(h.scan_after((2, 9), T + 1), START, "nor has another queue's level");
    }
}
