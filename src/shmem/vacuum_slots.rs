//! Per database: message rows made dead since courier's last VACUUM of its table (vacuum.rs).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use courier_core::tuning::{MAX_VACUUM_DATABASES, VACUUM_STALE_USECS};

use super::{Region, region};

/// One database's churn since its last VACUUM worker. Zeroed memory is a free slot. Only atomics:
/// counting churn is on every ack's path and takes no lock.
#[repr(C)]
pub(super) struct VacuumSlot {
    database: AtomicU32,
    /// Message rows deleted or moved since the last launch.
    churn: AtomicU64,
    /// When the last worker was launched (pg::now), 0 if never.
    launched_at: AtomicI64,
    running: AtomicU32,
}

thread_local! {
    /// This backend's vacuum slot, as last found (a backend stays in one database).
    static VACUUM_SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// This database's vacuum slot: found, claimed, or taken over from the database that launched
/// least recently. None only when every slot has a worker running.
fn vacuum_slot(region: *mut Region, database: u32) -> Option<&'static VacuumSlot> {
    // SAFETY: the region lives as long as the process, and a slot is only atomics.
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
/// `naptime_usecs` ago, and no worker is running; the caller must then launch one, and call
/// [`vacuum_finished`] when it ends or could not be launched. Only one backend gets a slot per
/// launch.
pub fn vacuum_due(rows: u64, threshold: u64, naptime_usecs: i64) -> Option<usize> {
    let region = region()?;
    let slot = vacuum_slot(region, crate::pg::my_database())?;
    if slot.churn.fetch_add(rows, Ordering::Relaxed) + rows < threshold {
        return None;
    }
    let now = crate::pg::now();
    let last = slot.launched_at.load(Ordering::Relaxed);
    if now - last < naptime_usecs {
        return None;
    }
    if slot.running.load(Ordering::Acquire) != 0 && now - last < VACUUM_STALE_USECS {
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
    // SAFETY: the region lives as long as the process, and a slot is only atomics.
    let Some(s) = (unsafe { &(*region).vacuum }).get(slot) else { return };
    if s.database.load(Ordering::Relaxed) == database {
        s.running.store(0, Ordering::Release);
    }
}

/// `database` has no courier (any more): free its vacuum slot.
pub fn vacuum_forget(slot: usize, database: u32) {
    let Some(region) = region() else { return };
    // SAFETY: the region lives as long as the process, and a slot is only atomics.
    let Some(s) = (unsafe { &(*region).vacuum }).get(slot) else { return };
    let _ = s.database.compare_exchange(database, 0, Ordering::AcqRel, Ordering::Relaxed);
}
