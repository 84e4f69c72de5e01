//! Lease-only transactions commit without waiting for their WAL to reach disk.
//!
//! At-least-once delivery needs enqueues and acks to be durable, not leases: a lease that a crash
//! forgets leaves its message as it was before (ready, or still held by the previous, expired
//! lease), so the message is delivered again, and the forgotten lease's receipt no longer
//! matches the message's token, so it cannot ack or extend. What is lost is the lease's promise
//! to keep the message hidden for its visibility timeout, and only for leases committed in the
//! last moments before a crash (the WAL writer writes them out within `wal_writer_delay`).
//!
//! So a transaction that wrote nothing but lease bookkeeping commits as with
//! `synchronous_commit = off`, unless `courier.durable_leases` is on. A consumer that leases and
//! then acks in one transaction, or writes anything of its own in the lease's transaction, gets
//! a durable commit as before: whether the transaction wrote anything else is judged by the end
//! of its WAL (`XactLastRecEnd`), which must not have moved between our leases, nor before the
//! first of them. A consumer that leases and acks in separate transactions then waits for one WAL
//! flush per message instead of two (bench/results/design/notes.md).

use std::cell::Cell;

use pgrx::pg_sys;

use crate::settings;
use crate::xact;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// This transaction has not leased yet.
    Untouched,
    /// All WAL this transaction wrote so far, up to this position, came from leases.
    LeaseOnly(pg_sys::XLogRecPtr),
    /// It wrote something else (or we cannot tell): it commits as configured.
    Other,
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::Untouched) };
    /// synchronous_commit as it was before the pre-commit switch, to restore after the commit.
    static SAVED: Cell<Option<i32>> = const { Cell::new(None) };
}

fn wal_end() -> pg_sys::XLogRecPtr {
    // SAFETY: a backend-local variable, read in the backend's own thread.
    unsafe { pg_sys::XactLastRecEnd }
}

/// Called before a lease runs its statements.
pub fn lease_begins() {
    xact::ensure_registered();
    let end = wal_end();
    STATE.with(|s| {
        s.set(match s.get() {
            // XactLastRecEnd is reset when a transaction ends: zero means nothing written yet.
            State::Untouched if end == 0 => State::LeaseOnly(0),
            State::LeaseOnly(ours) if ours == end => State::LeaseOnly(ours),
            _ => State::Other,
        })
    });
}

/// Called after a lease's statements ran.
pub fn lease_ends() {
    let end = wal_end();
    STATE.with(|s| {
        if let State::LeaseOnly(_) = s.get() {
            s.set(State::LeaseOnly(end));
        }
    });
}

/// The current lease wrote more than lease bookkeeping (it dead-lettered messages).
pub fn wrote_other() {
    STATE.with(|s| s.set(State::Other));
}

/// How this module reacts to transaction ends (the order among subscribers is in lib.rs).
pub const HOOKS: xact::Hooks =
    xact::Hooks { pre_commit, commit: end_of_transaction, abort: end_of_transaction, ..xact::Hooks::NONE };

/// Before the commit record is written: a lease-only transaction commits asynchronously.
fn pre_commit() {
    let state = STATE.with(|s| s.get());
    let State::LeaseOnly(ours) = state else {
        return;
    };
    if ours == 0 || ours != wal_end() || settings::durable_leases() {
        return;
    }
    // SAFETY: backend-local GUC variable; restored by end_of_transaction right after the commit
    // record is written (or if the commit fails), so nothing else ever reads the changed value.
    unsafe {
        if pg_sys::synchronous_commit > pg_sys::SyncCommitLevel::SYNCHRONOUS_COMMIT_OFF as i32 {
            SAVED.with(|v| v.set(Some(pg_sys::synchronous_commit)));
            pg_sys::synchronous_commit = pg_sys::SyncCommitLevel::SYNCHRONOUS_COMMIT_OFF as i32;
        }
    }
}

/// The next transaction starts afresh.
fn end_of_transaction() {
    STATE.with(|s| s.set(State::Untouched));
    if let Some(level) = SAVED.with(|v| v.take()) {
        // SAFETY: restores the value pre_commit saved.
        unsafe { pg_sys::synchronous_commit = level };
    }
}
