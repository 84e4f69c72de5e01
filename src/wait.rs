//! Waiting for work without polling.
//!
//! `lease(..., wait => '20 seconds')` that finds nothing sleeps until a message may have become
//! leasable, then tries again, until it gets messages or the wait is over. What can make a message
//! leasable, and what wakes the waiter:
//!
//! * a committed enqueue, nack, dead-letter move or redrive into the queue: the committing backend
//!   broadcasts the queue's wake slot (shmem.rs, effects.rs);
//! * a delayed or retrying message coming due, or a lease expiring: no event happens, so the
//!   waiter asks when the next one is due and sleeps no longer than that;
//! * anything else that cannot signal (a lease that rolled back, a prepared transaction): caught
//!   by re-checking at least every few seconds.
//!
//! Without `shared_preload_libraries` there are no wake slots; the waiter then polls, starting at
//! 10 ms and doubling up to 200 ms between attempts. Either way the sleep is a latch wait that
//! statement_timeout, pg_cancel_backend, pg_terminate_backend and postmaster death interrupt.

use std::cell::Cell;

use courier_core::tuning::{POLL_MAX_MS, POLL_START_MS, WAIT_RECHECK_MS};
use pgrx::{IntoDatum, check_for_interrupts, pg_sys};

use crate::effects;
use crate::pg;
use crate::shmem::{self, WakeSlotId};
use crate::xact;

/// How the last wait of this session went, for tests and diagnostics (`courier._last_wait()`).
#[derive(Clone, Copy, Default)]
pub struct Report {
    /// Times a wake slot broadcast woke the waiter.
    pub wakeups: i32,
    /// Lease attempts made, the first included.
    pub attempts: i32,
    /// True when the wait used a wake slot; false when it polled.
    pub event_driven: bool,
    /// How long the wait lasted, in microseconds.
    pub waited_usecs: i64,
}

thread_local! {
    /// The wake slot this backend is waiting on, if any.
    static CLAIMED: Cell<Option<WakeSlotId>> = const { Cell::new(None) };
    static LAST: Cell<Report> =
        const { Cell::new(Report { wakeups: 0, attempts: 0, event_driven: false, waited_usecs: 0 }) };
}

/// How this module reacts to transaction ends (the order among subscribers is in lib.rs): a wait
/// runs within one (sub)transaction, so if that ended, so did the wait, and its claim on a wake
/// slot must not outlive it even if the wait never returned normally.
pub const HOOKS: xact::Hooks = xact::Hooks {
    commit: release_claim,
    abort: release_claim,
    subxact_abort: |_| release_claim(),
    ..xact::Hooks::NONE
};

/// Records a claimed wake slot so an abort releases it even if the wait never returns normally.
fn set_claim(slot: Option<WakeSlotId>) {
    xact::ensure_registered();
    if let Some(old) = CLAIMED.replace(slot) {
        shmem::release_wake_slot(old);
    }
}

fn release_claim() {
    if let Some(old) = CLAIMED.take() {
        shmem::release_wake_slot(old);
    }
}

pub fn last_report() -> Report {
    LAST.get()
}

/// What one attempt found.
pub enum Attempt<T> {
    /// Something to return (or a reason to stop waiting).
    Done(T),
    /// Nothing yet; the next not-yet-ready message becomes ready at this time, if any.
    Empty { next_due: Option<pg_sys::TimestampTz> },
}

/// Releases the claim and the condition variable however the wait ends normally; an ERROR
/// unwinding through the wait is cleaned up by transaction abort (HOOKS, and PostgreSQL's
/// own ConditionVariableCancelSleep in AbortTransaction).
struct Claim(Option<WakeSlotId>);

impl Drop for Claim {
    fn drop(&mut self) {
        if self.0.is_some() {
            // SAFETY: cancelling a (possibly absent) prepared sleep is always allowed.
            unsafe {
                pg_sys::ConditionVariableCancelSleep();
            }
            set_claim(None);
        }
    }
}

/// Runs `attempt` until it returns Done or `deadline` passes, sleeping in between. `empty` is
/// what to return at the deadline.
pub fn run<T>(
    queue_id: i32,
    deadline: pg_sys::TimestampTz,
    empty: impl FnOnce() -> T,
    mut attempt: impl FnMut() -> Attempt<T>,
) -> T {
    let slot = shmem::claim_wake_slot(queue_id);
    set_claim(slot);
    let _claim = Claim(slot);
    let started = pg::now();
    let mut report = Report { wakeups: 0, attempts: 0, event_driven: slot.is_some(), waited_usecs: 0 };
    let mut poll_ms = POLL_START_MS;
    let result = loop {
        // Read the generation before looking, so a wakeup that lands while we look is not lost.
        let generation = slot.map(shmem::wake_generation);
        report.attempts += 1;
        let next_due = match attempt() {
            Attempt::Done(v) => break v,
            Attempt::Empty { next_due } => next_due,
        };
        let now = pg::now();
        if now >= deadline {
            break empty();
        }
        let until = next_due.map_or(deadline, |d| d.min(deadline));
        match (slot, generation) {
            (Some(slot), Some(generation)) => {
                if sleep_on_slot(slot, generation, until.min(now + WAIT_RECHECK_MS * 1000)) {
                    report.wakeups += 1;
                }
            }
            _ => {
                poll_sleep(poll_ms.min(pg::usecs_to_ms_ceil(until - now)).max(1));
                poll_ms = (poll_ms * 2).min(POLL_MAX_MS);
            }
        }
    };
    report.waited_usecs = pg::now() - started;
    LAST.set(report);
    result
}

/// Sleeps on the slot's condition variable until its generation moves on from `generation` (a
/// commit woke us: returns true) or `until` passes (false).
fn sleep_on_slot(slot: WakeSlotId, generation: u64, until: pg_sys::TimestampTz) -> bool {
    let cv = shmem::wake_cv(slot);
    loop {
        if shmem::wake_generation(slot) != generation {
            return true;
        }
        let ms = pg::usecs_to_ms_ceil(until - pg::now());
        if ms <= 0 {
            return false;
        }
        // The first call only registers us on the condition variable and returns; the generation
        // check above then closes the window before we really sleep.
        // SAFETY: a condition variable in shared memory, initialised at server start; an
        // interrupt raises ERROR here, and transaction abort cancels the sleep.
        unsafe {
            pg_sys::ConditionVariableTimedSleep(cv, ms as std::os::raw::c_long, pg_sys::PG_WAIT_EXTENSION);
        }
        check_for_interrupts!();
    }
}

/// Sleeps on the backend's own latch for `ms` (without shared memory there is nothing to wake
/// us but a signal).
fn poll_sleep(ms: i64) {
    // SAFETY: waiting on our own latch, as pg_sleep does.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms as std::os::raw::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    check_for_interrupts!();
}

/// Records that this transaction made messages ready in a queue: its waiters wake when the
/// transaction commits, and, if the queue asks for it, a NOTIFY on channel `courier` with the
/// queue name as payload is sent then too (PostgreSQL sends identical notifications of one
/// transaction once).
pub fn became_ready(queue_id: i32, queue_name: &str, notify: bool) {
    effects::wake(queue_id);
    if notify {
        // SAFETY: pg_notify is a built-in fmgr function; pgrx guards the call.
        unsafe {
            pgrx::direct_function_call_as_datum(
                pg_sys::pg_notify,
                &["courier".into_datum(), queue_name.into_datum()],
            );
        }
    }
}
