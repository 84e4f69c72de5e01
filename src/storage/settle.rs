//! Settling a lease: ack, nack (release for a retry, or dead-letter), extend, and the sweep of
//! completed messages past their retention.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::queues::{DeadLetterQueue, dead_letter_queue, retry_policy};
use super::{Required, Rows, Statement, Store, columns, timestamp_arg};
use courier_core::retry::RetryPolicy;

/// The deleted message, copied to courier.completed when its queue keeps completed messages.
/// Used by the acks of a database in which some queue has a retention.
macro_rules! keep_completed {
    () => {
        "kept AS (INSERT INTO courier.completed (id, queue_id, attempt, priority, enqueued_at, completed_at, \
                                                 headers, payload) \
                  SELECT d.id, d.queue_id, d.attempt, d.priority, d.enqueued_at, $3, d.headers, d.payload \
                  FROM d JOIN courier.queue q ON q.queue_id = d.queue_id WHERE q.retention IS NOT NULL)"
    };
}

/// What an acked message's group must hear about: its key; its number if it was its group's head
/// (the next message becomes the head); the queue it came from if it is a dead letter that moved
/// out of its group (which it may block, 'block').
macro_rules! group_columns {
    () => {
        "m.group_key, CASE WHEN m.head_at IS NOT NULL THEN m.group_seq END AS head_seq, \
         CASE WHEN m.group_seq IS NULL AND m.dead_at IS NOT NULL THEN m.origin_queue_id END AS blocks"
    };
}

/// A receipt of a message in a group's sequence works only while its lease holds the group: the
/// message is the group's head, or the head carries the same lease token (the lease took both).
/// Once another lease took the group from its head (after this lease ended), the messages this
/// lease took after the head are fenced without a write: their receipts stop working here.
macro_rules! holds_group {
    () => {
        "(m.group_seq IS NULL OR m.head_at IS NOT NULL \
          OR (SELECT h.lease_token FROM courier.message h \
              WHERE h.queue_id = m.queue_id AND h.group_key = m.group_key AND h.group_seq IS NOT NULL \
              ORDER BY h.group_seq LIMIT 1) = m.lease_token)"
    };
}

/// The columns of the deleted row that keep_completed!() copies.
macro_rules! completed_columns {
    () => {
        "m.attempt, m.priority, m.enqueued_at, m.headers, m.payload"
    };
}

// Acked messages of queues with a retention go to courier.completed in the same statement.
static ACK: Statement = Statement {
    sql: concat!(
        "WITH d AS (DELETE FROM courier.message m WHERE m.id = $1 AND m.lease_token = $2 AND ",
        holds_group!(),
        " RETURNING m.id, m.queue_id, ",
        group_columns!(),
        ", ",
        completed_columns!(),
        "), ",
        keep_completed!(),
        " SELECT d.queue_id, d.group_key, d.head_seq, d.blocks FROM d"
    ),
    args: &[pg_sys::INT8OID, pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
};

// While no queue keeps completed messages, an ack is just this.
static ACK_PLAIN: Statement = Statement {
    sql: concat!(
        "DELETE FROM courier.message m WHERE m.id = $1 AND m.lease_token = $2 AND ",
        holds_group!(),
        " RETURNING m.queue_id, ",
        group_columns!()
    ),
    args: &[pg_sys::INT8OID, pg_sys::INT8OID],
};

columns!(AckColumn { QueueId, GroupKey, HeadSeq, Blocks });

static ACK_MANY_PLAIN: Statement = Statement {
    sql: concat!(
        "DELETE FROM courier.message m \
         WHERE m.id = ANY ($1) \
           AND m.lease_token = $2 AND ",
        holds_group!(),
        " RETURNING m.id, m.lease_token, m.queue_id, ",
        group_columns!()
    ),
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT8OID],
};

// Receipts come grouped by lease token (see receipt::by_token): message ids $1, token $2. A message
// is found by its id (= ANY: an index plan for any batch size) and acked if the token is current.
static ACK_MANY: Statement = Statement {
    sql: concat!(
        "WITH d AS (DELETE FROM courier.message m \
                    WHERE m.id = ANY ($1) \
                      AND m.lease_token = $2 AND ",
        holds_group!(),
        " RETURNING m.id, m.lease_token, m.queue_id, ",
        group_columns!(),
        ", ",
        completed_columns!(),
        "), ",
        keep_completed!(),
        " SELECT d.id, d.lease_token, d.queue_id, d.group_key, d.head_seq, d.blocks FROM d"
    ),
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
};

columns!(AckedColumn { Id, Token, QueueId, GroupKey, HeadSeq, Blocks });

