//! courier's shared memory, present only when courier is in `shared_preload_libraries`.
//!
//! It holds the cumulative per-queue counters reported by `courier.stats`. They behave like
//! PostgreSQL's own `pg_stat_*` counters: they count committed work since the server started (or
//! since `courier.stats_reset()`), live in memory so that counting costs nothing on the write path,
//! and start again from zero after a restart or crash. Without preloading, courier works the same
//! but the counters read NULL.
//!
//! It also holds the wake slots of waiting leases (wait.rs) and the scan floors with the writers'
//! announcements (floor.rs), and per database the churn that schedules courier's own VACUUM of
//! the message table (vacuum.rs). All of it is a cache of what the tables say: lost in a crash, it is
//! rebuilt from nothing, and without it every scan starts at the beginning of its range.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use pgrx::shmem::PgSharedMemoryInitialization;
use pgrx::{pg_guard, pg_sys};

/// Queues whose counters can be tracked at once (per cluster). A slot is freed when its queue is
/// dropped; beyond this, new queues are not counted (and `stats` says so).
pub const MAX_TRACKED_QUEUES: usize = 8192;

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

pub const N_COUNTERS: usize = 7;

const EMPTY: u8 = 0;
const USED: u8 = 1;
const DELETED: u8 = 2;

/// A queue's counters. Which queue a slot belongs to, and `since`, change only under the
/// exclusive lock; the counters are added to under the shared one (commits of the queue's
/// work, many at once) and zeroed under the exclusive one (reset).
#[repr(C)]
struct Entry {
    database: u32,
    queue_id: i32,
    state: u8,
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

/// Queues that can be waited on at the same time (per cluster); beyond this, waiters poll.
pub const MAX_WAITED_QUEUES: usize = 1024;

/// A queue's wake slot is within this many slots of its hash position, so a committing producer
/// checks at most this many slots per queue (a few nanoseconds each) to find its waiters.
const WAKE_PROBE: usize = 64;

#[repr(C)]
struct WakeSlot {
    database: u32,
    queue_id: i32,
    /// Backends currently waiting on this slot; 0 = free.
    waiters: u32,
    /// Bumped by every wakeup, so a waiter can tell whether one happened since it last looked.
    generation: AtomicU64,
    cv: pg_sys::ConditionVariable,
}

/// Backends (by proc number) that can announce an uncommitted write into a ready range (see
/// floor.rs); a backend beyond this counts in `unannounced`, which stops every floor from rising.
pub const MAX_ANNOUNCING_BACKENDS: usize = 4096;

/// No announcement: later than any timestamp.
const NOT_WRITING: i64 = i64::MAX;

/// Queue levels whose scan floor is remembered (per cluster); a level without one scans from the
/// start of its range, as if its floor were unknown.
pub const MAX_FLOORS: usize = 1024;

/// The floor of one (database, queue, priority) ready range (see floor.rs).
#[repr(C)]
#[derive(Clone, Copy)]
struct FloorSlot {
    database: u32,
    queue_id: i32,
    priority: i16,
    used: bool,
    floor: (i64, i64),
    /// The ready floor, before which nothing is leasable until `ready_until` (floor.rs).
    ready: (i64, i64),
    ready_until: i64,
    /// Bumped whenever the ready floor is invalidated, so a learning that began before does
    /// not store what it learned.
    epoch: u64,
    /// When a backend last set out to raise it, and when it was last learned from the start.
    learned_at: i64,
    relearned_at: i64,
}

/// A level's floors as shared memory has them (see floor.rs).
#[derive(Clone, Copy, Debug)]
pub struct Floors {
    pub all: (i64, i64),
    pub ready: (i64, i64),
    pub ready_until: i64,
}

impl Floors {
    /// The ready floor if it still holds at `now`.
    pub fn ready_at(&self, now: i64) -> Option<(i64, i64)> {
        (now < self.ready_until).then_some(self.ready)
    }
}

impl FloorSlot {
    fn floors(&self) -> Floors {
        Floors { all: self.floor, ready: self.ready, ready_until: self.ready_until }
    }
}

/// Where a claimed learning starts.
pub struct Learning {
    pub all: (i64, i64),
    /// The ready floor to continue from, with its expiry, unless learning from the start.
    pub ready: Option<((i64, i64), i64)>,
    pub epoch: u64,
}

/// Databases whose churn is tracked for courier's VACUUM worker at once (per cluster); beyond
/// this, the database that launched least recently gives up its slot.
pub const MAX_VACUUM_DATABASES: usize = 64;

/// How long a launched VACUUM worker may take before its slot is launched again anyway (it may
/// never have started: the postmaster can fail to fork it). SKIP_LOCKED keeps a second VACUUM of
/// the same table from queueing behind a first one that is still running.
const VACUUM_STALE_US: i64 = 600 * 1_000_000;

/// One database's churn since its last VACUUM worker (see vacuum.rs). Zeroed memory is a free slot.
#[repr(C)]
struct VacuumSlot {
    database: AtomicU32,
    /// Message rows deleted or moved since the last launch.
    churn: AtomicU64,
    /// When the last worker was launched (GetCurrentTimestamp), 0 if never.
    launched_at: AtomicI64,
    running: AtomicU32,
}

#[repr(C)]
struct Region {
    lock: *mut pg_sys::LWLock,
    wake: [WakeSlot; MAX_WAITED_QUEUES],
    /// Per backend: the clock reading before its open transaction first wrote into a ready range.
    announced: [AtomicI64; MAX_ANNOUNCING_BACKENDS],
    unannounced: AtomicU32,
    floors: [FloorSlot; MAX_FLOORS],
    vacuum: [VacuumSlot; MAX_VACUUM_DATABASES],
    /// When the region was created: the start of counting for queues with no events yet.
    started: pg_sys::TimestampTz,
    entries: [Entry; MAX_TRACKED_QUEUES],
}

pub struct Shared {
    region: UnsafeCell<*mut Region>,
}

// SAFETY: the pointer is written once, in the postmaster before any backend exists, and only read
// afterwards; the region it points to is guarded by its LWLock.
unsafe impl Sync for Shared {}

pub static SHARED: Shared = Shared { region: UnsafeCell::new(std::ptr::null_mut()) };

const NAME: &std::ffi::CStr = c"courier";

impl PgSharedMemoryInitialization for Shared {
    type Value = bool;

