//! courier vacuums its own message table, more often than autovacuum can.
//!
//! A queue's table turns over its whole content all the time: every acked message leaves a dead
//! row and two dead index entries behind. Pruning reclaims the space of a lease's old row version
//! on the page, but an acked row stays a dead line pointer, with its index entries, until VACUUM
//! (and `pg_stat_user_tables.n_dead_tup` counts it until then). Autovacuum visits a database at
//! most once per `autovacuum_naptime` (a minute by default), so at 600 messages/s the table
//! carries up to 36,000 dead rows, and inserts extend the table between visits because nothing
//! has told the free space map about the reclaimed pages.
//!
//! So, when courier is preloaded, the backends that ack and nack count the rows they make dead in
//! shared memory (shmem.rs), per database. Once `courier.vacuum_threshold` of them have piled up
//! and `courier.vacuum_naptime` has passed since the last time, the backend that notices
//! launches a short-lived background worker ("courier vacuum") into its database that runs
//! `VACUUM (SKIP_LOCKED, TRUNCATE false, PARALLEL 0) courier.message, courier.message_group` and
//! exits.
//! The group table turns over with the messages (a group's row goes when its last message is
//! acked, and a one-shot key makes one row per message): left to autovacuum alone it grew all
//! through a 5-minute steady-state run (bench/groups.sh). It holds one row per non-empty group,
//! so vacuuming it along costs little. It does not stay connected,
//! so it never keeps a `DROP DATABASE` waiting for long, and it costs nothing while nothing is
//! acked.
//! Autovacuum keeps running as before (it also freezes, and vacuums the other tables).

use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::{pg_guard, pg_sys};

use crate::pg;
use crate::settings;
use crate::shmem;

