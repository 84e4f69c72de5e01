//! Scan floors and the writers' announcements (see floor.rs and announce.rs for what they mean
//! and why they are safe).

use std::sync::atomic::{AtomicU32, Ordering};

use courier_core::floor::learning::{self, LearnPolicy, SinceLearned};
use courier_core::position::{Position, START};
use courier_core::tuning::{FLOOR_PROBE, MAX_ANNOUNCING_BACKENDS, MAX_FLOORS};
use pgrx::pg_sys;

pub use courier_core::floor::SharedFloors;

use super::{Guard, Region, locked_batch, region, slot_of};

/// No announcement: later than any timestamp.
const NOT_WRITING: i64 = i64::MAX;

/// The floor of one (database, queue, priority) ready range.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct FloorSlot {
    database: u32,
    queue_id: i32,
    priority: i16,
    used: bool,
    floors: SharedFloors,
    /// Bumped whenever the ready floor is invalidated, so a learning that began before does
    /// not store what it learned.
    epoch: u64,
    /// When a backend last set out to raise it, and when it last considered learning it from the
    /// start.
    learned_at: i64,
    relearned_at: i64,
    /// The next transaction id when it was last learned from the start (0: never).
    relearn_xid: u64,
    /// Messages leases may have taken from the level since it was last learned. Changed under
    /// the shared lock, so only through [`taken_counter`]; reset under the exclusive lock.
    taken: u32,
}

/// A slot's count of taken messages, as the atomic every backend holding the shared lock updates.
///
/// # Safety
/// `f` points at a slot of the region, and the caller holds the region's lock (in either mode).
unsafe fn taken_counter<'a>(f: *mut FloorSlot) -> &'a AtomicU32 {
    // SAFETY: the field is a u32 aligned as AtomicU32 needs (repr(C)); while any lock is held no
    // one writes it other than through this atomic (writes not through it take the lock
    // exclusively), and the region outlives the caller's use of it.
    unsafe { AtomicU32::from_ptr(&raw mut (*f).taken) }
}

/// Sets every announcement of a freshly zeroed region to "not writing".
///
/// # Safety
/// Called once, while creating the region, before any backend can use it.
pub(super) unsafe fn init(region: &Region) {
    for a in region.announced.iter() {
        a.store(NOT_WRITING, Ordering::Relaxed);
    }
}

/// Where a claimed learning starts.
pub struct Learning {
    pub all: Position,
    /// The ready floor to continue from, with its expiry, unless learning from the start.
    pub ready: Option<(Position, i64)>,
    pub epoch: u64,
}

/// Where this backend announces, or None when its proc number is beyond the table.
fn announce_index() -> Option<usize> {
    #[cfg(any(feature = "pg14", feature = "pg15", feature = "pg16"))]
    // SAFETY: MyProc is set for every backend that runs SQL, before it does.
    let n = unsafe { (*pg_sys::MyProc).pgprocno };
    #[cfg(not(any(feature = "pg14", feature = "pg15", feature = "pg16")))]
    // SAFETY: a backend-local global, set before the backend runs SQL.
    let n = unsafe { pg_sys::MyProcNumber };
    usize::try_from(n).ok().filter(|&i| i < MAX_ANNOUNCING_BACKENDS)
}

/// Announces that this backend's transaction is about to write into a ready range at or after
/// `at`. Sequentially consistent, so that a reader that misses it read before it (announce.rs).
pub fn announce(at: i64) {
    set_announcement(Some(at));
}

/// Withdraws this backend's announcement (its transaction ended). Must not raise.
pub fn withdraw() {
    set_announcement(None);
}