    unsafe fn on_shmem_request(&'static self) {
        // SAFETY: called from shmem_request_hook.
        unsafe {
            pg_sys::RequestAddinShmemSpace(std::mem::size_of::<Region>());
            pg_sys::RequestNamedLWLockTranche(NAME.as_ptr(), 1);
        }
    }

    unsafe fn on_shmem_startup(&'static self, _: bool) {
        // SAFETY: called from shmem_startup_hook; AddinShmemInitLock serialises initialisation.
        unsafe {
            let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
            pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
            let mut found = false;
            let region = pg_sys::ShmemInitStruct(NAME.as_ptr(), std::mem::size_of::<Region>(), &mut found)
                .cast::<Region>();
            if !found {
                std::ptr::write_bytes(region.cast::<u8>(), 0, std::mem::size_of::<Region>());
                (*region).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(NAME.as_ptr())).lock;
                (*region).started = pg_sys::GetCurrentTimestamp();
                for slot in (*region).wake.iter_mut() {
                    pg_sys::ConditionVariableInit(&mut slot.cv);
                }
                for a in (*region).announced.iter() {
                    a.store(NOT_WRITING, Ordering::Relaxed);
                }
            }
            *self.region.get() = region;
            pg_sys::LWLockRelease(init_lock);
        }
    }
}

/// Sets up the shared region; call from `_PG_init` only while preloading.
pub fn init() {
    pgrx::pg_shmem_init!(SHARED = false);
}