// Locks the messages whose receipts still hold their lease, with what a nack needs to decide
// between retrying and dead-lettering. FOR UPDATE waits for a concurrent lease of the same
// message and then re-checks the token, so a racing re-lease makes the receipt fail.
static LOCK_FOR_NACK: Statement = Statement {
    sql: concat!(
        "SELECT m.id, m.lease_token, m.attempt, m.queue_id, q.max_attempts, q.retry_base, q.retry_max, \
                q.retry_jitter, d.queue_id, d.name, q.name, q.notify, m.group_key, m.group_seq, \
                m.head_at IS NOT NULL \
         FROM courier.message m \
         JOIN courier.queue q ON q.queue_id = m.queue_id \
         LEFT JOIN courier.queue d ON d.queue_id = q.dead_letter_queue_id \
         WHERE m.id = ANY ($1) \
           AND m.lease_token = $2 AND ",
        holds_group!(),
        " FOR UPDATE OF m"
    ),
    args: &[pg_sys::INT8ARRAYOID, pg_sys::INT8OID],
};

columns!(NackColumn {
    Id,
    Token,
    Attempt,
    QueueId,
    MaxAttempts,
    RetryBase,
    RetryMax,
    RetryJitter,
    DeadLetterQueueId,
    DeadLetterQueueName,
    QueueName,
    Notify,
    GroupKey,
    GroupSeq,
    IsHead,
});

// Makes locked messages ($1) leasable again at their times ($2, same order), never earlier in
// the range than they were (which scan floors rely on, see floor.rs).
// A message in a group keeps its place (its visible_at is the group's PARKED value) and gets its
// time as group_ready_at; a group's head stays the head, leasable at that time.
static RELEASE: Statement = Statement {
    sql: "UPDATE courier.message m SET visible_at = GREATEST(m.visible_at, \
                 ($2::pg_catalog.timestamptz[])[pg_catalog.array_position($1, m.id)]), \
                 group_ready_at = CASE WHEN m.group_seq IS NULL THEN m.group_ready_at \
                     ELSE ($2::pg_catalog.timestamptz[])[pg_catalog.array_position($1, m.id)] END, \
                 head_at = CASE WHEN m.head_at IS NULL THEN NULL \
                     ELSE ($2::pg_catalog.timestamptz[])[pg_catalog.array_position($1, m.id)] END, \
                 lease_token = NULL, leased_at = NULL, leased_until = NULL, last_error = COALESCE($3, m.last_error) \
          WHERE m.id = ANY ($1)",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::TIMESTAMPTZARRAYOID, pg_sys::TEXTOID],
};

// Moves messages to a dead-letter queue ($2), where they are ready at once with attempt 0 and
// their origin recorded, or, without one, parks them as dead ('infinity' is never <= now). A dead
// letter is no group's head; it leaves its group's sequence, except one parked in place under
// 'block' ($5), which stays there and blocks its group; a moved one keeps its group key. Returns
// what each message's group needs to know: its key, its number before and whether it was the
// head.
//
// What the server-log line of a dead letter says (events.rs): its deliveries (kept as
// origin_attempts when it moved), its last error, and its payload when $6 asks for it.
macro_rules! dead_letter_log_columns {
    () => {
        "COALESCE(m.origin_attempts, m.attempt), m.last_error, \
         CASE WHEN $6 THEN m.payload::pg_catalog.text END"
    };
}

static DEAD_LETTER: Statement = Statement {
    sql: concat!(
        "UPDATE courier.message m SET \
              queue_id = COALESCE($2, m.queue_id), \
              origin_queue_id = CASE WHEN $2 IS NULL THEN NULL ELSE m.queue_id END, \
              origin_attempts = CASE WHEN $2 IS NULL THEN NULL ELSE m.attempt END, \
              attempt = CASE WHEN $2 IS NULL THEN m.attempt ELSE 0 END, \
              visible_at = CASE WHEN $2 IS NULL THEN 'infinity'::pg_catalog.timestamptz ELSE $3 END, \
              group_seq = CASE WHEN $5 AND $2 IS NULL THEN m.group_seq END, head_at = NULL, \
              dead_at = $3, lease_token = NULL, leased_at = NULL, leased_until = NULL, \
              last_error = COALESCE($4, m.last_error) \
          FROM (SELECT o.id, o.group_seq, o.head_at IS NOT NULL AS head FROM courier.message o \
                WHERE o.id = ANY ($1)) was \
          WHERE m.id = was.id \
          RETURNING m.id, m.group_key, was.group_seq, was.head, ",
        dead_letter_log_columns!()
    ),
    args: &[
        pg_sys::INT8ARRAYOID,
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::TEXTOID,
        pg_sys::BOOLOID,
        pg_sys::BOOLOID,
    ],
};

