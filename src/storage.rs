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

fn pairs(mut table: SpiTupleTable) -> Vec<(i64, i64)> {
    let mut out = Vec::with_capacity(table.len());
    while table.next().is_some() {
        let id = get::<i64>(&table, 1).unwrap_or_else(|e| internal("reading ids", e)).expect("id");
        let token = get::<i64>(&table, 2).unwrap_or_else(|e| internal("reading tokens", e)).expect("token");
        out.push((id, token));
    }
    out
}

fn get_ts(table: &SpiTupleTable, ordinal: usize) -> SpiResult<pg_sys::TimestampTz> {
    let t: TimestampWithTimeZone = get(table, ordinal)?.expect("timestamp columns are NOT NULL");
    Ok(t.into())
}

// ---------------------------------------------------------------------------------------------
// Queue catalog
// ---------------------------------------------------------------------------------------------

/// What the data path needs to know about a queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueRef {
    pub id: i32,
    pub visibility_timeout_usecs: i64,
}

static LOOKUP_QUEUE: Statement = Statement {
    sql: "SELECT q.queue_id, q.visibility_timeout FROM courier.queue q WHERE q.name = $1",
    args: &[pg_sys::TEXTOID],
};

// Used at REPEATABLE READ and above, where the transaction snapshot may predate a drop that has
// since committed: the row lock makes such a race fail with a serialization error instead.
static LOOKUP_QUEUE_KEY_SHARE: Statement = Statement {
    sql: "SELECT q.queue_id, q.visibility_timeout FROM courier.queue q WHERE q.name = $1 FOR KEY SHARE",
    args: &[pg_sys::TEXTOID],
};

static INSERT_QUEUE: Statement = Statement {
    sql: "INSERT INTO courier.queue (name, visibility_timeout) VALUES ($1, $2) \
          ON CONFLICT (name) DO NOTHING RETURNING queue_id",
    args: &[pg_sys::TEXTOID, pg_sys::INTERVALOID],
};

