//! Queue catalog: creating, altering, dropping and purging queues, and resolving a queue name for
//! the data path.
//!
//! Enqueue and drop_queue serialise on a lock named after the queue (see
//! [`courier_core::name::lock_key`]): enqueue holds it shared until its transaction ends, drop
//! takes it exclusively before it deletes. A drop therefore waits for in-flight enqueues and then
//! deletes their messages too, and an enqueue that waited for a drop sees that the queue is gone.
//! Without this an enqueue racing a drop could commit a message into a queue that no longer
//! exists. Everything else that moves a message into a queue (dead-lettering, redrive) takes the
//! same shared lock on the destination.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use courier_core::access::Privilege;
use courier_core::name::{lock_key, validate_queue_name};
use courier_core::policy::QueueSettings;
use courier_core::retry::RetryPolicy;
use courier_core::{CourierError, ErrorKind};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::access;
use crate::args::{self, queue_name, window};
use crate::at_commit;
use crate::errors::{arg, raise, OrRaise};
use crate::pg;
use crate::storage::{self, QueueRef, Store};

#[derive(Clone, Copy)]
pub enum NameLock {
    /// Held by anything that puts messages into a queue: many at once, blocks only drop.
    Shared,
    /// Held by drop_queue.
    Exclusive,
}

// ---------------------------------------------------------------------------------------------
// Backend-local cache of the queue catalog
// ---------------------------------------------------------------------------------------------
//
// Every enqueue and lease needs its queue's id and settings. Looking them up costs an SPI query;
// caching them costs nothing but keeping the cache right. create_queue, alter_queue and drop_queue
// send a relcache invalidation for courier.queue when they commit; every backend's callback then
// empties its cache, and every cached lookup first processes pending invalidations
// (AcceptInvalidationMessages), so it never uses an entry older than the last committed change
// it could see. Enqueue takes the queue-name lock before that, so a drop or alter that committed
// while it waited for the lock is always seen.

thread_local! {
    // Shared, not cloned, per lookup: a lookup is on every enqueue's path.
    static QUEUES: RefCell<HashMap<String, Rc<QueueRef>>> = RefCell::new(HashMap::new());
    /// Queue id -> name, for the queues in QUEUES.
    static QUEUE_NAMES: RefCell<HashMap<i32, String>> = RefCell::new(HashMap::new());
    /// OID of courier.queue: the lock class id and the relation whose invalidations we follow.
    static QUEUE_RELID: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::Oid::INVALID) };
    /// OIDs of courier.message and courier.message_id_seq, for the direct insert path.
    static MESSAGE_RELIDS: Cell<Option<(pg_sys::Oid, pg_sys::Oid)>> = const { Cell::new(None) };
    /// Bumped whenever MESSAGE_RELIDS is forgotten, i.e. whenever courier.message's definition
    /// may have changed: what the direct insert path derives from it is valid for one epoch.
    static MESSAGE_EPOCH: Cell<u64> = const { Cell::new(0) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// Whether any queue keeps completed messages (so acks must copy them).
    static ANY_RETENTION: Cell<Option<bool>> = const { Cell::new(None) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let ours = QUEUE_RELID.get();
    if let Some((message, _)) = MESSAGE_RELIDS.get() {
        if relid == pg_sys::Oid::INVALID || relid == message {
            forget_message_relids();
        }
    }
    if relid == pg_sys::Oid::INVALID || relid == ours {
        forget_message_relids();
        QUEUES.with(|q| q.borrow_mut().clear());
        QUEUE_NAMES.with(|q| q.borrow_mut().clear());
        QUEUE_RELID.set(pg_sys::Oid::INVALID);
        ANY_RETENTION.set(None);
        crate::access::forget_table_owner();
    }
}

fn forget_message_relids() {
    MESSAGE_RELIDS.set(None);
    MESSAGE_EPOCH.set(MESSAGE_EPOCH.get().wrapping_add(1));
}

/// OID of courier.queue, cached until the table is dropped (extension dropped or re-created).
pub fn queue_relid() -> pg_sys::Oid {
    if !CALLBACK_REGISTERED.get() {
        // SAFETY: registers a process-lifetime callback once per backend.
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0))
        };
        CALLBACK_REGISTERED.set(true);
    }
    let cached = QUEUE_RELID.get();
    if cached != pg_sys::Oid::INVALID {
        return cached;
    }
    // SAFETY: syscache lookups of our own schema and table.
    let relid = unsafe {
        let namespace = pg_sys::get_namespace_oid(c"courier".as_ptr(), false);
        pg_sys::get_relname_relid(c"queue".as_ptr(), namespace)
    };
    QUEUE_RELID.set(relid);
    relid
}

