//! Resolving a queue name for the data path: the backend-local cache of the queue catalog, and
//! the locks on queue names.
//!
//! Enqueue and drop_queue serialise on a lock named after the queue (see
//! [`courier_core::name::lock_key`]): enqueue holds it shared until its transaction ends, drop
//! takes it exclusively before it deletes. A drop therefore waits for in-flight enqueues and then
//! deletes their messages too, and an enqueue that waited for a drop sees that the queue is gone.
//! Without this an enqueue racing a drop could commit a message into a queue that no longer
//! exists. Everything else that moves a message into a queue (dead-lettering, redrive) takes the
//! same shared lock on the destination.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use courier_core::CourierError;
use courier_core::name::lock_key;
use pgrx::pg_sys;

use crate::errors::raise;
use crate::pg;
use crate::relcache;
use crate::storage::{QueueRef, Store};

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
// send a relcache invalidation for courier.queue when they commit (relcache::invalidate_queue),
// which advances every backend's queue epoch; every cached lookup first processes pending
// invalidations and starts the cache over when the epoch moved, so it never uses an entry older
// than the last committed change it could see. Enqueue takes the queue-name lock before that, so
// a drop or alter that committed while it waited for the lock is always seen.

#[derive(Default)]
struct Cache {
    /// The queue epoch the entries below were read in.
    epoch: u64,
    // Shared, not cloned, per lookup: a lookup is on every enqueue's path.
    by_name: HashMap<String, Rc<QueueRef>>,
    /// Queue id -> name, for the queues in `by_name`.
    names: HashMap<i32, String>,
    /// Whether any queue keeps completed messages (so acks must copy them).
    any_retention: Option<bool>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Runs `f` on the cache, emptied first if the queue catalog changed since it was filled.
fn cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    relcache::accept_invalidations();
    let epoch = relcache::queue_epoch();
    CACHE.with_borrow_mut(|c| {
        if c.epoch != epoch {
            *c = Cache { epoch, ..Cache::default() };
        }
        f(c)
    })
}

fn remember(q: &Rc<QueueRef>) {
    cache(|c| {
        c.by_name.insert(q.name.clone(), Rc::clone(q));
        c.names.insert(q.id, q.name.clone());
    });
}

fn cached_lookup(store: &Store, name: &str) -> Option<Rc<QueueRef>> {
    if let Some(q) = cache(|c| c.by_name.get(name).cloned()) {
        return Some(q);
    }
    let q = Rc::new(store.lookup_queue(name, false)?);
    remember(&q);
    Some(q)
}

/// Looks a queue up by id (for operations that start from a message): from the cache when it
/// holds the queue, else from the table (and then caches it).
pub fn resolve_id(store: &Store, queue_id: i32) -> Option<Rc<QueueRef>> {
    let cached = cache(|c| c.names.get(&queue_id).and_then(|name| c.by_name.get(name).cloned()));
    if cached.is_some() {
        return cached;
    }
    let q = Rc::new(store.lookup_queue_by_id(queue_id)?);
    remember(&q);
    Some(q)
}

/// Whether any queue of this database keeps completed messages (cached like the queues).
pub fn any_retention(store: &Store) -> bool {
    if let Some(v) = cache(|c| c.any_retention) {
        return v;
    }
    let v = store.any_retention();
    cache(|c| c.any_retention = Some(v));
    v
}

/// Makes every backend drop its cached queue catalog when this transaction commits.
pub fn invalidate_queue_cache() {
    relcache::invalidate_queue();
}

/// Records that `priority` is used in the queue, if it is outside the range the queue has seen.
pub fn note_priority(store: &Store, q: &QueueRef, priority: i16) {
    if q.priorities.contains(&priority) {
        return;
    }
    if store.widen_priorities(q.id, priority) {
        invalidate_queue_cache();
    }
}

/// Records that messages with a group key are enqueued into the queue, the first time: from then
/// on its leases look for groups.
pub fn note_grouped(store: &Store, q: &QueueRef) {
    if !q.grouped && store.mark_grouped(q.id) {
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
        pg_sys::LockDatabaseObject(relcache::queue_relid(), pg_sys::Oid::from(lock_key(name)), 0, lockmode);
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
