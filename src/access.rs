//! Who may call what, on which queue.
//!
//! Two layers. EXECUTE on the API functions is granted to nobody by default (README shows the
//! grants for producers, consumers and admins). On top of that every queue has an owner and
//! grants (courier_core::access): a role that may call `enqueue` still needs the `enqueue`
//! privilege on the queue it names.
//!
//! The checks read the caller from the [`Call`] they get: the role that called the courier
//! function, while the statements run as the owner of courier's tables (identity.rs), and only
//! after the check.

use courier_core::access::{self as rules, Privilege};
use courier_core::{CourierError, ErrorKind};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::args;
use crate::call::{self, Call};
use crate::catalog;
use crate::errors::{arg, raise, OrRaise};
use crate::identity;
use crate::storage::QueueRef;

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
pub fn require(call: &Call, q: &QueueRef, privilege: Privilege) {
    if !allowed(call.caller, q, privilege) {
        raise(rules::denied(privilege, &q.name));
    }
}

/// Like [`require`] for a queue known by id, from a message the operation just touched. If the
/// caller lacks the privilege the error rolls that back.
#[track_caller]
pub fn require_id(call: &Call, queue_id: i32, privilege: Privilege) {
    // A queue that vanished meanwhile cannot be checked; its messages went with it.
    if let Some(q) = catalog::resolve_id(call, queue_id) {
        require(call, &q, privilege);
    }
}

/// Raises 42501 unless the caller has the rights of the queue's owner.
#[track_caller]
pub fn require_owner(call: &Call, q: &QueueRef) {
    if !is_owner(call.caller, q) {
        raise(rules::not_owner(&q.name));
    }
}

/// Raises 42501 unless the caller has the rights of the owner of courier's tables (the role
/// that created the extension), for operations that span every queue.
#[track_caller]
pub fn require_table_owner(call: &Call, what: &str) {
    // SAFETY: a catalog lookup.
    if !unsafe { pg_sys::has_privs_of_role(call.caller, identity::table_owner()) } {
        raise(CourierError::new(
            ErrorKind::InsufficientPrivilege,
            format!("only the owner of extension courier may {what}"),
        ));
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
    call::with(|store| {
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
    call::with(|store| {
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
    call::with(|store| {
        let q = catalog::resolve(store, name);
        privileges.iter().all(|p| allowed(store.caller, &q, *p))
    })
}
