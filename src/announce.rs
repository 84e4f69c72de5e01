//! Announcing writes into a ready range before making them, so that scan floors never pass them.
//!
//! A scan floor (floor.rs) is learned from an MVCC snapshot, which cannot show a row that an
//! uncommitted transaction is writing: an enqueue, a nack, a redrive, a move into a dead-letter
//! queue. So every such writer takes the timestamp it writes from [`stamp`], which first announces
//! a clock reading in shared memory (withdrawn when its transaction ends) and then reads the clock
//! again. The learner reads the clock before it reads the announcements and takes its snapshot
//! after both, and no floor goes past the earlier of the two readings: a writer it did not see
//! announced after its clock reading, so its rows are later; one it saw writes no earlier than its
//! announcement; one that withdrew had ended before the snapshot.

use std::cell::Cell;

use pgrx::pg_sys;

use crate::pg;
use crate::shmem;
use crate::xact;

thread_local! {
    static ANNOUNCED: Cell<bool> = const { Cell::new(false) };
}

/// How this module reacts to transaction ends (the order among subscribers is in lib.rs): the
/// announcement lasts until the transaction's rows are visible, or gone.
pub const HOOKS: xact::Hooks = xact::Hooks { commit: withdraw, abort: withdraw, ..xact::Hooks::NONE };

/// The current time, for a write that makes a message leasable at (or after) it: announced first
/// (see the module comment). Use it for every such write, and for nothing else.
pub fn stamp() -> pg_sys::TimestampTz {
    if shmem::enabled() && !ANNOUNCED.get() {
        xact::ensure_registered();
        shmem::announce(pg::now());
        ANNOUNCED.set(true);
        // The announcement must be visible to a learner before the clock is read again.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
    pg::now()
}

fn withdraw() {
    if ANNOUNCED.replace(false) {
        shmem::withdraw();
    }
}
