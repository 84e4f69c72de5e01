//! Per-queue counters of committed work (see the module comment of shmem).

use std::sync::atomic::{AtomicU64, Ordering};

use courier_core::tuning::MAX_TRACKED_QUEUES;
use pgrx::pg_sys;

use super::{Guard, Region, region, slot_of};

/// The counters kept per queue, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Enqueued = 0,
    Deduplicated,
    Leased,
    Expired,
    Acked,
    Nacked,
    DeadLettered,
}

/// One more than the last counter, so adding a counter cannot leave the arrays short.
pub const N_COUNTERS: usize = Counter::DeadLettered as usize + 1;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum SlotState {
    /// Never used: a probe for a queue can stop here.
    #[allow(dead_code, reason = "zeroed shared memory is this state; no code builds it")]
    Empty = 0,
    Used = 1,
    /// Its queue was dropped: free for a new queue, but a probe must go on past it.
    Deleted = 2,
}

/// A queue's counters. Which queue a slot belongs to, and `since`, change only under the
/// exclusive lock; the counters are added to under the shared one (commits of the queue's
/// work, many at once) and zeroed under the exclusive one (reset).
#[repr(C)]
pub(super) struct Entry {
    database: u32,
    queue_id: i32,
    state: SlotState,
    /// When this queue's counters started (first counted event, or the last reset).
    since: pg_sys::TimestampTz,
    counters: [AtomicU64; N_COUNTERS],
}

impl Entry {
    fn counts(&self) -> [u64; N_COUNTERS] {
        std::array::from_fn(|i| self.counters[i].load(Ordering::Relaxed))
    }

    fn zero(&self) {
        for c in &self.counters {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn add(&self, deltas: &[u64; N_COUNTERS]) {
        for (c, &d) in self.counters.iter().zip(deltas) {
            if d != 0 {
                c.fetch_add(d, Ordering::Relaxed);
            }
        }
    }
}

/// Finds the entry for a queue, optionally claiming a free slot for it.
///
/// # Safety
/// The caller holds the region's lock (exclusively if `create`).
unsafe fn find_entry(region: *mut Region, database: u32, queue_id: i32, create: bool) -> Option<*mut Entry> {
    let start = slot_of(database, queue_id);
    let mut free: Option<*mut Entry> = None;
    for i in 0..MAX_TRACKED_QUEUES {
        // SAFETY: the index is in bounds, and the lock the caller holds keeps a slot's identity
        // from changing while we read it.
        let (e, state, db, q) = unsafe {
            let e = &raw mut (*region).entries[(start + i) % MAX_TRACKED_QUEUES];
            (e, (*e).state, (*e).database, (*e).queue_id)
        };
        match state {
            SlotState::Used if db == database && q == queue_id => return Some(e),
            SlotState::Used => {}
            SlotState::Deleted => {
                free.get_or_insert(e);
            }
            SlotState::Empty => {
                free.get_or_insert(e);
                break;
            }
        }
    }
    if !create {
        return None;
    }
    let e = free?;
    // SAFETY: the caller holds the lock exclusively, so nobody else reads or claims this slot.
    unsafe {
        (*e).database = database;
        (*e).queue_id = queue_id;
        (*e).state = SlotState::Used;
        (*e).since = crate::pg::now();
        (*e).zero();
    }
    Some(e)
}

/// One committed transaction's effect on one queue.
#[derive(Clone, Copy)]
pub struct Delta {
    pub queue_id: i32,
    pub counters: [u64; N_COUNTERS],
    /// The queue was dropped: free its slot.
    pub forget: bool,
    /// It made messages ready: wake the queue's waiters.
    pub wake: bool,
}

/// Adds a committed transaction's counts and wakes the waiters of the queues it made messages
/// ready in. Runs in the commit callback, so it must not raise errors.
///
/// Every committing producer and consumer comes through here, so the common case takes the lock
/// once and shared: counters are atomics, and a broadcast only takes spinlocks and sets latches.
/// Only a queue without a counter slot yet, or a dropped one, needs the exclusive lock.
pub fn commit<T>(items: &[T], delta: impl Fn(&T) -> &Delta) {
    let Some(region) = region() else { return };
    if items.is_empty() {
        return;
    }
    let database = crate::pg::my_database();
    // The items the shared pass left for the exclusive one (no allocation unless there are any).
    let mut left: Vec<&Delta> = Vec::new();
    {
        let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_SHARED);
        for d in items.iter().map(&delta) {
            if d.forget {
                left.push(d);
            } else {
                // SAFETY: the shared lock is held and nothing is created; counters are atomics.
                match unsafe { find_entry(region, database, d.queue_id, false) } {
                    // SAFETY: the entry stays this queue's while the shared lock is held.
                    Some(e) => unsafe { (*e).add(&d.counters) },
                    None if d.counters.iter().any(|&c| c != 0) => left.push(d),
                    None => {}
                }
            }
            if d.wake {
                // SAFETY: the shared lock is held, so claims cannot change under the broadcast.
                unsafe { super::wake::wake_locked(region, database, d.queue_id) };
            }
        }
    }
    if left.is_empty() {
        return;
    }
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_EXCLUSIVE);
    for d in left {
        // SAFETY: the exclusive lock is held, so slots may be claimed and released.
        unsafe {
            if d.forget {
                if let Some(e) = find_entry(region, database, d.queue_id, false) {
                    (*e).state = SlotState::Deleted;
                }
            } else if let Some(e) = find_entry(region, database, d.queue_id, true) {
                (*e).add(&d.counters);
            }
        }
    }
}

/// A queue's counters and when counting started; None when not preloaded or not tracked.
pub fn read(queue_id: i32) -> Option<([u64; N_COUNTERS], pg_sys::TimestampTz)> {
    let region = region()?;
    let database = crate::pg::my_database();
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_SHARED);
    // SAFETY: the shared lock is held and nothing is created.
    unsafe {
        match find_entry(region, database, queue_id, false) {
            Some(e) => Some(((*e).counts(), (*e).since)),
            None => Some(([0; N_COUNTERS], (*region).started)),
        }
    }
}

/// Zeroes the counters of this database's queues (all, or one) and restarts their clocks.
pub fn reset(queue_id: Option<i32>) -> bool {
    let Some(region) = region() else { return false };
    let database = crate::pg::my_database();
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_EXCLUSIVE);
    let now = crate::pg::now();
    // SAFETY: the exclusive lock is held, so no other backend reads or writes the entries.
    for e in unsafe { (*region).entries.iter_mut() } {
        if e.state == SlotState::Used && e.database == database && queue_id.is_none_or(|q| q == e.queue_id) {
            e.zero();
            e.since = now;
        }
    }
    true
}
