//! The storage representation. Every statement that reads or writes courier's tables is in this
//! folder, one file per subject (queues, messages, lease, settle, redrive, gauges), so the layout
//! (today: one `courier.message` table for all queues) can change without touching the SQL API
//! or the modules that validate arguments. The views in sql/api.sql read the tables too.
//!
//! Statements are prepared once per backend with generic plans and kept (`SPI_keepplan`). All of
//! them run as read-write, which makes SPI take a fresh snapshot for each execution in READ
//! COMMITTED, the snapshot a queue needs: a lease must see messages committed after the calling
//! statement began. Running one assigns no transaction id unless it writes, so an empty lease
//! poll commits without writing or flushing WAL.
//!
//! The statements run as the owner of courier's tables (call.rs and identity.rs switch to it);
//! callers reach them only through the API functions, which check the caller's queue privileges
//! first (access.rs). Results are read by the named columns each statement declares next to its
//! text ([`columns!`]), into the row types its file defines.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::datum::Jsonb;
use crate::planguard;
use crate::relcache;
use crate::search_path;

mod direct;
mod gauges;
mod groups;
mod lease;
mod messages;
mod queues;
mod redrive;
mod settle;

pub use courier_core::position::{Position, START};
pub use direct::NewMessage;

pub use gauges::Gauges;
pub use groups::GroupGauges;
pub use lease::{LeaseRequest, Leased, LevelStarts};
pub use messages::{Inserted, Placement, WritePath, last_write_path};
pub use queues::{DeadLetterQueue, GroupSettings, QueueRef};
pub use redrive::{DeadLetter, Destination};
pub use settle::{GroupChange, Nackable, ReceiptSet};
// What events.rs writes log lines from.
pub use {lease::LeaseOutcome, settle::DeadLettered};

/// A statement and the types of its parameters.
struct Statement {
    sql: &'static str,
    args: &'static [pg_sys::Oid],
}

