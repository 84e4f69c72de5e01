//! courier's shared memory, present only when courier is in `shared_preload_libraries`.
//!
//! One region with one LWLock holds four tables, each in its own file:
//!
//! - [`counters`]: the cumulative per-queue counters reported by `courier.stats`. They behave like
//!   PostgreSQL's own `pg_stat_*` counters: they count committed work since the server started
//!   (or since `courier.stats_reset()`), cost nothing on the write path, and start again from
//!   zero after a restart or crash.
//! - [`wake`]: the wake slots of waiting leases (wait.rs).
//! - [`floors`]: the scan floors and the writers' announcements (floor.rs, announce.rs).
//! - [`vacuum_slots`]: per database, the churn that schedules courier's own VACUUM (vacuum.rs).
//!
//! All of it is a cache of what the tables say: lost in a crash, it is rebuilt from nothing, and
//! without it (not preloaded) courier works the same, with counters that read NULL, waiters that
//! poll, and scans that start at the beginning of their range.

mod counters;
mod floors;
mod vacuum_slots;
mod wake;

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI64, AtomicU32};

use courier_core::tuning::{
    MAX_ANNOUNCING_BACKENDS, MAX_FLOORS, MAX_TRACKED_QUEUES, MAX_VACUUM_DATABASES, MAX_WAITED_QUEUES,
};
use pgrx::shmem::PgSharedMemoryInitialization;
use pgrx::{pg_guard, pg_sys};

pub use counters::{Counter, Delta, N_COUNTERS, commit, read, reset};
pub use floors::{
    announce, claim_learning, count_taken, earliest_announcement, floors, invalidate_ready_floors,
    set_floors, withdraw,
};
pub use vacuum_slots::{vacuum_due, vacuum_finished, vacuum_forget};
pub use wake::{WakeSlotId, claim_wake_slot, release_wake_slot, wake_cv, wake_generation};

#[repr(C)]
struct Region {
    lock: *mut pg_sys::LWLock,
    wake: [wake::WakeSlot; MAX_WAITED_QUEUES],
    /// Per backend: the clock reading before its open transaction first wrote into a ready range.
    announced: [AtomicI64; MAX_ANNOUNCING_BACKENDS],
    unannounced: AtomicU32,
    floors: [floors::FloorSlot; MAX_FLOORS],
    vacuum: [vacuum_slots::VacuumSlot; MAX_VACUUM_DATABASES],
    /// When the region was created: the start of counting for queues with no events yet.
    started: pg_sys::TimestampTz,
    entries: [counters::Entry; MAX_TRACKED_QUEUES],
}

/// The region's size is fixed by the tables' lengths in courier_core::tuning; README's Limits
/// section states it. A change that grows it past this bound should be a decision, not a side
/// effect: every server that preloads courier reserves it.
const MAX_REGION_BYTES: usize = 2 * 1024 * 1024;
const _: () = assert!(std::mem::size_of::<Region>() <= MAX_REGION_BYTES);

pub struct Shared {
    region: UnsafeCell<*mut Region>,
}

// SAFETY: the pointer is written once, in the postmaster before any backend exists, and only read
// afterwards; the region it points to is guarded by its LWLock.
unsafe impl Sync for Shared {}

pub static SHARED: Shared = Shared { region: UnsafeCell::new(std::ptr::null_mut()) };

const NAME: &std::ffi::CStr = c"courier";

/// `AddinShmemInitLock`, which serialises extensions' shared-memory initialisation: the 22nd of
/// PostgreSQL's individual LWLocks (lwlocknames.txt), a macro pgrx has no binding for.
const ADDIN_SHMEM_INIT_LOCK: usize = 21;

impl PgSharedMemoryInitialization for Shared {
    type Value = bool;

    unsafe fn on_shmem_request(&'static self) {
        // SAFETY: called from shmem_request_hook, the one place these requests are allowed.
        unsafe {
            pg_sys::RequestAddinShmemSpace(std::mem::size_of::<Region>());
            pg_sys::RequestNamedLWLockTranche(NAME.as_ptr(), 1);
        }
    }

    unsafe fn on_shmem_startup(&'static self, _: bool) {
        // SAFETY: called from shmem_startup_hook, after shared memory exists; AddinShmemInitLock
        // serialises initialisation, and the region is zeroed (a valid state for every field:
        // atomics, integers, and condition variables initialised right after) before use.
        unsafe {
            let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(ADDIN_SHMEM_INIT_LOCK)).lock;
            pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
            let mut found = false;
            let region = pg_sys::ShmemInitStruct(NAME.as_ptr(), std::mem::size_of::<Region>(), &mut found)
                .cast::<Region>();
            if !found {
                std::ptr::write_bytes(region.cast::<u8>(), 0, std::mem::size_of::<Region>());
                (*region).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(NAME.as_ptr())).lock;
                (*region).started = crate::pg::now();
                wake::init(&mut *region);
                floors::init(&*region);
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
    // SAFETY: written once, before backends start (see Shared's Sync), then only read.
    let r = unsafe { *SHARED.region.get() };
    (!r.is_null()).then_some(r)
}

/// True when courier was preloaded and its shared memory exists.
pub fn enabled() -> bool {
    region().is_some()
}

/// The region's LWLock, held while alive.
struct Guard(*mut pg_sys::LWLock);

impl Guard {
    fn lock(region: *mut Region, mode: pg_sys::LWLockMode::Type) -> Guard {
        // SAFETY: the lock pointer was set at initialisation, before any backend could get here.
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

/// Where a queue's entries start in each table: a hash of (database, queue).
fn slot_of(database: u32, queue_id: i32) -> usize {
    let h = (u64::from(database).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        ^ (queue_id as u32 as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (h % MAX_TRACKED_QUEUES as u64) as usize
}
