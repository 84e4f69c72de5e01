//! The storage representation. Every statement that reads or writes courier's tables is here, so
//! the layout (today: one `courier.message` table for all queues) can change without touching the
//! SQL API or the modules that validate arguments.
//!
//! Statements are prepared once per backend and kept (`SPI_keepplan`). All of them are prepared
//! as read-write, which makes SPI take a fresh snapshot for each execution in READ COMMITTED, the
//! snapshot a queue needs: a lease must see messages committed after the calling statement began.
//! They are executed through `SpiClient::select`, which, unlike `update`, does not force a
//! transaction id: an empty lease poll then commits without writing or flushing WAL.

use std::cell::RefCell;
use std::collections::HashMap;

use courier_core::policy::QueueSettings;
use courier_core::retry::RetryPolicy;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};

use crate::datum::{Jsonb, JsonbArray};

struct Statement {
    sql: &'static str,
    args: &'static [pg_sys::Oid],
}

thread_local! {
    // Plans live as long as the backend; leaking them gives `'static` references that stay valid
    // while another statement executes (no RefCell borrow is held across SPI).
    static PLANS: RefCell<HashMap<usize, &'static OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// A connection to the storage for the duration of one courier call.
pub struct Store<'a, 'conn> {
    client: &'a SpiClient<'conn>,
    /// The memory context that was current when the call began; values that outlive SPI
    /// (payloads returned by lease) are copied into it.
    outer: pg_sys::MemoryContext,
}

/// Runs `f` with a storage connection.
pub fn with<R>(f: impl FnOnce(&Store) -> R) -> R {
    // SAFETY: reading the backend's current memory context pointer.
    let outer = unsafe { pg_sys::CurrentMemoryContext };
    Spi::connect(|client| f(&Store { client, outer }))
}

fn internal(context: &str, e: pgrx::spi::SpiError) -> ! {
    pgrx::error!("courier: {context}: {e}")
}

trait OrInternal<T> {
    fn or_internal(self, context: &str) -> T;
}

impl<T> OrInternal<T> for SpiResult<Option<T>> {
    fn or_internal(self, context: &str) -> T {
        match self {
            Ok(Some(v)) => v,
            Ok(None) => pgrx::error!("courier: {context}: unexpected NULL"),
            Err(e) => internal(context, e),
        }
    }
}

impl<'conn> Store<'_, 'conn> {
    fn plan(&self, stmt: &'static Statement) -> &'static OwnedPreparedStatement {
        let key = stmt as *const Statement as usize;
        if let Some(plan) = PLANS.with(|p| p.borrow().get(&key).copied()) {
            return plan;
        }
        let oids: Vec<PgOid> = stmt.args.iter().map(|o| PgOid::from_untagged(*o)).collect();
        let prepared =
            self.client.prepare_mut(stmt.sql, &oids).unwrap_or_else(|e| internal("preparing a statement", e));
        let kept: &'static OwnedPreparedStatement = Box::leak(Box::new(prepared.keep()));
        PLANS.with(|p| p.borrow_mut().insert(key, kept));
        kept
    }

    fn run(&self, stmt: &'static Statement, args: &[DatumWithOid]) -> SpiTupleTable<'conn> {
        let plan = self.plan(stmt);
        self.client.select(plan, None, args).unwrap_or_else(|e| internal("executing a statement", e))
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

fn get<T: FromDatum + IntoDatum>(table: &SpiTupleTable, ordinal: usize) -> SpiResult<Option<T>> {
    table.get::<T>(ordinal)
}

fn get_ts(table: &SpiTupleTable, ordinal: usize) -> SpiResult<Option<pg_sys::TimestampTz>> {
    Ok(get::<TimestampWithTimeZone>(table, ordinal)?.map(Into::into))
}

fn interval_usecs(i: Interval) -> i64 {
    courier_core::timing::interval_usecs(i.months(), i.days(), i.micros()) as i64
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

fn ids_of(mut table: SpiTupleTable) -> Vec<i64> {
    let mut out = Vec::with_capacity(table.len());
    while table.next().is_some() {
        out.push(get::<i64>(&table, 1).or_internal("reading ids"));
    }
    out
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
}

macro_rules! queue_select {
    () => {
        "SELECT q.queue_id, q.name, q.visibility_timeout, q.max_attempts, q.retry_base, q.retry_max, \
         q.retry_jitter, q.dedup_window, q.retention, d.queue_id, d.name, q.notify \
         FROM courier.queue q LEFT JOIN courier.queue d ON d.queue_id = q.dead_letter_queue_id \
         WHERE q.name = $1"
    };
}

static LOOKUP_QUEUE: Statement = Statement { sql: queue_select!(), args: &[pg_sys::TEXTOID] };

// Used at REPEATABLE READ and above, where the transaction snapshot may predate a drop that has
// since committed: the row lock makes such a race fail with a serialization error instead.
static LOOKUP_QUEUE_KEY_SHARE: Statement =
    Statement { sql: concat!(queue_select!(), " FOR KEY SHARE OF q"), args: &[pg_sys::TEXTOID] };

static INSERT_QUEUE: Statement = Statement {
    sql: "INSERT INTO courier.queue (name, visibility_timeout, max_attempts, dead_letter_queue_id, retry_base, \
          retry_max, retry_jitter, dedup_window, retention, notify) \
          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
          ON CONFLICT (name) DO NOTHING RETURNING queue_id",
    args: &[
        pg_sys::TEXTOID,
        pg_sys::INTERVALOID,
        pg_sys::INT4OID,
        pg_sys::INT4OID,
        pg_sys::INTERVALOID,
        pg_sys::INTERVALOID,
        pg_sys::FLOAT8OID,
        pg_sys::INTERVALOID,
        pg_sys::INTERVALOID,
        pg_sys::BOOLOID,
    ],
};

static UPDATE_QUEUE: Statement = Statement {
    sql: "UPDATE courier.queue SET visibility_timeout = $2, max_attempts = $3, dead_letter_queue_id = $4, \
          retry_base = $5, retry_max = $6, retry_jitter = $7, dedup_window = $8, retention = $9, notify = $10 \
          WHERE queue_id = $1",
    args: &[
        pg_sys::INT4OID,
        pg_sys::INTERVALOID,
        pg_sys::INT4OID,
        pg_sys::INT4OID,
        pg_sys::INTERVALOID,
        pg_sys::INTERVALOID,
        pg_sys::FLOAT8OID,
        pg_sys::INTERVALOID,
        pg_sys::INTERVALOID,
        pg_sys::BOOLOID,
    ],
};

// Queues that would dead-letter into $1 if $2 became its dead-letter queue's chain: a cycle.
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

static DELETE_QUEUE: Statement =
    Statement { sql: "DELETE FROM courier.queue WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_MESSAGES: Statement =
    Statement { sql: "DELETE FROM courier.message WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_KEYS: Statement =
    Statement { sql: "DELETE FROM courier.dedup WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_COMPLETED: Statement =
    Statement { sql: "DELETE FROM courier.completed WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

fn read_queue(table: &SpiTupleTable) -> SpiResult<QueueRef> {
    let dlq_id = get::<i32>(table, 10)?;
    let dlq_name = get::<String>(table, 11)?;
    Ok(QueueRef {
        id: get::<i32>(table, 1)?.expect("queue_id"),
        name: get::<String>(table, 2)?.expect("name"),
        settings: QueueSettings {
            visibility_timeout_usecs: interval_usecs(get::<Interval>(table, 3)?.expect("NOT NULL")),
            max_attempts: get::<i32>(table, 4)?.expect("NOT NULL"),
            retry: RetryPolicy {
                base_usecs: interval_usecs(get::<Interval>(table, 5)?.expect("NOT NULL")),
                max_usecs: interval_usecs(get::<Interval>(table, 6)?.expect("NOT NULL")),
                jitter: get::<f64>(table, 7)?.expect("NOT NULL"),
            },
            dedup_window_usecs: interval_usecs(get::<Interval>(table, 8)?.expect("NOT NULL")),
            retention_usecs: get::<Interval>(table, 9)?.map(interval_usecs),
        },
        dead_letter_queue: dlq_id.zip(dlq_name),
        notify: get::<bool>(table, 12)?.expect("notify"),
    })
}

fn settings_args(s: &QueueSettings, dead_letter_queue: Option<i32>) -> [DatumWithOid<'static>; 8] {
    [
        interval(s.visibility_timeout_usecs).into(),
        s.max_attempts.into(),
        dead_letter_queue.into(),
        interval(s.retry.base_usecs).into(),
        interval(s.retry.max_usecs).into(),
        s.retry.jitter.into(),
        interval(s.dedup_window_usecs).into(),
        opt_interval(s.retention_usecs),
    ]
}

impl Store<'_, '_> {
    pub fn lookup_queue(&self, name: &str, key_share: bool) -> Option<QueueRef> {
        let stmt = if key_share { &LOOKUP_QUEUE_KEY_SHARE } else { &LOOKUP_QUEUE };
        let table = self.run(stmt, &[name.into()]);
        if table.is_empty() {
            return None;
        }
        Some(read_queue(&table.first()).unwrap_or_else(|e| internal("reading a queue", e)))
    }

    /// Inserts a queue; `None` if one with that name exists (committed or concurrently inserted
    /// and then committed: ON CONFLICT waits for the other inserter).
    pub fn insert_queue(
        &self,
        name: &str,
        s: &QueueSettings,
        dead_letter_queue: Option<i32>,
        notify: bool,
    ) -> Option<i32> {
        let [a, b, c, d, e, f, g, h] = settings_args(s, dead_letter_queue);
        let table = self.run(&INSERT_QUEUE, &[name.into(), a, b, c, d, e, f, g, h, notify.into()]);
        if table.is_empty() {
            None
        } else {
            Some(get::<i32>(&table.first(), 1).or_internal("creating a queue"))
        }
    }

    pub fn update_queue(
        &self,
        queue_id: i32,
        s: &QueueSettings,
        dead_letter_queue: Option<i32>,
        notify: bool,
    ) {
        let [a, b, c, d, e, f, g, h] = settings_args(s, dead_letter_queue);
        self.run(&UPDATE_QUEUE, &[queue_id.into(), a, b, c, d, e, f, g, h, notify.into()]);
    }

    /// True if making `dead_letter_queue` the dead-letter queue of `queue_id` would form a cycle.
    pub fn dead_letter_cycle(&self, queue_id: i32, dead_letter_queue: i32) -> bool {
        let table = self.run(&DEAD_LETTER_CHAIN, &[dead_letter_queue.into(), queue_id.into()]);
        get::<bool>(&table.first(), 1).ok().flatten().unwrap_or(false)
    }

    /// A queue that uses `queue_id` as its dead-letter queue, if any.
    pub fn dead_letter_user(&self, queue_id: i32) -> Option<String> {
        let table = self.run(&DEAD_LETTER_USERS, &[queue_id.into()]);
        if table.is_empty() {
            None
        } else {
            Some(get::<String>(&table.first(), 1).or_internal("reading a queue"))
        }
    }

    /// Deletes a queue with its messages, dedup keys and completed messages; returns how many
    /// messages went with it.
    pub fn delete_queue(&self, queue_id: i32) -> usize {
        let removed = self.run(&DELETE_QUEUE_MESSAGES, &[queue_id.into()]).len();
        self.run(&DELETE_QUEUE_KEYS, &[queue_id.into()]);
        self.run(&DELETE_QUEUE_COMPLETED, &[queue_id.into()]);
        self.run(&DELETE_QUEUE, &[queue_id.into()]);
        removed
    }

    pub fn purge_queue(&self, queue_id: i32) -> usize {
        self.run(&DELETE_QUEUE_MESSAGES, &[queue_id.into()]).len()
    }
}

// ---------------------------------------------------------------------------------------------
// Enqueue and deduplication
// ---------------------------------------------------------------------------------------------

static INSERT_MESSAGE: Statement = Statement {
    sql: "INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, priority, headers, payload) \
          VALUES (pg_catalog.nextval('courier.message_id_seq'), $1, $2, $3, $4, $5, $6) RETURNING id",
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT2OID,
        pg_sys::JSONBOID,
        pg_sys::JSONBOID,
    ],
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
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT2OID,
        pg_sys::JSONBOID,
        pg_sys::JSONBOID,
        pg_sys::TEXTOID,
        pg_sys::TIMESTAMPTZOID,
    ],
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

// Expired keys are reclaimed a bounded batch at a time; see dedup.rs for the cadence.
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

impl Store<'_, '_> {
    pub fn insert_message(&self, at: Placement, headers: Option<Jsonb>, payload: Jsonb) -> i64 {
        let [a, b, c, d] = at.args();
        let table = self.run(&INSERT_MESSAGE, &[a, b, c, d, headers.into(), payload.into()]).first();
        get::<i64>(&table, 1).or_internal("enqueueing")
    }

    pub fn insert_messages(
        &self,
        at: Placement,
        payloads: JsonbArray,
        headers: Option<JsonbArray>,
    ) -> Vec<i64> {
        let headers: DatumWithOid = match headers {
            Some(h) => h.into(),
            None => DatumWithOid::null_oid(pg_sys::JSONBARRAYOID),
        };
        let [a, b, c, d] = at.args();
        let mut ids = ids_of(self.run(&INSERT_MESSAGES, &[a, b, c, d, payloads.into(), headers]));
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
        let [a, b, c, d] = at.args();
        let args = [a, b, c, d, headers.into(), payload.into(), key.into(), ts(key_expires_at)];
        let table = self.run(&INSERT_KEYED_MESSAGE, &args);
        if !table.is_empty() {
            return (get::<i64>(&table.first(), 1).or_internal("enqueueing"), false);
        }
        let claim = [at.queue_id.into(), key.into(), ts(at.now), ts(key_expires_at)];
        let claimed = self.run(&CLAIM_EXPIRED_KEY, &claim);
        if !claimed.is_empty() {
            let id = get::<i64>(&claimed.first(), 1).or_internal("enqueueing");
            let [a, b, c, d] = at.args();
            self.run(&INSERT_MESSAGE_WITH_ID, &[a, b, c, d, headers.into(), payload.into(), id.into()]);
            return (id, false);
        }
        let owner = self.run(&KEY_OWNER, &[at.queue_id.into(), key.into()]);
        (get::<i64>(&owner.first(), 1).or_internal("reading a dedup key"), true)
    }

    /// Deletes up to `limit` expired dedup keys; returns how many.
    pub fn sweep_keys(&self, now: pg_sys::TimestampTz, limit: i32) -> usize {
        self.run(&SWEEP_KEYS, &[ts(now), limit.into()]).len()
    }
}

// ---------------------------------------------------------------------------------------------
// Lease
// ---------------------------------------------------------------------------------------------

// Leases in (priority DESC, visible_at, id) order without scanning non-ready messages. The
// recursive CTE walks the distinct priority levels of the queue from the top, one index descent
// each; for every level the LATERAL subquery is a range scan bounded by visible_at <= now, so
// leased, delayed and dead messages (which sort after now) are never visited. Evaluation is lazy:
// once LIMIT rows are found no further level is probed, so a single-priority queue costs one
// probe for the level and one range scan.
//
// Rows whose attempts are exhausted are locked and returned unleased (exhausted = true); the
// caller dead-letters them in a second statement while it still holds their row locks.
static LEASE: Statement = Statement {
    sql: "WITH RECURSIVE levels(p) AS ( \
              SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 \
                      ORDER BY m.priority DESC LIMIT 1) \
              UNION ALL \
              SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 AND m.priority < l.p \
                      ORDER BY m.priority DESC LIMIT 1) \
              FROM levels l WHERE l.p IS NOT NULL), \
          picked AS MATERIALIZED ( \
              SELECT c.id, c.visible_at AS ready_at, c.attempt, c.lease_token \
              FROM levels l CROSS JOIN LATERAL ( \
                  SELECT m.id, m.visible_at, m.attempt, m.lease_token FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at <= $2 \
                  ORDER BY m.visible_at, m.id LIMIT $3 \
                  FOR UPDATE SKIP LOCKED) c \
              WHERE l.p IS NOT NULL \
              LIMIT $3), \
          leased AS ( \
              UPDATE courier.message m \
              SET visible_at = $4, lease_token = $5, leased_at = $2, attempt = m.attempt + 1 \
              FROM picked WHERE m.id = picked.id AND ($6 = 0 OR picked.attempt < $6) \
              RETURNING m.id, m.attempt, m.priority, m.enqueued_at, picked.ready_at, \
                        picked.lease_token IS NOT NULL AS expired, m.payload, m.headers, m.last_error) \
          SELECT leased.*, false AS exhausted FROM leased \
          UNION ALL \
          SELECT picked.id, picked.attempt, NULL, NULL, picked.ready_at, picked.lease_token IS NOT NULL, \
                 NULL, NULL, NULL, true FROM picked WHERE $6 > 0 AND picked.attempt >= $6",
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT8OID,
        pg_sys::INT4OID,
    ],
};

// When the next message that is not ready yet (delayed, retrying, or leased) becomes ready: the
// earliest visible_at after now, found with one probe per priority level.
static NEXT_DUE: Statement = Statement {
    sql: "WITH RECURSIVE levels(p) AS ( \
              SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 \
                      ORDER BY m.priority DESC LIMIT 1) \
              UNION ALL \
              SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 AND m.priority < l.p \
                      ORDER BY m.priority DESC LIMIT 1) \
              FROM levels l WHERE l.p IS NOT NULL) \
          SELECT pg_catalog.min(n.visible_at) FROM levels l CROSS JOIN LATERAL ( \
              SELECT m.visible_at FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at > $2 \
                AND m.visible_at < 'infinity'::pg_catalog.timestamptz \
              ORDER BY m.visible_at LIMIT 1) n \
          WHERE l.p IS NOT NULL",
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID],
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
}

pub struct LeaseRequest {
    pub queue_id: i32,
    pub now: pg_sys::TimestampTz,
    pub expires_at: pg_sys::TimestampTz,
    pub limit: i32,
    pub token: i64,
    pub max_attempts: i32,
}

impl Store<'_, '_> {
    /// The next time a message of the queue that is not ready now becomes ready, if any.
    pub fn next_due(&self, queue_id: i32, now: pg_sys::TimestampTz) -> Option<pg_sys::TimestampTz> {
        let table = self.run(&NEXT_DUE, &[queue_id.into(), ts(now)]).first();
        get_ts(&table, 1).unwrap_or_else(|e| internal("reading the next due time", e))
    }

    pub fn lease(&self, r: &LeaseRequest) -> LeaseOutcome {
        let args = [
            r.queue_id.into(),
            ts(r.now),
            r.limit.into(),
            ts(r.expires_at),
            r.token.into(),
            r.max_attempts.into(),
        ];
        let mut table = self.run(&LEASE, &args);
        let mut out = LeaseOutcome::default();
        while table.next().is_some() {
            let id = get::<i64>(&table, 1).or_internal("leasing");
            if get::<bool>(&table, 10).or_internal("leasing") {
                out.exhausted.push(id);
                continue;
            }
            if get::<bool>(&table, 6).or_internal("leasing") {
                out.expired += 1;
            }
            let read = || -> SpiResult<Leased> {
                Ok(Leased {
                    id,
                    token: r.token,
                    expires_at: r.expires_at,
                    attempt: get::<i32>(&table, 2)?.expect("attempt"),
                    priority: get::<i16>(&table, 3)?.expect("priority"),
                    enqueued_at: get_ts(&table, 4)?.expect("enqueued_at"),
                    ready_at: get_ts(&table, 5)?.expect("ready_at"),
                    payload: self.keep_jsonb(table.get_datum_by_ordinal(7)?).expect("payload is NOT NULL"),
                    headers: self.keep_jsonb(table.get_datum_by_ordinal(8)?),
                    last_error: get::<String>(&table, 9)?,
                })
            };
            out.leased.push(read().unwrap_or_else(|e| internal("leasing", e)));
        }
        out.leased.sort_unstable_by_key(|r| (std::cmp::Reverse(r.priority), r.ready_at, r.id));
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

static ACK_MANY: Statement = Statement {
    sql: "WITH r AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), \
                                               pg_catalog.unnest($2::pg_catalog.int8[])) AS r(id, token)), \
          d AS (DELETE FROM courier.message m USING r WHERE m.id = r.id AND m.lease_token = r.token \
                RETURNING m.id, r.token, m.queue_id, m.attempt, m.priority, m.enqueued_at, m.headers, m.payload), \
          kept AS (INSERT INTO courier.completed (id, queue_id, attempt, priority, enqueued_at, completed_at, \
                                                  headers, payload) \
                   SELECT d.id, d.queue_id, d.attempt, d.priority, d.enqueued_at, $3, d.headers, d.payload \
                   FROM d JOIN courier.queue q ON q.queue_id = d.queue_id WHERE q.retention IS NOT NULL) \
          SELECT d.id, d.token, d.queue_id FROM d",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT8ARRAYOID, pg_sys::TIMESTAMPTZOID],
};

// Locks the messages whose receipts still hold their lease, with what a nack needs to decide
// between retrying and dead-lettering. FOR UPDATE waits for a concurrent lease of the same
// message and then re-checks the token, so a racing re-lease makes the receipt fail.
static LOCK_FOR_NACK: Statement = Statement {
    sql: "SELECT m.id, r.token, m.attempt, m.queue_id, q.max_attempts, q.retry_base, q.retry_max, \
                 q.retry_jitter, d.queue_id, d.name, q.name, q.notify \
          FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.int8[])) \
               AS r(id, token) \
          JOIN courier.message m ON m.id = r.id AND m.lease_token = r.token \
          JOIN courier.queue q ON q.queue_id = m.queue_id \
          LEFT JOIN courier.queue d ON d.queue_id = q.dead_letter_queue_id \
          FOR UPDATE OF m",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT8ARRAYOID],
};

static RELEASE: Statement = Statement {
    sql: "UPDATE courier.message m SET visible_at = r.at, lease_token = NULL, leased_at = NULL, \
                 last_error = COALESCE($3, m.last_error) \
          FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.timestamptz[])) \
               AS r(id, at) \
          WHERE m.id = r.id",
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
              dead_at = $3, lease_token = NULL, leased_at = NULL, \
              last_error = COALESCE($4, m.last_error) \
          WHERE m.id = ANY ($1)",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID, pg_sys::TEXTOID],
};

static EXTEND: Statement = Statement {
    sql: "UPDATE courier.message SET visible_at = $3 WHERE id = $1 AND lease_token = $2 RETURNING queue_id",
    args: &[pg_sys::INT8OID, pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
};

// Completed messages older than their queue's retention (or of queues that no longer keep any).
static SWEEP_COMPLETED: Statement = Statement {
    sql: "DELETE FROM courier.completed WHERE ctid = ANY (ARRAY( \
              SELECT c.ctid FROM courier.completed c LEFT JOIN courier.queue q ON q.queue_id = c.queue_id \
              WHERE q.retention IS NULL OR c.completed_at < $1 - q.retention \
              LIMIT $2 FOR UPDATE OF c SKIP LOCKED))",
    args: &[pg_sys::TIMESTAMPTZOID, pg_sys::INT4OID],
};

/// The (id, token) pairs of a set of receipts.
pub struct ReceiptSet {
    pub ids: Vec<i64>,
    pub tokens: Vec<i64>,
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

impl Store<'_, '_> {
    /// Acks one receipt; returns the message's queue if the receipt still held its lease.
    pub fn ack(&self, id: i64, token: i64, now: pg_sys::TimestampTz) -> Option<i32> {
        let table = self.run(&ACK, &[id.into(), token.into(), ts(now)]);
        (!table.is_empty()).then(|| get::<i32>(&table.first(), 1).or_internal("acking"))
    }

    /// Acks every receipt that still holds its lease; returns (id, token, queue_id) of each.
    pub fn ack_many(&self, receipts: ReceiptSet, now: pg_sys::TimestampTz) -> Vec<(i64, i64, i32)> {
        let mut table = self.run(&ACK_MANY, &[receipts.ids.into(), receipts.tokens.into(), ts(now)]);
        let mut out = Vec::with_capacity(table.len());
        while table.next().is_some() {
            out.push((
                get::<i64>(&table, 1).or_internal("acking"),
                get::<i64>(&table, 2).or_internal("acking"),
                get::<i32>(&table, 3).or_internal("acking"),
            ));
        }
        out
    }

    pub fn lock_for_nack(&self, receipts: ReceiptSet) -> Vec<Nackable> {
        let mut table = self.run(&LOCK_FOR_NACK, &[receipts.ids.into(), receipts.tokens.into()]);
        let mut out = Vec::with_capacity(table.len());
        while table.next().is_some() {
            let read = || -> SpiResult<Nackable> {
                let dlq_id = get::<i32>(&table, 9)?;
                let dlq_name = get::<String>(&table, 10)?;
                Ok(Nackable {
                    id: get::<i64>(&table, 1)?.expect("id"),
                    token: get::<i64>(&table, 2)?.expect("token"),
                    attempt: get::<i32>(&table, 3)?.expect("attempt"),
                    queue_id: get::<i32>(&table, 4)?.expect("queue_id"),
                    max_attempts: get::<i32>(&table, 5)?.expect("max_attempts"),
                    retry: RetryPolicy {
                        base_usecs: interval_usecs(get::<Interval>(&table, 6)?.expect("retry_base")),
                        max_usecs: interval_usecs(get::<Interval>(&table, 7)?.expect("retry_max")),
                        jitter: get::<f64>(&table, 8)?.expect("retry_jitter"),
                    },
                    dead_letter_queue: dlq_id.zip(dlq_name),
                    queue_name: get::<String>(&table, 11)?.expect("name"),
                    notify: get::<bool>(&table, 12)?.expect("notify"),
                })
            };
            out.push(read().unwrap_or_else(|e| internal("nacking", e)));
        }
        out
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

    /// Moves the lease's expiry; returns the message's queue if the receipt still held it.
    pub fn extend(&self, id: i64, token: i64, expires_at: pg_sys::TimestampTz) -> Option<i32> {
        let table = self.run(&EXTEND, &[id.into(), token.into(), ts(expires_at)]);
        (!table.is_empty()).then(|| get::<i32>(&table.first(), 1).or_internal("extending"))
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
            AND NOT (m.lease_token IS NOT NULL AND m.visible_at > $3) \
          ORDER BY m.id LIMIT $4 \
          FOR UPDATE OF m SKIP LOCKED",
    args: &[pg_sys::INT4OID, pg_sys::INT8ARRAYOID, pg_sys::TIMESTAMPTZOID, pg_sys::INT4OID],
};

static REDRIVE: Statement = Statement {
    sql: "UPDATE courier.message m SET queue_id = COALESCE(m.origin_queue_id, m.queue_id), \
              origin_queue_id = NULL, origin_attempts = NULL, attempt = 0, dead_at = NULL, \
              lease_token = NULL, leased_at = NULL, visible_at = $2 \
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

impl Store<'_, '_> {
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
        let mut table = self.run(&REDRIVE_CANDIDATES, &[queue_id.into(), ids, ts(now), limit.into()]);
        let mut out = Vec::new();
        while table.next().is_some() {
            let id = get::<i64>(&table, 1).or_internal("redriving");
            let origin = get::<i32>(&table, 2).ok().flatten();
            let name = get::<String>(&table, 3).ok().flatten();
            let notify = get::<bool>(&table, 4).ok().flatten().unwrap_or(false);
            out.push(DeadLetter { id, origin: origin.map(|o| (o, name.map(|n| (n, notify)))) });
        }
        out
    }

    pub fn redrive(&self, ids: Vec<i64>, now: pg_sys::TimestampTz) -> usize {
        self.run(&REDRIVE, &[ids.into(), ts(now)]).len()
    }
}

// ---------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------

// One pass over the queue's index range. Ready and dead counts need only the index key; the
// delayed/in-flight split reads lease_token, but the index condition on visible_at is checked on
// the index entry first, so the heap is visited only for messages in that window.
static GAUGES_READY: Statement = Statement {
    sql: "SELECT pg_catalog.count(*) FILTER (WHERE visible_at <= $2), \
                 pg_catalog.count(*) FILTER (WHERE visible_at = 'infinity'::pg_catalog.timestamptz), \
                 pg_catalog.min(visible_at) FILTER (WHERE visible_at <= $2) \
          FROM courier.message WHERE queue_id = $1",
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID],
};

static GAUGES_WAITING: Statement = Statement {
    sql: "SELECT pg_catalog.count(*) FILTER (WHERE lease_token IS NULL), \
                 pg_catalog.count(*) FILTER (WHERE lease_token IS NOT NULL), \
                 pg_catalog.min(leased_at) FILTER (WHERE lease_token IS NOT NULL) \
          FROM courier.message \
          WHERE queue_id = $1 AND visible_at > $2 AND visible_at < 'infinity'::pg_catalog.timestamptz",
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

impl Store<'_, '_> {
    pub fn gauges(&self, queue_id: i32, now: pg_sys::TimestampTz) -> Gauges {
        let a = self.run(&GAUGES_READY, &[queue_id.into(), ts(now)]).first();
        let b = self.run(&GAUGES_WAITING, &[queue_id.into(), ts(now)]).first();
        let read = || -> SpiResult<Gauges> {
            Ok(Gauges {
                ready: get::<i64>(&a, 1)?.unwrap_or(0),
                dead: get::<i64>(&a, 2)?.unwrap_or(0),
                oldest_ready: get_ts(&a, 3)?,
                delayed: get::<i64>(&b, 1)?.unwrap_or(0),
                in_flight: get::<i64>(&b, 2)?.unwrap_or(0),
                oldest_lease: get_ts(&b, 3)?,
            })
        };
        read().unwrap_or_else(|e| internal("reading stats", e))
    }
}
