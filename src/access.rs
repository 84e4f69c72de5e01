//! Who may call what, on which queue.
//!
//! Two layers. EXECUTE on the API functions is granted to nobody by default (README shows the
//! grants for producers, consumers and admins). On top of that every queue has an owner and
//! grants (courier_core::access): a role that may call `enqueue` still needs the `enqueue`
//! privilege on the queue it names.
//!
//! The functions are not SECURITY DEFINER: they run as their caller, so they know who is asking,
//! with a pinned search_path. Only the storage statements run as the owner of courier's tables
//! ([`as_table_owner`]), and only after the check. That is the least privilege that works: the
//! caller never gets rights on the tables, and the owner's rights are used for nothing but
//! courier's own prepared statements.

use std::cell::Cell;

use courier_core::access::{self as rules, Privilege};
use courier_core::{CourierError, ErrorKind};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::args;
use crate::catalog;
use crate::errors::{arg, raise, OrRaise};
use crate::relcache;
use crate::storage::{self, QueueRef, Store};
use crate::xact;

thread_local! {
    /// The caller of the outermost courier function on the stack, while storage runs as owner.
    static CALLER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    /// Owner of courier.queue (so of every courier table), with the queue epoch it was read in:
    /// ALTER TABLE ... OWNER invalidates courier.queue (relcache.rs).
    static TABLE_OWNER: Cell<Option<(u64, pg_sys::Oid)>> = const { Cell::new(None) };
}

/// How this module reacts to transaction ends (the order among subscribers is in lib.rs).
pub const HOOKS: xact::Hooks =
    xact::Hooks { abort: after_abort, subxact_abort: |_| after_abort(), ..xact::Hooks::NONE };

/// An abort has already restored the user id (AbortTransaction, AbortSubTransaction); forget the
/// caller too, in case an error skipped AsOwner's drop.
fn after_abort() {
    CALLER.set(None);
}

fn table_owner() -> pg_sys::Oid {
    let epoch = relcache::queue_epoch();
    if let Some((at, owner)) = TABLE_OWNER.get() {
        if at == epoch {
            return owner;
        }
    }
    // SAFETY: opens our own catalog table's relcache entry without a lock (we only read its
    // owner, which the relcache keeps current) and closes it again.
    let owner = unsafe {
        let rel = pg_sys::RelationIdGetRelation(relcache::queue_relid());
        if rel.is_null() {
            pgrx::error!("courier: courier.queue is missing");
        }
        let owner = (*(*rel).rd_rel).relowner;
        pg_sys::RelationClose(rel);
        owner
    };
    TABLE_OWNER.set(Some((epoch, owner)));
    owner
}

/// While alive, the backend runs as the owner of courier's tables. Dropping it restores the
/// caller's identity; an error restores it too (transaction and subtransaction abort reset the
/// user id), and so does unwinding.
pub struct AsOwner {
    saved: Option<(pg_sys::Oid, i32)>,
    caller: pg_sys::Oid,
}

impl AsOwner {
    pub fn caller(&self) -> pg_sys::Oid {
        self.caller
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        if let Some((user, context)) = self.saved {
            // SAFETY: restores what as_table_owner saved.
            unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
            CALLER.set(None);
        }
    }
}

/// Switches to the table owner, remembering who called (nested calls keep the outer caller).
pub fn as_table_owner() -> AsOwner {
    if let Some(caller) = CALLER.get() {
        return AsOwner { saved: None, caller };
    }
    xact::ensure_registered();
    let owner = table_owner();
    let mut user = pg_sys::Oid::INVALID;
    let mut context = 0;
    // SAFETY: the same save-and-switch fmgr_security_definer does for a SECURITY DEFINER call.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    CALLER.set(Some(user));
    AsOwner { saved: Some((user, context)), caller: user }
}

fn role_oid(name: &str) -> Option<pg_sys::Oid> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a syscache lookup by name; missing_ok, so no error.
    let oid = unsafe { pg_sys::get_role_oid(name.as_ptr(), true) };
    (oid != pg_sys::Oid::INVALID).then_some(oid)
}

/// Whether `caller` has the rights of the queue's owner (is it, a member of it, or a superuser).
fn is_owner(caller: pg_sys::Oid, q: &QueueRef) -> bool {
    // SAFETY: catalog lookups.
    unsafe {
        pg_sys::superuser_arg(caller)
            || role_oid(&q.owner).is_some_and(|owner| pg_sys::has_privs_of_role(caller, owner))
    }
}