static DELETE_QUEUE: Statement =
    Statement { sql: "DELETE FROM courier.queue WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_MESSAGES: Statement =
    Statement { sql: "DELETE FROM courier.message WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

fn interval_usecs(i: Interval) -> i64 {
    courier_core::timing::interval_usecs(i.months(), i.days(), i.micros()) as i64
}

impl Store<'_, '_> {
    pub fn lookup_queue(&self, name: &str, key_share: bool) -> Option<QueueRef> {
        let stmt = if key_share { &LOOKUP_QUEUE_KEY_SHARE } else { &LOOKUP_QUEUE };
        let table = self.run(stmt, &[name.into()]);
        if table.is_empty() {
            return None;
        }
        let table = table.first();
        let read = || -> SpiResult<QueueRef> {
            Ok(QueueRef {
                id: get::<i32>(&table, 1)?.expect("queue_id is NOT NULL"),
                visibility_timeout_usecs: interval_usecs(get::<Interval>(&table, 2)?.expect("NOT NULL")),
            })
        };
        Some(read().unwrap_or_else(|e| internal("reading a queue", e)))
    }

    /// Inserts a queue; `None` if one with that name exists (committed or concurrently inserted
    /// and then committed: ON CONFLICT waits for the other inserter).
    pub fn insert_queue(&self, name: &str, visibility_timeout_usecs: i64) -> Option<i32> {
        let table =
            self.run(&INSERT_QUEUE, &[name.into(), Interval::from_micros(visibility_timeout_usecs).into()]);
        if table.is_empty() {
            None
        } else {
            get::<i32>(&table.first(), 1).unwrap_or_else(|e| internal("creating a queue", e))
        }
    }

    /// Deletes a queue and all its messages; returns how many messages went with it.
    pub fn delete_queue(&self, queue: QueueRef) -> usize {
        let removed = self.run(&DELETE_QUEUE_MESSAGES, &[queue.id.into()]).len();
        self.run(&DELETE_QUEUE, &[queue.id.into()]);
        removed
    }

    pub fn purge_queue(&self, queue: QueueRef) -> usize {
        self.run(&DELETE_QUEUE_MESSAGES, &[queue.id.into()]).len()
    }
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

static INSERT_MESSAGE: Statement = Statement {
    sql: "INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, headers, payload) \
          VALUES (pg_catalog.nextval('courier.message_id_seq'), $1, $2, $3, $4, $5) RETURNING id",
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::JSONBOID,
        pg_sys::JSONBOID,
    ],
};

// PostgreSQL evaluates volatile target-list expressions after the sort, so ids follow the input
// order; the caller still sorts the returned ids rather than trust RETURNING's order.
static INSERT_MESSAGES: Statement = Statement {
    sql: "INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, headers, payload) \
          SELECT pg_catalog.nextval('courier.message_id_seq'), $1, $2, $3, u.h, u.p \
          FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.jsonb[]), pg_catalog.unnest($5::pg_catalog.jsonb[])) \
          WITH ORDINALITY AS u(p, h, n) \
          ORDER BY u.n RETURNING id",
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID, pg_sys::TIMESTAMPTZOID, pg_sys::JSONBARRAYOID, pg_sys::JSONBARRAYOID],
};

// The MATERIALIZED CTE runs the SKIP LOCKED scan exactly once, so a lease never returns more rows
// than asked for (a LIMIT subquery on the inner side of a join may be rescanned). The scan is a
// range on message_ready_idx bounded by visible_at <= now: leased and delayed messages sort after
// now and are never visited, so its cost does not grow with the backlog or the number in flight.
static LEASE: Statement = Statement {
    sql: "WITH picked AS MATERIALIZED ( \
              SELECT m.id, m.visible_at AS ready_at FROM courier.message m \
              WHERE m.queue_id = $1 AND m.visible_at <= $2 \
              ORDER BY m.visible_at, m.id LIMIT $3 \
              FOR UPDATE SKIP LOCKED) \
          UPDATE courier.message m SET visible_at = $4, lease_token = $5, attempt = m.attempt + 1 \
          FROM picked WHERE m.id = picked.id \
          RETURNING m.id, m.attempt, m.enqueued_at, picked.ready_at, m.payload, m.headers",
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT8OID,
    ],
};

static ACK: Statement = Statement {
    sql: "DELETE FROM courier.message WHERE id = $1 AND lease_token = $2",
    args: &[pg_sys::INT8OID, pg_sys::INT8OID],
};

static ACK_MANY: Statement = Statement {
    sql: "DELETE FROM courier.message m \
          USING ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.int8[])) AS r(id, token) \
          WHERE m.id = r.id AND m.lease_token = r.token RETURNING m.id, r.token",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT8ARRAYOID],
};

static NACK: Statement = Statement {
    sql: "UPDATE courier.message SET visible_at = $3, lease_token = NULL, \
          last_error = COALESCE($4, last_error) WHERE id = $1 AND lease_token = $2",
    args: &[pg_sys::INT8OID, pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID, pg_sys::TEXTOID],
};

static NACK_MANY: Statement = Statement {
    sql: "UPDATE courier.message m SET visible_at = $3, lease_token = NULL, \
          last_error = COALESCE($4, m.last_error) \
          FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.int8[])) AS r(id, token) \
          WHERE m.id = r.id AND m.lease_token = r.token RETURNING m.id, r.token",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT8ARRAYOID, pg_sys::TIMESTAMPTZOID, pg_sys::TEXTOID],
};