columns!(DeadColumn { Id, GroupKey, WasSeq, WasHead, Attempts, LastError, Payload });

// Also says whether the lease now ends earlier than it did: that can put the message before its
// level's ready floor (floor.rs). The locking subquery reads the lease end being replaced.
static EXTEND: Statement = Statement {
    sql: concat!(
        "UPDATE courier.message m SET leased_until = $3 \
         FROM (SELECT o.leased_until FROM courier.message o WHERE o.id = $1 AND o.lease_token = $2 \
               FOR UPDATE) AS was \
         WHERE m.id = $1 AND m.lease_token = $2 AND ",
        holds_group!(),
        " RETURNING m.queue_id, $3 < was.leased_until"
    ),
    args: &[pg_sys::INT8OID, pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
};

columns!(ExtendColumn { QueueId, Shortened });

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

/// What an ack means for a message's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupChange {
    /// The head of group `key` of `queue` (number `seq`) left: the next message becomes the head.
    HeadLeft { queue: i32, key: String, seq: i64 },
    /// A dead letter that moved out of group `key` of `queue` is gone: it may have blocked it.
    BlockerGone { queue: i32, key: String },
}

/// A message an ack deleted.
pub struct Acked {
    pub id: i64,
    pub token: i64,
    pub queue_id: i32,
    pub group: Option<GroupChange>,
}

/// What an acked row's group columns mean.
fn group_change(
    rows: &Rows,
    i: usize,
    queue: i32,
    key: impl super::Column,
    head_seq: impl super::Column,
    blocks: impl super::Column,
) -> Option<GroupChange> {
    let key = rows.get::<String>(i, key)?;
    if let Some(seq) = rows.get::<i64>(i, head_seq) {
        return Some(GroupChange::HeadLeft { queue, key, seq });
    }
    rows.get::<i32>(i, blocks).map(|queue| GroupChange::BlockerGone { queue, key })
}

/// A message a dead-lettering moved or parked: its group key, its number before (if it was in
/// its group's sequence) and whether it was its group's head.
pub struct DeadLettered {
    pub id: i64,
    pub group: Option<(String, Option<i64>, bool)>,
    /// Deliveries it had, its last error and (when courier.log_events asks) its payload, for
    /// its log line.
    pub attempts: i32,
    pub last_error: Option<String>,
    pub payload: Option<String>,
}

/// A message locked for a nack.
pub struct Nackable {
    pub id: i64,
    pub token: i64,
    pub attempt: i32,
    pub queue_id: i32,
    pub max_attempts: i32,
    pub retry: RetryPolicy,
    pub dead_letter_queue: Option<DeadLetterQueue>,
    pub queue_name: String,
    pub notify: bool,
    /// Its group, its number in it and whether it is the head, while it is in its group's
    /// sequence.
    pub group: Option<(String, i64, bool)>,
}

/// What an extend did to a lease that its receipt still held.
pub struct Extended {
    pub queue_id: i32,
    /// The lease now ends earlier than it did.
    pub shortened: bool,
}

