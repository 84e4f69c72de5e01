//! The storage representation. Every statement that reads or writes courier's tables is here, so
//! the layout (today: one `courier.message` table for all queues) can change without touching the
//! SQL API or the modules that validate arguments.
//!
//! Statements are prepared once per backend with generic plans and kept (`SPI_keepplan`). All of
//! them run as read-write, which makes SPI take a fresh snapshot for each execution in READ
//! COMMITTED, the snapshot a queue needs: a lease must see messages committed after the calling
//! statement began. Running one assigns no transaction id unless it writes, so an empty lease
//! poll commits without writing or flushing WAL.
//!
//! The statements run as the owner of courier's tables (call.rs and identity.rs switch to it);
//! callers reach them only through the API functions, which check the caller's queue privileges
//! first (access.rs).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use courier_core::access::Privilege;
use courier_core::policy::QueueSettings;
use courier_core::retry::RetryPolicy;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::datum::{Jsonb, JsonbArray};
use crate::search_path;

mod direct;

pub use direct::NewMessage;

struct Statement {
    sql: &'static str,
    args: &'static [pg_sys::Oid],
}

thread_local! {
    // Kept plans live as long as the backend.
    static PLANS: RefCell<HashMap<usize, SendPlan>> = RefCell::new(HashMap::new());
}

#[derive(Clone, Copy)]
struct SendPlan(*mut pg_sys::_SPI_plan);

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
}