static EXTEND: Statement = Statement {
    sql: "UPDATE courier.message SET visible_at = $3 WHERE id = $1 AND lease_token = $2",
    args: &[pg_sys::INT8OID, pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
};

/// A message as a lease hands it out.
pub struct Leased {
    pub id: i64,
    pub attempt: i32,
    pub enqueued_at: pg_sys::TimestampTz,
    /// When the message became leasable; leases are returned in (ready_at, id) order.
    pub ready_at: pg_sys::TimestampTz,
    pub payload: Jsonb,
    pub headers: Option<Jsonb>,
}

/// The (id, token) pairs of a set of receipts.
pub struct ReceiptSet {
    pub ids: Vec<i64>,
    pub tokens: Vec<i64>,
}

impl Store<'_, '_> {
    pub fn insert_message(
        &self,
        queue: QueueRef,
        now: pg_sys::TimestampTz,
        visible_at: pg_sys::TimestampTz,
        headers: Option<Jsonb>,
        payload: Jsonb,
    ) -> i64 {
        let args = [queue.id.into(), ts(visible_at), ts(now), headers.into(), payload.into()];
        let table = self.run(&INSERT_MESSAGE, &args).first();
        get::<i64>(&table, 1).unwrap_or_else(|e| internal("enqueueing", e)).expect("RETURNING id")
    }

    pub fn insert_messages(
        &self,
        queue: QueueRef,
        now: pg_sys::TimestampTz,
        visible_at: pg_sys::TimestampTz,
        payloads: JsonbArray,
        headers: Option<JsonbArray>,
    ) -> Vec<i64> {
        let headers: DatumWithOid = match headers {
            Some(h) => h.into(),
            None => DatumWithOid::null_oid(pg_sys::JSONBARRAYOID),
        };
        let args = [queue.id.into(), ts(visible_at), ts(now), payloads.into(), headers];
        let mut table = self.run(&INSERT_MESSAGES, &args);
        let mut ids = Vec::with_capacity(table.len());
        while table.next().is_some() {
            ids.push(get::<i64>(&table, 1).unwrap_or_else(|e| internal("enqueueing", e)).expect("id"));
        }
        ids.sort_unstable();
        ids
    }

    pub fn lease(
        &self,
        queue: QueueRef,
        now: pg_sys::TimestampTz,
        expires_at: pg_sys::TimestampTz,
        limit: i32,
        token: i64,
    ) -> Vec<Leased> {
        let args = [queue.id.into(), ts(now), limit.into(), ts(expires_at), token.into()];
        let mut table = self.run(&LEASE, &args);
        let mut rows = Vec::with_capacity(table.len());
        while table.next().is_some() {
            let read = || -> SpiResult<Leased> {
                Ok(Leased {
                    id: get::<i64>(&table, 1)?.expect("id"),
                    attempt: get::<i32>(&table, 2)?.expect("attempt"),
                    enqueued_at: get_ts(&table, 3)?,
                    ready_at: get_ts(&table, 4)?,
                    payload: self.keep_jsonb(table.get_datum_by_ordinal(5)?).expect("payload is NOT NULL"),
                    headers: self.keep_jsonb(table.get_datum_by_ordinal(6)?),
                })
            };
            rows.push(read().unwrap_or_else(|e| internal("leasing", e)));
        }
        rows.sort_unstable_by_key(|r| (r.ready_at, r.id));
        rows
    }

    /// Deletes the message if `token` is its current lease; true if it did.
    pub fn ack(&self, id: i64, token: i64) -> bool {
        self.run(&ACK, &[id.into(), token.into()]).len() == 1
    }

    /// Acks every receipt that still holds its lease; returns the (id, token) pairs it acked.
    pub fn ack_many(&self, receipts: ReceiptSet) -> Vec<(i64, i64)> {
        let table = self.run(&ACK_MANY, &[receipts.ids.into(), receipts.tokens.into()]);
        pairs(table)
    }

    pub fn nack(&self, id: i64, token: i64, visible_at: pg_sys::TimestampTz, error: Option<&str>) -> bool {
        self.run(&NACK, &[id.into(), token.into(), ts(visible_at), error.into()]).len() == 1
    }

    pub fn nack_many(
        &self,
        receipts: ReceiptSet,
        visible_at: pg_sys::TimestampTz,
        error: Option<&str>,
    ) -> Vec<(i64, i64)> {
        let args = [receipts.ids.into(), receipts.tokens.into(), ts(visible_at), error.into()];
        pairs(self.run(&NACK_MANY, &args))
    }

    pub fn extend(&self, id: i64, token: i64, expires_at: pg_sys::TimestampTz) -> bool {
        self.run(&EXTEND, &[id.into(), token.into(), ts(expires_at)]).len() == 1
    }
}