/// Whether `caller` may do what `privilege` covers to the queue.
pub fn allowed(caller: pg_sys::Oid, q: &QueueRef, privilege: Privilege) -> bool {
    is_owner(caller, q)
        || q.grants.iter().any(|(p, grantee)| {
            *p == privilege
                && (grantee == "public"
                    // SAFETY: a catalog lookup.
                    || role_oid(grantee).is_some_and(|g| unsafe { pg_sys::has_privs_of_role(caller, g) }))
        })
}

/// Raises 42501 unless the caller may do what `privilege` covers to the queue.
#[track_caller]
pub fn require(store: &Store, q: &QueueRef, privilege: Privilege) {
    if !allowed(store.caller, q, privilege) {
        raise(rules::denied(privilege, &q.name));
    }
}

/// Like [`require`] for a queue known by id, from a message the operation just touched. If the
/// caller lacks the privilege the error rolls that back.
#[track_caller]
pub fn require_id(store: &Store, queue_id: i32, privilege: Privilege) {
    // A queue that vanished meanwhile cannot be checked; its messages went with it.
    if let Some(q) = catalog::resolve_id(store, queue_id) {
        require(store, &q, privilege);
    }
}

/// Raises 42501 unless the caller has the rights of the queue's owner.
#[track_caller]
pub fn require_owner(store: &Store, q: &QueueRef) {
    if !is_owner(store.caller, q) {
        raise(rules::not_owner(&q.name));
    }
}

/// Raises 42501 unless the caller has the rights of the owner of courier's tables (the role
/// that created the extension), for operations that span every queue.
#[track_caller]
pub fn require_table_owner(store: &Store, what: &str) {
    // SAFETY: a catalog lookup.
    if !unsafe { pg_sys::has_privs_of_role(store.caller, table_owner()) } {
        raise(CourierError::new(
            ErrorKind::InsufficientPrivilege,
            format!("only the owner of extension courier may {what}"),
        ));
    }
}

/// The caller's role name, which becomes the owner of a queue it creates.
pub fn caller_name(store: &Store) -> String {
    // SAFETY: the caller is an existing role (it is running this function).
    unsafe {
        let name = pg_sys::GetUserNameFromId(store.caller, false);
        std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

/// A role argument: an existing role's name, or `public`.
fn grantee(value: Option<&str>) -> String {
    let role = arg(value, "role");
    if role.eq_ignore_ascii_case("public") {
        return "public".into();
    }
    if role.is_empty() || role.len() > 63 {
        raise(CourierError::invalid("role must be a role name of 1 to 63 bytes, or public"));
    }
    if role_oid(role).is_none() {
        raise(CourierError::new(ErrorKind::UndefinedObject, format!("role \"{role}\" does not exist")));
    }
    role.to_string()
}

/// Grants `privilege` (enqueue, consume, manage or all) on a queue to a role (or public). Only
/// the queue's owner may grant.
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn grant(queue: Option<&str>, privilege: Option<&str>, role: Option<&str>) {
    let name = args::queue_name(queue, "queue");
    let privileges = rules::parse_privileges(arg(privilege, "privilege"), "privilege").or_raise();
    let grantee = grantee(role);
    storage::with(|store| {
        let q = catalog::resolve(store, name);
        require_owner(store, &q);
        if store.grant(q.id, &grantee, &privileges) > 0 {
            catalog::invalidate_queue_cache();
        }
    })
}

/// Revokes `privilege` (enqueue, consume, manage or all) on a queue from a role (or public).
/// Only the queue's owner may revoke. Revoking what was not granted does nothing.
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn revoke(queue: Option<&str>, privilege: Option<&str>, role: Option<&str>) {
    let name = args::queue_name(queue, "queue");
    let privileges = rules::parse_privileges(arg(privilege, "privilege"), "privilege").or_raise();
    let role = arg(role, "role");
    // A dropped role's grants can still be revoked by its old name.
    let grantee = if role.eq_ignore_ascii_case("public") { "public".to_string() } else { role.to_string() };
    storage::with(|store| {
        let q = catalog::resolve(store, name);
        require_owner(store, &q);
        if store.revoke(q.id, &grantee, &privileges) > 0 {
            catalog::invalidate_queue_cache();
        }
    })
}

/// Whether the calling role may do `privilege` (enqueue, consume or manage) to a queue: for
/// applications that want to check before they try.
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn has_queue_privilege(queue: Option<&str>, privilege: Option<&str>) -> bool {
    let name = args::queue_name(queue, "queue");
    let privileges = rules::parse_privileges(arg(privilege, "privilege"), "privilege").or_raise();
    storage::with(|store| {
        let q = catalog::resolve(store, name);
        privileges.iter().all(|p| allowed(store.caller, &q, *p))
    })
}