/// Runs `f` with a storage connection (an SPI connection, for the statements below), under the
/// current identity (call.rs switches to the tables' owner first).
pub fn with<R>(f: impl FnOnce(&Store) -> R) -> R {
    // SAFETY: reading the backend's current memory context pointer.
    let outer = unsafe { pg_sys::CurrentMemoryContext };
    let pin = search_path::Pin::default();
    let store = Store { connected: Cell::new(false), outer, search_path: &pin };
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
pub struct Rows {
    table: *mut pg_sys::SPITupleTable,
    len: usize,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn datum(&self, row: usize, col: usize) -> (pg_sys::Datum, bool, pg_sys::Oid) {
        assert!(row < self.len && !self.table.is_null(), "row {row} out of range");
        // SAFETY: the table is the current statement's result and row/col are in range.
        unsafe {
            let tupdesc = (*self.table).tupdesc;
            let tuple = *(*self.table).vals.add(row);
            let mut is_null = false;
            let d = pg_sys::SPI_getbinval(tuple, tupdesc, col as i32, &mut is_null);
            (d, is_null, pg_sys::SPI_gettypeid(tupdesc, col as i32))
        }
    }

    /// A column as a Rust value (1-based column, as in SQL); checks the type.
    pub fn get<T: FromDatum + IntoDatum>(&self, row: usize, col: usize) -> Option<T> {
        let (d, is_null, typoid) = self.datum(row, col);
        // SAFETY: datum, null flag and type come from the tuple itself; by-reference values are
        // copied into Rust values (String, Interval) by their FromDatum.
        unsafe { T::try_from_datum(d, is_null, typoid) }.unwrap_or_else(|e| internal("reading a result", e))
    }

    pub fn raw(&self, row: usize, col: usize) -> Option<pg_sys::Datum> {
        let (d, is_null, _) = self.datum(row, col);
        (!is_null).then_some(d)
    }

    pub fn ts(&self, row: usize, col: usize) -> Option<pg_sys::TimestampTz> {
        self.get::<TimestampWithTimeZone>(row, col).map(Into::into)
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
    /// The kept plan of a statement, prepared on first use. Plans are generic: planned once for
    /// any parameter values, never re-planned per call. Every statement here is written so that
    /// its generic plan is the right one (index scans bounded by the parameters).
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

    fn plan(&self, stmt: &'static Statement) -> *mut pg_sys::_SPI_plan {
        // Before parsing, and before executing: a kept plan is parsed again under the current
        // path if the path changed since it was prepared.
        self.search_path.ensure();
        self.connect();
        let key = stmt as *const Statement as usize;
        if let Some(plan) = PLANS.with(|p| p.borrow().get(&key).copied()) {
            return plan.0;
        }
        let sql = std::ffi::CString::new(stmt.sql).expect("statement text has no NUL");
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
        PLANS.with(|p| p.borrow_mut().insert(key, SendPlan(plan)));
        plan
    }

    /// Executes a statement read-write: in READ COMMITTED each execution takes a fresh snapshot.
    /// It assigns a transaction id only if the statement writes.
    fn run(&self, stmt: &'static Statement, args: &[DatumWithOid]) -> Rows {
        let plan = self.plan(stmt);
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
            let status = pg_sys::SPI_execute_plan(plan, datums.as_mut_ptr(), nulls.as_ptr(), false, 0);
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

fn ts(t: pg_sys::TimestampTz) -> DatumWithOid<'static> {
    // SAFETY: a TimestampTz is an int64 passed by value.
    unsafe { DatumWithOid::new(t, pg_sys::TIMESTAMPTZOID) }
}

/// A stored interval in microseconds. Stored intervals passed courier's checks (at most a year),
/// so they always fit.
fn interval_usecs(i: Interval) -> i64 {
    i64::try_from(crate::pg::interval_usecs(i)).expect("stored intervals fit in 64 bits of microseconds")
}

fn interval(usecs: i64) -> Interval {
    Interval::from_micros(usecs)
}

fn opt_interval(usecs: Option<i64>) -> DatumWithOid<'static> {
    match usecs {
        Some(u) => interval(u).into(),
        None => DatumWithOid::null_oid(pg_sys::INTERVALOID),
    }
}

fn ids_of(rows: &Rows) -> Vec<i64> {
    (0..rows.len()).map(|r| rows.get::<i64>(r, 1).required("id")).collect()
}

// ---------------------------------------------------------------------------------------------
// Queue catalog
// ---------------------------------------------------------------------------------------------

/// What the data path needs to know about a queue.
#[derive(Clone, Debug)]
pub struct QueueRef {
    pub id: i32,
    pub name: String,
    pub settings: QueueSettings,
    /// (id, name) of the dead-letter queue.
    pub dead_letter_queue: Option<(i32, String)>,
    /// Whether making messages ready here sends a NOTIFY.
    pub notify: bool,
    /// Lowest and highest priority ever enqueued here.
    pub priorities: (i16, i16),
    /// The owning role's name.
    pub owner: String,
    /// Privileges granted on the queue: (privilege, role name or "public").
    pub grants: Vec<(Privilege, String)>,
}

impl QueueRef {
    /// The queue's only priority, when it has only ever used one.
    pub fn single_priority(&self) -> Option<i16> {
        (self.priorities.0 == self.priorities.1).then_some(self.priorities.0)
    }
}

macro_rules! queue_select {
    () => {
        "SELECT q.queue_id, q.name, q.visibility_timeout, q.max_attempts, q.retry_base, q.retry_max, \
         q.retry_jitter, q.dedup_window, q.retention, d.queue_id, d.name, q.notify, \
         q.min_priority, q.max_priority, q.owner::pg_catalog.text, \
         ARRAY(SELECT g.privilege || ':' || g.grantee FROM courier.queue_grant g WHERE g.queue_id = q.queue_id) \
         FROM courier.queue q LEFT JOIN courier.queue d ON d.queue_id = q.dead_letter_queue_id \
         WHERE"
    };
}

static LOOKUP_QUEUE: Statement =
    Statement { sql: concat!(queue_select!(), " q.name = $1"), args: &[pg_sys::TEXTOID] };

static LOOKUP_QUEUE_BY_ID: Statement =
    Statement { sql: concat!(queue_select!(), " q.queue_id = $1"), args: &[pg_sys::INT4OID] };

// Used at REPEATABLE READ and above, where the transaction snapshot may predate a drop that has
// since committed: the row lock makes such a race fail with a serialization error instead.
static LOOKUP_QUEUE_KEY_SHARE: Statement =
    Statement { sql: concat!(queue_select!(), " q.name = $1 FOR KEY SHARE OF q"), args: &[pg_sys::TEXTOID] };

const SETTINGS_ARGS: [pg_sys::Oid; 9] = [
    pg_sys::INTERVALOID,
    pg_sys::INT4OID,
    pg_sys::INT4OID,
    pg_sys::INTERVALOID,
    pg_sys::INTERVALOID,
    pg_sys::FLOAT8OID,
    pg_sys::INTERVALOID,
    pg_sys::INTERVALOID,
    pg_sys::BOOLOID,
];

const fn with_first<const N: usize, const M: usize>(
    first: pg_sys::Oid,
    rest: [pg_sys::Oid; N],
) -> [pg_sys::Oid; M] {
    let mut out = [first; M];
    let mut i = 0;
    while i < N {
        out[i + 1] = rest[i];
        i += 1;
    }
    out
}

// name, the settings, owner.
static INSERT_QUEUE_ARGS: [pg_sys::Oid; 11] = {
    let mut out = [pg_sys::TEXTOID; 11];
    let mut i = 0;
    while i < SETTINGS_ARGS.len() {
        out[i + 1] = SETTINGS_ARGS[i];
        i += 1;
    }
    out
};
static UPDATE_QUEUE_ARGS: [pg_sys::Oid; 10] = with_first(pg_sys::INT4OID, SETTINGS_ARGS);

static INSERT_QUEUE: Statement = Statement {
    sql: "INSERT INTO courier.queue (name, visibility_timeout, max_attempts, dead_letter_queue_id, retry_base, \
          retry_max, retry_jitter, dedup_window, retention, notify, owner) \
          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
          ON CONFLICT (name) DO NOTHING RETURNING queue_id",
    args: &INSERT_QUEUE_ARGS,
};

static UPDATE_QUEUE: Statement = Statement {
    sql: "UPDATE courier.queue SET visibility_timeout = $2, max_attempts = $3, dead_letter_queue_id = $4, \
          retry_base = $5, retry_max = $6, retry_jitter = $7, dedup_window = $8, retention = $9, notify = $10 \
          WHERE queue_id = $1",
    args: &UPDATE_QUEUE_ARGS,
};

// Whether making $2 the dead-letter queue of $1 would close a cycle: $2's own dead-letter chain
// reaches $1.
static DEAD_LETTER_CHAIN: Statement = Statement {
    sql: "WITH RECURSIVE chain(id) AS ( \
              SELECT $1::pg_catalog.int4 \
              UNION \
              SELECT q.dead_letter_queue_id FROM courier.queue q JOIN chain ON q.queue_id = chain.id \
              WHERE q.dead_letter_queue_id IS NOT NULL) \
          SELECT pg_catalog.bool_or(chain.id = $2) FROM chain",
    args: &[pg_sys::INT4OID, pg_sys::INT4OID],
};

static DEAD_LETTER_USERS: Statement = Statement {
    sql: "SELECT q.name FROM courier.queue q WHERE q.dead_letter_queue_id = $1 ORDER BY q.name LIMIT 1",
    args: &[pg_sys::INT4OID],
};

// Records that a priority outside the queue's known range was used (rare: once per new extreme).
static WIDEN_PRIORITIES: Statement = Statement {
    sql: "UPDATE courier.queue SET min_priority = LEAST(min_priority, $2), max_priority = GREATEST(max_priority, $2) \
          WHERE queue_id = $1 AND ($2 < min_priority OR $2 > max_priority)",
    args: &[pg_sys::INT4OID, pg_sys::INT2OID],
};

static ANY_RETENTION: Statement =
    Statement { sql: "SELECT EXISTS (SELECT FROM courier.queue WHERE retention IS NOT NULL)", args: &[] };

static DELETE_QUEUE: Statement =
    Statement { sql: "DELETE FROM courier.queue WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_MESSAGES: Statement =
    Statement { sql: "DELETE FROM courier.message WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_KEYS: Statement =
    Statement { sql: "DELETE FROM courier.dedup WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_GRANTS: Statement =
    Statement { sql: "DELETE FROM courier.queue_grant WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static GRANT: Statement = Statement {
    sql: "INSERT INTO courier.queue_grant (queue_id, grantee, privilege) \
          SELECT $1, $2, p FROM pg_catalog.unnest($3::pg_catalog.text[]) AS p \
          ON CONFLICT DO NOTHING RETURNING privilege",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::TEXTARRAYOID],
};

static REVOKE: Statement = Statement {
    sql: "DELETE FROM courier.queue_grant WHERE queue_id = $1 AND grantee = $2 AND privilege = ANY ($3) \
          RETURNING privilege",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::TEXTARRAYOID],
};

static DELETE_QUEUE_COMPLETED: Statement =
    Statement { sql: "DELETE FROM courier.completed WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

fn read_queue(rows: &Rows) -> QueueRef {
    let dlq_id = rows.get::<i32>(0, 10);
    let dlq_name = rows.get::<String>(0, 11);
    QueueRef {
        id: rows.get::<i32>(0, 1).required("queue_id"),
        name: rows.get::<String>(0, 2).required("name"),
        settings: QueueSettings {
            visibility_timeout_usecs: interval_usecs(
                rows.get::<Interval>(0, 3).required("visibility_timeout"),
            ),
            max_attempts: rows.get::<i32>(0, 4).required("max_attempts"),
            retry: RetryPolicy {
                base_usecs: interval_usecs(rows.get::<Interval>(0, 5).required("retry_base")),
                max_usecs: interval_usecs(rows.get::<Interval>(0, 6).required("retry_max")),
                jitter: rows.get::<f64>(0, 7).required("retry_jitter"),
            },
            dedup_window_usecs: interval_usecs(rows.get::<Interval>(0, 8).required("dedup_window")),
            retention_usecs: rows.get::<Interval>(0, 9).map(interval_usecs),
        },
        dead_letter_queue: dlq_id.zip(dlq_name),
        notify: rows.get::<bool>(0, 12).required("notify"),
        priorities: (
            rows.get::<i16>(0, 13).required("min_priority"),
            rows.get::<i16>(0, 14).required("max_priority"),
        ),
        owner: rows.get::<String>(0, 15).required("owner"),
        grants: rows
            .get::<Vec<String>>(0, 16)
            .required("grants")
            .into_iter()
            .filter_map(|g| {
                let (privilege, grantee) = g.split_once(':')?;
                Some((Privilege::from_stored(privilege)?, grantee.to_string()))
            })
            .collect(),
    }
}

fn settings_args(
    s: &QueueSettings,
    dead_letter_queue: Option<i32>,
    notify: bool,
) -> [DatumWithOid<'static>; 9] {
    [
        interval(s.visibility_timeout_usecs).into(),
        s.max_attempts.into(),
        dead_letter_queue.into(),
        interval(s.retry.base_usecs).into(),
        interval(s.retry.max_usecs).into(),
        s.retry.jitter.into(),
        interval(s.dedup_window_usecs).into(),
        opt_interval(s.retention_usecs),
        notify.into(),
    ]
}

impl Store<'_> {
    pub fn lookup_queue_by_id(&self, queue_id: i32) -> Option<QueueRef> {
        let rows = self.run(&LOOKUP_QUEUE_BY_ID, &[queue_id.into()]);
        (!rows.is_empty()).then(|| read_queue(&rows))
    }

    pub fn lookup_queue(&self, name: &str, key_share: bool) -> Option<QueueRef> {
        let stmt = if key_share { &LOOKUP_QUEUE_KEY_SHARE } else { &LOOKUP_QUEUE };
        let rows = self.run(stmt, &[name.into()]);
        (!rows.is_empty()).then(|| read_queue(&rows))
    }

    /// Inserts a queue; `None` if one with that name exists (committed or concurrently inserted
    /// and then committed: ON CONFLICT waits for the other inserter).
    pub fn insert_queue(
        &self,
        name: &str,
        s: &QueueSettings,
        dead_letter_queue: Option<i32>,
        notify: bool,
        owner: &str,
    ) -> Option<i32> {
        let [a, b, c, d, e, f, g, h, i] = settings_args(s, dead_letter_queue, notify);
        let rows = self.run(&INSERT_QUEUE, &[name.into(), a, b, c, d, e, f, g, h, i, owner.into()]);
        (!rows.is_empty()).then(|| rows.get::<i32>(0, 1).required("queue_id"))
    }

    pub fn update_queue(
        &self,
        queue_id: i32,
        s: &QueueSettings,
        dead_letter_queue: Option<i32>,
        notify: bool,
    ) {
        let [a, b, c, d, e, f, g, h, i] = settings_args(s, dead_letter_queue, notify);
        self.run(&UPDATE_QUEUE, &[queue_id.into(), a, b, c, d, e, f, g, h, i]);
    }

    /// True if making `dead_letter_queue` the dead-letter queue of `queue_id` would form a cycle.
    pub fn dead_letter_cycle(&self, queue_id: i32, dead_letter_queue: i32) -> bool {
        let rows = self.run(&DEAD_LETTER_CHAIN, &[dead_letter_queue.into(), queue_id.into()]);
        rows.get::<bool>(0, 1).unwrap_or(false)
    }

    /// A queue that uses `queue_id` as its dead-letter queue, if any.
    pub fn dead_letter_user(&self, queue_id: i32) -> Option<String> {
        let rows = self.run(&DEAD_LETTER_USERS, &[queue_id.into()]);
        (!rows.is_empty()).then(|| rows.get::<String>(0, 1).required("name"))
    }

    /// Deletes a queue with its messages, dedup keys and completed messages; returns how many
    /// messages went with it.
    pub fn delete_queue(&self, queue_id: i32) -> usize {
        let removed = self.run(&DELETE_QUEUE_MESSAGES, &[queue_id.into()]).len();
        self.run(&DELETE_QUEUE_KEYS, &[queue_id.into()]);
        self.run(&DELETE_QUEUE_COMPLETED, &[queue_id.into()]);
        self.run(&DELETE_QUEUE_GRANTS, &[queue_id.into()]);
        self.run(&DELETE_QUEUE, &[queue_id.into()]);
        removed
    }

    /// Grants privileges on a queue; returns how many were new.
    pub fn grant(&self, queue_id: i32, grantee: &str, privileges: &[Privilege]) -> usize {
        let names: Vec<&str> = privileges.iter().map(|p| p.as_str()).collect();
        self.run(&GRANT, &[queue_id.into(), grantee.into(), names.into()]).len()
    }

    /// Revokes privileges on a queue; returns how many there were.
    pub fn revoke(&self, queue_id: i32, grantee: &str, privileges: &[Privilege]) -> usize {
        let names: Vec<&str> = privileges.iter().map(|p| p.as_str()).collect();
        self.run(&REVOKE, &[queue_id.into(), grantee.into(), names.into()]).len()
    }

    pub fn purge_queue(&self, queue_id: i32) -> usize {
        self.run(&DELETE_QUEUE_MESSAGES, &[queue_id.into()]).len()
    }

    /// Widens the queue's recorded priority range to include `priority`; true if it changed.
    pub fn widen_priorities(&self, queue_id: i32, priority: i16) -> bool {
        !self.run(&WIDEN_PRIORITIES, &[queue_id.into(), priority.into()]).is_empty()
    }

    /// Whether any queue of this database keeps completed messages.
    pub fn any_retention(&self) -> bool {
        self.run(&ANY_RETENTION, &[]).get::<bool>(0, 1).unwrap_or(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Enqueue and deduplication
// ---------------------------------------------------------------------------------------------

const PLACEMENT_ARGS: [pg_sys::Oid; 6] = [
    pg_sys::INT4OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT2OID,
    pg_sys::JSONBOID,
    pg_sys::JSONBOID,
];

static INSERT_MESSAGE: Statement = Statement {
    sql: "INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, priority, headers, payload) \
          VALUES (pg_catalog.nextval('courier.message_id_seq'), $1, $2, $3, $4, $5, $6) RETURNING id",
    args: &PLACEMENT_ARGS,
};

// PostgreSQL evaluates volatile target-list expressions after the sort, so ids follow the input
// order; the caller still sorts the returned ids rather than trust RETURNING's order.
static INSERT_MESSAGES: Statement = Statement {
    sql: "INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, priority, headers, payload) \
          SELECT pg_catalog.nextval('courier.message_id_seq'), $1, $2, $3, $4, u.h, u.p \
          FROM ROWS FROM (pg_catalog.unnest($5::pg_catalog.jsonb[]), pg_catalog.unnest($6::pg_catalog.jsonb[])) \
          WITH ORDINALITY AS u(p, h, n) \
          ORDER BY u.n RETURNING id",
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT2OID,
        pg_sys::JSONBARRAYOID,
        pg_sys::JSONBARRAYOID,
    ],
};

static KEYED_ARGS: [pg_sys::Oid; 8] = [
    pg_sys::INT4OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT2OID,
    pg_sys::JSONBOID,
    pg_sys::JSONBOID,
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
];

// A new key claims a message id and the message is inserted in the same statement. ON CONFLICT
// waits for a concurrent transaction inserting the same key: if that one commits, this is a
// duplicate; if it rolls back, the key was never taken and this insert proceeds.
static INSERT_KEYED_MESSAGE: Statement = Statement {
    sql: "WITH k AS ( \
              INSERT INTO courier.dedup (queue_id, key, message_id, expires_at) \
              VALUES ($1, $7, pg_catalog.nextval('courier.message_id_seq'), $8) \
              ON CONFLICT (queue_id, key) DO NOTHING RETURNING message_id) \
          INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, priority, headers, payload) \
          SELECT k.message_id, $1, $2, $3, $4, $5, $6 FROM k RETURNING id",
    args: &KEYED_ARGS,
};

// The key exists. If it has expired, take it over for a new message (the row lock serialises two
// transactions trying to); otherwise report the message it points to. Runs as a separate statement
// so that its snapshot sees a key committed while INSERT_KEYED_MESSAGE was waiting for it.
static CLAIM_EXPIRED_KEY: Statement = Statement {
    sql:
        "UPDATE courier.dedup SET message_id = pg_catalog.nextval('courier.message_id_seq'), expires_at = $4 \
          WHERE queue_id = $1 AND key = $2 AND expires_at <= $3 RETURNING message_id",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::TIMESTAMPTZOID, pg_sys::TIMESTAMPTZOID],
};

static KEY_OWNER: Statement = Statement {
    sql: "SELECT message_id FROM courier.dedup WHERE queue_id = $1 AND key = $2",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID],
};

static INSERT_MESSAGE_WITH_ID: Statement = Statement {
    sql: "INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, priority, headers, payload) \
          VALUES ($7, $1, $2, $3, $4, $5, $6)",
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT2OID,
        pg_sys::JSONBOID,
        pg_sys::JSONBOID,
        pg_sys::INT8OID,
    ],
};

// Expired keys are reclaimed a bounded batch at a time; see enqueue.rs for the cadence.
static SWEEP_KEYS: Statement = Statement {
    sql: "DELETE FROM courier.dedup WHERE ctid = ANY (ARRAY( \
              SELECT ctid FROM courier.dedup WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 \
              FOR UPDATE SKIP LOCKED))",
    args: &[pg_sys::TIMESTAMPTZOID, pg_sys::INT4OID],
};

/// Where and when a new message goes.
#[derive(Clone, Copy)]
pub struct Placement {
    pub queue_id: i32,
    pub now: pg_sys::TimestampTz,
    pub visible_at: pg_sys::TimestampTz,
    pub priority: i16,
}

impl Placement {
    fn args(&self) -> [DatumWithOid<'static>; 4] {
        [self.queue_id.into(), ts(self.visible_at), ts(self.now), self.priority.into()]
    }
}

/// How an enqueue wrote its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePath {
    /// Straight into the table and its indexes (direct.rs).
    Direct,
    /// Through the INSERT statements (the table is not one the direct path can fill, or the
    /// message has a dedup key).
    Statements,
}

thread_local! {
    static LAST_WRITE: Cell<Option<WritePath>> = const { Cell::new(None) };
}

/// How this session's last enqueue wrote its rows, for tests and diagnostics.
pub fn last_write_path() -> Option<WritePath> {
    LAST_WRITE.get()
}

impl Store<'_> {
    pub fn insert_message(&self, at: Placement, headers: Option<Jsonb>, payload: Jsonb) -> i64 {
        if let Some(ids) = direct::insert(at, &[NewMessage { headers, payload }], self.search_path) {
            LAST_WRITE.set(Some(WritePath::Direct));
            return ids[0];
        }
        LAST_WRITE.set(Some(WritePath::Statements));
        let [a, b, c, d] = at.args();
        let rows = self.run(&INSERT_MESSAGE, &[a, b, c, d, headers.into(), payload.into()]);
        rows.get::<i64>(0, 1).required("id")
    }

    /// Inserts the messages in input order; `payloads` and `headers` are the same messages as
    /// the arrays they came in, for the statement path. Returns the ids in ascending order.
    pub fn insert_messages(
        &self,
        at: Placement,
        messages: &[NewMessage],
        payloads: JsonbArray,
        headers: Option<JsonbArray>,
    ) -> Vec<i64> {
        if let Some(ids) = direct::insert(at, messages, self.search_path) {
            LAST_WRITE.set(Some(WritePath::Direct));
            return ids;
        }
        LAST_WRITE.set(Some(WritePath::Statements));
        let headers: DatumWithOid = match headers {
            Some(h) => h.into(),
            None => DatumWithOid::null_oid(pg_sys::JSONBARRAYOID),
        };
        let [a, b, c, d] = at.args();
        let mut ids = ids_of(&self.run(&INSERT_MESSAGES, &[a, b, c, d, payloads.into(), headers]));
        ids.sort_unstable();
        ids
    }

    /// Enqueues under a dedup key. Returns the message id and whether the key was already taken
    /// (in which case nothing was inserted and the id is the original message's).
    pub fn insert_keyed_message(
        &self,
        at: Placement,
        key: &str,
        key_expires_at: pg_sys::TimestampTz,
        headers: Option<Jsonb>,
        payload: Jsonb,
    ) -> (i64, bool) {
        LAST_WRITE.set(Some(WritePath::Statements));
        let [a, b, c, d] = at.args();
        let args = [a, b, c, d, headers.into(), payload.into(), key.into(), ts(key_expires_at)];
        let rows = self.run(&INSERT_KEYED_MESSAGE, &args);
        if !rows.is_empty() {
            return (rows.get::<i64>(0, 1).required("id"), false);
        }
        let claim = [at.queue_id.into(), key.into(), ts(at.now), ts(key_expires_at)];
        let claimed = self.run(&CLAIM_EXPIRED_KEY, &claim);
        if !claimed.is_empty() {
            let id = claimed.get::<i64>(0, 1).required("message_id");
            let [a, b, c, d] = at.args();
            self.run(&INSERT_MESSAGE_WITH_ID, &[a, b, c, d, headers.into(), payload.into(), id.into()]);
            return (id, false);
        }
        let owner = self.run(&KEY_OWNER, &[at.queue_id.into(), key.into()]);
        (owner.get::<i64>(0, 1).required("message_id"), true)
    }

    /// Deletes up to `limit` expired dedup keys; returns how many.
    pub fn sweep_keys(&self, now: pg_sys::TimestampTz, limit: i32) -> usize {
        self.run(&SWEEP_KEYS, &[ts(now), limit.into()]).len()
    }
}

