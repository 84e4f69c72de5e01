//! Reclaiming expired dedup keys and completed messages past their retention, a bounded batch at
//! a time, as part of the calls that create them: the tables stay bounded without a background
//! job, and no one call pays for a large backlog (`maintain()` catches up after a burst).

use std::cell::Cell;

use courier_core::tuning::{
    MAINTAIN_CHUNK, SWEEP_COMPLETED_BATCH, SWEEP_COMPLETED_EVERY, SWEEP_KEYS_BATCH, SWEEP_KEYS_EVERY,
};
use pgrx::pg_sys;

use crate::storage::Store;

thread_local! {
    static KEYED_SINCE_SWEEP: Cell<u32> = const { Cell::new(0) };
    static ACKS_SINCE_SWEEP: Cell<u32> = const { Cell::new(0) };
}

/// True once every `every` calls in this backend.
fn due(counter: &'static std::thread::LocalKey<Cell<u32>>, every: u32) -> bool {
    let n = counter.get() + 1;
    counter.set(if n >= every { 0 } else { n });
    n >= every
}

/// Called by every enqueue with a dedup key.
pub fn after_keyed_enqueue(store: &Store, now: pg_sys::TimestampTz) {
    if due(&KEYED_SINCE_SWEEP, SWEEP_KEYS_EVERY) {
        store.sweep_keys(now, SWEEP_KEYS_BATCH);
    }
}

/// Called by every ack call.
pub fn after_ack(store: &Store, now: pg_sys::TimestampTz) {
    if due(&ACKS_SINCE_SWEEP, SWEEP_COMPLETED_EVERY) {
        store.sweep_completed(now, SWEEP_COMPLETED_BATCH);
    }
}

/// What a catch-up reclaimed.
pub struct CaughtUp {
    pub keys: i64,
    pub completed: i64,
}

/// Reclaims up to `max_rows` expired keys and as many completed messages, in chunks.
pub fn catch_up(store: &Store, now: pg_sys::TimestampTz, max_rows: i32) -> CaughtUp {
    let keys = drain(max_rows, |limit| store.sweep_keys(now, limit));
    let completed = drain(max_rows, |limit| store.sweep_completed(now, limit));
    CaughtUp { keys, completed }
}

/// Calls `sweep` with chunk limits until it reclaims nothing more or `max_rows` are done.
fn drain(max_rows: i32, sweep: impl Fn(i32) -> usize) -> i64 {
    let mut done = 0i32;
    while done < max_rows {
        let n = sweep(MAINTAIN_CHUNK.min(max_rows - done));
        done += n as i32;
        if n == 0 {
            break;
        }
    }
    i64::from(done)
}
