//! Learning a level's floors from what two statements found.
//!
//! The learner reads the clock (R), then the earliest clock reading any uncommitted writer into a
//! ready range announced (A), then lets each statement take its snapshot. A writer it did not see
//! announced started after R, so its rows are later than R; one it saw writes no earlier than A;
//! one that withdrew its announcement finished before the snapshots. So rows the snapshots cannot
//! show all sit after `(min(R, A), i64::MIN)`, the bound, and no floor may pass it.
//!
//! Below the bound, a floor goes just before the first row the statement found: the floor of all
//! rows before the first row in any state (in flight, ready, delayed, dead); the ready floor before
//! the first row that is not in flight beyond R. The ready walk passes leases that outlast R, so
//! the ready floor holds only until the earliest of them ends.
//!
//! The extension runs the statements; [`Learner`] does the arithmetic between them:
//!
//! ```
//! use courier_core::floor::learning::Learner;
//! # let (read_at, announced) = (1_000, i64::MAX);
//! # let previous_ready = None;
//! let learner = Learner::new(read_at, announced);
//! let all = learner.all_floor(Some((900, 7))); // first_row_after(from.all)
//! let walk = learner.ready_walk(previous_ready, all);
//! // first_leasable_after(walk.from, read_at):
//! let learned = walk.floors(Some((950, 12)), Some(5_000));
//! assert_eq!((learned.all, learned.ready, learned.ready_until), ((900, 6), (950, 11), 5_000));
//! ```

use crate::floor::SharedFloors;
use crate::position::Position;

/// How long ago a level's floors were learned, and what has happened to it since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinceLearned {
    /// Microseconds since a backend last set out to learn the floors, and since it last learned
    /// them from the start of the range.
    pub learned: i64,
    pub relearned: i64,
    /// Messages that leases took from the level since.
    pub taken: u32,
    /// Whether the ready floor still holds (no lease it passed has ended, no extend shortened one).
    pub ready_holds: bool,
}

/// When a level's floors are learned again (see [`due`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnPolicy {
    /// At most this often (microseconds), unless `early` messages left the head.
    pub every: i64,
    /// From the start of the range this often (microseconds).
    pub relearn_every: i64,
    /// Not before this many messages left the head (`courier.floor_learn_after`).
    pub after: u32,
    /// Once this many left the head, without waiting for `every` (never fewer than `after`:
    /// see [`LearnPolicy::early_after`]).
    pub early: u32,
}

impl LearnPolicy {
    /// Messages after which a learning is due and claimable before `every`: `early`, raised to
    /// `after` so that a higher `courier.floor_learn_after` is not undercut.
    pub fn early_after(&self) -> u32 {
        self.early.max(self.after)
    }
}

/// Whether a level's floors are due to be learned again: once `early` messages left the head
/// since the last learning (the walk a learning pays grows with them, so a busy queue learns more
/// often rather than further); else not within `every` of the last learning, and then when either
/// enough left the head (`after` messages: before that, a scan from the old floor walks little
/// more than from a new one), or the ready floor stopped holding (scans fall back to the floor of
/// all rows and walk the messages in flight), or the learning from the start of the range is due
/// (its bound on a missed message must not depend on traffic).
pub fn due(since: SinceLearned, policy: LearnPolicy) -> bool {
    since.taken >= policy.early_after()
        || since.learned >= policy.every
            && (since.taken >= policy.after || !since.ready_holds || since.relearned >= policy.relearn_every)
}

/// Whether a backend may claim the learning: the last one set out at least `every` ago, or
/// `early` messages left the head since (a claim resets the count, so two backends do not claim
/// the same early learning).
pub fn claimable(learned: i64, taken: u32, policy: LearnPolicy) -> bool {
    learned >= policy.every || taken >= policy.early_after()
}

/// The learning of one level's floors, bounded by the clock reading and the earliest
/// announcement taken before its statements' snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Learner {
    bound: Position,
}

/// Where the ready floor's statement walks from, and until when what it continues from holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyWalk {
    /// The statement looks for the first leasable row after this.
    pub from: Position,
    /// The previous ready floor's end when continuing from it, else `i64::MAX`.
    pub held_until: i64,
    bound: Position,
    all: Position,
}

/// The place just before `p`, so that a scan starting after it still sees `p`. Saturates at the
/// smallest id rather than wrapping to the largest, which would skip `p`.
pub fn just_before((at, id): Position) -> Position {
    (at, id.saturating_sub(1))
}

/// Just before the first row a statement found, but not past the bound; the bound if none.
fn below(bound: Position, first: Option<Position>) -> Position {
    first.map_or(bound, |p| bound.min(just_before(p)))
}

impl Learner {
    /// `read_at`: the clock, read first; `announced`: the earliest announcement read after it
    /// (`i64::MAX` when nobody announced).
    pub fn new(read_at: i64, announced: i64) -> Learner {
        Learner { bound: (read_at.min(announced), i64::MIN) }
    }