impl Store<'_> {
    /// Acks one receipt; returns the message's queue if the receipt still held its lease, and
    /// what that means for the message's group. `retention` says whether any queue keeps
    /// completed messages.
    pub fn ack(
        &self,
        id: i64,
        token: i64,
        now: pg_sys::TimestampTz,
        retention: bool,
    ) -> Option<(i32, Option<GroupChange>)> {
        use AckColumn as C;
        let rows = if retention {
            self.run(&ACK, &[id.into(), token.into(), timestamp_arg(now)])
        } else {
            self.run(&ACK_PLAIN, &[id.into(), token.into()])
        };
        (!rows.is_empty()).then(|| {
            let queue = rows.get::<i32>(0, C::QueueId).required("queue_id");
            (queue, group_change(&rows, 0, queue, C::GroupKey, C::HeadSeq, C::Blocks))
        })
    }

    /// Acks every receipt of the set that still holds its lease.
    pub fn ack_many(&self, receipts: ReceiptSet, now: pg_sys::TimestampTz, retention: bool) -> Vec<Acked> {
        use AckedColumn as C;
        let rows = if retention {
            self.run(&ACK_MANY, &[receipts.ids.into(), receipts.token.into(), timestamp_arg(now)])
        } else {
            self.run(&ACK_MANY_PLAIN, &[receipts.ids.into(), receipts.token.into()])
        };
        (0..rows.len())
            .map(|i| {
                let queue = rows.get::<i32>(i, C::QueueId).required("queue_id");
                Acked {
                    id: rows.get::<i64>(i, C::Id).required("id"),
                    token: rows.get::<i64>(i, C::Token).required("token"),
                    queue_id: queue,
                    group: group_change(&rows, i, queue, C::GroupKey, C::HeadSeq, C::Blocks),
                }
            })
            .collect()
    }

    pub fn lock_for_nack(&self, receipts: ReceiptSet) -> Vec<Nackable> {
        use NackColumn as C;
        let rows = self.run(&LOCK_FOR_NACK, &[receipts.ids.into(), receipts.token.into()]);
        (0..rows.len())
            .map(|i| Nackable {
                id: rows.get::<i64>(i, C::Id).required("id"),
                token: rows.get::<i64>(i, C::Token).required("token"),
                attempt: rows.get::<i32>(i, C::Attempt).required("attempt"),
                queue_id: rows.get::<i32>(i, C::QueueId).required("queue_id"),
                max_attempts: rows.get::<i32>(i, C::MaxAttempts).required("max_attempts"),
                retry: retry_policy(&rows, i, C::RetryBase, C::RetryMax, C::RetryJitter),
                dead_letter_queue: dead_letter_queue(&rows, i, C::DeadLetterQueueId, C::DeadLetterQueueName),
                queue_name: rows.get::<String>(i, C::QueueName).required("name"),
                notify: rows.get::<bool>(i, C::Notify).required("notify"),
                group: rows
                    .get::<String>(i, C::GroupKey)
                    .zip(rows.get::<i64>(i, C::GroupSeq))
                    .map(|(k, seq)| (k, seq, rows.get::<bool>(i, C::IsHead).unwrap_or(false))),
            })
            .collect()
    }

    /// Makes locked messages leasable again at the given times.
    pub fn release(&self, ids: Vec<i64>, at: Vec<pg_sys::TimestampTz>, error: Option<&str>) {
        let at: Vec<TimestampWithTimeZone> =
            at.into_iter().map(|t| TimestampWithTimeZone::try_from(t).expect("finite")).collect();
        self.run(&RELEASE, &[ids.into(), at.into(), error.into()]);
    }

    /// Dead-letters locked messages into `dead_letter_queue` (or parks them as dead; in place in
    /// their group under `block`).
    pub fn dead_letter(
        &self,
        ids: Vec<i64>,
        dead_letter_queue: Option<i32>,
        now: pg_sys::TimestampTz,
        error: Option<&str>,
        block: bool,
    ) -> Vec<DeadLettered> {
        use DeadColumn as C;
        let payloads = crate::settings::log_events().payloads();
        let args = [
            ids.into(),
            dead_letter_queue.into(),
            timestamp_arg(now),
            error.into(),
            block.into(),
            payloads.into(),
        ];
        let rows = self.run(&DEAD_LETTER, &args);
        (0..rows.len())
            .map(|i| DeadLettered {
                id: rows.get::<i64>(i, C::Id).required("id"),
                group: rows.get::<String>(i, C::GroupKey).map(|k| {
                    (k, rows.get::<i64>(i, C::WasSeq), rows.get::<bool>(i, C::WasHead).unwrap_or(false))
                }),
                attempts: rows.get::<i32>(i, C::Attempts).required("attempts"),
                last_error: rows.get::<String>(i, C::LastError),
                payload: rows.get::<String>(i, C::Payload),
            })
            .collect()
    }

    /// Moves the lease's expiry, if the receipt still held the lease.
    pub fn extend(&self, id: i64, token: i64, expires_at: pg_sys::TimestampTz) -> Option<Extended> {
        use ExtendColumn as C;
        let rows = self.run(&EXTEND, &[id.into(), token.into(), timestamp_arg(expires_at)]);
        (!rows.is_empty()).then(|| Extended {
            queue_id: rows.get::<i32>(0, C::QueueId).required("queue_id"),
            shortened: rows.get::<bool>(0, C::Shortened).unwrap_or(true),
        })
    }

    pub fn sweep_completed(&self, now: pg_sys::TimestampTz, limit: i32) -> usize {
        self.run(&SWEEP_COMPLETED, &[timestamp_arg(now), limit.into()]).len()
    }
}