// ---------------------------------------------------------------------------------------------
// Lease
// ---------------------------------------------------------------------------------------------

// The distinct priority levels of queue $1, from the top, one index probe each (a loose index
// scan), evaluated lazily: a level is probed only if the one above it did not fill the batch.
macro_rules! priority_levels {
    () => {
        "WITH RECURSIVE levels(p) AS ( \
             SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 \
                     ORDER BY m.priority DESC LIMIT 1) \
             UNION ALL \
             SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 AND m.priority < l.p \
                     ORDER BY m.priority DESC LIMIT 1) \
             FROM levels l WHERE l.p IS NOT NULL)"
    };
}

// The rows a lease returns: for every message it picked (locked), a `false` row with what it was
// before (when it became ready, whether a previous lease of it had expired, its attempt count),
// and for every message it leased a `true` row with the message itself. The caller pairs them by
// id; messages picked but not leased had used up their attempts and are still locked, for the
// caller to dead-letter. Pairing in Rust spares the statement a join.
macro_rules! lease_tail {
    () => {
        ", leased AS ( \
              UPDATE courier.message m \
              SET leased_until = $4, lease_token = $5, leased_at = $2, attempt = m.attempt + 1 \
              WHERE m.id = ANY (ARRAY(SELECT p.id FROM picked p WHERE $6 = 0 OR p.attempt < $6)) \
              RETURNING m.id, m.attempt, m.priority, m.enqueued_at, m.payload, m.headers, m.last_error) \
          SELECT true, l.id, l.attempt, l.priority, l.enqueued_at, NULL::pg_catalog.timestamptz, NULL::bool, \
                 l.payload, l.headers, l.last_error FROM leased l \
          UNION ALL \
          SELECT false, p.id, p.attempt, NULL, NULL, p.ready_at, p.lease_token IS NOT NULL, NULL, NULL, NULL \
          FROM picked p"
    };
}