    /// No floor learned here passes this.
    pub fn bound(&self) -> Position {
        self.bound
    }

    /// The floor of all rows, from the first row the snapshot shows after the previous floor of
    /// all rows (`None`: no row after it).
    pub fn all_floor(&self, first_row: Option<Position>) -> Position {
        below(self.bound, first_row)
    }

    /// Where the ready walk starts: from the previous ready floor, while it holds (`previous`
    /// comes from [`SharedFloors::held_ready`]) and lies past the new floor of all rows, since it
    /// was learned under the same rules; else from the floor of all rows, with nothing to expire.
    pub fn ready_walk(&self, previous: Option<(Position, i64)>, all: Position) -> ReadyWalk {
        let (from, held_until) = match previous {
            Some((p, until)) if p > all => (p, until),
            _ => (all, i64::MAX),
        };
        ReadyWalk { from, held_until, bound: self.bound, all }
    }
}

impl ReadyWalk {
    /// The learned floors, from what the ready walk found: the first row after `from` not in
    /// flight beyond the clock reading, and the earliest end of the leases beyond it that it
    /// passed. The ready floor is never before the floor of all rows, and holds until the earlier
    /// of those lease ends and the end of what the walk continued from.
    pub fn floors(self, first_leasable: Option<Position>, lease_ends: Option<i64>) -> SharedFloors {
        let ready = below(self.bound, first_leasable).max(self.all);
        let ready_until = lease_ends.map_or(self.held_until, |e| e.min(self.held_until));
        SharedFloors { all: self.all, ready, ready_until }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 800_000_000_000_000;
    const MIN: i64 = i64::MIN;

    fn since(learned: i64, relearned: i64, taken: u32, ready_holds: bool) -> SinceLearned {
        SinceLearned { learned, relearned, taken, ready_holds }
    }

    const POLICY: LearnPolicy = LearnPolicy { every: 100, relearn_every: 5_000, after: 64, early: 1_024 };

    #[test]
    fn learning_waits_for_traffic_unless_a_floor_stopped_holding() {
        let p = POLICY;
        assert!(due(since(100, 100, 64, true), p), "enough left the head");
        assert!(!due(since(99, 5_000, 1_000, false), p), "learned too recently");
        assert!(!due(since(10_000, 100, 63, true), p), "too little left the head");
        assert!(due(since(100, 100, 0, false), p), "the ready floor stopped holding");
        assert!(due(since(100, 5_000, 0, true), p), "the learning from the start is due");
        assert!(
            due(since(100, 100, 1, true), LearnPolicy { after: 1, ..p }),
            "after = 1 learns on every due lease"
        );
    }

    #[test]
    fn a_busy_level_learns_early_and_its_walk_stays_bounded() {
        let p = POLICY;
        assert!(due(since(0, 0, 1_024, true), p), "early: as many left the head as a walk may pass");
        assert!(!due(since(99, 99, 1_023, true), p), "one fewer waits for the interval");
        assert!(claimable(0, 1_024, p) && !claimable(99, 1_023, p) && claimable(100, 0, p));
        let rare = LearnPolicy { after: 1_000_000, ..p };
        assert!(!due(since(0, 0, 999_999, true), rare), "early is never below courier.floor_learn_after");
        assert!(!claimable(0, 999_999, rare) && claimable(0, 1_000_000, rare));
    }

    #[test]
    fn bound_is_the_earlier_of_clock_and_announcement() {
        assert_eq!(Learner::new(T, i64::MAX).bound(), (T, MIN), "nobody announced");
        assert_eq!(Learner::new(T, T - 5).bound(), (T - 5, MIN), "an earlier announcement");
        assert_eq!(Learner::new(T, T + 5).bound(), (T, MIN), "a later announcement");
    }

    #[test]
    fn just_before_never_underflows() {
        assert_eq!(just_before((T, 10)), (T, 9));
        assert_eq!(just_before((T, MIN + 1)), (T, MIN));
        assert_eq!(just_before((T, MIN)), (T, MIN), "saturates rather than wrapping past p");
        assert_eq!(just_before((MIN, MIN)), (MIN, MIN));
    }

    #[test]
    fn all_floor_goes_just_before_the_first_row_below_the_bound() {
        let l = Learner::new(T, i64::MAX);
        assert_eq!(l.all_floor(None), (T, MIN), "no row: up to the bound");
        assert_eq!(l.all_floor(Some((T - 10, 4))), (T - 10, 3));
        assert_eq!(l.all_floor(Some((T, 4))), (T, MIN), "a row at the clock reading: bound");
        assert_eq!(l.all_floor(Some((T + 10, 4))), (T, MIN), "a later row: bound");
    }

    #[test]
    fn an_announcement_holds_the_floors_back() {
        let l = Learner::new(T, T - 100);
        let all = l.all_floor(Some((T - 10, 4)));
        assert_eq!(all, (T - 100, MIN));
        let f = l.ready_walk(None, all).floors(None, None);
        assert_eq!((f.all, f.ready), ((T - 100, MIN), (T - 100, MIN)));
    }

    #[test]
    fn ready_walk_continues_from_the_previous_floor_only_past_all() {
        let l = Learner::new(T, i64::MAX);
        let all = (T - 50, 5);
        let walk = l.ready_walk(Some(((T - 20, 1), T + 7)), all);
        assert_eq!((walk.from, walk.held_until), ((T - 20, 1), T + 7), "holds and is past all");
        let walk = l.ready_walk(Some((all, T + 7)), all);
        assert_eq!((walk.from, walk.held_until), (all, i64::MAX), "at all: fresh walk");
        let walk = l.ready_walk(Some(((T - 60, 1), T + 7)), all);
        assert_eq!((walk.from, walk.held_until), (all, i64::MAX), "behind all: fresh walk");
        let walk = l.ready_walk(None, all);
        assert_eq!((walk.from, walk.held_until), (all, i64::MAX), "none holds: fresh walk");
    }

    #[test]
    fn a_ready_floor_that_stopped_holding_is_not_continued() {
        let previous = SharedFloors { all: (T - 50, 5), ready: (T - 20, 1), ready_until: T };
        let l = Learner::new(T + 1, i64::MAX);
        assert_eq!(l.ready_walk(previous.held_ready(T), (T - 50, 5)).from, (T - 50, 5));
        assert_eq!(l.ready_walk(previous.held_ready(T - 1), (T - 50, 5)).from, (T - 20, 1));
    }

    #[test]
    fn ready_floor_goes_just_before_the_first_leasable_row() {
        let l = Learner::new(T, i64::MAX);
        let all = (T - 50, 5);
        let f = l.ready_walk(None, all).floors(Some((T - 20, 8)), Some(T + 30));
        assert_eq!(f, SharedFloors { all, ready: (T - 20, 7), ready_until: T + 30 });
        let f = l.ready_walk(None, all).floors(None, None);
        assert_eq!(f, SharedFloors { all, ready: (T, MIN), ready_until: i64::MAX }, "nothing leasable");
    }

    #[test]
    fn ready_until_is_the_earlier_of_held_and_lease_ends() {
        let l = Learner::new(T, i64::MAX);
        let all = (T - 50, 5);
        let walk = l.ready_walk(Some(((T - 20, 1), T + 7)), all);
        assert_eq!(walk.floors(None, Some(T + 3)).ready_until, T + 3);
        assert_eq!(walk.floors(None, Some(T + 9)).ready_until, T + 7);
        assert_eq!(walk.floors(None, None).ready_until, T + 7);
        assert_eq!(l.ready_walk(None, all).floors(None, None).ready_until, i64::MAX, "nothing to expire");
    }

    #[test]
    fn ready_floor_is_never_before_all_even_on_odd_input() {
        // The statement only returns rows after `from`; were it not to, the floor still holds.
        let l = Learner::new(T, i64::MAX);
        let all = (T - 50, 5);
        assert_eq!(l.ready_walk(None, all).floors(Some((T - 90, 1)), None).ready, all);
    }

    /// Every combination of a few interesting values keeps the invariants the extension relies on.
    #[test]
    fn invariants_hold_across_inputs() {
        let times = [MIN, T - 100, T - 1, T, T + 1, T + 100, i64::MAX];
        let places =
            [(T - 100, MIN), (T - 100, 1), (T - 1, 7), (T, MIN), (T, 1), (T + 1, 2), (T + 100, MIN + 1)];
        let options = || std::iter::once(None).chain(places.iter().copied().map(Some));
        for announced in times {
            let l = Learner::new(T, announced);
            for first_row in options() {
                let all = l.all_floor(first_row);
                assert!(all <= l.bound());
                if let Some(p) = first_row.filter(|p| p.1 > MIN) {
                    assert!(all < p, "the first visible row stays after the floor of all rows");
                }
                for previous in options().flat_map(|p| times.map(|until| p.map(|p| (p, until)))) {
                    let walk = l.ready_walk(previous, all);
                    assert!(walk.from >= all);
                    for first in options().filter(|f| f.is_none_or(|f| f > walk.from)) {
                        for lease_ends in std::iter::once(None).chain(times.map(Some)) {
                            let f = walk.floors(first, lease_ends);
                            assert_eq!(f.all, all);
                            assert!(f.ready <= l.bound(), "no floor passes the bound");
                            assert!(f.ready >= f.all, "the ready floor is never before all");
                            if let Some(p) = first.filter(|p| p.1 > MIN) {
                                assert!(f.ready < p, "the first leasable row stays after the ready floor");
                            }
                            assert!(f.ready_until <= walk.held_until);
                            assert!(lease_ends.is_none_or(|e| f.ready_until <= e));
                        }
                    }
                }
            }
        }
    }
}
