//! About the running courier: its version, and how this session's last calls went, for tests and
//! diagnostics.

use pgrx::prelude::*;

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