const LEASE_ARGS: [pg_sys::Oid; 9] = [
    pg_sys::INT4OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT4OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT8OID,
    pg_sys::INT4OID,
    pg_sys::INT2OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT8OID,
];

// Leases in (priority DESC, visible_at) order without visiting messages that are not ready yet:
// for each level the LATERAL subquery is a range scan bounded by visible_at <= now, so delayed and
// dead messages (which sort after now) are never read. Messages in flight stay in that range (a
// lease does not move them, see schema.sql) and are filtered out; the scan hint keeps most scans
// from walking past them (lease.rs). The MATERIALIZED CTE runs the
// SKIP LOCKED scan exactly once, and the update finds its rows by primary key (= ANY), which keeps
// the generic plan an index plan whatever the batch size. Level $7 starts after ($8, $9) (its
// floor, see floor.rs), the others from their start.
static LEASE: Statement = Statement {
    sql: concat!(
        priority_levels!(),
        ", picked AS MATERIALIZED ( \
              SELECT c.id, c.visible_at AS ready_at, c.attempt, c.lease_token \
              FROM levels l CROSS JOIN LATERAL ( \
                  SELECT m.id, m.visible_at, m.attempt, m.lease_token FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at <= $2 \
                    AND (m.visible_at, m.id) > (CASE WHEN l.p = $7 THEN $8 ELSE '-infinity'::pg_catalog.timestamptz END, \
                                                CASE WHEN l.p = $7 THEN $9 ELSE '-9223372036854775808'::pg_catalog.int8 END) \
                    AND (m.leased_until IS NULL OR m.leased_until <= $2) \
                  ORDER BY m.visible_at, m.id LIMIT $3 \
                  FOR UPDATE SKIP LOCKED) c \
              WHERE l.p IS NOT NULL \
              LIMIT $3)",
        lease_tail!()
    ),
    args: &LEASE_ARGS,
};

