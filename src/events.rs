//! Server-log lines for the events an operator investigates, as `courier.log_events` selects
//! them: a message dead-lettered, a redrive, a purge (or a drop with its messages), a lease that
//! expired and was taken over. One line each, in courier_core::events's format.
//!
//! A line is written when the transaction that did the work commits, like effects.rs's counters:
//! a dead letter or purge that rolled back (or whose savepoint did) never happened, and its line
//! would send an operator looking for it. The operation formats its line when it happens (from
//! what it already has in hand, plus the role and database names), so the commit hook only hands
//! finished strings to the log. Lines go out at LOG level: to the server log with the default
//! log_min_messages, not to the client.

use std::cell::{OnceCell, RefCell};

use courier_core::events::{Event, Line, LogEvents};
use pgrx::pg_sys;

use crate::call::Call;
use crate::identity;
use crate::queues;
use crate::settings;
use crate::storage::{DeadLettered, LeaseOutcome, QueueRef, Store};
use crate::xact;

struct Pending {
    subxact: pg_sys::SubTransactionId,
    line: String,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    /// This backend's database name (a backend never changes database, and a database with
    /// sessions cannot be renamed).
    static DATABASE: OnceCell<String> = const { OnceCell::new() };
}

/// How this module reacts to transaction ends (the order among subscribers is in lib.rs).
pub const HOOKS: xact::Hooks = xact::Hooks {
    commit: write,
    abort: discard,
    subxact_abort: discard_subxact,
    subxact_commit: merge_into_parent,
    ..xact::Hooks::NONE
};

/// The setting, if it asks for `event`.
fn wanted(event: Event) -> Option<LogEvents> {
    let set = settings::log_events();
    set.logs(event).then_some(set)
}

fn database() -> String {
    DATABASE.with(|d| {
        d.get_or_init(|| {
            // SAFETY: MyDatabaseId is set before any SQL runs; get_database_name does a syscache
            // lookup (we are in a transaction) and returns a palloc'd copy or NULL.
            unsafe {
                let name = pg_sys::get_database_name(pg_sys::MyDatabaseId);
                if name.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
                }
            }
        })
        .clone()
    })
}

/// A line with the event and the database, the fields every line starts with.
fn line(event: &str) -> Line {
    Line::new(event).field("database", database())
}

/// Keeps a line for this transaction's commit.
fn record(line: Line) {
    xact::ensure_registered();
    // SAFETY: reads backend-local transaction state.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING.with_borrow_mut(|p| p.push(Pending { subxact, line: line.finish() }));
}

/// Messages of queue `source` dead-lettered into `target` (None: parked dead in their own queue).
pub fn dead_lettered(store: &Store, source: i32, target: Option<&QueueRef>, dead: &[DeadLettered]) {
    let Some(set) = wanted(Event::DeadLetter).filter(|_| !dead.is_empty()) else { return };
    let Some(queue) = queues::resolve_id(store, source) else { return };
    let target = target.map_or(queue.name.as_str(), |t| t.name.as_str());
    for m in dead {
        let mut l = line("dead_letter")
            .field("queue", &queue.name)
            .field("id", m.id)
            .field("attempts", m.attempts)
            .field("target", target)
            .optional("error", m.last_error.as_deref());
        if let Some(payload) = m.payload.as_deref().filter(|_| set.payloads()) {
            l = l.payload(payload);
        }
        record(l);
    }
}

/// A redrive of `queue` that moved `moved` dead letters.
pub fn redriven(call: &Call, queue: &str, moved: i64) {
    if wanted(Event::Redrive).is_some() {
        record(
            line("redrive")
                .field("queue", queue)
                .field("count", moved)
                .field("role", identity::role_name(call.caller)),
        );
    }
}

/// A purge of `queue` that deleted `deleted` messages.
pub fn purged(call: &Call, queue: &str, deleted: usize) {
    deleted_all(call, "purge", queue, deleted);
}

/// A drop of `queue` that deleted `deleted` messages with it.
pub fn dropped(call: &Call, queue: &str, deleted: usize) {
    deleted_all(call, "drop_queue", queue, deleted);
}

fn deleted_all(call: &Call, event: &str, queue: &str, deleted: usize) {
    if wanted(Event::Purge).is_some() {
        record(
            line(event)
                .field("queue", queue)
                .field("count", deleted)
                .field("role", identity::role_name(call.caller)),
        );
    }
}

/// The messages of a lease of `queue` whose previous lease had expired.
pub fn taken_over(queue: &str, outcome: &LeaseOutcome) {
    if outcome.expired_ids.is_empty() || wanted(Event::LeaseExpired).is_none() {
        return;
    }
    for m in outcome.leased.iter().filter(|m| outcome.expired_ids.contains(&m.id)) {
        record(line("lease_expired").field("queue", queue).field("id", m.id).field("attempt", m.attempt));
    }
}

fn write() {
    PENDING.with_borrow_mut(|pending| {
        for p in pending.iter() {
            log_line(&p.line);
        }
        pending.clear();
    });
}

// errstart and errfinish are left out of pgrx's bindings (pgrx's own ereport uses them), and its
// ereport cannot hide the statement, which a LOG line from a backend otherwise repeats on a
// second line (log_min_error_statement is ERROR by default, and LOG ranks above it).
unsafe extern "C-unwind" {
    fn errstart(elevel: std::ffi::c_int, domain: *const std::ffi::c_char) -> bool;
    fn errfinish(
        filename: *const std::ffi::c_char,
        lineno: std::ffi::c_int,
        funcname: *const std::ffi::c_char,
    );
}

/// Writes one line at LOG level, without the STATEMENT and CONTEXT lines.
fn log_line(line: &str) {
    // Lines escape control characters, so there is no NUL in them.
    let Ok(text) = std::ffi::CString::new(line) else { return };
    // SAFETY: the ereport sequence of PostgreSQL's macro: errstart, then the err* calls that fill
    // in the report it started, then errfinish, which at LOG level returns after writing it. The
    // strings outlive the calls. errstart and errfinish run inside pgrx's FFI guard (pgrx guards
    // the others), so an error inside them (out of memory) becomes a Rust panic instead of a
    // longjmp over our frames.
    unsafe {
        if pg_sys::ffi::pg_guard_ffi_boundary(|| errstart(pg_sys::LOG as std::ffi::c_int, std::ptr::null())) {
            pg_sys::errmsg_internal(c"%s".as_ptr(), text.as_ptr());
            pg_sys::errhidestmt(true);
            pg_sys::errhidecontext(true);
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                errfinish(c"events.rs".as_ptr(), 0, c"courier_events".as_ptr())
            });
        }
    }
}

fn discard() {
    PENDING.with_borrow_mut(|p| p.clear());
}

fn discard_subxact(subxact: pg_sys::SubTransactionId) {
    PENDING.with_borrow_mut(|p| p.retain(|e| e.subxact != subxact));
}

fn merge_into_parent(subxact: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
    PENDING.with_borrow_mut(|p| {
        for e in p.iter_mut().filter(|e| e.subxact == subxact) {
            e.subxact = parent;
        }
    });
}
