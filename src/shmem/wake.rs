//! Wake slots: where a committing transaction finds the backends waiting on a queue (wait.rs).

use std::sync::atomic::{AtomicU64, Ordering};

use courier_core::tuning::{MAX_WAITED_QUEUES, WAKE_PROBE};
use pgrx::pg_sys;

use super::{Guard, Region, region, slot_of};

#[repr(C)]
pub(super) struct WakeSlot {
    database: u32,
    queue_id: i32,
    /// Backends currently waiting on this slot; 0 = free.
    waiters: u32,
    /// Bumped by every wakeup, so a waiter can tell whether one happened since it last looked.
    generation: AtomicU64,
    cv: pg_sys::ConditionVariable,
}

/// Initialises the condition variables of a freshly zeroed region.
///
/// # Safety
/// Called once, while creating the region, before any backend can use it.
pub(super) unsafe fn init(region: &mut Region) {
    for slot in region.wake.iter_mut() {
        // SAFETY: the variable lives in shared memory for the server's lifetime (the caller).
        unsafe { pg_sys::ConditionVariableInit(&mut slot.cv) };
    }
}

/// A claimed wake slot; released by [`release_wake_slot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeSlotId(usize);

fn wake_index(database: u32, queue_id: i32) -> usize {
    slot_of(database, queue_id) % MAX_WAITED_QUEUES
}

/// Claims the wake slot of a queue for this backend; None when not preloaded or all slots are
/// taken by other queues.
pub fn claim_wake_slot(queue_id: i32) -> Option<WakeSlotId> {
    let region = region()?;
    let database = crate::pg::my_database();
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_EXCLUSIVE);
    let start = wake_index(database, queue_id);
    let mut free = None;
    for i in 0..WAKE_PROBE {
        let idx = (start + i) % MAX_WAITED_QUEUES;
        // SAFETY: the exclusive lock is held and the index is in bounds.
        let slot = unsafe { &mut (*region).wake[idx] };
        if slot.waiters > 0 && slot.database == database && slot.queue_id == queue_id {
            slot.waiters += 1;
            return Some(WakeSlotId(idx));
        }
        if slot.waiters == 0 && free.is_none() {
            free = Some(idx);
        }
    }
    let idx = free?;
    // SAFETY: the exclusive lock is held and the index came from the probe above.
    let slot = unsafe { &mut (*region).wake[idx] };
    slot.database = database;
    slot.queue_id = queue_id;
    slot.waiters = 1;
    Some(WakeSlotId(idx))
}

/// Gives up a claim. Safe to call from transaction-abort callbacks.
pub fn release_wake_slot(id: WakeSlotId) {
    let Some(region) = region() else { return };
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // SAFETY: the exclusive lock is held; the index came from claim_wake_slot.
    let slot = unsafe { &mut (*region).wake[id.0] };
    slot.waiters = slot.waiters.saturating_sub(1);
}

/// The slot's generation: compare before and after sleeping to tell a wakeup from a timeout.
pub fn wake_generation(id: WakeSlotId) -> u64 {
    let region = region().expect("a claimed slot implies shared memory");
    // SAFETY: the generation is atomic, and the slot stays claimed by us while we read it.
    unsafe { (*region).wake[id.0].generation.load(Ordering::Acquire) }
}

/// The slot's condition variable.
pub fn wake_cv(id: WakeSlotId) -> *mut pg_sys::ConditionVariable {
    let region = region().expect("a claimed slot implies shared memory");
    // SAFETY: only takes the address; the slot lives as long as the server.
    unsafe { &raw mut (*region).wake[id.0].cv }
}

/// Wakes the waiters of a queue (of this database); must not raise errors: broadcasting a
/// condition variable only takes spinlocks and sets latches.
///
/// # Safety
/// The caller holds the region's lock, at least shared: claims cannot change under us.
pub(super) unsafe fn wake_locked(region: *mut Region, database: u32, queue_id: i32) {
    let start = wake_index(database, queue_id);
    for i in 0..WAKE_PROBE {
        // SAFETY: the caller holds the lock and the index is in bounds; the generation is atomic.
        let slot = unsafe { &mut (*region).wake[(start + i) % MAX_WAITED_QUEUES] };
        if slot.waiters > 0 && slot.database == database && slot.queue_id == queue_id {
            slot.generation.fetch_add(1, Ordering::AcqRel);
            // SAFETY: an initialised condition variable in shared memory.
            unsafe { pg_sys::ConditionVariableBroadcast(&mut slot.cv) };
            break;
        }
    }
}