// The same for a queue that has only ever used one priority ($7): one range scan, no level walk,
// starting after ($8, $9) (see LeaseRequest::scan_after); the row comparison is an index bound.
static LEASE_ONE_LEVEL: Statement = Statement {
    sql: concat!(
        "WITH picked AS MATERIALIZED ( \
              SELECT m.id, m.visible_at AS ready_at, m.attempt, m.lease_token FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = $7 AND (m.visible_at, m.id) > ($8, $9) \
                AND m.visible_at <= $2 AND (m.leased_until IS NULL OR m.leased_until <= $2) \
              ORDER BY m.visible_at, m.id LIMIT $3 \
              FOR UPDATE SKIP LOCKED)",
        lease_tail!()
    ),
    args: &LEASE_ARGS,
};

// When the next delayed or retrying message becomes ready: the earliest visible_at after now, one
// index probe per priority level.
static NEXT_DUE: Statement = Statement {
    sql: concat!(
        priority_levels!(),
        " SELECT pg_catalog.min(n.visible_at) FROM levels l CROSS JOIN LATERAL ( \
              SELECT m.visible_at FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at > $2 \
                AND m.visible_at < 'infinity'::pg_catalog.timestamptz \
              ORDER BY m.visible_at LIMIT 1) n \
          WHERE l.p IS NOT NULL"
    ),
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID],
};

// When the earliest running lease expires. Messages in flight sit in the ready range among the
// index entries of acked messages that vacuum has not removed yet, so this walks that range and
// visits the heap: callers ask it rarely (lease.rs).
static NEXT_EXPIRY: Statement = Statement {
    sql: "SELECT pg_catalog.min(m.leased_until) FROM courier.message m \
          WHERE m.queue_id = $1 AND m.visible_at <= $2 AND m.leased_until > $2",
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID],
};

// The same for a queue with one priority ($3), from its floor ($4, $5): every message in flight
// sits after it (floor.rs).
static NEXT_EXPIRY_ONE_LEVEL: Statement = Statement {
    sql: "SELECT pg_catalog.min(m.leased_until) FROM courier.message m \
          WHERE m.queue_id = $1 AND m.priority = $3 AND (m.visible_at, m.id) > ($4, $5) \
            AND m.visible_at <= $2 AND m.leased_until > $2",
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT2OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT8OID,
    ],
};

// The first row of a level after a position that the statement's snapshot shows: where the
// level's floor can rise to (floor.rs). Rows in flight, delayed or dead count; acked ones do not.
static FIRST_ROW_AFTER: Statement = Statement {
    sql: "SELECT m.visible_at, m.id FROM courier.message m \
          WHERE m.queue_id = $1 AND m.priority = $2 AND (m.visible_at, m.id) > ($3, $4) \
          ORDER BY m.visible_at, m.id LIMIT 1",
    args: &[pg_sys::INT4OID, pg_sys::INT2OID, pg_sys::TIMESTAMPTZOID, pg_sys::INT8OID],
};

