//! Effects that must wait for commit: per-queue counters and waking waiting consumers.
//!
//! Each operation adds to a backend-local record, tagged with the subtransaction it ran in. At
//! commit the counts go to shared memory in one short critical section and the queues that got
//! ready messages wake their waiters; on abort, or when a savepoint is rolled back, the affected
//! records are dropped. So the counters count exactly the operations that committed, a waiter is
//! never woken by work that rolled back, and the write path pays nothing but a few backend-local
//! additions. The same callbacks release a wait's shared-memory claim if its transaction aborts.

use std::cell::{Cell, RefCell};

use pgrx::pg_sys;

use crate::shmem::{self, Counter, Delta, N_COUNTERS};

struct Pending {
    subxact: pg_sys::SubTransactionId,
    delta: Delta,
    shortened: bool,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// The wake slot this backend is waiting on, if any (see wait.rs).
    static CLAIMED: Cell<Option<shmem::WakeSlotId>> = const { Cell::new(None) };
}

/// Records a claimed wake slot so an abort releases it even if the wait never returns normally.
pub fn set_claim(slot: Option<shmem::WakeSlotId>) {
    register();
    if let Some(old) = CLAIMED.replace(slot) {
        shmem::release_wake_slot(old);
    }
}

fn release_claim() {
    if let Some(old) = CLAIMED.take() {
        shmem::release_wake_slot(old);
    }
}

fn entry<R>(queue_id: i32, f: impl FnOnce(&mut Pending) -> R) -> R {
    // SAFETY: backend-local transaction state.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
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
        f(&mut p[i])
    })
}

/// Makes sure the transaction callbacks are registered (they also reset access.rs's state when a
/// transaction or subtransaction aborts).
pub fn register() {
    if REGISTERED.get() {
        return;
    }
    // SAFETY: registers process-lifetime callbacks once per backend.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
    REGISTERED.set(true);
}

/// Counts `n` occurrences of `counter` for a queue, if this transaction commits.
pub fn add(queue_id: i32, counter: Counter, n: u64) {
    if n == 0 || !shmem::enabled() {
        return;
    }
    register();
    entry(queue_id, |e| e.delta.counters[counter as usize] += n);
}

/// Wakes the queue's waiting consumers when this transaction commits: it made messages ready.
pub fn wake(queue_id: i32) {
    if !shmem::enabled() {
        return;
    }
    register();
    entry(queue_id, |e| e.delta.wake = true);
}

/// Forgets the queue's ready floors when this transaction commits: it shortened a lease.
pub fn lease_shortened(queue_id: i32) {
    if !shmem::enabled() {
        return;
    }
    register();
    entry(queue_id, |e| e.shortened = true);
}

/// Frees the queue's counter slot if this transaction (which drops the queue) commits.
pub fn forget(queue_id: i32) {
    if !shmem::enabled() {
        return;
    }
    register();
    entry(queue_id, |e| e.delta.forget = true);
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT => crate::durability::pre_commit(),
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => {
            crate::durability::end_of_transaction();
            // After XACT_EVENT_COMMIT the transaction has left the proc array (floor.rs).
            crate::floor::end_of_transaction();
            release_claim();
            PENDING.with(|p| {
                // Cleared, not taken: the next transaction reuses the allocation.
                let mut pending = p.borrow_mut();
                if pending.iter().any(|p| p.shortened) {
                    let shortened: Vec<i32> =
                        pending.iter().filter(|p| p.shortened).map(|p| p.delta.queue_id).collect();
                    // After the commit is visible, so that a floor learned from then on sees it;
                    // before the wakeups, so that a woken waiter does not use the old floor.
                    shmem::invalidate_ready_floors(&shortened);
                }
                // After XACT_EVENT_COMMIT the transaction has left the proc array, so a waiter
                // that wakes now sees its messages.
                shmem::commit(&pending, |p| &p.delta);
                pending.clear();
            });
        }
        // A prepared transaction may commit in another backend later; its work is not counted
        // and wakes nobody (waiters find its messages at their next periodic check).
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => {
            crate::durability::end_of_transaction();
            crate::floor::end_of_transaction();
            crate::access::after_abort();
            release_claim();
            PENDING.with(|p| p.borrow_mut().clear());
        }
        _ => {}
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    match event {
        SUBXACT_EVENT_ABORT_SUB => {
            crate::access::after_abort();
            // A wait runs within one subtransaction at most; if that aborted, so did the wait.
            release_claim();
            PENDING.with(|p| p.borrow_mut().retain(|e| e.subxact != my_subid))
        }
        SUBXACT_EVENT_COMMIT_SUB => PENDING.with(|p| {
            for e in p.borrow_mut().iter_mut().filter(|e| e.subxact == my_subid) {
                e.subxact = parent_subid;
            }
        }),
        _ => {}
    }
}
