//! Scan floors: where in a queue's ready range scans may start, shared by all backends.
//!
//! Acked messages leave index entries behind until vacuum removes them, and while a long snapshot
//! is open nothing can remove them or even mark them dead, so a scan from the start of a ready
//! range walks every message acked since that snapshot was taken, visiting each one's heap tuple;
//! messages in flight stay in the range too. A backend's own scan hint (lease.rs) avoids that only
//! while its scans come back full: on an empty poll, and every 100 ms regardless, it scans the
//! whole range. Floors are (ready time, id) positions that such scans start after, learned by one
//! backend per queue level (each level of a queue whose priorities span at most MAX_FLOOR_LEVELS;
//! of a grouped queue only when it has one level, see lease.rs) at most every 100 ms, and only
//! once `courier.floor_learn_after` messages were leased from the level since (or its ready
//! floor stopped holding, or the learning from the start is due), or sooner once 1,024 were (a
//! learning's walk grows with them: see courier_core::floor::learning::due), and kept in shared
//! memory:
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
//! start of the range once every `FLOOR_RELEARN_EVERY_USECS`: such a message waits that long at most,
//! unless a transaction that was running at the previous learning from the start is still open
//! (then until it ends: that walk would visit every message acked since, see shmem/floors.rs).
//! A learner skips in a transaction that already wrote (its own deletes would hide rows a rollback
//! brings back) or that uses a transaction snapshot (taken before its clock reading). The cases
//! are tested in tests/isolation/specs/scan_floor.spec, and for a queue with several priorities in
//! scan_floor_levels.spec.

use courier_core::floor::ScanFloors;
use courier_core::floor::learning::{LearnPolicy, Learner};
use courier_core::position::{Position, START};
use courier_core::tuning::{
    FLOOR_LEARN_EARLY_AFTER_TAKEN, FLOOR_LEARN_EVERY_USECS, FLOOR_RELEARN_EVERY_USECS, MAX_FLOOR_LEVELS,
};

use crate::pg;
use crate::settings;
use crate::shmem;
use crate::standby;
use crate::storage::{QueueRef, Store};

fn policy() -> LearnPolicy {
    LearnPolicy {
        every: FLOOR_LEARN_EVERY_USECS,
        relearn_every: FLOOR_RELEARN_EVERY_USECS,
        after: settings::floor_learn_after(),
        early: FLOOR_LEARN_EARLY_AFTER_TAKEN,
    }
}

/// A level's floors (raised first if they are due and this backend may learn them), or the start
/// of the range when none is known.
pub fn of(store: &Store, queue_id: i32, priority: i16) -> ScanFloors {
    let now = pg::now();
    let policy = policy();
    let (known, due) = shmem::floors(queue_id, priority, now, policy);
    if due && let Some(learned) = learn(store, queue_id, priority, policy) {
        return learned;
    }
    ScanFloors::from_shared(known, now)
}

/// The levels of a queue with several priorities whose scans start at their own floors: each level
/// of its priority range, top first, while the range spans at most MAX_FLOOR_LEVELS and the queue
/// is not grouped (a grouped lease scans levels its own way, storage/groups.rs). None for a queue
/// with one level (its statements take its floor directly) or any other.
pub fn levels(q: &QueueRef) -> Vec<i16> {
    let width = i32::from(*q.priorities.end()) - i32::from(*q.priorities.start()) + 1;
    if q.grouped || q.single_priority().is_some() || width > MAX_FLOOR_LEVELS as i32 {
        return Vec::new();
    }
    q.priorities.clone().rev().collect()
}

/// The floor of all rows of each level that has one: the level of a one-level queue, or
/// [`levels`]. Where counting walks (stats, the expiry of leases in flight) may start.
pub fn all_floors(store: &Store, q: &QueueRef) -> Vec<(i16, Position)> {
    match q.single_priority() {
        Some(p) => vec![(p, of(store, q.id, p).all)],
        None => levels(q).into_iter().map(|p| (p, of(store, q.id, p).all)).collect(),
    }
}

/// The levels of the queue's priority range, top first, while it spans at most MAX_FLOOR_LEVELS:
/// what storage's listed statements take instead of finding the levels by walking the index.
pub fn range(q: &QueueRef) -> Option<Vec<i16>> {
    let width = i32::from(*q.priorities.end()) - i32::from(*q.priorities.start()) + 1;
    (width <= MAX_FLOOR_LEVELS as i32).then(|| q.priorities.clone().rev().collect())
}

/// [`range`], each level with its floor of all rows where it has one ([`all_floors`]), else
/// START.
pub fn listed(store: &Store, q: &QueueRef) -> Option<Vec<(i16, Position)>> {
    let levels = range(q)?;
    let floors = all_floors(store, q);
    Some(levels.into_iter().map(|p| (p, floors.iter().find(|f| f.0 == p).map_or(START, |f| f.1))).collect())
}

/// Counts `taken` messages a lease took from a level towards its next learning (see
/// courier_core::floor::learning::due).
pub fn count_taken(queue_id: i32, priority: i16, taken: u32) {
    shmem::count_taken(queue_id, priority, taken);
}

/// Learns a level's floors if this backend may (see the module comment), stores them in shared
/// memory and returns what this scan may use of them.
fn learn(store: &Store, queue_id: i32, priority: i16, policy: LearnPolicy) -> Option<ScanFloors> {
    // In recovery the primary's announcements are not in this shared memory (standby.rs).
    // Nor in the caller's snapshot (stats): it was taken before this learner read the
    // announcements, so it could miss a write that was announced and committed in between.
    if pg::uses_transaction_snapshot()
        || pg::has_transaction_id()
        || standby::in_recovery()
        || store.in_callers_snapshot()
    {
        return None;
    }
    let from = shmem::claim_learning(queue_id, priority, pg::now(), policy)?;
    let read_at = pg::now();
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    let announced = shmem::earliest_announcement()?;
    let learner = Learner::new(read_at, announced);
    // Each statement takes its snapshot now, after both reads; the arithmetic between them is
    // courier_core::floor::learning's.
    let all = learner.all_floor(store.first_row_after(queue_id, priority, from.all));
    let walk = learner.ready_walk(from.ready, all);
    let (first, lease_ends) = store.first_leasable_after(queue_id, priority, walk.from, read_at);
    let learned = walk.floors(first, lease_ends);
    let kept = shmem::set_floors(queue_id, priority, learned, from.epoch);
    Some(ScanFloors::from_learned(learned, kept))
}