// The first row of a level after a position ($3, $4) that is not in flight beyond $5, and the
// earliest end of the leases in flight beyond $5 before it: where the level's ready floor can
// rise to, and until when it holds (floor.rs). Rows in flight have visible_at <= their lease
// time, which bounds the second walk from above when no such first row exists.
static FIRST_LEASABLE_AFTER: Statement = Statement {
    sql: "WITH f AS ( \
              SELECT m.visible_at, m.id FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = $2 AND (m.visible_at, m.id) > ($3, $4) \
                AND (m.leased_until IS NULL OR m.leased_until <= $5) \
              ORDER BY m.visible_at, m.id LIMIT 1) \
          SELECT f.visible_at, f.id, \
                 (SELECT pg_catalog.min(m.leased_until) FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.priority = $2 AND (m.visible_at, m.id) > ($3, $4) \
                    AND (m.visible_at, m.id) < (COALESCE(f.visible_at, $5), COALESCE(f.id, 9223372036854775807)) \
                    AND m.leased_until > $5) \
          FROM (SELECT) AS one LEFT JOIN f ON true",
    args: &[pg_sys::INT4OID, pg_sys::INT2OID, pg_sys::TIMESTAMPTZOID, pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
};

/// A message as a lease hands it out.
pub struct Leased {
    pub id: i64,
    pub token: i64,
    pub expires_at: pg_sys::TimestampTz,
    pub attempt: i32,
    pub priority: i16,
    pub enqueued_at: pg_sys::TimestampTz,
    /// When the message became leasable; leases are returned in (priority desc, ready_at, id).
    pub ready_at: pg_sys::TimestampTz,
    pub payload: Jsonb,
    pub headers: Option<Jsonb>,
    pub last_error: Option<String>,
}

/// What one lease statement did.
#[derive(Default)]
pub struct LeaseOutcome {
    pub leased: Vec<Leased>,
    /// Of the leased messages, how many had a previous lease that expired.
    pub expired: u64,
    /// Messages whose attempts were exhausted, still locked by this transaction.
    pub exhausted: Vec<i64>,
    /// The last message the one-level scan leased: where the next one may resume.
    pub resume_after: Option<Position>,
}

pub use courier_core::position::{Position, START};

#[derive(Clone, Copy)]
pub struct LeaseRequest {
    pub queue_id: i32,
    pub now: pg_sys::TimestampTz,
    pub expires_at: pg_sys::TimestampTz,
    pub limit: i32,
    pub token: i64,
    pub max_attempts: i32,
    /// The queue's only priority, when it has only ever used one: lease that level directly.
    pub single_priority: Option<i16>,
    /// The one-level scan starts after this (ready_at, id): no ready message that anyone can
    /// lease sits at or before it (see lease.rs).
    pub scan_after: Position,
    /// Where a scan of the single priority's whole range starts (floor.rs); START otherwise.
    pub floor: Position,
}

impl Store<'_> {
    /// The next time a message of the queue that is not ready now becomes ready, if any.
    pub fn next_due(&self, queue_id: i32, now: pg_sys::TimestampTz) -> Option<pg_sys::TimestampTz> {
        self.run(&NEXT_DUE, &[queue_id.into(), ts(now)]).ts(0, 1)
    }

    /// When the earliest running lease expires; for a one-level queue, from its floor.
    pub fn next_expiry(
        &self,
        queue_id: i32,
        now: pg_sys::TimestampTz,
        one_level: Option<(i16, Position)>,
    ) -> Option<pg_sys::TimestampTz> {
        match one_level {
            Some((p, (at, id))) => self
                .run(&NEXT_EXPIRY_ONE_LEVEL, &[queue_id.into(), ts(now), p.into(), ts(at), id.into()])
                .ts(0, 1),
            None => self.run(&NEXT_EXPIRY, &[queue_id.into(), ts(now)]).ts(0, 1),
        }
    }

    /// The first row of a level after `after` that is not in flight beyond `at`, and the earliest
    /// end of the leases in flight beyond `at` before it.
    pub fn first_leasable_after(
        &self,
        queue_id: i32,
        priority: i16,
        after: Position,
        at: pg_sys::TimestampTz,
    ) -> (Option<Position>, Option<pg_sys::TimestampTz>) {
        let args = [queue_id.into(), priority.into(), ts(after.0), after.1.into(), ts(at)];
        let rows = self.run(&FIRST_LEASABLE_AFTER, &args);
        let first = rows.ts(0, 1).map(|v| (v, rows.get::<i64>(0, 2).required("id")));
        (first, rows.ts(0, 3))
    }

    /// The first row of a level after `after` that this statement's snapshot shows.
    pub fn first_row_after(&self, queue_id: i32, priority: i16, after: Position) -> Option<Position> {
        let rows =
            self.run(&FIRST_ROW_AFTER, &[queue_id.into(), priority.into(), ts(after.0), after.1.into()]);
        if rows.is_empty() {
            return None;
        }
        Some((rows.ts(0, 1).required("visible_at"), rows.get::<i64>(0, 2).required("id")))
    }

    pub fn lease(&self, r: &LeaseRequest) -> LeaseOutcome {
        let mut out = match r.single_priority {
            Some(p) => {
                let mut out = self.lease_with(&LEASE_ONE_LEVEL, r, p);
                // The scan takes the first leasable messages in (visible_at, id) order, so up to
                // the last one it took nothing leasable is left (bar lease.rs's exceptions).
                out.resume_after = out.leased.iter().map(|m| (m.ready_at, m.id)).max();
                out
            }
            None => LeaseOutcome::default(),
        };
        let found = (out.leased.len() + out.exhausted.len()) as i32;
        if r.single_priority.is_some() && found >= r.limit {
            return out;
        }
        // A short result from the one-level statement is completed by the level walk from the
        // start: the cached priority range may lag behind an enqueue that just committed a new
        // priority, or the scan hint may have stepped past a message that became ready late (see
        // lease.rs). What the first statement took is no longer ready, so nothing comes twice.
        let rest = LeaseRequest { limit: r.limit - found, scan_after: r.floor, ..*r };
        let more = self.lease_with(&LEASE, &rest, r.single_priority.unwrap_or(i16::MIN));
        out.expired += more.expired;
        out.leased.extend(more.leased);
        out.exhausted.extend(more.exhausted);
        out.leased.sort_unstable_by_key(|m| (std::cmp::Reverse(m.priority), m.ready_at, m.id));
        out
    }

    fn lease_with(&self, stmt: &'static Statement, r: &LeaseRequest, priority: i16) -> LeaseOutcome {
        let args = [
            r.queue_id.into(),
            ts(r.now),
            r.limit.into(),
            ts(r.expires_at),
            r.token.into(),
            r.max_attempts.into(),
            priority.into(),
            ts(r.scan_after.0),
            r.scan_after.1.into(),
        ];
        let rows = self.run(stmt, &args);
        // Picked rows: id -> (ready_at, expired, attempt before).
        let mut picked: HashMap<i64, (pg_sys::TimestampTz, bool, i32)> = HashMap::new();
        let mut leased = Vec::new();
        for i in 0..rows.len() {
            let id = rows.get::<i64>(i, 2).required("id");
            if rows.get::<bool>(i, 1).required("kind") {
                leased.push(Leased {
                    id,
                    token: r.token,
                    expires_at: r.expires_at,
                    attempt: rows.get::<i32>(i, 3).required("attempt"),
                    priority: rows.get::<i16>(i, 4).required("priority"),
                    enqueued_at: rows.ts(i, 5).required("enqueued_at"),
                    ready_at: 0,
                    payload: self.keep_jsonb(rows.raw(i, 8)).required("payload"),
                    headers: self.keep_jsonb(rows.raw(i, 9)),
                    last_error: rows.get::<String>(i, 10),
                });
            } else {
                picked.insert(
                    id,
                    (
                        rows.ts(i, 6).required("ready_at"),
                        rows.get::<bool>(i, 7).required("expired"),
                        rows.get::<i32>(i, 3).required("attempt"),
                    ),
                );
            }
        }
        let mut out = LeaseOutcome::default();
        for mut m in leased {
            if let Some((ready_at, expired, _)) = picked.remove(&m.id) {
                m.ready_at = ready_at;
                out.expired += u64::from(expired);
            }
            out.leased.push(m);
        }
        // Whatever was picked and not leased had used up its attempts.
        out.exhausted = picked.into_keys().collect();
        out.exhausted.sort_unstable();
        out.leased.sort_unstable_by_key(|m| (std::cmp::Reverse(m.priority), m.ready_at, m.id));
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Ack, nack, extend
// ---------------------------------------------------------------------------------------------

// Acked messages of queues with a retention go to courier.completed in the same statement.
static ACK: Statement = Statement {
    sql: "WITH d AS (DELETE FROM courier.message m WHERE m.id = $1 AND m.lease_token = $2 \
                     RETURNING m.id, m.queue_id, m.attempt, m.priority, m.enqueued_at, m.headers, m.payload), \
          kept AS (INSERT INTO courier.completed (id, queue_id, attempt, priority, enqueued_at, completed_at, \
                                                  headers, payload) \
                   SELECT d.id, d.queue_id, d.attempt, d.priority, d.enqueued_at, $3, d.headers, d.payload \
                   FROM d JOIN courier.queue q ON q.queue_id = d.queue_id WHERE q.retention IS NOT NULL) \
          SELECT d.queue_id FROM d",
    args: &[pg_sys::INT8OID, pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
};

// While no queue keeps completed messages, an ack is just this.
static ACK_PLAIN: Statement = Statement {
    sql: "DELETE FROM courier.message WHERE id = $1 AND lease_token = $2 RETURNING queue_id",
    args: &[pg_sys::INT8OID, pg_sys::INT8OID],
};

static ACK_MANY_PLAIN: Statement = Statement {
    sql: "DELETE FROM courier.message m \
          WHERE m.id = ANY ($1) \
            AND m.lease_token = $2 \
          RETURNING m.id, m.lease_token, m.queue_id",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT8OID],
};

// Receipts come grouped by lease token (see receipt::by_token): message ids $1, token $2. A message
// is found by its id (= ANY: an index plan for any batch size) and acked if the token is current.
static ACK_MANY: Statement = Statement {
    sql: "WITH d AS (DELETE FROM courier.message m \
                     WHERE m.id = ANY ($1) \
                       AND m.lease_token = $2 \
                     RETURNING m.id, m.lease_token, m.queue_id, m.attempt, m.priority, m.enqueued_at, \
                               m.headers, m.payload), \
          kept AS (INSERT INTO courier.completed (id, queue_id, attempt, priority, enqueued_at, completed_at, \
                                                  headers, payload) \
                   SELECT d.id, d.queue_id, d.attempt, d.priority, d.enqueued_at, $3, d.headers, d.payload \
                   FROM d JOIN courier.queue q ON q.queue_id = d.queue_id WHERE q.retention IS NOT NULL) \
          SELECT d.id, d.lease_token, d.queue_id FROM d",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
};

// Locks the messages whose receipts still hold their lease, with what a nack needs to decide
// between retrying and dead-lettering. FOR UPDATE waits for a concurrent lease of the same
// message and then re-checks the token, so a racing re-lease makes the receipt fail.
static LOCK_FOR_NACK: Statement = Statement {
    sql: "SELECT m.id, m.lease_token, m.attempt, m.queue_id, q.max_attempts, q.retry_base, q.retry_max, \
                 q.retry_jitter, d.queue_id, d.name, q.name, q.notify \
          FROM courier.message m \
          JOIN courier.queue q ON q.queue_id = m.queue_id \
          LEFT JOIN courier.queue d ON d.queue_id = q.dead_letter_queue_id \
          WHERE m.id = ANY ($1) \
            AND m.lease_token = $2 \
          FOR UPDATE OF m",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT8OID],
};

// Makes locked messages ($1) leasable again at their times ($2, same order), never earlier in
// the range than they were (which scan floors rely on, see floor.rs).
static RELEASE: Statement = Statement {
    sql: "UPDATE courier.message m SET visible_at = GREATEST(m.visible_at, \
                 ($2::pg_catalog.timestamptz[])[pg_catalog.array_position($1, m.id)]), \
                 lease_token = NULL, leased_at = NULL, leased_until = NULL, last_error = COALESCE($3, m.last_error) \
          WHERE m.id = ANY ($1)",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::TIMESTAMPTZARRAYOID, pg_sys::TEXTOID],
};