/// Declares the columns of a statement's result in SELECT-list order, so rows are read by name.
macro_rules! columns {
    ($name:ident { $($(#[$doc:meta])* $col:ident),+ $(,)? }) => {
        #[derive(Clone, Copy)]
        #[allow(dead_code, reason = "every column is declared, whether or not it is read")]
        enum $name { $($(#[$doc])* $col),+ }

        impl $crate::storage::Column for $name {
            fn position(self) -> usize {
                self as usize + 1
            }
        }
    };
}
use columns;

/// A column of a result: its 1-based position.
trait Column: Copy {
    fn position(self) -> usize;
}

/// The one column of a single-column result.
#[derive(Clone, Copy)]
struct Only;

impl Column for Only {
    fn position(self) -> usize {
        1
    }
}

/// Parameter types, built from shared prefixes at compile time.
const fn concat_args<const A: usize, const B: usize, const N: usize>(
    a: [pg_sys::Oid; A],
    b: [pg_sys::Oid; B],
) -> [pg_sys::Oid; N] {
    assert!(A + B == N, "the lengths must add up");
    let mut out = [pg_sys::Oid::INVALID; N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

/// A plan prepared with `SPI_prepare_cursor` and kept for the life of the backend.
#[derive(Clone, Copy)]
struct KeptPlan(*mut pg_sys::_SPI_plan);

thread_local! {
    // Keyed by the statement's address: every statement is a static.
    static PLANS: RefCell<HashMap<usize, KeptPlan>> = RefCell::new(HashMap::new());
    /// The schema the kept plans were prepared for, with the queue epoch it was read in.
    static SCHEMA: Cell<Option<(u64, Schema)>> = const { Cell::new(None) };
}

/// Which version's tables and columns the database has. The library serves a database whose
/// extension has not been updated yet (the package is replaced first, each database updated
/// later): statements that need what a later version added have a text for the older schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// 0.1.0's: no message groups.
    V0_1,
    /// The current version's.
    Current,
}

static EXTENSION_VERSION: Statement = Statement {
    sql: "SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'courier'",
    args: &[],
};

/// This file's statements by name (bin/check-statements keeps it complete).
static STATEMENTS: &[(&str, &Statement)] = &[("EXTENSION_VERSION", &EXTENSION_VERSION)];

/// The texts statements have for an older schema, by statement.
fn legacy_text(stmt: &'static Statement) -> Option<&'static str> {
    [queues::LEGACY, lease::LEGACY, settle::LEGACY, redrive::LEGACY]
        .into_iter()
        .flatten()
        .find(|(s, _)| std::ptr::eq(*s, stmt))
        .map(|(_, text)| *text)
}

/// A connection to the storage for the duration of one courier call.
pub struct Store<'a> {
    /// Whether this call has connected to SPI. It connects before its first statement, not
    /// before: a single-message enqueue runs none (the queue is cached, the row is written
    /// directly) and would otherwise pay for an SPI connection's two memory contexts per call.
    connected: Cell<bool>,
    /// The memory context that was current when the call began; values that outlive SPI
    /// (payloads returned by lease) are copied into it.
    outer: pg_sys::MemoryContext,
    /// Pinned before anything runs that could resolve a name (see search_path.rs).
    search_path: &'a search_path::Pin,
    /// Statements run in the calling statement's snapshot, and may only read (see [`in_snapshot`]).
    in_snapshot: bool,
}

/// Runs `f` with a storage connection (an SPI connection, for the statements), under the current
/// identity (call.rs switches to the tables' owner first).
pub fn with<R>(f: impl FnOnce(&Store) -> R) -> R {
    run_with(false, f)
}

/// `with` for a call that only reads and must see one state throughout: every statement runs in
/// the snapshot of the statement that called courier (SPI's read-only mode), not in a fresh one
/// each. `courier.queue_stats` calls stats() once per queue it lists; with a snapshot per
/// statement, a queue dropped between the listing and its call was not found (42704). A
/// statement that writes is refused by SPI in this mode.
pub fn in_snapshot<R>(f: impl FnOnce(&Store) -> R) -> R {
    run_with(true, f)
}

fn run_with<R>(in_snapshot: bool, f: impl FnOnce(&Store) -> R) -> R {
    // SAFETY: reading the backend's current memory context pointer.
    let outer = unsafe { pg_sys::CurrentMemoryContext };
    let pin = search_path::Pin::default();
    let store = Store { connected: Cell::new(false), outer, search_path: &pin, in_snapshot };
    let result = f(&store);
    if store.connected.get() {
        // SAFETY: closes the connection `connect` opened in this call. An ERROR on the way here
        // skips this; transaction or subtransaction abort then closes it (AtEOXact_SPI).
        unsafe { pg_sys::SPI_finish() };
    }
    result
}

fn internal(context: &str, e: impl std::fmt::Display) -> ! {
    pgrx::error!("courier: {context}: {e}")
}

/// The rows one statement returned, read in place from SPI_tuptable.
struct Rows {
    table: *mut pg_sys::SPITupleTable,
    len: usize,
}

impl Rows {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn datum(&self, row: usize, col: impl Column) -> (pg_sys::Datum, bool, pg_sys::Oid) {
        assert!(row < self.len && !self.table.is_null(), "row {row} out of range");
        let col = col.position() as i32;
        // SAFETY: the table is the current statement's result and the row is in range;
        // SPI_getbinval reports a column out of range as NULL rather than reading past the tuple.
        unsafe {
            let tupdesc = (*self.table).tupdesc;
            let tuple = *(*self.table).vals.add(row);
            let mut is_null = false;
            let d = pg_sys::SPI_getbinval(tuple, tupdesc, col, &mut is_null);
            (d, is_null, pg_sys::SPI_gettypeid(tupdesc, col))
        }
    }

    /// A column as a Rust value; checks the type.
    fn get<T: FromDatum + IntoDatum>(&self, row: usize, col: impl Column) -> Option<T> {
        let (d, is_null, typoid) = self.datum(row, col);
        // SAFETY: datum, null flag and type come from the tuple itself; by-reference values are
        // copied into Rust values (String, Interval) by their FromDatum.
        unsafe { T::try_from_datum(d, is_null, typoid) }.unwrap_or_else(|e| internal("reading a result", e))
    }

    /// A column as the datum itself (for values copied out with [`Store::keep_jsonb`]).
    fn raw(&self, row: usize, col: impl Column) -> Option<pg_sys::Datum> {
        let (d, is_null, _) = self.datum(row, col);
        (!is_null).then_some(d)
    }

    /// A timestamptz column as microseconds.
    fn timestamp(&self, row: usize, col: impl Column) -> Option<pg_sys::TimestampTz> {
        self.get::<TimestampWithTimeZone>(row, col).map(Into::into)
    }

    /// An interval column as microseconds. Stored intervals passed courier's checks (at most a
    /// year), so they always fit.
    fn interval_usecs(&self, row: usize, col: impl Column) -> Option<i64> {
        self.get::<Interval>(row, col).map(|i| {
            i64::try_from(crate::pg::interval_usecs(i))
                .expect("stored intervals fit in 64 bits of microseconds")
        })
    }

    /// The first column of every row, e.g. the ids a statement returned.
    fn ids(&self) -> Vec<i64> {
        (0..self.len).map(|r| self.get::<i64>(r, Only).required("id")).collect()
    }
}

trait Required<T> {
    fn required(self, what: &str) -> T;
}

impl<T> Required<T> for Option<T> {
    fn required(self, what: &str) -> T {
        self.unwrap_or_else(|| pgrx::error!("courier: unexpected NULL {what}"))
    }
}

impl Store<'_> {
    /// Whether this call's statements see the calling statement's snapshot ([`in_snapshot`]).
    pub fn in_callers_snapshot(&self) -> bool {
        self.in_snapshot
    }

    /// Connects to SPI, once per call, before the first statement. SPI_connect makes its own
    /// memory context current until SPI_finish, so what the rest of the call allocates is freed
    /// with the connection, as it was when every call connected up front.
    fn connect(&self) {
        if !self.connected.get() {
            // SAFETY: SPI_connect either succeeds or raises.
            unsafe { pg_sys::SPI_connect() };
            self.connected.set(true);
        }
    }

    /// The kept plan of a statement, prepared on first use. Plans are generic: planned once for
    /// any parameter values, never re-planned per call. Every statement is written so that its
    /// generic plan is the right one (index scans bounded by the parameters).
    /// The schema of this database's courier, read once per change of the queue catalog: ALTER
    /// EXTENSION courier UPDATE alters courier.queue (CONTRIBUTING.md says every upgrade script
    /// must), which sends the invalidation that makes every backend read it again. Kept plans
    /// made for another schema are dropped.
    pub fn schema(&self) -> Schema {
        relcache::accept_invalidations();
        let epoch = relcache::queue_epoch();
        if let Some((at, schema)) = SCHEMA.get()
            && at == epoch
        {
            return schema;
        }
        let rows = self.run_unversioned(&EXTENSION_VERSION, &[]);
        let schema = match rows.get::<String>(0, Only).as_deref() {
            Some("0.1.0") => Schema::V0_1,
            _ => Schema::Current,
        };
        if SCHEMA.get().is_some_and(|(_, was)| was != schema) {
            forget_plans();
        }
        SCHEMA.set(Some((epoch, schema)));
        schema
    }

    fn plan(&self, stmt: &'static Statement) -> *mut pg_sys::_SPI_plan {
        let text = match legacy_text(stmt) {
            Some(legacy) if self.schema() == Schema::V0_1 => legacy,
            _ => stmt.sql,
        };
        self.prepare(stmt, text)
    }

    fn prepare(&self, stmt: &'static Statement, text: &'static str) -> *mut pg_sys::_SPI_plan {
        // Before parsing, and before executing: a kept plan is parsed again under the current
        // path if the path changed since it was prepared.
        self.search_path.ensure();
        self.connect();
        let key = stmt as *const Statement as usize;
        if let Some(plan) = PLANS.with_borrow(|p| p.get(&key).copied()) {
            return plan.0;
        }
        let sql = std::ffi::CString::new(text).expect("statement text has no NUL");
        let mut args: Vec<pg_sys::Oid> = stmt.args.to_vec();
        // SAFETY: SPI is connected; on failure SPI_prepare_cursor returns NULL (or raises).
        let plan = unsafe {
            let plan = pg_sys::SPI_prepare_cursor(
                sql.as_ptr(),
                args.len() as i32,
                args.as_mut_ptr(),
                pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
            );
            if plan.is_null() {
                internal(
                    "preparing a statement",
                    std::ffi::CStr::from_ptr(pg_sys::SPI_result_code_string(pg_sys::SPI_result))
                        .to_string_lossy(),
                );
            }
            pg_sys::SPI_keepplan(plan);
            plan
        };
        PLANS.with_borrow_mut(|p| p.insert(key, KeptPlan(plan)));
        plan
    }

    /// Executes a statement read-write: in READ COMMITTED each execution takes a fresh snapshot.
    /// It assigns a transaction id only if the statement writes.
    fn run(&self, stmt: &'static Statement, args: &[DatumWithOid]) -> Rows {
        let plan = self.plan(stmt);
        self.execute(stmt, plan, args)
    }

    /// Runs a statement whose text is the same in every schema (reading the schema itself).
    fn run_unversioned(&self, stmt: &'static Statement, args: &[DatumWithOid]) -> Rows {
        let plan = self.prepare(stmt, stmt.sql);
        self.execute(stmt, plan, args)
    }

    fn execute(&self, stmt: &'static Statement, plan: *mut pg_sys::_SPI_plan, args: &[DatumWithOid]) -> Rows {
        let mut datums: Vec<pg_sys::Datum> = Vec::with_capacity(args.len());
        let mut nulls: Vec<std::os::raw::c_char> = Vec::with_capacity(args.len());
        for a in args {
            match a.datum() {
                Some(d) => {
                    datums.push(d.sans_lifetime());
                    nulls.push(b' ' as std::os::raw::c_char);
                }
                None => {
                    datums.push(pg_sys::Datum::from(0));
                    nulls.push(b'n' as std::os::raw::c_char);
                }
            }
        }
        debug_assert_eq!(args.len(), stmt.args.len());
        // SAFETY: SPI is connected; the plan is kept; datums and nulls have one entry per argument.
        unsafe {
            pg_sys::SPI_tuptable = std::ptr::null_mut();
            // Executing a kept plan re-plans it first if it was invalidated: under courier's priors.
            let status = planguard::guarded(|| {
                pg_sys::SPI_execute_plan(plan, datums.as_mut_ptr(), nulls.as_ptr(), self.in_snapshot, 0)
            });
            if status < 0 {
                internal(
                    "executing a statement",
                    std::ffi::CStr::from_ptr(pg_sys::SPI_result_code_string(status)).to_string_lossy(),
                );
            }
            Rows { table: pg_sys::SPI_tuptable, len: pg_sys::SPI_processed as usize }
        }
    }

    /// Copies a jsonb datum owned by SPI into the caller's memory context.
    fn keep_jsonb(&self, datum: Option<pg_sys::Datum>) -> Option<Jsonb> {
        let datum = datum?;
        // SAFETY: `outer` outlives this SPI connection; the datum is a valid jsonb varlena.
        unsafe {
            let old = pg_sys::MemoryContextSwitchTo(self.outer);
            let copy = pg_sys::pg_detoast_datum_copy(datum.cast_mut_ptr());
            pg_sys::MemoryContextSwitchTo(old);
            Jsonb::from_datum(pg_sys::Datum::from(copy), false)
        }
    }
}

/// A timestamp parameter.
fn timestamp_arg(t: pg_sys::TimestampTz) -> DatumWithOid<'static> {
    // SAFETY: a TimestampTz is an int64 passed by value, which is what the OID says.
    unsafe { DatumWithOid::new(t, pg_sys::TIMESTAMPTZOID) }
}

/// The three parameters that tell a statement over every level of a queue where each level's scan
/// starts: the levels listed, and the (visible_at, id) after which each one's scan starts. A start
/// before every row (START), or one no timestamp parameter can carry, is left out: that level is
/// scanned from its start, which is always safe.
pub(super) fn level_args(starts: &[(i16, Position)]) -> [DatumWithOid<'static>; 3] {
    let (mut levels, mut ats, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for &(level, (at, id)) in starts {
        if (at, id) == START {
            continue;
        }
        if let Ok(t) = TimestampWithTimeZone::try_from(at) {
            levels.push(level);
            ats.push(t);
            ids.push(id);
        }
    }
    [levels.into(), ats.into(), ids.into()]
}

/// The five parameters of listed_levels! (storage/lease.rs): the levels, top first, and where
/// each one's scan starts (START as -infinity), then the highest and the lowest of them.
pub(super) fn listed_args(levels: &[(i16, Position)]) -> Vec<DatumWithOid<'static>> {
    let (mut ps, mut ats, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for &(p, (at, id)) in levels {
        ps.push(p);
        // Positions are row timestamps or START (-infinity), which every TimestampTz
        // conversion accepts; anything else starts the level from its start, which is safe.
        let (at, id) = match TimestampWithTimeZone::try_from(at) {
            Ok(t) => (t, id),
            Err(_) => (TimestampWithTimeZone::negative_infinity(), i64::MIN),
        };
        ats.push(at);
        ids.push(id);
    }
    let top = ps.iter().copied().max().unwrap_or(i16::MAX);
    let bottom = ps.iter().copied().min().unwrap_or(i16::MIN);
    vec![ps.into(), ats.into(), ids.into(), top.into(), bottom.into()]
}

/// An interval parameter.
fn interval_arg(usecs: i64) -> DatumWithOid<'static> {
    Interval::from_micros(usecs).into()
}

/// A nullable interval parameter.
fn opt_interval_arg(usecs: Option<i64>) -> DatumWithOid<'static> {
    match usecs {
        Some(u) => interval_arg(u),
        None => DatumWithOid::null_oid(pg_sys::INTERVALOID),
    }
}

/// A nullable array parameter of the given array type.
fn opt_array_arg<T: Into<DatumWithOid<'static>>>(
    value: Option<T>,
    array_type: pg_sys::Oid,
) -> DatumWithOid<'static> {
    match value {
        Some(v) => v.into(),
        None => DatumWithOid::null_oid(array_type),
    }
}

/// Drops every kept plan (the schema they were made for changed).
fn forget_plans() {
    for (_, plan) in PLANS.with_borrow_mut(std::mem::take) {
        // SAFETY: each plan was kept by SPI_keepplan in this backend and is no longer referenced.
        unsafe { pg_sys::SPI_freeplan(plan.0) };
    }
}

/// Every statement, by name.
fn statements() -> impl Iterator<Item = (&'static str, &'static Statement)> {
    [
        STATEMENTS,
        groups::STATEMENTS,
        queues::STATEMENTS,
        messages::STATEMENTS,
        lease::STATEMENTS,
        settle::STATEMENTS,
        redrive::STATEMENTS,
        gauges::STATEMENTS,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// The names of every statement courier runs.
pub fn statement_names() -> Vec<&'static str> {
    statements().map(|(name, _)| name).collect()
}

impl Store<'_> {
    /// The plan a statement of this backend runs now: prepared first if need be, re-planned first
    /// if it was invalidated, exactly as its next execution would, under courier's priors. One
    /// EXPLAIN (FORMAT JSON, COSTS OFF) document per planned statement, each followed by
    /// `{"jitFlags": n}` (JIT is decided at plan time). `None` for an unknown name.
    pub fn explain(&self, name: &str) -> Option<Vec<String>> {
        let (_, stmt) = statements().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        let plan = self.plan(stmt);
        let sql = std::ffi::CString::new(stmt.sql).expect("statement text has no NUL");
        let mut out = Vec::new();
        planguard::guarded(|| {
            // SAFETY: SPI is connected and the plan is kept; SPI_plan_get_cached_plan returns a
            // reference-counted plan we release below (an ERROR releases it with the resource
            // owner); EXPLAIN writes into a StringInfo allocated in the current memory context.
            unsafe {
                let cached = pg_sys::SPI_plan_get_cached_plan(plan);
                if cached.is_null() {
                    internal("explaining a statement", "it has no single cached plan");
                }
                for planned in pgrx::PgList::<pg_sys::PlannedStmt>::from_pg((*cached).stmt_list).iter_ptr() {
                    let es = pg_sys::NewExplainState();
                    (*es).format = pg_sys::ExplainFormat::EXPLAIN_FORMAT_JSON;
                    (*es).costs = false;
                    pg_sys::ExplainBeginOutput(es);
                    explain_one_plan(planned, es, sql.as_ptr());
                    pg_sys::ExplainEndOutput(es);
                    out.push(std::ffi::CStr::from_ptr((*(*es).str_).data).to_string_lossy().into_owned());
                    out.push(format!("{{\"jitFlags\": {}}}", (*planned).jitFlags));
                }
                pg_sys::ReleaseCachedPlan(cached, pg_sys::CurrentResourceOwner);
            }
        });
        Some(out)
    }
}

/// ExplainOnePlan without ANALYZE; PostgreSQL 17 added a memory-counters argument.
///
/// # Safety
/// `planned` is a planned statement, `es` an explain state between ExplainBeginOutput and
/// ExplainEndOutput, `sql` the statement's text.
unsafe fn explain_one_plan(
    planned: *mut pg_sys::PlannedStmt,
    es: *mut pg_sys::ExplainState,
    sql: *const std::ffi::c_char,
) {
    use std::ptr::{null, null_mut};
    // SAFETY: the caller's promises are ExplainOnePlan's; every optional argument is NULL.
    unsafe {
        #[cfg(any(feature = "pg14", feature = "pg15", feature = "pg16"))]
        pg_sys::ExplainOnePlan(planned, null_mut(), es, sql, null_mut(), null_mut(), null(), null());
        #[cfg(feature = "pg17")]
        pg_sys::ExplainOnePlan(planned, null_mut(), es, sql, null_mut(), null_mut(), null(), null(), null());
        #[cfg(feature = "pg18")]
        pg_sys::ExplainOnePlan(
            planned,
            null_mut(),
            null_mut(),
            0,
            null_mut(),
            es,
            sql,
            null_mut(),
            null_mut(),
            null(),
            null(),
            null(),
        );
    }
}