fn region() -> Option<*mut Region> {
    // SAFETY: written once before backends start.
    let r = unsafe { *SHARED.region.get() };
    (!r.is_null()).then_some(r)
}

/// True when courier was preloaded and its shared memory exists.
pub fn enabled() -> bool {
    region().is_some()
}

struct Guard(*mut pg_sys::LWLock);

impl Guard {
    fn lock(region: *mut Region, mode: pg_sys::LWLockMode::Type) -> Guard {
        // SAFETY: the lock pointer was set at initialisation.
        unsafe {
            let lock = (*region).lock;
            pg_sys::LWLockAcquire(lock, mode);
            Guard(lock)
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: we hold the lock. On ERROR, PostgreSQL releases LWLocks itself, but none of the
        // code run under this guard can raise one.
        unsafe { pg_sys::LWLockRelease(self.0) }
    }
}

/// Runs `f` on the region with its lock held and this backend's database, unless there is no
/// shared memory or nothing to do. For the commit callbacks, which must not raise.
fn locked_batch<T>(items: &[T], mode: pg_sys::LWLockMode::Type, f: impl FnOnce(*mut Region, u32)) {
    let Some(region) = region() else { return };
    if items.is_empty() {
        return;
    }
    let database = crate::pg::my_database();
    let _guard = Guard::lock(region, mode);
    f(region, database);
}

fn slot_of(database: u32, queue_id: i32) -> usize {
    let h = (u64::from(database).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        ^ (queue_id as u32 as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (h % MAX_TRACKED_QUEUES as u64) as usize
}

/// Finds the entry for a queue, optionally claiming a free slot for it.
///
/// # Safety
/// The caller holds the region's lock (exclusively if `create`).
unsafe fn find(region: *mut Region, database: u32, queue_id: i32, create: bool) -> Option<*mut Entry> {
    let start = slot_of(database, queue_id);
    let mut free: Option<*mut Entry> = None;
    for i in 0..MAX_TRACKED_QUEUES {
        // SAFETY: index in bounds; lock held.
        let e = unsafe { &raw mut (*region).entries[(start + i) % MAX_TRACKED_QUEUES] };
        let (state, db, q) = unsafe { ((*e).state, (*e).database, (*e).queue_id) };
        match state {
            USED if db == database && q == queue_id => return Some(e),
            USED => {}
            DELETED => {
                free.get_or_insert(e);
            }
            EMPTY => {
                free.get_or_insert(e);
                break;
            }
            _ => unreachable!("slot states are EMPTY, USED or DELETED"),
        }
    }
    if !create {
        return None;
    }
    let e = free?;
    // SAFETY: lock held exclusively.
    unsafe {
        (*e).database = database;
        (*e).queue_id = queue_id;
        (*e).state = USED;
        (*e).since = pg_sys::GetCurrentTimestamp();
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
                // SAFETY: shared lock held, no creation; the counters are atomics.
                match unsafe { find(region, database, d.queue_id, false) } {
                    Some(e) => unsafe { (*e).add(&d.counters) },
                    None if d.counters.iter().any(|&c| c != 0) => left.push(d),
                    None => {}
                }
            }
            if d.wake {
                // SAFETY: shared lock held.
                unsafe { wake_locked(region, database, d.queue_id) };
            }
        }
    }
    if left.is_empty() {
        return;
    }
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_EXCLUSIVE);
    for d in left {
        // SAFETY: exclusive lock held.
        unsafe {
            if d.forget {
                if let Some(e) = find(region, database, d.queue_id, false) {
                    (*e).state = DELETED;
                }
            } else if let Some(e) = find(region, database, d.queue_id, true) {
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
    // SAFETY: shared lock held, no creation.
    unsafe {
        match find(region, database, queue_id, false) {
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
    // SAFETY: exclusive lock held.
    unsafe {
        let now = pg_sys::GetCurrentTimestamp();
        for e in (*region).entries.iter_mut() {
            if e.state == USED && e.database == database && queue_id.is_none_or(|q| q == e.queue_id) {
                e.zero();
                e.since = now;
            }
        }
    }
    true
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
        // SAFETY: exclusive lock held; index in bounds.
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
    // SAFETY: exclusive lock held.
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
    // SAFETY: exclusive lock held; the index came from claim_wake_slot.
    let slot = unsafe { &mut (*region).wake[id.0] };
    slot.waiters = slot.waiters.saturating_sub(1);
}

/// The slot's generation: compare before and after sleeping to tell a wakeup from a timeout.
pub fn wake_generation(id: WakeSlotId) -> u64 {
    let region = region().expect("a claimed slot implies shared memory");
    // SAFETY: the generation is atomic; the slot stays claimed by us.
    unsafe { (*region).wake[id.0].generation.load(Ordering::Acquire) }
}

/// The slot's condition variable.
pub fn wake_cv(id: WakeSlotId) -> *mut pg_sys::ConditionVariable {
    let region = region().expect("a claimed slot implies shared memory");
    // SAFETY: the slot lives as long as the server.
    unsafe { &raw mut (*region).wake[id.0].cv }
}

/// Wakes the waiters of a queue (of this database); must not raise errors: broadcasting a
/// condition variable only takes spinlocks and sets latches.
///
/// # Safety
/// The caller holds the region's lock, at least shared: claims cannot change under us.
unsafe fn wake_locked(region: *mut Region, database: u32, queue_id: i32) {
    let start = wake_index(database, queue_id);
    for i in 0..WAKE_PROBE {
        // SAFETY: lock held; index in bounds.
        let slot = unsafe { &mut (*region).wake[(start + i) % MAX_WAITED_QUEUES] };
        if slot.waiters > 0 && slot.database == database && slot.queue_id == queue_id {
            slot.generation.fetch_add(1, Ordering::AcqRel);
            // SAFETY: an initialised condition variable in shared memory.
            unsafe { pg_sys::ConditionVariableBroadcast(&mut slot.cv) };
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scan floors (see floor.rs for what they mean and why they are safe)
// ---------------------------------------------------------------------------------------------

/// Where this backend announces, or None when its proc number is beyond the table.
fn announce_index() -> Option<usize> {
    #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
    // SAFETY: MyProc is set for every backend that runs SQL.
    let n = unsafe { (*pg_sys::MyProc).pgprocno };
    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
    // SAFETY: a backend global.
    let n = unsafe { pg_sys::MyProcNumber };
    usize::try_from(n).ok().filter(|&i| i < MAX_ANNOUNCING_BACKENDS)
}

/// Announces that this backend's transaction is about to write into a ready range at or after
/// `at`. Sequentially consistent, so that a reader that misses it read before it (floor.rs).
pub fn announce(at: i64) {
    set_announcement(Some(at));
}

/// Withdraws this backend's announcement (its transaction ended). Must not raise.
pub fn withdraw() {
    set_announcement(None);
}

fn set_announcement(at: Option<i64>) {
    let Some(region) = region() else { return };
    // SAFETY: the slot is ours; atomics in shared memory.
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
    // SAFETY: atomics in shared memory.
    unsafe {
        if (*region).unannounced.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some((*region).announced.iter().map(|a| a.load(Ordering::SeqCst)).min().unwrap_or(NOT_WRITING))
    }
}

fn floor_index(database: u32, queue_id: i32, priority: i16) -> usize {
    (slot_of(database, queue_id) ^ (priority as u16 as usize).wrapping_mul(0x9E37)) % MAX_FLOORS
}

/// Finds (or, with `create`, claims, evicting the least recently learned) a level's slot.
///
/// # Safety
/// The caller holds the region's lock, exclusively if `create`.
unsafe fn find_floor(
    region: *mut Region,
    queue_id: i32,
    priority: i16,
    create: bool,
) -> Option<*mut FloorSlot> {
    let database = crate::pg::my_database();
    let start = floor_index(database, queue_id, priority);
    // A free slot, else the one learned longest ago.
    let mut victim: Option<(i64, *mut FloorSlot)> = None;
    for i in 0..WAKE_PROBE {
        // SAFETY: index in bounds; lock held.
        let f = unsafe { &raw mut (*region).floors[(start + i) % MAX_FLOORS] };
        let slot = unsafe { *f };
        if slot.used && slot.database == database && slot.queue_id == queue_id && slot.priority == priority {
            return Some(f);
        }
        let age = if slot.used { slot.learned_at } else { i64::MIN };
        if victim.is_none_or(|(a, _)| age < a) {
            victim = Some((age, f));
        }
    }
    if !create {
        return None;
    }
    let (_, f) = victim?;
    // SAFETY: exclusive lock held. Forgetting another level's floor is always safe: it then scans
    // from the start until it learns one again.
    unsafe {
        *f = FloorSlot {
            database,
            queue_id,
            priority,
            used: true,
            floor: (i64::MIN, i64::MIN),
            ready: (i64::MIN, i64::MIN),
            ready_until: i64::MIN,
            epoch: 0,
            learned_at: i64::MIN,
            relearned_at: i64::MIN,
        };
    }
    Some(f)
}

/// A level's floors, if known, and whether they are due to be learned again (not learned for
/// `every`); (None, false) without shared memory.
pub fn floor(queue_id: i32, priority: i16, now: i64, every: i64) -> (Option<Floors>, bool) {
    let Some(region) = region() else { return (None, false) };
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_SHARED);
    // SAFETY: shared lock held, no creation.
    match unsafe { find_floor(region, queue_id, priority, false) } {
        Some(f) => unsafe { (Some((*f).floors()), now.saturating_sub((*f).learned_at) >= every) },
        None => (None, true),
    }
}

/// Claims the next learning of a level's floor: None if another backend set out to learn it less
/// than `every` ago; else where to learn from (the start of the range, once per `relearn_every`).
pub fn claim_learning(
    queue_id: i32,
    priority: i16,
    now: i64,
    every: i64,
    relearn_every: i64,
) -> Option<Learning> {
    let region = region()?;
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // SAFETY: exclusive lock held.
    unsafe {
        let f = find_floor(region, queue_id, priority, true)?;
        if now.saturating_sub((*f).learned_at) < every {
            return None;
        }
        (*f).learned_at = now;
        let epoch = (*f).epoch;
        if now.saturating_sub((*f).relearned_at) >= relearn_every {
            (*f).relearned_at = now;
            return Some(Learning { all: (i64::MIN, i64::MIN), ready: None, epoch });
        }
        let floors = (*f).floors();
        let ready = floors.ready_at(now).map(|p| (p, floors.ready_until));
        Some(Learning { all: floors.all, ready, epoch })
    }
}

/// Records a level's newly learned floors; the ready floor only if it was not invalidated since
/// the learning was claimed (`epoch`).
pub fn set_floor(queue_id: i32, priority: i16, floors: Floors, epoch: u64) -> bool {
    let Some(region) = region() else { return false };
    let _guard = Guard::lock(region, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // SAFETY: exclusive lock held.
    unsafe {
        let Some(f) = find_floor(region, queue_id, priority, false) else { return false };
        (*f).floor = floors.all;
        if (*f).epoch != epoch {
            return false;
        }
        (*f).ready = floors.ready;
        (*f).ready_until = floors.ready_until;
        true
    }
}

/// Forgets the ready floors of a queue (of this database): a committed transaction shortened a
/// lease, which may have made a message leasable before its level's floor expires. Runs in the
/// commit callback, so it must not raise.
pub fn invalidate_ready_floors(queue_ids: &[i32]) {
    locked_batch(queue_ids, pg_sys::LWLockMode::LW_EXCLUSIVE, |region, database| {
        // SAFETY: exclusive lock held.
        for f in unsafe { (*region).floors.iter_mut() } {
            if f.used && f.database == database && queue_ids.contains(&f.queue_id) {
                f.ready_until = i64::MIN;
                f.epoch = f.epoch.wrapping_add(1);
            }
        }
    });
}

thread_local! {
    /// This backend's vacuum slot, as last found (a backend stays in one database).
    static VACUUM_SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// This database's vacuum slot: found, claimed, or taken over from the database that launched
/// least recently. None only when every slot has a worker running.
fn vacuum_slot(region: *mut Region, database: u32) -> Option<&'static VacuumSlot> {
    // SAFETY: the region lives as long as the process; its slots are atomics.
    let slots: &'static [VacuumSlot; MAX_VACUUM_DATABASES] = unsafe { &(*region).vacuum };
    let cached = VACUUM_SLOT.get();
    if cached < MAX_VACUUM_DATABASES && slots[cached].database.load(Ordering::Relaxed) == database {
        return Some(&slots[cached]);
    }
    let claim = |i: usize, from: u32| {
        let s = &slots[i];
        if s.database.compare_exchange(from, database, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        if from != 0 {
            s.churn.store(0, Ordering::Relaxed);
            s.launched_at.store(0, Ordering::Relaxed);
        }
        true
    };
    let found = slots.iter().position(|s| s.database.load(Ordering::Relaxed) == database).or_else(|| {
        (0..MAX_VACUUM_DATABASES).find(|&i| slots[i].database.load(Ordering::Relaxed) == 0 && claim(i, 0))
    });
    let found = found.or_else(|| {
        let (i, s) = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.running.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, s)| s.launched_at.load(Ordering::Relaxed))?;
        claim(i, s.database.load(Ordering::Relaxed)).then_some(i)
    })?;
    VACUUM_SLOT.set(found);
    Some(&slots[found])
}

/// Counts `rows` message rows this database's workload made dead. Returns the slot to launch a
/// VACUUM worker for when at least `threshold` have piled up since the last launch, at least
/// `naptime_us` ago, and no worker is running; the caller must then call `vacuum_launched`.
/// Only one backend gets a slot per launch.
pub fn vacuum_due(rows: u64, threshold: u64, naptime_us: i64) -> Option<usize> {
    let region = region()?;
    let database = crate::pg::my_database();
    let slot = vacuum_slot(region, database)?;
    if slot.churn.fetch_add(rows, Ordering::Relaxed) + rows < threshold {
        return None;
    }
    // SAFETY: a plain clock read.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let last = slot.launched_at.load(Ordering::Relaxed);
    if now - last < naptime_us {
        return None;
    }
    if slot.running.load(Ordering::Acquire) != 0 && now - last < VACUUM_STALE_US {
        return None;
    }
    // The backend that moves launched_at launches; the others see a fresh launch and go on.
    slot.launched_at.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).ok()?;
    slot.running.store(1, Ordering::Release);
    slot.churn.store(0, Ordering::Relaxed);
    Some(VACUUM_SLOT.get())
}

/// The VACUUM worker for `slot` of `database` ended (or could not be launched).
pub fn vacuum_finished(slot: usize, database: u32) {
    let Some(region) = region() else { return };
    // SAFETY: the region lives as long as the process; its slots are atomics.
    let Some(s) = (unsafe { &(*region).vacuum }).get(slot) else { return };
    if s.database.load(Ordering::Relaxed) == database {
        s.running.store(0, Ordering::Release);
    }
}

/// `database` has no courier (any more): free its vacuum slot.
pub fn vacuum_forget(slot: usize, database: u32) {
    let Some(region) = region() else { return };
    // SAFETY: the region lives as long as the process; its slots are atomics.
    let Some(s) = (unsafe { &(*region).vacuum }).get(slot) else { return };
    let _ = s.database.compare_exchange(database, 0, Ordering::AcqRel, Ordering::Relaxed);
}