// Moves messages to a dead-letter queue ($2), where they are ready at once with attempt 0 and
// their origin recorded, or, without one, parks them as dead ('infinity' is never <= now).
static DEAD_LETTER: Statement = Statement {
    sql: "UPDATE courier.message m SET \
              queue_id = COALESCE($2, m.queue_id), \
              origin_queue_id = CASE WHEN $2 IS NULL THEN NULL ELSE m.queue_id END, \
              origin_attempts = CASE WHEN $2 IS NULL THEN NULL ELSE m.attempt END, \
              attempt = CASE WHEN $2 IS NULL THEN m.attempt ELSE 0 END, \
              visible_at = CASE WHEN $2 IS NULL THEN 'infinity'::pg_catalog.timestamptz ELSE $3 END, \
              dead_at = $3, lease_token = NULL, leased_at = NULL, leased_until = NULL, \
              last_error = COALESCE($4, m.last_error) \
          WHERE m.id = ANY ($1)",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID, pg_sys::TEXTOID],
};

// Also says whether the lease now ends earlier than it did: that can put the message before its
// level's ready floor (floor.rs). The locking subquery reads the lease end being replaced.
static EXTEND: Statement = Statement {
    sql: "UPDATE courier.message m SET leased_until = $3 \
          FROM (SELECT o.leased_until FROM courier.message o WHERE o.id = $1 AND o.lease_token = $2 \
                FOR UPDATE) AS was \
          WHERE m.id = $1 AND m.lease_token = $2 \
          RETURNING m.queue_id, $3 < was.leased_until",
    args: &[pg_sys::INT8OID, pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
};

// Completed messages older than their queue's retention (all of them for queues that no longer
// keep any), one bounded index range per queue.
static SWEEP_COMPLETED: Statement = Statement {
    sql: "DELETE FROM courier.completed WHERE ctid = ANY (ARRAY( \
              SELECT c.ctid FROM courier.queue q CROSS JOIN LATERAL ( \
                  SELECT c.ctid FROM courier.completed c \
                  WHERE c.queue_id = q.queue_id \
                    AND c.completed_at < $1 - COALESCE(q.retention, '0'::pg_catalog.interval) \
                  ORDER BY c.completed_at LIMIT $2 FOR UPDATE OF c SKIP LOCKED) c \
              LIMIT $2))",
    args: &[pg_sys::TIMESTAMPTZOID, pg_sys::INT4OID],
};

/// Receipts of one lease token: the message ids it was given for.
pub struct ReceiptSet {
    pub ids: Vec<i64>,
    pub token: i64,
}

/// A message locked for a nack.
pub struct Nackable {
    pub id: i64,
    pub token: i64,
    pub attempt: i32,
    pub queue_id: i32,
    pub max_attempts: i32,
    pub retry: RetryPolicy,
    pub dead_letter_queue: Option<(i32, String)>,
    pub queue_name: String,
    pub notify: bool,
}

impl Store<'_> {
    /// Acks one receipt; returns the message's queue if the receipt still held its lease.
    /// `retention` says whether any queue keeps completed messages.
    pub fn ack(&self, id: i64, token: i64, now: pg_sys::TimestampTz, retention: bool) -> Option<i32> {
        let rows = if retention {
            self.run(&ACK, &[id.into(), token.into(), ts(now)])
        } else {
            self.run(&ACK_PLAIN, &[id.into(), token.into()])
        };
        (!rows.is_empty()).then(|| rows.get::<i32>(0, 1).required("queue_id"))
    }

    /// Acks every receipt that still holds its lease; returns (id, token, queue_id) of each.
    pub fn ack_many(
        &self,
        receipts: ReceiptSet,
        now: pg_sys::TimestampTz,
        retention: bool,
    ) -> Vec<(i64, i64, i32)> {
        let rows = if retention {
            self.run(&ACK_MANY, &[receipts.ids.into(), receipts.token.into(), ts(now)])
        } else {
            self.run(&ACK_MANY_PLAIN, &[receipts.ids.into(), receipts.token.into()])
        };
        (0..rows.len())
            .map(|i| {
                (
                    rows.get::<i64>(i, 1).required("id"),
                    rows.get::<i64>(i, 2).required("token"),
                    rows.get::<i32>(i, 3).required("queue_id"),
                )
            })
            .collect()
    }

    pub fn lock_for_nack(&self, receipts: ReceiptSet) -> Vec<Nackable> {
        let rows = self.run(&LOCK_FOR_NACK, &[receipts.ids.into(), receipts.token.into()]);
        (0..rows.len())
            .map(|i| Nackable {
                id: rows.get::<i64>(i, 1).required("id"),
                token: rows.get::<i64>(i, 2).required("token"),
                attempt: rows.get::<i32>(i, 3).required("attempt"),
                queue_id: rows.get::<i32>(i, 4).required("queue_id"),
                max_attempts: rows.get::<i32>(i, 5).required("max_attempts"),
                retry: RetryPolicy {
                    base_usecs: interval_usecs(rows.get::<Interval>(i, 6).required("retry_base")),
                    max_usecs: interval_usecs(rows.get::<Interval>(i, 7).required("retry_max")),
                    jitter: rows.get::<f64>(i, 8).required("retry_jitter"),
                },
                dead_letter_queue: rows.get::<i32>(i, 9).zip(rows.get::<String>(i, 10)),
                queue_name: rows.get::<String>(i, 11).required("name"),
                notify: rows.get::<bool>(i, 12).required("notify"),
            })
            .collect()
    }

    /// Makes locked messages leasable again at the given times.
    pub fn release(&self, ids: Vec<i64>, at: Vec<pg_sys::TimestampTz>, error: Option<&str>) {
        let at: Vec<TimestampWithTimeZone> =
            at.into_iter().map(|t| TimestampWithTimeZone::try_from(t).expect("finite")).collect();
        self.run(&RELEASE, &[ids.into(), at.into(), error.into()]);
    }

    /// Dead-letters locked messages into `dead_letter_queue` (or parks them as dead).
    pub fn dead_letter(
        &self,
        ids: Vec<i64>,
        dead_letter_queue: Option<i32>,
        now: pg_sys::TimestampTz,
        error: Option<&str>,
    ) -> usize {
        self.run(&DEAD_LETTER, &[ids.into(), dead_letter_queue.into(), ts(now), error.into()]).len()
    }

    /// Moves the lease's expiry; returns the message's queue if the receipt still held it, and
    /// whether the lease now ends earlier.
    pub fn extend(&self, id: i64, token: i64, expires_at: pg_sys::TimestampTz) -> Option<(i32, bool)> {
        let rows = self.run(&EXTEND, &[id.into(), token.into(), ts(expires_at)]);
        (!rows.is_empty())
            .then(|| (rows.get::<i32>(0, 1).required("queue_id"), rows.get::<bool>(0, 2).unwrap_or(true)))
    }

    pub fn sweep_completed(&self, now: pg_sys::TimestampTz, limit: i32) -> usize {
        self.run(&SWEEP_COMPLETED, &[ts(now), limit.into()]).len()
    }
}

