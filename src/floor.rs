//! Scan floors: where in a queue's ready range scans may start, shared by all backends.
//!
//! Acked messages leave index entries behind until vacuum removes them, and while a long snapshot
//! is open nothing can remove them or even mark them dead, so a scan from the start of a ready
//! range walks every message acked since that snapshot was taken, visiting each one's heap tuple;
//! messages in flight stay in the range too. A backend's own scan hint (lease.rs) avoids that only
//! while its scans come back full: on an empty poll, and every 100 ms regardless, it scans the
//! whole range. Floors are (ready time, id) positions that such scans start after, learned every
//! 100 ms by one backend per queue level (queues that have only ever used one priority) and kept
//! in shared memory:
//!
//! - the floor of all rows: every row that is or may become visible sits after it;
//! - the ready floor: every row that is or may become leasable sits after it, until `ready_until`
//!   (the earliest end of the leases in flight it passed).
//!
//! Learning. The learner takes the first row of the range after the current floor that an MVCC
//! snapshot shows (in flight, ready, delayed or dead: anything not deleted by a committed
//! transaction), and the first such row that is not in flight beyond its clock reading. Rows never
//! move backwards: a lease does not move a message, a nack moves it later (RELEASE in storage.rs
//! never sets an earlier time). What the snapshot cannot show is a row an uncommitted transaction
//! is writing at a time before the floor being learned: an enqueue, a nack, a redrive, a move into
//! a dead-letter queue. So every such writer takes its timestamp from `announce::stamp`, which
//! first announces a clock reading in shared memory (withdrawn when its transaction ends) and then
//! reads the clock again; the learner reads the clock (R) before reading the announcements
//! (earliest: A), then takes its snapshot, and no floor goes past (min(R, A), -inf). A writer the learner did
//! not see announced after R was read, so its rows are later than R; one it saw writes no earlier
//! than A; one that withdrew had committed (or aborted) before the snapshot. The one other way a
//! message becomes leasable early is an extend that shortens its lease: at commit it forgets its
//! queue's ready floors and bumps their epoch, so a learning claimed before does not store its
//! ready floor (a learning claimed after takes its snapshot after the commit).
//!
//! What this leaves uncovered — a clock stepped backwards, a prepared transaction committed after
//! its backend moved on, rows written to courier.message by hand — is covered by learning from the
//! start of the range once every [`RELEARN_EVERY_USECS`]: such a message waits that long at most.
//! A learner skips in a transaction that already wrote (its own deletes would hide rows a rollback
//! brings back) or that uses a transaction snapshot (taken before its clock reading). The cases
//! are tested in tests/isolation/specs/scan_floor.spec.

use crate::pg;
use crate::shmem;
use crate::storage::{Position, Store, START};

/// How often one backend per queue level learns its floor.
pub const LEARN_EVERY_USECS: i64 = 100_000;

/// How often the floor is learned from the start of the range instead of from itself.
pub const RELEARN_EVERY_USECS: i64 = 5_000_000;

/// A level's floors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Floors {
    /// Every row that is or may become visible sits after it (messages in flight included).
    pub all: Position,
    /// Every row that is or may become leasable now sits after it (at or after `all`).
    pub ready: Position,
}

const NONE_KNOWN: Floors = Floors { all: START, ready: START };

/// A level's floors (raised first if they are due and this backend may learn them), or the start
/// of the range when none is known.
pub fn of(store: &Store, queue_id: i32, priority: i16) -> Floors {
    let now = pg::now();
    let (known, due) = shmem::floor(queue_id, priority, now, LEARN_EVERY_USECS);
    if due {
        if let Some(learned) = learn(store, queue_id, priority) {
            return learned;
        }
    }
    known
        .map_or(NONE_KNOWN, |f| Floors { all: f.all, ready: f.ready_at(now).map_or(f.all, |r| r.max(f.all)) })
}

fn learn(store: &Store, queue_id: i32, priority: i16) -> Option<Floors> {
    if pg::uses_transaction_snapshot() || pg::has_transaction_id() {
        return None;
    }
    let from = shmem::claim_learning(queue_id, priority, pg::now(), LEARN_EVERY_USECS, RELEARN_EVERY_USECS)?;
    let read_at = pg::now();
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    let announced = shmem::earliest_announcement()?;
    let bound: Position = (read_at.min(announced), i64::MIN);
    let just_before = |(at, id): Position| (at, id.saturating_sub(1));
    // Each statement takes its snapshot now, after both reads.
    let all =
        store.first_row_after(queue_id, priority, from.all).map_or(bound, |p| bound.min(just_before(p)));
    // The ready floor continues from the previous one while that holds (it was learned under the
    // same rules), else from the floor of all rows; it passes messages in flight whose lease
    // outlasts read_at and holds until the earliest of those leases ends.
    let (ready_from, held_until) = match from.ready {
        Some((p, until)) if p > all => (p, until),
        _ => (all, i64::MAX),
    };
    let (first, lease_ends) = store.first_leasable_after(queue_id, priority, ready_from, read_at);
    let ready = first.map_or(bound, |p| bound.min(just_before(p))).max(all);
    let until = lease_ends.map_or(held_until, |e| e.min(held_until));
    let kept =
        shmem::set_floor(queue_id, priority, shmem::Floors { all, ready, ready_until: until }, from.epoch);
    Some(Floors { all, ready: if kept { ready } else { all } })
}