fn set_announcement(at: Option<i64>) {
    let Some(region) = region() else { return };
    // SAFETY: the announcement slot is this backend's own, and the counter is atomic.
    unsafe {
        match (announce_index(), at) {
            (Some(i), _) => (*region).announced[i].store(at.unwrap_or(NOT_WRITING), Ordering::SeqCst),
            (None, Some(_)) => {
                (*region).unannounced.fetch_add(1, Ordering::SeqCst);
            }
            (None, None) => {
                (*region).unannounced.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// The earliest announcement of any backend: `Some(i64::MAX)` when none, None when a backend
/// writes without being able to announce (no floor may rise then).
pub fn earliest_announcement() -> Option<i64> {
    let region = region()?;
    // SAFETY: the region exists for the server's lifetime and only its atomics are read.
    unsafe {
        if (*region).unannounced.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some((*region).announced.iter().map(|a| a.load(Ordering::SeqCst)).min().unwrap_or(NOT_WRITING))
    }
}

fn floor_index(database: u32, queue_id: i32, priority: i16) -> usize {
    // The priority's bits spread with the upper half of the golden-ratio constant slot_of uses.
    (slot_of(database, queue_id) ^ (priority as u16 as usize).wrapping_mul(0x9E37)) % MAX_FLOORS
}

/// Finds (or, with `create`, claims, evicting the least recently learned) a level's slot.
///
/// # Safety
/// The caller holds the region's lock, exclusively if `create`.
unsafe fn find_floor_slot(
    region: *mut Region,
    queue_id: i32,
    priority: i16,
    create: bool,
) -> Option<*mut FloorSlot> {
    let database = crate::pg::my_database();
    let start = floor_index(database, queue_id, priority);
    // A free slot, else the one learned longest ago.
    let mut victim: Option<(i64, *mut FloorSlot)> = None;
    for i in 0..FLOOR_PROBE {
        // SAFETY: the index is in bounds and the caller holds the lock, so the fields read here
        // (all but the counter, which other holders of a shared lock may change) do not change.
        let (f, used, key, learned_at) = unsafe {
            let f = &raw mut (*region).floors[(start + i) % MAX_FLOORS];
            (f, (*f).used, ((*f).database, (*f).queue_id, (*f).priority), (*f).learned_at)
        };
        if used && key == (database, queue_id, priority) {
            return Some(f);
        }
        let age = if used { learned_at } else { i64::MIN };
        if victim.is_none_or(|(a, _)| age < a) {
            victim = Some((age, f));
        }
    }
    if !create {
        return None;
    }
    let (_, f) = victim?;
    // SAFETY: the caller holds the lock exclusively. Forgetting another level's floor is always
    // safe: it then scans from the start until it learns one again.
    unsafe {
        *f = FloorSlot {
            database,
            queue_id,
            priority,
            used: true,
            floors: SharedFloors { all: START, ready: START, ready_until: i64::MIN },
            epoch: 0,
            learned_at: i64::MIN,
            relearned_at: i64::MIN,
            relearn_xid: 0,
            taken: 0,
        };
    }
    Some(f)
}

/// A level's floors, if known, and whether they are due to be learned again
/// (courier_core::floor::learning::due). (None, false) without shared memory; (None, true) for a
/// level not in the table.
pub fn floors(queue_id: i32, priority: i16, now: i64, policy: LearnPolicy) -> (Option<SharedFloors>, bool) {
    let Some(region) = region() else { return (None, false) };
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_SHARED);
    // SAFETY: the shared lock is held and nothing is created.
    let Some(f) = (unsafe { find_floor_slot(region, queue_id, priority, false) }) else {
        return (None, true);
    };
    // SAFETY: the shared lock is held: the counter changes only atomically, and the other fields
    // only under the exclusive lock.
    let (floors, since) = unsafe {
        let taken = taken_counter(f).load(Ordering::Relaxed);
        let floors = (*f).floors;
        let since = SinceLearned {
            learned: now.saturating_sub((*f).learned_at),
            relearned: now.saturating_sub((*f).relearned_at),
            taken,
            ready_holds: floors.ready_at(now).is_some(),
        };
        (floors, since)
    };
    (Some(floors), learning::due(since, policy))
}

/// Counts `taken` messages as taken from a level whose floors are known, once a lease knows how
/// many it took from where.
pub fn count_taken(queue_id: i32, priority: i16, taken: u32) {
    let Some(region) = region() else { return };
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_SHARED);
    // SAFETY: the shared lock is held and nothing is created; the counter changes only atomically.
    unsafe {
        if let Some(f) = find_floor_slot(region, queue_id, priority, false) {
            let counter = taken_counter(f);
            let _ =
                counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some(t.saturating_add(taken)));
        }
    }
}

/// Claims the next learning of a level's floor: None if another backend set out to learn it less
/// than `every` ago and fewer than `early` messages were taken since
/// (courier_core::floor::learning::claimable); else where to learn from (the start of the range,
/// once per `relearn_every` while every transaction that was running at the last such learning
/// has ended).
pub fn claim_learning(queue_id: i32, priority: i16, now: i64, policy: LearnPolicy) -> Option<Learning> {
    let region = region()?;
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // SAFETY: the exclusive lock is held, so the slot may be claimed and written.
    let f = unsafe { &mut *find_floor_slot(region, queue_id, priority, true)? };
    if !learning::claimable(now.saturating_sub(f.learned_at), f.taken, policy) {
        return None;
    }
    f.learned_at = now;
    f.taken = 0;
    if now.saturating_sub(f.relearned_at) >= policy.relearn_every {
        f.relearned_at = now;
        // A learning from the start visits every index entry of the range that nothing could
        // mark dead or remove yet: under a snapshot held for minutes, every message acked since
        // it was taken (a million took 1.5 s, in the lease that happened to learn). So it waits
        // until every transaction that was running at the last one has ended, which leaves it
        // the entries acked since that one to walk, and meanwhile looks again every interval.
        // A message only this learning finds (floor.rs) waits that much longer.
        if crate::pg::removable_for_all(f.relearn_xid) {
            f.relearn_xid = crate::pg::next_full_xid();
            return Some(Learning { all: START, ready: None, epoch: f.epoch });
        }
    }
    Some(Learning { all: f.floors.all, ready: f.floors.held_ready(now), epoch: f.epoch })
}

/// Records a level's newly learned floors; the ready floor only if it was not invalidated since
/// the learning was claimed (`epoch`). Returns whether the ready floor was kept.
pub fn set_floors(queue_id: i32, priority: i16, floors: SharedFloors, epoch: u64) -> bool {
    let Some(region) = region() else { return false };
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // SAFETY: the exclusive lock is held, so the slot may be written.
    let Some(f) = (unsafe { find_floor_slot(region, queue_id, priority, false).map(|f| &mut *f) }) else {
        return false;
    };
    f.floors.all = floors.all;
    if f.epoch != epoch {
        return false;
    }
    f.floors.ready = floors.ready;
    f.floors.ready_until = floors.ready_until;
    true
}

/// Forgets the ready floors of a queue (of this database): a committed transaction shortened a
/// lease, which may have made a message leasable before its level's floor expires. Runs in the
/// commit callback, so it must not raise.
pub fn invalidate_ready_floors(queue_ids: &[i32]) {
    locked_batch(queue_ids, pg_sys::LWLockMode::LW_EXCLUSIVE, |region, database| {
        // SAFETY: the exclusive lock is held, so no other backend reads or writes the slots.
        for f in unsafe { (*region).floors.iter_mut() } {
            if f.used && f.database == database && queue_ids.contains(&f.queue_id) {
                f.floors.ready_until = i64::MIN;
                f.epoch = f.epoch.wrapping_add(1);
            }
        }
    });
}