/// Changes whenever courier.message's relcache entry is invalidated (any ALTER TABLE, CREATE or
/// DROP INDEX, trigger, rule or policy change on it), so a value derived from the table's
/// definition and tagged with the epoch it was derived in is current while the epoch is.
/// Invalidations are processed when the table is locked, so read this after opening it.
pub fn message_epoch() -> u64 {
    MESSAGE_EPOCH.get()
}

/// OIDs of courier.message and its id sequence, cached like [`queue_relid`] (and forgotten when
/// either table is dropped); `None` if they do not exist.
pub fn message_relids() -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    queue_relid();
    if let Some(cached) = MESSAGE_RELIDS.get() {
        return Some(cached);
    }
    // SAFETY: syscache lookups of our own schema's relations.
    let (message, seq) = unsafe {
        let namespace = pg_sys::get_namespace_oid(c"courier".as_ptr(), false);
        (
            pg_sys::get_relname_relid(c"message".as_ptr(), namespace),
            pg_sys::get_relname_relid(c"message_id_seq".as_ptr(), namespace),
        )
    };
    if message == pg_sys::Oid::INVALID || seq == pg_sys::Oid::INVALID {
        return None;
    }
    MESSAGE_RELIDS.set(Some((message, seq)));
    Some((message, seq))
}

/// Makes every backend drop its cached queue catalog when this transaction commits.
pub fn invalidate_queue_cache() {
    // SAFETY: queues a relcache invalidation, sent at commit (and discarded on abort).
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(queue_relid()) };
}

fn cached_lookup(store: &Store, name: &str) -> Option<Rc<QueueRef>> {
    // SAFETY: processes pending invalidations (our callback may clear the cache here).
    unsafe { pg_sys::AcceptInvalidationMessages() };
    queue_relid();
    if let Some(q) = QUEUES.with(|c| c.borrow().get(name).cloned()) {
        return Some(q);
    }
    let q = Rc::new(store.lookup_queue(name, false)?);
    remember(&q);
    Some(q)
}

fn remember(q: &Rc<QueueRef>) {
    QUEUES.with(|c| c.borrow_mut().insert(q.name.clone(), Rc::clone(q)));
    QUEUE_NAMES.with(|c| c.borrow_mut().insert(q.id, q.name.clone()));
}

/// Looks a queue up by id (for operations that start from a message): from the cache when it
/// holds the queue, else from the table (and then caches it).
pub fn resolve_id(store: &Store, queue_id: i32) -> Option<Rc<QueueRef>> {
    // SAFETY: processes pending invalidations (our callback may clear the cache here).
    unsafe { pg_sys::AcceptInvalidationMessages() };
    queue_relid();
    let cached = QUEUE_NAMES
        .with(|n| n.borrow().get(&queue_id).cloned())
        .and_then(|name| QUEUES.with(|c| c.borrow().get(&name).cloned()));
    if cached.is_some() {
        return cached;
    }
    let q = Rc::new(store.lookup_queue_by_id(queue_id)?);
    remember(&q);
    Some(q)
}

/// Whether any queue of this database keeps completed messages (cached like the queues).
pub fn any_retention(store: &Store) -> bool {
    // SAFETY: processes pending invalidations (our callback may clear the cache here).
    unsafe { pg_sys::AcceptInvalidationMessages() };
    queue_relid();
    if let Some(v) = ANY_RETENTION.get() {
        return v;
    }
    let v = store.any_retention();
    ANY_RETENTION.set(Some(v));
    v
}

/// Records that `priority` is used in the queue, if it is outside the range the queue has seen.
pub fn note_priority(store: &Store, q: &QueueRef, priority: i16) {
    if (q.priorities.0..=q.priorities.1).contains(&priority) {
        return;
    }
    if store.widen_priorities(q.id, priority) {
        invalidate_queue_cache();
    }
}

