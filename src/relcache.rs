//! The OIDs of courier's relations, and one rule for everything a backend caches about them.
//!
//! Backends cache what they derive from courier's tables: the queue catalog (queues.rs), the
//! table owner (identity.rs), how to write rows into courier.message directly (storage/direct.rs).
//! PostgreSQL tells every backend when a relation's definition, or data whose writers asked for
//! it, changed, by a relcache invalidation (create/alter/drop_queue and grant/revoke send one for
//! courier.queue when they commit, see [`invalidate_queue`]). This module receives them and
//! advances an epoch per relation; each cache remembers the epoch it was filled in and starts
//! over when the epoch moved. So the callback knows nothing of its subscribers, and a cache is
//! current as long as its reader processed pending invalidations first ([`accept_invalidations`],
//! or by locking the relation, which processes them too).

use std::cell::Cell;

use pgrx::pg_sys;

use crate::pg;

thread_local! {
    /// OID of courier.queue: the lock class of queue-name locks (queues.rs) and the relation whose
    /// invalidations stand for any change to the queue catalog.
    static QUEUE_RELID: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::Oid::INVALID) };
    /// OIDs of courier.message and courier.message_id_seq.
    static MESSAGE_RELIDS: Cell<Option<(pg_sys::Oid, pg_sys::Oid)>> = const { Cell::new(None) };
    /// OID of courier.message_group (0.2.0 on), forgotten with courier.message's.
    static GROUP_RELID: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    /// OID of schema courier, forgotten with courier.queue (the extension was dropped).
    static NAMESPACE: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::Oid::INVALID) };
    static QUEUE_EPOCH: Cell<u64> = const { Cell::new(0) };
    static MESSAGE_EPOCH: Cell<u64> = const { Cell::new(0) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // InvalidOid means "everything" (a cache reset after an overflow of the invalidation queue).
    let all = relid == pg_sys::Oid::INVALID;
    if all || MESSAGE_RELIDS.get().is_some_and(|(message, _)| relid == message) {
        forget_message();
    }
    if GROUP_RELID.get() == Some(relid) {
        GROUP_RELID.set(None);
    }
    if all || relid == QUEUE_RELID.get() {
        // Dropping courier.queue means the extension is being dropped or re-created: the other
        // relations' OIDs go with it.
        forget_message();
        QUEUE_RELID.set(pg_sys::Oid::INVALID);
        NAMESPACE.set(pg_sys::Oid::INVALID);
        QUEUE_EPOCH.set(QUEUE_EPOCH.get().wrapping_add(1));
    }
}

fn forget_message() {
    MESSAGE_RELIDS.set(None);
    GROUP_RELID.set(None);
    MESSAGE_EPOCH.set(MESSAGE_EPOCH.get().wrapping_add(1));
}

fn register() {
    if !CALLBACK_REGISTERED.get() {
        // SAFETY: registers a process-lifetime callback, once per backend, from a backend (the
        // callback table has room for every extension's few callbacks).
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0))
        };
        CALLBACK_REGISTERED.set(true);
    }
}

/// Processes pending invalidations, so that a cache checked against an epoch right after this is
/// no older than the last change this backend could see.
pub fn accept_invalidations() {
    register();
    // SAFETY: processes the shared invalidation queue; our callback only advances counters.
    unsafe { pg_sys::AcceptInvalidationMessages() };
}

/// OID of courier.queue, cached until the table is dropped (extension dropped or re-created).
pub fn queue_relid() -> pg_sys::Oid {
    register();
    let cached = QUEUE_RELID.get();
    if cached != pg_sys::Oid::INVALID {
        return cached;
    }
    let relid =
        pg::courier_relation(c"queue").unwrap_or_else(|| pgrx::error!("courier: courier.queue is missing"));
    QUEUE_RELID.set(relid);
    relid
}

/// OID of schema courier, or InvalidOid if it does not exist.
pub fn courier_namespace() -> pg_sys::Oid {
    register();
    let cached = NAMESPACE.get();
    if cached != pg_sys::Oid::INVALID {
        return cached;
    }
    // SAFETY: a syscache lookup by a constant name, with missing_ok.
    let namespace = unsafe { pg_sys::get_namespace_oid(c"courier".as_ptr(), true) };
    NAMESPACE.set(namespace);
    namespace
}

/// Advances whenever courier.queue's relcache entry is invalidated: any committed change to the
/// queue catalog, its owner, or the table itself.
pub fn queue_epoch() -> u64 {
    register();
    QUEUE_EPOCH.get()
}

/// Advances whenever courier.message's relcache entry is invalidated (any ALTER TABLE, CREATE or
/// DROP INDEX, trigger, rule or policy change on it), so a value derived from the table's
/// definition and tagged with the epoch it was derived in is current while the epoch is.
/// Invalidations are processed when the table is locked, so read this after opening it.
pub fn message_epoch() -> u64 {
    MESSAGE_EPOCH.get()
}

/// OIDs of courier.message and its id sequence, cached like [`queue_relid`]; `None` if they do
/// not exist.
pub fn message_relids() -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    queue_relid();
    if let Some(cached) = MESSAGE_RELIDS.get() {
        return Some(cached);
    }
    let found = pg::courier_relation(c"message").zip(pg::courier_relation(c"message_id_seq"))?;
    MESSAGE_RELIDS.set(Some(found));
    Some(found)
}

/// OID of courier.message_group, cached like [`message_relids`]; `None` if it does not exist
/// (courier 0.1.0's schema).
pub fn group_relid() -> Option<pg_sys::Oid> {
    queue_relid();
    if let Some(cached) = GROUP_RELID.get() {
        return Some(cached);
    }
    let found = pg::courier_relation(c"message_group")?;
    GROUP_RELID.set(Some(found));
    Some(found)
}

/// Makes every backend drop what it cached from the queue catalog when this transaction commits.
pub fn invalidate_queue() {
    // SAFETY: queues a relcache invalidation, sent at commit (and discarded on abort).
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(queue_relid()) };
}
