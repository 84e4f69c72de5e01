//! About the running courier: its version, and how this session's last calls went, for tests and
//! diagnostics.

use courier_core::{CourierError, ErrorKind};
use pgrx::prelude::*;

use crate::access;
use crate::call;
use crate::errors;
use crate::storage;
use crate::wait;

/// The version of the courier library this server runs. `pg_extension.extversion` is the version
/// of the SQL objects in this database: after a new package is installed they differ until
/// `ALTER EXTENSION courier UPDATE` runs here (and, with courier preloaded, until the server
/// restarted).
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// How this session's last enqueue wrote its rows: 'direct' (straight into courier.message and
/// its indexes) or 'statements' (INSERT statements: a dedup key, or a table changed in a way the
/// direct path does not handle, such as a trigger or a rule); NULL before the first.
#[pg_extern(name = "_last_enqueue_path")]
#[search_path(pg_catalog, pg_temp)]
fn last_enqueue_path() -> Option<&'static str> {
    storage::last_write_path().map(|p| match p {
        storage::WritePath::Direct => "direct",
        storage::WritePath::Statements => "statements",
    })
}

/// How this session's last waiting lease went: wakeups by other sessions' commits, lease attempts,
/// and whether it was woken by events (courier preloaded) or polled.
#[pg_extern(name = "_last_wait")]
#[search_path(pg_catalog, pg_temp)]
fn last_wait() -> TableIterator<
    'static,
    (name!(wakeups, i32), name!(attempts, i32), name!(event_driven, bool), name!(waited, Interval)),
> {
    let r = wait::last_report();
    TableIterator::once((r.wakeups, r.attempts, r.event_driven, Interval::from_micros(r.waited_usecs)))
}

/// The names of the statements courier prepares, for the plan-shape test (`_explain`).
#[pg_extern(name = "_statements")]
#[search_path(pg_catalog, pg_temp)]
fn statements() -> Vec<&'static str> {
    storage::statement_names()
}

/// The generic plan a statement runs in this backend now (see storage::Store::explain), as
/// EXPLAIN (FORMAT JSON, COSTS OFF) documents each followed by its JIT flags. Only the owner of
/// courier's tables may call it: a plan shows how the tables are read.
#[pg_extern(name = "_explain")]
#[search_path(pg_catalog, courier, pg_temp)]
fn explain(name: Option<&str>) -> Vec<String> {
    let name = errors::arg(name, "name");
    call::reading(|call| {
        access::require_table_owner(call, "explain its statements");
        call.explain(name).unwrap_or_else(|| {
            errors::raise(CourierError::new(
                ErrorKind::UndefinedObject,
                format!("no courier statement named \"{name}\""),
            ))
        })
    })
}
