//! courier on a server in recovery: a hot standby, or a restore replaying WAL to its target.
//!
//! Every courier call that changes a queue (enqueue, lease, ack, nack, extend, redrive, the admin
//! functions) is refused at its start with PostgreSQL's read-only SQLSTATE, 25006, and a message
//! that says why: left to itself, such a call would fail later with a message about a lock or an
//! INSERT, or, for a lease with a `wait` on an empty queue, sleep out its whole wait (nothing
//! on a standby ever wakes it). The read-only calls (stats, the views) run as on a primary.
//!
//! Shared memory on a standby is its own: nothing the primary counted, learned or announced is
//! there. So scan floors (floor.rs) are not learned in recovery either: a standby cannot see the
//! primary's announcements of writes in progress, so a floor it learned could pass a message the
//! primary commits a moment later, and it would still be in shared memory after a promotion.
//! After a promotion the node starts with what a freshly started server has: counters from zero,
//! no floors, no waiters (README.md, "High availability").

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode, pg_sys};

/// Whether this server is in recovery (a standby, or replaying WAL before it opens for writes).
pub fn in_recovery() -> bool {
    // SAFETY: RecoveryInProgress reads shared state under its own spinlock; callable in any
    // backend at any time.
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Raises 25006 (read_only_sql_transaction) if this server is in recovery.
#[track_caller]
pub fn refuse_changes() {
    if !in_recovery() {
        return;
    }
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
        "courier cannot change a queue on a standby server: this server is in recovery",
        "courier",
    )
    .set_detail(
        "Enqueues, leases, acks, nacks, extends, redrives and queue administration run on the \
         primary only; a lease does not wait here.",
    )
    .set_hint(
        "Connect to the primary (libpq: target_session_attrs=read-write). courier.stats(), \
         courier.queue_stats and courier's other views work on a standby, read-only.",
    )
    .report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}