// ---------------------------------------------------------------------------------------------
// Dead letters: redrive
// ---------------------------------------------------------------------------------------------

// Dead letters of a queue that nobody holds: messages moved here from another queue, or parked
// dead here. Leased and locked ones are skipped, so redrive never takes a message from a consumer.
static REDRIVE_CANDIDATES: Statement = Statement {
    sql: "SELECT m.id, m.origin_queue_id, o.name, o.notify FROM courier.message m \
          LEFT JOIN courier.queue o ON o.queue_id = m.origin_queue_id \
          WHERE m.queue_id = $1 AND m.dead_at IS NOT NULL \
            AND ($2::pg_catalog.int8[] IS NULL OR m.id = ANY ($2)) \
            AND NOT (m.leased_until IS NOT NULL AND m.leased_until > $3) \
          ORDER BY m.id LIMIT $4 \
          FOR UPDATE OF m SKIP LOCKED",
    args: &[pg_sys::INT4OID, pg_sys::INT8ARRAYOID, pg_sys::TIMESTAMPTZOID, pg_sys::INT4OID],
};

static REDRIVE: Statement = Statement {
    sql: "UPDATE courier.message m SET queue_id = COALESCE(m.origin_queue_id, m.queue_id), \
              origin_queue_id = NULL, origin_attempts = NULL, attempt = 0, dead_at = NULL, \
              lease_token = NULL, leased_at = NULL, leased_until = NULL, visible_at = $2 \
          WHERE m.id = ANY ($1) \
            AND (m.origin_queue_id IS NULL OR EXISTS (SELECT FROM courier.queue q WHERE q.queue_id = m.origin_queue_id))",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::TIMESTAMPTZOID],
};

/// A dead letter locked for redrive, with the queue it goes back to (None: it stays, revived).
pub struct DeadLetter {
    pub id: i64,
    /// (origin queue id, its name and notify flag if it still exists).
    pub origin: Option<(i32, Option<(String, bool)>)>,
}

impl Store<'_> {
    pub fn redrive_candidates(
        &self,
        queue_id: i32,
        ids: Option<Vec<i64>>,
        now: pg_sys::TimestampTz,
        limit: i32,
    ) -> Vec<DeadLetter> {
        let ids: DatumWithOid = match ids {
            Some(v) => v.into(),
            None => DatumWithOid::null_oid(pg_sys::INT8ARRAYOID),
        };
        let rows = self.run(&REDRIVE_CANDIDATES, &[queue_id.into(), ids, ts(now), limit.into()]);
        (0..rows.len())
            .map(|i| {
                let origin = rows.get::<i32>(i, 2);
                let name = rows.get::<String>(i, 3);
                let notify = rows.get::<bool>(i, 4).unwrap_or(false);
                DeadLetter {
                    id: rows.get::<i64>(i, 1).required("id"),
                    origin: origin.map(|o| (o, name.map(|n| (n, notify)))),
                }
            })
            .collect()
    }

    pub fn redrive(&self, ids: Vec<i64>, now: pg_sys::TimestampTz) -> usize {
        self.run(&REDRIVE, &[ids.into(), ts(now)]).len()
    }
}

// ---------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------

// One pass over the queue's rows (its index range, and the heap for the lease columns).
static GAUGES: Statement = Statement {
    sql: "SELECT pg_catalog.count(*) FILTER (WHERE visible_at <= $2 AND (leased_until IS NULL OR leased_until <= $2)), \
                 pg_catalog.count(*) FILTER (WHERE visible_at > $2 AND visible_at < 'infinity'::pg_catalog.timestamptz), \
                 pg_catalog.count(*) FILTER (WHERE leased_until > $2), \
                 pg_catalog.count(*) FILTER (WHERE visible_at = 'infinity'::pg_catalog.timestamptz), \
                 pg_catalog.min(visible_at) FILTER (WHERE visible_at <= $2 AND (leased_until IS NULL OR leased_until <= $2)), \
                 pg_catalog.min(leased_at) FILTER (WHERE leased_until > $2) \
          FROM courier.message WHERE queue_id = $1",
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID],
};

#[derive(Default)]
pub struct Gauges {
    pub ready: i64,
    pub delayed: i64,
    pub in_flight: i64,
    pub dead: i64,
    pub oldest_ready: Option<pg_sys::TimestampTz>,
    pub oldest_lease: Option<pg_sys::TimestampTz>,
}

impl Store<'_> {
    pub fn gauges(&self, queue_id: i32, now: pg_sys::TimestampTz) -> Gauges {
        let g = self.run(&GAUGES, &[queue_id.into(), ts(now)]);
        Gauges {
            ready: g.get::<i64>(0, 1).unwrap_or(0),
            delayed: g.get::<i64>(0, 2).unwrap_or(0),
            in_flight: g.get::<i64>(0, 3).unwrap_or(0),
            dead: g.get::<i64>(0, 4).unwrap_or(0),
            oldest_ready: g.ts(0, 5),
            oldest_lease: g.ts(0, 6),
        }
    }
}
