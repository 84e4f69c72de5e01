//! Enqueueing: new message rows, with or without a deduplication key.

use std::cell::Cell;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;

use super::direct::{self, NewMessage};
use super::{Only, Required, Statement, Store, concat_args, opt_array_arg, timestamp_arg};
use crate::datum::{Jsonb, JsonbArray};

/// The columns every new message gets, in the order the statements below list them.
macro_rules! message_columns {
    () => {
        "(id, queue_id, visible_at, enqueued_at, priority, headers, payload)"
    };
}

/// Where and when a new message goes: queue id, visible_at, enqueued_at, priority.
const PLACEMENT_ARGS: [pg_sys::Oid; 4] =
    [pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID, pg_sys::TIMESTAMPTZOID, pg_sys::INT2OID];
/// The placement and one message's headers and payload.
const MESSAGE_ARGS: [pg_sys::Oid; 6] = concat_args(PLACEMENT_ARGS, [pg_sys::JSONBOID, pg_sys::JSONBOID]);

static INSERT_MESSAGE: Statement = Statement {
    sql: concat!(
        "INSERT INTO courier.message ",
        message_columns!(),
        " VALUES (pg_catalog.nextval('courier.message_id_seq'), $1, $2, $3, $4, $5, $6) RETURNING id"
    ),
    args: &MESSAGE_ARGS,
};

// PostgreSQL evaluates volatile target-list expressions after the sort, so ids follow the input
// order; the caller still sorts the returned ids rather than trust RETURNING's order.
static INSERT_MESSAGES: Statement = Statement {
    sql: concat!(
        "INSERT INTO courier.message ",
        message_columns!(),
        " SELECT pg_catalog.nextval('courier.message_id_seq'), $1, $2, $3, $4, u.h, u.p \
          FROM ROWS FROM (pg_catalog.unnest($5::pg_catalog.jsonb[]), pg_catalog.unnest($6::pg_catalog.jsonb[])) \
          WITH ORDINALITY AS u(p, h, n) \
          ORDER BY u.n RETURNING id"
    ),
    args: &concat_args::<4, 2, 6>(PLACEMENT_ARGS, [pg_sys::JSONBARRAYOID, pg_sys::JSONBARRAYOID]),
};

// A new key claims a message id and the message is inserted in the same statement. ON CONFLICT
// waits for a concurrent transaction inserting the same key: if that one commits, this is a
// duplicate; if it rolls back, the key was never taken and this insert proceeds.
static INSERT_KEYED_MESSAGE: Statement = Statement {
    sql: concat!(
        "WITH k AS ( \
              INSERT INTO courier.dedup (queue_id, key, message_id, expires_at) \
              VALUES ($1, $7, pg_catalog.nextval('courier.message_id_seq'), $8) \
              ON CONFLICT (queue_id, key) DO NOTHING RETURNING message_id) \
          INSERT INTO courier.message ",
        message_columns!(),
        " SELECT k.message_id, $1, $2, $3, $4, $5, $6 FROM k RETURNING id"
    ),
    args: &concat_args::<6, 2, 8>(MESSAGE_ARGS, [pg_sys::TEXTOID, pg_sys::TIMESTAMPTZOID]),
};

// The key exists. If it has expired, take it over for a new message (the row lock serialises two
// transactions trying to); otherwise report the message it points to. Runs as a separate statement
// so that its snapshot sees a key committed while INSERT_KEYED_MESSAGE was waiting for it.
static CLAIM_EXPIRED_KEY: Statement = Statement {
    sql: "UPDATE courier.dedup SET message_id = pg_catalog.nextval('courier.message_id_seq'), expires_at = $4 \
          WHERE queue_id = $1 AND key = $2 AND expires_at <= $3 RETURNING message_id",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::TIMESTAMPTZOID, pg_sys::TIMESTAMPTZOID],
};

// A new key claims a message id, for a message a separate statement inserts (into a group,
// storage/groups.rs). ON CONFLICT waits as INSERT_KEYED_MESSAGE's does.
static CLAIM_KEY: Statement = Statement {
    sql: "INSERT INTO courier.dedup (queue_id, key, message_id, expires_at) \
          VALUES ($1, $2, pg_catalog.nextval('courier.message_id_seq'), $3) \
          ON CONFLICT (queue_id, key) DO NOTHING RETURNING message_id",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::TIMESTAMPTZOID],
};

static KEY_OWNER: Statement = Statement {
    sql: "SELECT message_id FROM courier.dedup WHERE queue_id = $1 AND key = $2",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID],
};

static INSERT_MESSAGE_WITH_ID: Statement = Statement {
    sql: concat!("INSERT INTO courier.message ", message_columns!(), " VALUES ($7, $1, $2, $3, $4, $5, $6)"),
    args: &concat_args::<6, 1, 7>(MESSAGE_ARGS, [pg_sys::INT8OID]),
};

// Expired keys are reclaimed a bounded batch at a time; see sweep.rs for the cadence.
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
    /// The placement as the first parameters of the statements above, then `more`.
    pub(super) fn args<'a>(&self, more: impl IntoIterator<Item = DatumWithOid<'a>>) -> Vec<DatumWithOid<'a>> {
        let mut args = vec![
            self.queue_id.into(),
            timestamp_arg(self.visible_at),
            timestamp_arg(self.now),
            self.priority.into(),
        ];
        args.extend(more);
        args
    }
}

