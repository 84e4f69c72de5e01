//! Granting and revoking queue privileges, and asking whether one is held: the SQL functions
//! over the rules in access.rs.

use courier_core::access as rules;
use courier_core::{CourierError, ErrorKind};
use pgrx::prelude::*;

use crate::access::{allowed, require_owner, role_oid};
use crate::args;
use crate::call;
use crate::errors::{OrRaise, arg, raise};
use crate::queues;

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
        let q = queues::resolve(store, name);
        require_owner(store, &q);
        if store.grant(q.id, &grantee, &privileges) > 0 {
            queues::invalidate_queue_cache();
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
        let q = queues::resolve(store, name);
        require_owner(store, &q);
        if store.revoke(q.id, &grantee, &privileges) > 0 {
            queues::invalidate_queue_cache();
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
    call::reading(|store| {
        let q = queues::resolve(store, name);
        privileges.iter().all(|p| allowed(store.caller, &q, *p))
    })
}
