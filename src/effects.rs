//! Effects that must wait for commit: per-queue counters and waking waiting consumers.
//!
//! Each operation adds to a backend-local record, tagged with the subtransaction it ran in. At
//! commit the counts go to shared memory in one short critical section and the queues that got
//! ready messages wake their waiters; on abort, or when a savepoint is rolled back, the affected
//! records are dropped. So the counters count exactly the operations that committed, a waiter is
//! never woken by work that rolled back, and the write path pays nothing but a few backend-local
//! additions.

use std::cell::RefCell;

use pgrx::pg_sys;

use crate::shmem::{self, Counter, Delta, N_COUNTERS};
use crate::xact;

struct Pending {
    subxact: pg_sys::SubTransactionId,
    delta: Delta,
    shortened: bool,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
}

/// How this module reacts to transaction ends (the order among subscribers is in lib.rs).
pub const HOOKS: xact::Hooks = xact::Hooks {
    commit: publish,
    abort: discard,
    subxact_abort: discard_subxact,
    subxact_commit: merge_into_parent,
    ..xact::Hooks::NONE
};

/// Runs `f` on this subtransaction's record for the queue, unless there is no shared memory to
/// publish it to.
fn record(queue_id: i32, f: impl FnOnce(&mut Pending)) {
    if !shmem::enabled() {
        return;
    }
    xact::ensure_registered();
    // SAFETY: reads backend-local transaction state.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING.with_borrow_mut(|p| {
        let i = match p.iter().position(|e| e.subxact == subxact && e.delta.queue_id == queue_id) {
            Some(i) => i,
            None => {
                p.push(Pending {
                    subxact,
                    delta: Delta { queue_id, counters: [0; N_COUNTERS], forget: false, wake: false },
                    shortened: false,
                });
                p.len() - 1
            }
        };
        f(&mut p[i]);
    });
}

/// Counts `n` occurrences of `counter` for a queue, if this transaction commits.
pub fn add(queue_id: i32, counter: Counter, n: u64) {
    if n > 0 {
        record(queue_id, |e| e.delta.counters[counter as usize] += n);
    }
}

/// Wakes the queue's waiting consumers when this transaction commits: it made messages ready.
pub fn wake(queue_id: i32) {
    record(queue_id, |e| e.delta.wake = true);
}

/// Forgets the queue's ready floors when this transaction commits: it shortened a lease.
pub fn lease_shortened(queue_id: i32) {
    record(queue_id, |e| e.shortened = true);
}

/// Frees the queue's counter slot if this transaction (which drops the queue) commits.
pub fn forget(queue_id: i32) {
    record(queue_id, |e| e.delta.forget = true);
}

fn publish() {
    PENDING.with_borrow_mut(|pending| {
        if pending.iter().any(|p| p.shortened) {
            let shortened: Vec<i32> =
                pending.iter().filter(|p| p.shortened).map(|p| p.delta.queue_id).collect();
            // After the commit is visible, so that a floor learned from then on sees it; before
            // the wakeups, so that a woken waiter does not use the old floor.
            shmem::invalidate_ready_floors(&shortened);
        }
        // After XACT_EVENT_COMMIT the transaction has left the proc array, so a waiter that wakes
        // now sees its messages.
        shmem::commit(pending, |p| &p.delta);
        // Cleared, not dropped: the next transaction reuses the allocation.
        pending.clear();
    });
}

fn discard() {
    PENDING.with_borrow_mut(|p| p.clear());
}

fn discard_subxact(subxact: pg_sys::SubTransactionId) {
    PENDING.with_borrow_mut(|p| p.retain(|e| e.subxact != subxact));
}

fn merge_into_parent(subxact: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
    PENDING.with_borrow_mut(|p| {
        for e in p.iter_mut().filter(|e| e.subxact == subxact) {
            e.subxact = parent;
        }
    });
}
