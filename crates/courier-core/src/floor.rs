//! Scan floors: where in a queue level's ready range a scan may start, shared by all backends.
//!
//! A scan from the very start of a ready range walks every index entry that acked messages left
//! behind (and, under a long snapshot, visits each one's heap tuple). Floors are positions such
//! scans start after, learned by one backend per level and kept in shared memory:
//!
//! - the floor of all rows: every row that is or may become visible sits after it;
//! - the ready floor: every row that is or may become leasable sits after it, but only until
//!   `ready_until`, the earliest end of the leases in flight it passed (a lease that ends makes its
//!   message leasable again where it already sits).
//!
//! A floor that is too high hides a leasable message, so every rule here errs low: a ready floor
//! that no longer holds falls back to the floor of all rows, and a ready floor below the floor of
//! all rows is raised to it (it can lag when a learning's ready floor was not stored). How the
//! learner bounds what it may learn is in [`learning`]; which backend learns, and from where, is
//! shared-memory state and stays in the extension.

pub mod learning;

use crate::position::{Position, START};

pub use crate::tuning::{
    FLOOR_LEARN_EVERY_USECS as LEARN_EVERY_USECS, FLOOR_RELEARN_EVERY_USECS as RELEARN_EVERY_USECS,
};

/// The floors one scan of a level starts after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanFloors {
    /// Every row that is or may become visible sits after it (messages in flight included).
    pub all: Position,
    /// Every row that is or may become leasable now sits after it (at or after `all`).
    pub ready: Position,
}

/// A level's floors as shared memory keeps them, with the time the ready floor stops holding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedFloors {
    /// Every row that is or may become visible sits after it.
    pub all: Position,
    /// Every row that is or may become leasable sits after it, while `now < ready_until`.
    pub ready: Position,
    /// When the earliest lease the ready floor passed ends; `i64::MIN` once invalidated.
    pub ready_until: i64,
}

impl ScanFloors {
    /// No floor known: scans start at the beginning of the range.
    pub const NONE_KNOWN: ScanFloors = ScanFloors { all: START, ready: START };

    /// What a scan at `now` may use of the floors shared memory knows (`None`: none known).
    pub fn from_shared(known: Option<SharedFloors>, now: i64) -> ScanFloors {
        known.map_or(Self::NONE_KNOWN, |f| ScanFloors {
            all: f.all,
            ready: f.ready_at(now).map_or(f.all, |r| r.max(f.all)),
        })
    }

    /// What the backend that just learned `learned` scans with: its ready floor only if shared
    /// memory `kept` it (else a shortened lease invalidated it meanwhile).
    pub fn from_learned(learned: SharedFloors, kept: bool) -> ScanFloors {
        ScanFloors { all: learned.all, ready: if kept { learned.ready } else { learned.all } }
    }
}

impl SharedFloors {
    /// The ready floor if it still holds at `now`.
    pub fn ready_at(&self, now: i64) -> Option<Position> {
        (now < self.ready_until).then_some(self.ready)
    }

    /// The ready floor with the time it stops holding, if it still holds at `now`: what a
    /// learning continues from (see [`learning::Learner::ready_walk`]).
    pub fn held_ready(&self, now: i64) -> Option<(Position, i64)> {
        self.ready_at(now).map(|p| (p, self.ready_until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 800_000_000_000_000;

    fn shared(all: Position, ready: Position, ready_until: i64) -> SharedFloors {
        SharedFloors { all, ready, ready_until }
    }

    #[test]
    fn nothing_known_scans_from_the_start() {
        assert_eq!(ScanFloors::from_shared(None, T), ScanFloors { all: START, ready: START });
    }

    #[test]
    fn a_holding_ready_floor_is_used() {
        let f = shared((T - 50, 1), (T - 10, 9), T + 1);
        assert_eq!(ScanFloors::from_shared(Some(f), T), ScanFloors { all: (T - 50, 1), ready: (T - 10, 9) });
    }

    #[test]
    fn ready_floor_stops_holding_when_its_lease_ends() {
        let f = shared((T - 50, 1), (T - 10, 9), T);
        assert_eq!(f.ready_at(T - 1), Some((T - 10, 9)));
        assert_eq!(f.ready_at(T), None, "the lease ended: its message may be leasable");
        assert_eq!(ScanFloors::from_shared(Some(f), T), ScanFloors { all: (T - 50, 1), ready: (T - 50, 1) });
    }

    #[test]
    fn an_invalidated_ready_floor_falls_back_to_all() {
        let f = shared((T - 50, 1), (T - 10, 9), i64::MIN);
        assert_eq!(ScanFloors::from_shared(Some(f), i64::MIN).ready, (T - 50, 1));
    }

    #[test]
    fn ready_floor_is_never_before_all() {
        // A learning whose ready floor was not kept raised `all` past the stored ready floor.
        let f = shared((T, 5), (T - 10, 9), T + 100);
        assert_eq!(ScanFloors::from_shared(Some(f), T).ready, (T, 5));
    }

    #[test]
    fn held_ready_carries_its_end() {
        let f = shared((T - 50, 1), (T - 10, 9), T);
        assert_eq!(f.held_ready(T - 1), Some(((T - 10, 9), T)));
        assert_eq!(f.held_ready(T), None);
    }

    #[test]
    fn the_learner_scans_with_its_ready_floor_only_if_kept() {
        let f = shared((T - 50, 1), (T - 10, 9), T + 1);
        assert_eq!(ScanFloors::from_learned(f, true), ScanFloors { all: (T - 50, 1), ready: (T - 10, 9) });
        assert_eq!(ScanFloors::from_learned(f, false), ScanFloors { all: (T - 50, 1), ready: (T - 50, 1) });
    }
}
