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

use crate::call::Call;
use crate::errors::raise;
use crate::identity;
use crate::queues;
use crate::storage::QueueRef;

pub fn role_oid(name: &str) -> Option<pg_sys::Oid> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a syscache lookup by name; missing_ok, so no error.
    let oid = unsafe { pg_sys::get_role_oid(name.as_ptr(), true) };
    (oid != pg_sys::Oid::INVALID).then_some(oid)
}

/// Whether `caller` has the rights of the queue's owner (is it, a member of it, or a superuser).
fn is_owner(caller: pg_sys::Oid, q: &QueueRef) -> bool {
    // SAFETY: syscache lookups of existing role OIDs, inside a transaction; they raise nothing
    // for a role that was dropped meanwhile (the answer is then false).
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
                    // SAFETY: a syscache lookup of two role OIDs, inside a transaction.
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
    if let Some(q) = queues::resolve_id(call, queue_id) {
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
    // SAFETY: a syscache lookup of two role OIDs, inside a transaction.
    if !unsafe { pg_sys::has_privs_of_role(call.caller, identity::table_owner()) } {
        raise(CourierError::new(
            ErrorKind::InsufficientPrivilege,
            format!("only the owner of extension courier may {what}"),
        ));
    }
}