/// This file's statements by name, for `courier._explain` (bin/check-statements keeps it complete).
pub(super) static STATEMENTS: &[(&str, &Statement)] = &[
    ("ACK", &ACK),
    ("ACK_PLAIN", &ACK_PLAIN),
    ("ACK_MANY_PLAIN", &ACK_MANY_PLAIN),
    ("ACK_MANY", &ACK_MANY),
    ("LOCK_FOR_NACK", &LOCK_FOR_NACK),
    ("RELEASE", &RELEASE),
    ("DEAD_LETTER", &DEAD_LETTER),
    ("EXTEND", &EXTEND),
    ("SWEEP_COMPLETED", &SWEEP_COMPLETED),
];

/// Texts of this file's statements for 0.1.0's schema (see mod.rs's Schema), where they differ.
pub(super) static LEGACY: &[(&Statement, &str)] = &[
    (
        &EXTEND,
        "UPDATE courier.message m SET leased_until = $3 \
         FROM (SELECT o.leased_until FROM courier.message o WHERE o.id = $1 AND o.lease_token = $2 \
               FOR UPDATE) AS was \
         WHERE m.id = $1 AND m.lease_token = $2 \
         RETURNING m.queue_id, $3 < was.leased_until",
    ),
    (
        &ACK,
        concat!(
            "WITH d AS (DELETE FROM courier.message m WHERE m.id = $1 AND m.lease_token = $2 \
                        RETURNING m.id, m.queue_id, ",
            completed_columns!(),
            "), ",
            keep_completed!(),
            " SELECT d.queue_id, NULL::pg_catalog.text, NULL::pg_catalog.int8, NULL::pg_catalog.int4 FROM d"
        ),
    ),
    (
        &ACK_PLAIN,
        "DELETE FROM courier.message m WHERE m.id = $1 AND m.lease_token = $2 \
         RETURNING m.queue_id, NULL::pg_catalog.text, NULL::pg_catalog.int8, NULL::pg_catalog.int4",
    ),
    (
        &ACK_MANY_PLAIN,
        "DELETE FROM courier.message m WHERE m.id = ANY ($1) AND m.lease_token = $2 \
         RETURNING m.id, m.lease_token, m.queue_id, NULL::pg_catalog.text, NULL::pg_catalog.int8, NULL::pg_catalog.int4",
    ),
    (
        &ACK_MANY,
        concat!(
            "WITH d AS (DELETE FROM courier.message m WHERE m.id = ANY ($1) AND m.lease_token = $2 \
                        RETURNING m.id, m.lease_token, m.queue_id, ",
            completed_columns!(),
            "), ",
            keep_completed!(),
            " SELECT d.id, d.lease_token, d.queue_id, NULL::pg_catalog.text, NULL::pg_catalog.int8, NULL::pg_catalog.int4 FROM d"
        ),
    ),
    (
        &LOCK_FOR_NACK,
        "SELECT m.id, m.lease_token, m.attempt, m.queue_id, q.max_attempts, q.retry_base, q.retry_max, \
                q.retry_jitter, d.queue_id, d.name, q.name, q.notify, NULL::pg_catalog.text, NULL::pg_catalog.int8, \
                false \
         FROM courier.message m \
         JOIN courier.queue q ON q.queue_id = m.queue_id \
         LEFT JOIN courier.queue d ON d.queue_id = q.dead_letter_queue_id \
         WHERE m.id = ANY ($1) \
           AND m.lease_token = $2 \
         FOR UPDATE OF m",
    ),
    (
        &RELEASE,
        "UPDATE courier.message m SET visible_at = GREATEST(m.visible_at, \
                ($2::pg_catalog.timestamptz[])[pg_catalog.array_position($1, m.id)]), \
                lease_token = NULL, leased_at = NULL, leased_until = NULL, last_error = COALESCE($3, m.last_error) \
         WHERE m.id = ANY ($1)",
    ),
    (
        &DEAD_LETTER,
        concat!(
            "UPDATE courier.message m SET \
             queue_id = COALESCE($2, m.queue_id), \
             origin_queue_id = CASE WHEN $2 IS NULL THEN NULL ELSE m.queue_id END, \
             origin_attempts = CASE WHEN $2 IS NULL THEN NULL ELSE m.attempt END, \
             attempt = CASE WHEN $2 IS NULL THEN m.attempt ELSE 0 END, \
             visible_at = CASE WHEN $2 IS NULL THEN 'infinity'::pg_catalog.timestamptz ELSE $3 END, \
             dead_at = $3, lease_token = NULL, leased_at = NULL, leased_until = NULL, \
             last_error = COALESCE($4, m.last_error) \
         WHERE m.id = ANY ($1) \
         RETURNING m.id, NULL::pg_catalog.text, NULL::pg_catalog.int8, false, ",
            dead_letter_log_columns!()
        ),
    ),
];