/// Counts `rows` message rows that this transaction's acks or nacks made dead, and launches a
/// VACUUM worker when they are due. Never raises: a failed launch is retried after the next
/// naptime.
pub fn count_churn(rows: usize) {
    let Some(threshold) = settings::vacuum_threshold() else { return };
    if rows == 0 {
        return;
    }
    let naptime = settings::vacuum_naptime_usecs();
    let Some(slot) = shmem::vacuum_due(rows as u64, threshold, naptime) else { return };
    let database = pg::my_database();
    let packed = (u64::from(database) << 32) | slot as u64;
    let launched = BackgroundWorkerBuilder::new(&format!("courier vacuum for database {database}"))
        .set_type("courier vacuum")
        .set_library("courier")
        .set_function("courier_vacuum_main")
        .enable_spi_access()
        .set_restart_time(None)
        .set_argument(Some(pg_sys::Datum::from(packed)))
        .load_dynamic();
    if launched.is_err() {
        // No free worker slot (max_worker_processes); autovacuum still comes.
        shmem::vacuum_finished(slot, database);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, arg: pg_sys::Datum) {
    let packed = arg.value() as u64;
    shmem::vacuum_finished((packed & 0xFFFF_FFFF) as usize, (packed >> 32) as u32);
}

/// The worker: connects to the database it was launched for, vacuums the queue tables, exits.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn courier_vacuum_main(arg: pg_sys::Datum) {
    let packed = arg.value() as u64;
    let database = (packed >> 32) as u32;
    let slot = (packed & 0xFFFF_FFFF) as usize;
    // SAFETY: the usual start of a background worker, on its main thread.
    unsafe {
        // Runs however the worker ends, FATAL included, so the slot is never left "running".
        pg_sys::before_shmem_exit(Some(on_exit), arg);
        // die() lets VACUUM stop at its next interrupt check when the server shuts down, where
        // the default handler would exit from inside the signal handler.
        terminate_on_sigterm();
        pg_sys::BackgroundWorkerUnblockSignals();
        pg_sys::BackgroundWorkerInitializeConnectionByOid(pg_sys::Oid::from(database), pg_sys::InvalidOid, 0);
        pace_like_autovacuum();
        // VACUUM keeps its cross-transaction state in a child of PortalContext.
        pg_sys::PortalContext = pg_sys::AllocSetContextCreateExtended(
            pg_sys::TopMemoryContext,
            c"courier vacuum".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        let relids = queue_tables();
        if relids.is_empty() {
            pg_sys::CommitTransactionCommand();
            shmem::vacuum_forget(slot, database);
            return;
        }
        pg_sys::pgstat_report_activity(
            pg_sys::BackendState::STATE_RUNNING,
            c"VACUUM (SKIP_LOCKED, TRUNCATE false, PARALLEL 0) courier.message, courier.message_group"
                .as_ptr(),
        );
        // As a top-level VACUUM statement: it commits the transaction started above, works in
        // transactions of its own, and leaves a fresh one open for us to commit.
        // The statement must outlive the transaction it is built in: VACUUM commits that one
        // before it visits the relations, and keeps pointers to our VacuumRelation nodes (not
        // copies) in its list. Built in the transaction's context, the second relation's OID was
        // read from freed memory and the table silently skipped. PortalContext lives until exit.
        let previous = pg_sys::CurrentMemoryContext;
        pg_sys::CurrentMemoryContext = pg_sys::PortalContext;
        let statement = vacuum_statement(&relids);
        pg_sys::CurrentMemoryContext = previous;
        pg_sys::ExecVacuum(pg_sys::make_parsestate(std::ptr::null_mut()), statement, true);
        pg_sys::CommitTransactionCommand();
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
    }
}

/// Gives this session's VACUUM autovacuum's pace: `autovacuum_vacuum_cost_delay` and
/// `autovacuum_vacuum_cost_limit` where they are set (not -1, which means "as VACUUM"), so the
/// worker sleeps as autovacuum does (by default 2 ms per 200 credits) instead of running flat out
/// as a manual VACUUM does by default. Its index pass reads every page of both indexes: on a
/// 10-million-message table ~100,000 pages, which unthrottled took a core for about a second every
/// few seconds while consumers ran. Measured with a one-client `lease(100)` + `ack_batch` loop on
/// 2 cores: the p99 of its transactions that overlapped a pass was 6.2–18.4 ms unthrottled and
/// 5.1–8.4 ms throttled, with the same median (bench/results/design/notes.md).
///
/// # Safety
/// In a backend, after the GUCs are initialised.
unsafe fn pace_like_autovacuum() {
    for (from, to) in [
        (c"autovacuum_vacuum_cost_delay", c"vacuum_cost_delay"),
        (c"autovacuum_vacuum_cost_limit", c"vacuum_cost_limit"),
    ] {
        // SAFETY: reading a built-in GUC by name; the value is copied by SetConfigOption before
        // the next GetConfigOption can reuse its buffer.
        unsafe {
            let value = pg_sys::GetConfigOption(from.as_ptr(), true, false);
            if value.is_null() || std::ffi::CStr::from_ptr(value).to_bytes().starts_with(b"-") {
                continue;
            }
            pg_sys::SetConfigOption(
                to.as_ptr(),
                value,
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
            );
        }
    }
}

/// The OIDs of courier.message and courier.message_group (absent while a database still runs
/// the 0.1.0 schema), none unless courier is installed in this database.
///
/// # Safety
/// Inside a transaction.
unsafe fn queue_tables() -> Vec<pg_sys::Oid> {
    // SAFETY: a catalog lookup by a constant name, inside a transaction (the caller's promise).
    if unsafe { pg_sys::get_extension_oid(c"courier".as_ptr(), true) } == pg_sys::InvalidOid {
        return Vec::new();
    }
    [c"message", c"message_group"].into_iter().filter_map(pg::courier_relation).collect()
}

/// `VACUUM (SKIP_LOCKED, TRUNCATE false, PARALLEL 0) <relids>`, by OID as autovacuum names its
/// tables: a relation dropped in the meantime is skipped silently, and nobody's search_path is
/// involved.
///
/// Not truncating: giving the empty tail of the table back takes an ACCESS EXCLUSIVE lock, which
/// stalls every producer and consumer (and is replayed on standbys, cancelling their queries),
/// and new messages re-extend the table seconds later (bench/results/design/notes.md). Autovacuum
/// still truncates, once per visit.
///
/// No parallel workers, as autovacuum never uses them: this is background upkeep, and each worker
/// takes a core from the consumers for the index pass. On a 10-million-message table the pass
/// reads every page of both indexes (~100,000 pages, about a second); with a parallel worker
/// beside it, transactions of a one-client `lease(100)` + `ack_batch` loop that overlapped it had
/// a p99 of 11.5–13.5 ms against 5.5 ms outside, without one 5.4–6.5 ms (2 cores,
/// bench/results/design/notes.md).
///
/// # Safety
/// Inside a transaction; the nodes are palloc'd in CurrentMemoryContext, which must outlive it.
unsafe fn vacuum_statement(relids: &[pg_sys::Oid]) -> *mut pg_sys::VacuumStmt {
    // SAFETY: node construction with PostgreSQL's allocators; every field is set.
    unsafe {
        let skip_locked =
            pg_sys::makeDefElem(pg_sys::pstrdup(c"skip_locked".as_ptr()), std::ptr::null_mut(), -1);
        let no_truncate =
            pg_sys::makeDefElem(pg_sys::pstrdup(c"truncate".as_ptr()), pg_sys::makeInteger(0).cast(), -1);
        let no_parallel =
            pg_sys::makeDefElem(pg_sys::pstrdup(c"parallel".as_ptr()), pg_sys::makeInteger(0).cast(), -1);
        let stmt = pg_sys::palloc0(std::mem::size_of::<pg_sys::VacuumStmt>()).cast::<pg_sys::VacuumStmt>();
        (*stmt).type_ = pg_sys::NodeTag::T_VacuumStmt;
        (*stmt).options = pg_sys::lappend(std::ptr::null_mut(), skip_locked.cast());
        (*stmt).options = pg_sys::lappend((*stmt).options, no_truncate.cast());
        (*stmt).options = pg_sys::lappend((*stmt).options, no_parallel.cast());
        for &relid in relids {
            let rel = pg_sys::makeVacuumRelation(std::ptr::null_mut(), relid, std::ptr::null_mut());
            (*stmt).rels = pg_sys::lappend((*stmt).rels, rel.cast());
        }
        (*stmt).is_vacuumcmd = true;
        stmt
    }
}

// pg_sys::die is pgrx's guarded Rust wrapper; a signal handler must be the C function itself.
unsafe extern "C-unwind" {
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

#[cfg(not(feature = "pg18"))]
unsafe fn terminate_on_sigterm() {
    // SAFETY: installing PostgreSQL's own handler.
    unsafe { pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(postgres_die)) };
}

#[cfg(feature = "pg18")]
unsafe fn terminate_on_sigterm() {
    // SAFETY: installing PostgreSQL's own handler.
    unsafe { pg_sys::pqsignal_be(pg_sys::SIGTERM as i32, Some(postgres_die)) };
}