/// Takes the transaction-scoped lock on a queue name.
pub fn lock_name(name: &str, mode: NameLock) {
    let lockmode = match mode {
        NameLock::Shared => pg_sys::AccessShareLock,
        NameLock::Exclusive => pg_sys::AccessExclusiveLock,
    } as pg_sys::LOCKMODE;
    // SAFETY: a heavyweight lock on an object tag; an ERROR (deadlock, lock_timeout, cancel)
    // unwinds through pgrx. The class id is courier.queue's own OID, so the tag cannot collide
    // with any lock PostgreSQL takes on a real object.
    unsafe {
        pg_sys::LockDatabaseObject(queue_relid(), pg_sys::Oid::from(lock_key(name)), 0, lockmode);
    }
}

/// Looks a queue up (from the cache when it can) or raises 42704.
#[track_caller]
pub fn resolve(store: &Store, name: &str) -> Rc<QueueRef> {
    cached_lookup(store, name).unwrap_or_else(|| raise(CourierError::undefined_queue(name)))
}

/// Resolves a queue that messages are about to be put into: locks its name first, so that a drop
/// that committed before the lock was granted is seen. At REPEATABLE READ and above the lookup
/// locks the queue row instead of trusting the cache: the transaction snapshot may predate such a
/// drop, and the row lock turns that race into a serialization failure.
pub fn resolve_for_insert(store: &Store, name: &str) -> Rc<QueueRef> {
    lock_name(name, NameLock::Shared);
    let found = if pg::uses_transaction_snapshot() {
        store.lookup_queue(name, true).map(Rc::new)
    } else {
        cached_lookup(store, name)
    };
    found.unwrap_or_else(|| raise(CourierError::undefined_queue(name)))
}

/// Resolves a dead-letter queue setting for `queue` (None when creating): it must exist, differ
/// from the queue and not lead back to it. Locks its name so it cannot be dropped meanwhile.
fn dead_letter_target(store: &Store, name: &str, for_queue: &str, queue: Option<&QueueRef>) -> i32 {
    validate_queue_name(name, "dead_letter_queue").or_raise();
    if for_queue == name {
        raise(CourierError::invalid(format!("queue \"{name}\" cannot be its own dead-letter queue")));
    }
    lock_name(name, NameLock::Shared);
    let target = store.lookup_queue(name, pg::uses_transaction_snapshot()).unwrap_or_else(|| {
        raise(CourierError::new(
            ErrorKind::UndefinedQueue,
            format!("dead_letter_queue \"{name}\" does not exist"),
        ))
    });
    // Dead letters are enqueued into the target on the caller's behalf later, by whoever nacks.
    access::require(store, &target, Privilege::Enqueue);
    if let Some(q) = queue {
        if store.dead_letter_cycle(q.id, target.id) {
            raise(CourierError::invalid(format!(
                "dead_letter_queue \"{name}\" would form a cycle: its dead letters already end up in \"{}\"",
                q.name
            )));
        }
    }
    target.id
}

/// Creates a queue. Returns true if it was created, false if it already existed and
/// `if_not_exists` was given (the existing queue's settings are left as they are).
#[allow(clippy::too_many_arguments)]
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn create_queue(
    queue: Option<&str>,
    visibility_timeout: default!(Option<Interval>, "'30 seconds'"),
    max_attempts: default!(Option<i32>, 25),
    dead_letter_queue: default!(Option<&str>, "NULL"),
    retry_base: default!(Option<Interval>, "'1 second'"),
    retry_max: default!(Option<Interval>, "'15 minutes'"),
    retry_jitter: default!(Option<f64>, 0.2),
    dedup_window: default!(Option<Interval>, "'1 day'"),
    retention: default!(Option<Interval>, "NULL"),
    notify: default!(Option<bool>, false),
    if_not_exists: default!(Option<bool>, false),
) -> bool {
    let name = queue_name(queue, "queue");
    let settings = QueueSettings {
        visibility_timeout_usecs: args::visibility_timeout(
            arg(visibility_timeout, "visibility_timeout"),
            "visibility_timeout",
        ),
        max_attempts: args::max_attempts(arg(max_attempts, "max_attempts")),
        retry: RetryPolicy {
            base_usecs: window(arg(retry_base, "retry_base"), "retry_base"),
            max_usecs: window(arg(retry_max, "retry_max"), "retry_max"),
            jitter: arg(retry_jitter, "retry_jitter"),
        },
        dedup_window_usecs: window(arg(dedup_window, "dedup_window"), "dedup_window"),
        retention_usecs: retention.and_then(args::retention),
    };
    settings.validate().or_raise();
    let notify = arg(notify, "notify");
    let if_not_exists = arg(if_not_exists, "if_not_exists");
    storage::with(|store| {
        let dlq = dead_letter_queue.map(|d| dead_letter_target(store, d, name, None));
        match store.insert_queue(name, &settings, dlq, notify, &access::caller_name(store)) {
            Some(_) => {
                invalidate_queue_cache();
                true
            }
            None if if_not_exists => {
                pgrx::notice!("queue \"{name}\" already exists, skipping");
                false
            }
            None => raise(CourierError::duplicate_queue(name)),
        }
    })
}