/// What an enqueue under a dedup key did.
#[derive(Clone, Copy, Debug)]
pub struct Inserted {
    /// The new message's id, or, for a duplicate, the id of the message that holds the key.
    pub id: i64,
    /// The key was already taken: nothing was inserted.
    pub duplicate: bool,
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

/// Records how an enqueue wrote its rows (storage/groups.rs's too).
pub(super) fn note_write(path: WritePath) {
    LAST_WRITE.set(Some(path));
}

impl Store<'_> {
    pub fn insert_message(&self, at: Placement, headers: Option<Jsonb>, payload: Jsonb) -> i64 {
        if let Some(ids) = direct::insert(at, &[NewMessage { headers, payload }], self.search_path) {
            LAST_WRITE.set(Some(WritePath::Direct));
            return ids[0];
        }
        LAST_WRITE.set(Some(WritePath::Statements));
        let rows = self.run(&INSERT_MESSAGE, &at.args([headers.into(), payload.into()]));
        rows.get::<i64>(0, Only).required("id")
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
        let headers = opt_array_arg(headers, pg_sys::JSONBARRAYOID);
        let mut ids = self.run(&INSERT_MESSAGES, &at.args([payloads.into(), headers])).ids();
        ids.sort_unstable();
        ids
    }

    /// Enqueues under a dedup key, unless the key is taken.
    pub fn insert_keyed_message(
        &self,
        at: Placement,
        key: &str,
        key_expires_at: pg_sys::TimestampTz,
        headers: Option<Jsonb>,
        payload: Jsonb,
    ) -> Inserted {
        LAST_WRITE.set(Some(WritePath::Statements));
        let args = at.args([headers.into(), payload.into(), key.into(), timestamp_arg(key_expires_at)]);
        let rows = self.run(&INSERT_KEYED_MESSAGE, &args);
        if !rows.is_empty() {
            return Inserted { id: rows.get::<i64>(0, Only).required("id"), duplicate: false };
        }
        let claim = [at.queue_id.into(), key.into(), timestamp_arg(at.now), timestamp_arg(key_expires_at)];
        let claimed = self.run(&CLAIM_EXPIRED_KEY, &claim);
        if !claimed.is_empty() {
            let id = claimed.get::<i64>(0, Only).required("message_id");
            self.run(&INSERT_MESSAGE_WITH_ID, &at.args([headers.into(), payload.into(), id.into()]));
            return Inserted { id, duplicate: false };
        }
        let owner = self.run(&KEY_OWNER, &[at.queue_id.into(), key.into()]);
        Inserted { id: owner.get::<i64>(0, Only).required("message_id"), duplicate: true }
    }

    /// Enqueues at the end of a group under a dedup key, unless the key is taken.
    pub fn insert_keyed_grouped(
        &self,
        at: Placement,
        key: &str,
        key_expires_at: pg_sys::TimestampTz,
        group: &str,
        headers: Option<Jsonb>,
        payload: Jsonb,
    ) -> Inserted {
        LAST_WRITE.set(Some(WritePath::Statements));
        let rows = self.run(&CLAIM_KEY, &[at.queue_id.into(), key.into(), timestamp_arg(key_expires_at)]);
        let claimed = if rows.is_empty() {
            let claim =
                [at.queue_id.into(), key.into(), timestamp_arg(at.now), timestamp_arg(key_expires_at)];
            self.run(&CLAIM_EXPIRED_KEY, &claim)
        } else {
            rows
        };
        if !claimed.is_empty() {
            let id = claimed.get::<i64>(0, Only).required("message_id");
            self.insert_grouped_with_id(at, group, id, headers, payload);
            return Inserted { id, duplicate: false };
        }
        let owner = self.run(&KEY_OWNER, &[at.queue_id.into(), key.into()]);
        Inserted { id: owner.get::<i64>(0, Only).required("message_id"), duplicate: true }
    }

    /// Deletes up to `limit` expired dedup keys; returns how many.
    pub fn sweep_keys(&self, now: pg_sys::TimestampTz, limit: i32) -> usize {
        self.run(&SWEEP_KEYS, &[timestamp_arg(now), limit.into()]).len()
    }
}

/// This file's statements by name, for `courier._explain` (bin/check-statements keeps it complete).
pub(super) static STATEMENTS: &[(&str, &Statement)] = &[
    ("INSERT_MESSAGE", &INSERT_MESSAGE),
    ("INSERT_MESSAGES", &INSERT_MESSAGES),
    ("INSERT_KEYED_MESSAGE", &INSERT_KEYED_MESSAGE),
    ("CLAIM_EXPIRED_KEY", &CLAIM_EXPIRED_KEY),
    ("CLAIM_KEY", &CLAIM_KEY),
    ("KEY_OWNER", &KEY_OWNER),
    ("INSERT_MESSAGE_WITH_ID", &INSERT_MESSAGE_WITH_ID),
    ("SWEEP_KEYS", &SWEEP_KEYS),
];
