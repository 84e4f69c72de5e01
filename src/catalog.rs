//! Queue catalog: creating, dropping and purging queues, and resolving a queue name for the data
//! path.
//!
//! Enqueue and drop_queue serialise on a lock named after the queue (see
//! [`courier_core::name::lock_key`]): enqueue holds it shared until its transaction ends, drop
//! takes it exclusively before it deletes. A drop therefore waits for in-flight enqueues and then
//! deletes their messages too, and an enqueue that waited for a drop sees that the queue is gone.
//! Without this an enqueue racing a drop could commit a message into a queue that no longer
//! exists. Leases, acks and purges need no such lock: they touch only rows that already exist.

use courier_core::name::{lock_key, validate_queue_name};
use courier_core::{timing, CourierError, ErrorKind};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::errors::{arg, raise, OrRaise};
use crate::storage::{self, QueueRef, Store};

/// Returns the queue name argument after checking it against the naming rule.
pub fn queue_name<'a>(value: Option<&'a str>, argument: &str) -> &'a str {
    let name = arg(value, argument);
    validate_queue_name(name, argument).or_raise();
    name
}

/// True at REPEATABLE READ and SERIALIZABLE, where statements share one snapshot.
pub fn uses_transaction_snapshot() -> bool {
    // SAFETY: reading a backend-local global.
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

#[derive(Clone, Copy)]
pub enum NameLock {
    /// Held by enqueue: many at once, blocks only drop.
    Shared,
    /// Held by drop_queue.
    Exclusive,
}

/// Takes the transaction-scoped lock on a queue name.
pub fn lock_name(name: &str, mode: NameLock) {
    let lockmode = match mode {
        NameLock::Shared => pg_sys::AccessShareLock,
        NameLock::Exclusive => pg_sys::AccessExclusiveLock,
    } as pg_sys::LOCKMODE;
    // SAFETY: syscache lookups and a heavyweight lock on an object tag; an ERROR (deadlock,
    // lock_timeout, cancel) unwinds through pgrx. The class id is courier.queue's own OID, so the
    // tag cannot collide with any lock PostgreSQL takes on a real object.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"courier".as_ptr(), false);
        let classid = pg_sys::get_relname_relid(c"queue".as_ptr(), namespace);
        pg_sys::LockDatabaseObject(classid, pg_sys::Oid::from(lock_key(name)), 0, lockmode);
    }
}

/// Looks a queue up or raises 42704.
pub fn resolve(store: &Store, name: &str) -> QueueRef {
    store.lookup_queue(name, false).unwrap_or_else(|| raise(CourierError::undefined_queue(name)))
}

/// Resolves a queue for enqueue: locks its name first, so that a drop that committed before the
/// lock was granted is visible to the lookup (which runs with a fresh snapshot).
pub fn resolve_for_enqueue(store: &Store, name: &str) -> QueueRef {
    lock_name(name, NameLock::Shared);
    store
        .lookup_queue(name, uses_transaction_snapshot())
        .unwrap_or_else(|| raise(CourierError::undefined_queue(name)))
}

fn interval_usecs(i: Interval) -> i128 {
    timing::interval_usecs(i.months(), i.days(), i.micros())
}

/// Validates a visibility timeout argument and returns it in microseconds.
pub fn visibility_timeout(value: Interval, argument: &str) -> i64 {
    timing::visibility_timeout(argument, interval_usecs(value)).or_raise()
}

/// Validates a delay argument (zero allowed) and returns it in microseconds.
pub fn delay(value: Interval, argument: &str) -> i64 {
    timing::delay(argument, interval_usecs(value)).or_raise()
}

/// Creates a queue. Returns true if it was created, false if it already existed and
/// `if_not_exists` was given (the existing queue's settings are left as they are).
#[pg_extern(security_definer)]
#[search_path(pg_catalog, courier, pg_temp)]
fn create_queue(
    queue: Option<&str>,
    visibility_timeout: default!(Option<Interval>, "'30 seconds'"),
    if_not_exists: default!(Option<bool>, false),
) -> bool {
    let name = queue_name(queue, "queue");
    let vt = self::visibility_timeout(arg(visibility_timeout, "visibility_timeout"), "visibility_timeout");
    let if_not_exists = arg(if_not_exists, "if_not_exists");
    storage::with(|store| match store.insert_queue(name, vt) {
        Some(_) => true,
        None if if_not_exists => {
            pgrx::notice!("queue \"{name}\" already exists, skipping");
            false
        }
        None => raise(CourierError::duplicate_queue(name)),
    })
}

/// Drops a queue and every message in it. Returns true if it was dropped, false if it did not
/// exist and `if_exists` was given.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, courier, pg_temp)]
fn drop_queue(queue: Option<&str>, if_exists: default!(Option<bool>, false)) -> bool {
    let name = queue_name(queue, "queue");
    let if_exists = arg(if_exists, "if_exists");
    if uses_transaction_snapshot() {
        // Under a transaction snapshot the delete below could miss messages that enqueues
        // committed after the snapshot was taken, leaving them behind without a queue.
        raise(
            CourierError::new(
                ErrorKind::InvalidTransactionState,
                "drop_queue cannot run at REPEATABLE READ or SERIALIZABLE isolation",
            )
            .with_hint("Run it in a READ COMMITTED transaction."),
        );
    }
    lock_name(name, NameLock::Exclusive);
    storage::with(|store| match store.lookup_queue(name, false) {
        Some(q) => {
            store.delete_queue(q);
            true
        }
        None if if_exists => {
            pgrx::notice!("queue \"{name}\" does not exist, skipping");
            false
        }
        None => raise(CourierError::undefined_queue(name)),
    })
}

/// Deletes every message of a queue (ready, delayed and leased alike) and returns how many.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, courier, pg_temp)]
fn purge_queue(queue: Option<&str>) -> i64 {
    let name = queue_name(queue, "queue");
    storage::with(|store| {
        let q = resolve(store, name);
        store.purge_queue(q) as i64
    })
}
