//! The planner's priors for courier's own statements.
//!
//! courier prepares each statement once per backend with a generic plan (storage/mod.rs), and
//! PostgreSQL re-plans it whenever the table's relcache entry is invalidated, which every VACUUM
//! or ANALYZE that changes pg_class does. Each time, the planner costs the statement from
//! whatever statistics exist at that moment, and for a queue those are often the worst possible:
//! a table vacuumed while empty says 0 rows, and after a queue drains courier's own `VACUUM
//! (TRUNCATE false)` leaves "N pages, 0 rows", which the planner reads as empty however big the
//! file grows. From such priors it picks sequential scans, bitmap scans with a sort, or a full
//! scan of the wrong index, and keeps them while millions of messages arrive. And generic-plan
//! costs built from default selectivities pass `jit_above_cost` once the table is large, so a
//! lease compiled code on every call. (bench/results/2026-12-02-bounded/notes.md has the cases.)
//!
//! Every courier statement is a point lookup or a short range scan under a LIMIT by design, so
//! while courier plans one (and only then: [`guarded`] marks it), the planner is told what courier
//! knows: its tables are big (at least [`MIN_TUPLES`] rows on [`MIN_PAGES`] pages), so that no
//! plan that reads them whole can look cheap; and the plan is never JIT-compiled. User queries,
//! even on courier's tables, are planned as PostgreSQL would.

use std::cell::Cell;

use pgrx::{pg_guard, pg_sys};

use crate::relcache;

/// The least size the planner assumes for a courier table while planning courier's statements.
const MIN_TUPLES: f64 = 10_000_000.0;
const MIN_PAGES: pg_sys::BlockNumber = 400_000;
/// And for each of its indexes that covers every row.
const MIN_INDEX_PAGES: pg_sys::BlockNumber = MIN_PAGES / 8;

thread_local! {
    /// How many guarded sections are open in this backend (they can nest: a statement that runs
    /// a function that runs a courier statement).
    static ACTIVE: Cell<u32> = const { Cell::new(0) };
}

// The hooks we replaced, called first. Written once in _PG_init, before any planning.
static mut PREVIOUS_RELATION_INFO: pg_sys::get_relation_info_hook_type = None;
static mut PREVIOUS_PLANNER: pg_sys::planner_hook_type = None;

/// Installs the hooks; called from `_PG_init`, in every process that loads courier.
pub fn init() {
    // SAFETY: _PG_init runs once per process, single-threaded, before the planner can run; we
    // keep the previous hooks and call them first, as every extension that hooks the planner must.
    unsafe {
        PREVIOUS_RELATION_INFO = pg_sys::get_relation_info_hook;
        pg_sys::get_relation_info_hook = Some(relation_info);
        PREVIOUS_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner);
    }
}

/// Runs `f`, which may plan a courier statement, with courier's priors in force.
pub fn guarded<R>(f: impl FnOnce() -> R) -> R {
    /// Closes the section however `f` ends; an ERROR unwinds through Rust frames and drops it.
    struct Section;
    impl Drop for Section {
        fn drop(&mut self) {
            ACTIVE.set(ACTIVE.get().saturating_sub(1));
        }
    }
    ACTIVE.set(ACTIVE.get() + 1);
    let _section = Section;
    f()
}

fn active() -> bool {
    ACTIVE.get() > 0
}

#[pg_guard]
unsafe extern "C-unwind" fn relation_info(
    root: *mut pg_sys::PlannerInfo,
    relid: pg_sys::Oid,
    inhparent: bool,
    rel: *mut pg_sys::RelOptInfo,
) {
    // SAFETY: PREVIOUS_RELATION_INFO was written once in _PG_init, before any planning.
    if let Some(previous) = unsafe { PREVIOUS_RELATION_INFO } {
        // SAFETY: the previous hook, with the arguments the planner gave us.
        unsafe { previous(root, relid, inhparent, rel) };
    }
    // SAFETY: a syscache lookup of a relation the planner has open.
    if !active() || unsafe { pg_sys::get_rel_namespace(relid) } != relcache::courier_namespace() {
        return;
    }
    // SAFETY: `rel` is the planner's RelOptInfo for this relation, filled by get_relation_info;
    // its index list holds IndexOptInfo nodes. We only raise size estimates.
    unsafe {
        let rel = &mut *rel;
        rel.pages = rel.pages.max(MIN_PAGES);
        rel.tuples = rel.tuples.max(MIN_TUPLES);
        for index in pgrx::PgList::<pg_sys::IndexOptInfo>::from_pg(rel.indexlist).iter_ptr() {
            // A partial index covers only the rows its predicate admits (courier's dead-letter
            // index): its own estimate stands.
            if (*index).indpred.is_null() {
                (*index).tuples = rel.tuples;
                (*index).pages = (*index).pages.max(MIN_INDEX_PAGES);
            }
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: std::ffi::c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: the previous hook or the standard planner, with the arguments we were given.
    let planned = unsafe {
        match PREVIOUS_PLANNER {
            Some(previous) => previous(parse, query_string, cursor_options, bound_params),
            None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
        }
    };
    if active() && !planned.is_null() {
        // SAFETY: the PlannedStmt the planner just returned, not yet shared with anyone.
        unsafe { (*planned).jitFlags = pg_sys::PGJIT_NONE as i32 };
    }
    planned
}