/// Changes a queue's settings. Arguments left NULL keep their current value;
/// `dead_letter_queue => ''` removes the dead-letter queue, `retention => '0'` stops keeping
/// completed messages, `max_attempts => 0` means unlimited.
#[allow(clippy::too_many_arguments)]
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn alter_queue(
    queue: Option<&str>,
    visibility_timeout: default!(Option<Interval>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    dead_letter_queue: default!(Option<&str>, "NULL"),
    retry_base: default!(Option<Interval>, "NULL"),
    retry_max: default!(Option<Interval>, "NULL"),
    retry_jitter: default!(Option<f64>, "NULL"),
    dedup_window: default!(Option<Interval>, "NULL"),
    retention: default!(Option<Interval>, "NULL"),
    notify: default!(Option<bool>, "NULL"),
) {
    let name = queue_name(queue, "queue");
    storage::with(|store| {
        let current =
            store.lookup_queue(name, false).unwrap_or_else(|| raise(CourierError::undefined_queue(name)));
        access::require(store, &current, Privilege::Manage);
        let mut s = current.settings.clone();
        if let Some(v) = visibility_timeout {
            s.visibility_timeout_usecs = args::visibility_timeout(v, "visibility_timeout");
        }
        if let Some(v) = max_attempts {
            s.max_attempts = args::max_attempts(v);
        }
        if let Some(v) = retry_base {
            s.retry.base_usecs = window(v, "retry_base");
        }
        if let Some(v) = retry_max {
            s.retry.max_usecs = window(v, "retry_max");
        }
        if let Some(v) = retry_jitter {
            s.retry.jitter = v;
        }
        if let Some(v) = dedup_window {
            s.dedup_window_usecs = window(v, "dedup_window");
        }
        if let Some(v) = retention {
            s.retention_usecs = args::retention(v);
        }
        s.validate().or_raise();
        let dlq = match dead_letter_queue {
            None => current.dead_letter_queue.as_ref().map(|(id, _)| *id),
            Some("") => None,
            Some(d) => Some(dead_letter_target(store, d, name, Some(&current))),
        };
        store.update_queue(current.id, &s, dlq, notify.unwrap_or(current.notify));
        invalidate_queue_cache();
    })
}

/// Drops a queue and every message in it. Returns true if it was dropped, false if it did not
/// exist and `if_exists` was given.
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn drop_queue(queue: Option<&str>, if_exists: default!(Option<bool>, false)) -> bool {
    let name = queue_name(queue, "queue");
    let if_exists = arg(if_exists, "if_exists");
    if pg::uses_transaction_snapshot() {
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
            access::require_owner(store, &q);
            if let Some(user) = store.dead_letter_user(q.id) {
                raise(
                    CourierError::new(
                        ErrorKind::DependentObjects,
                        format!("queue \"{name}\" is the dead-letter queue of \"{user}\""),
                    )
                    .with_hint(format!(
                        "Run courier.alter_queue('{user}', dead_letter_queue => '') first, or drop \"{user}\"."
                    )),
                );
            }
            store.delete_queue(q.id);
            at_commit::forget(q.id);
            invalidate_queue_cache();
            true
        }
        None if if_exists => {
            pgrx::notice!("queue \"{name}\" does not exist, skipping");
            false
        }
        None => raise(CourierError::undefined_queue(name)),
    })
}

/// Deletes every message of a queue (ready, delayed, leased and dead alike) and returns how
/// many. Dedup keys and completed messages are kept.
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn purge_queue(queue: Option<&str>) -> i64 {
    let name = queue_name(queue, "queue");
    storage::with(|store| {
        let q = resolve(store, name);
        access::require(store, &q, Privilege::Manage);
        store.purge_queue(q.id) as i64
    })
}
