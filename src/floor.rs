//! Scan floors: where in a queue's ready range scans may start, shared by all backends.
//!
//! Acked messages leave index entries behind until vacuum removes them, and while a long snapshot
//! is open nothing can remove them or even mark them dead, so a scan from the start of a ready
//! range walks every message acked since that snapshot was taken, visiting each one's heap tuple.
//! A backend's own scan hint (lease.rs) avoids that only while its scans come back full; an
//! empty poll, and every 100 ms regardless, it scans from the start. A floor is a (ready time,
//! id) position that every message that is or may become leasable sits after, learned every
//! 100 ms by one backend per queue level, so that those scans start there instead.
//!
//! Learning. The learner takes the first row of the range that an MVCC snapshot shows (in flight,
//! ready, delayed or dead: anything not deleted by a committed transaction) after the current
//! floor. Rows already there never move backwards: a lease does not move a message, and a nack
//! only moves it later (RELEASE in storage.rs never sets an earlier time). What the snapshot
//! cannot show is a row an uncommitted transaction is writing at a time before the floor it is
//! about to learn: an enqueue, a redrive, or a move into a dead-letter queue. So every such writer
//! takes its timestamp from [`stamp`], which first announces a clock reading in shared memory
//! (cleared when its transaction ends) and then reads the clock again; the learner reads the clock
//! (R) before reading the announcements (earliest: A), then takes its snapshot, and the floor is
//! at most (min(R, A), -inf). A writer the learner did not see announced after R was read, so
//! its rows are later than R; one it saw writes no earlier than A; one that withdrew had committed
//! (or aborted) before the snapshot.
//!
//! What this leaves uncovered — a clock stepped backwards, a prepared transaction committed after
//! its backend moved on, rows written to courier.message by hand — is covered by learning from the
//! start of the range once every [`RELEARN_EVERY_USECS`]: such a message waits that long at most.
//! A learner skips in a transaction that already wrote (its own deletes would hide rows a rollback
//! brings back) or that uses a transaction snapshot (taken before its clock reading).

use std::cell::Cell;

use pgrx::pg_sys;

use crate::catalog;
use crate::shmem;
use crate::storage::{Position, Store, START};

/// How often one backend per queue level learns its floor.
pub const LEARN_EVERY_USECS: i64 = 100_000;

/// How often the floor is learned from the start of the range instead of from itself.
pub const RELEARN_EVERY_USECS: i64 = 5_000_000;

thread_local! {
    static ANNOUNCED: Cell<bool> = const { Cell::new(false) };
}

fn clock() -> pg_sys::TimestampTz {
    // SAFETY: reads the system clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// The current time, for a write that makes a message leasable at (or after) it: announced first
/// (see the module comment). Use it for every such write, and for nothing else.
pub fn stamp() -> pg_sys::TimestampTz {
    if shmem::enabled() && !ANNOUNCED.get() {
        crate::at_commit::register();
        shmem::announce(clock());
        ANNOUNCED.set(true);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
    clock()
}

/// The transaction ended: withdraw the announcement. Called from the transaction callbacks.
pub fn end_of_transaction() {
    if ANNOUNCED.replace(false) {
        shmem::withdraw();
    }
}

/// Where a scan of the level's whole range may start: its floor (raised first if it is due and
/// this backend may learn it), or the start of the range.
pub fn of(store: &Store, queue_id: i32, priority: i16) -> Position {
    let (floor, due) = shmem::floor(queue_id, priority, clock(), LEARN_EVERY_USECS);
    if due {
        if let Some(learned) = learn(store, queue_id, priority) {
            return learned;
        }
    }
    floor.unwrap_or(START)
}

fn learn(store: &Store, queue_id: i32, priority: i16) -> Option<Position> {
    if catalog::uses_transaction_snapshot() {
        return None;
    }
    // SAFETY: reads transaction state.
    if unsafe { pg_sys::GetTopTransactionIdIfAny() } != pg_sys::InvalidTransactionId {
        return None;
    }
    let from = shmem::claim_learning(queue_id, priority, clock(), LEARN_EVERY_USECS, RELEARN_EVERY_USECS)?;
    let read_at = clock();
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    let announced = shmem::earliest_announcement()?;
    let bound: Position = (read_at.min(announced), i64::MIN);
    // The statement takes its snapshot now, after both reads.
    let first = store.first_row_after(queue_id, priority, from);
    let floor = match first {
        Some((at, id)) => bound.min((at, id.saturating_sub(1))),
        None => bound,
    };
    shmem::set_floor(queue_id, priority, floor);
    Some(floor)
}
