//! Message groups: numbering a group's messages in commit order, finding the heads a lease may
//! take, and handing the head on when it leaves.
//!
//! A message in a group's sequence is parked (visible_at = PARKED) out of every ungrouped range.
//! One message per group, its head, has head_at set: it sits in message_head_idx, the groups'
//! ready range, where leases find it as they find ungrouped messages in message_ready_idx. While
//! the head is leased it stays there in flight, and nothing else of its group is leasable: that is
//! the group's hold, and it ends when the head's lease does. When the head leaves (acked, or dead
//! under 'skip'), the next message of the sequence becomes the head ([`Store::promote_after`]).
//!
//! courier.message_group holds a group's counter. Producers lock it until they commit, which
//! numbers a group's messages in commit order; consumers never update it (so its updates stay
//! HOT and it does not bloat under a lease and ack per message): they only lock it when a group
//! seems to have emptied, to wait for producers in flight before deleting it.
//!
//! Lock order. Everything that changes a grouped message locks the message first and the group's
//! row after it; a lease locks only messages, and never waits (SKIP LOCKED): a message another
//! transaction is changing is left for a later lease. Producers lock rows of several groups (a
//! batch) in key order.

use std::collections::HashMap;

use courier_core::groups::PrefixRow;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;

use super::{Only, Position, Required, Statement, Store, columns, timestamp_arg};
use crate::datum::{Jsonb, JsonbArray};

/// The visible_at of a message in a group's sequence: later than any time an ungrouped lease,
/// a due time or a gauge reads, earlier than 'infinity', where dead letters are parked.
macro_rules! parked {
    () => {
        "'9999-12-31 00:00:00+00'::pg_catalog.timestamptz"
    };
}
pub(super) use parked;

// One message into a group, numbered after the group's last: the group's row is created or its
// counter advanced, which locks it until this transaction ends. A group whose row is new had no
// messages: the message is its head, leasable when it is ready. The placement ($1..$6) is
// messages.rs's, $7 the group key.
macro_rules! insert_grouped {
    ($id:literal) => {
        concat!(
            "WITH i AS MATERIALIZED (SELECT ",
            $id,
            " AS id), \
             g AS (INSERT INTO courier.message_group AS g (queue_id, group_key, next_seq) \
                   SELECT $1, $7, 1 FROM i \
                   ON CONFLICT (queue_id, group_key) DO UPDATE SET next_seq = g.next_seq + 1 \
                   RETURNING g.next_seq - 1 AS seq) \
             INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, priority, headers, payload, \
                                          group_key, group_seq, group_ready_at, head_at) \
             SELECT i.id, $1, ",
            parked!(),
            ", $3, $4, $5, $6, $7, g.seq, $2, CASE WHEN g.seq = 0 THEN $2 END FROM i, g RETURNING id"
        )
    };
}

const GROUPED_ARGS: [pg_sys::Oid; 7] = [
    pg_sys::INT4OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT2OID,
    pg_sys::JSONBOID,
    pg_sys::JSONBOID,
    pg_sys::TEXTOID,
];

static INSERT_GROUPED: Statement =
    Statement { sql: insert_grouped!("pg_catalog.nextval('courier.message_id_seq')"), args: &GROUPED_ARGS };

// The same with the id a dedup key claimed ($8).
static INSERT_GROUPED_WITH_ID: Statement = Statement {
    sql: insert_grouped!("$8::pg_catalog.int8"),
    args: &super::concat_args::<7, 1, 8>(GROUPED_ARGS, [pg_sys::INT8OID]),
};

// A batch's groups, in key order (so two batches lock them in the same order): each group's
// counter advances by its number of messages ($3), a row created for a new group. Returns the
// counter after.
static RESERVE: Statement = Statement {
    sql: "INSERT INTO courier.message_group AS g (queue_id, group_key, next_seq) \
          SELECT $1, u.k, u.n \
          FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.int8[])) AS u(k, n) \
          ORDER BY u.k \
          ON CONFLICT (queue_id, group_key) DO UPDATE SET next_seq = g.next_seq + excluded.next_seq \
          RETURNING g.group_key, g.next_seq",
    args: &[pg_sys::INT4OID, pg_sys::TEXTARRAYOID, pg_sys::INT8ARRAYOID],
};

columns!(ReserveColumn { GroupKey, NextSeq });

// A batch's messages, grouped ($7 keys, $8 numbers, NULL for ungrouped ones) or not, in input
// order; a new group's first message (number 0) is its head. The placement is messages.rs's.
static INSERT_BATCH: Statement = Statement {
    sql: concat!(
        "INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, priority, headers, payload, \
                                      group_key, group_seq, group_ready_at, head_at) \
         SELECT pg_catalog.nextval('courier.message_id_seq'), $1, \
                CASE WHEN u.k IS NULL THEN $2 ELSE ",
        parked!(),
        " END, $3, $4, u.h, u.p, u.k, u.s, CASE WHEN u.k IS NULL THEN NULL ELSE $2 END, \
                CASE WHEN u.s = 0 THEN $2 END \
         FROM ROWS FROM (pg_catalog.unnest($5::pg_catalog.jsonb[]), pg_catalog.unnest($6::pg_catalog.jsonb[]), \
                         pg_catalog.unnest($7::pg_catalog.text[]), pg_catalog.unnest($8::pg_catalog.int8[])) \
              WITH ORDINALITY AS u(p, h, k, s, n) \
         ORDER BY u.n RETURNING id"
    ),
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT2OID,
        pg_sys::JSONBARRAYOID,
        pg_sys::JSONBARRAYOID,
        pg_sys::TEXTARRAYOID,
        pg_sys::INT8ARRAYOID,
    ],
};

// Rows a keyed batch created for groups that got no message (every one was a duplicate).
static DELETE_UNUSED: Statement = Statement {
    sql: "DELETE FROM courier.message_group WHERE queue_id = $1 AND group_key = ANY ($2) AND next_seq = 0",
    args: &[pg_sys::INT4OID, pg_sys::TEXTARRAYOID],
};

// Locks a group's row (waiting for producers in flight), with the dead letter that blocks it.
static LOCK_GROUP: Statement = Statement {
    sql: "SELECT g.blocked_by, g.blocked_seq FROM courier.message_group g \
          WHERE g.queue_id = $1 AND g.group_key = $2 FOR UPDATE",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID],
};

columns!(LockColumn { BlockedBy, BlockedSeq });

// A locked group's first message, and whether the dead letter that blocked it ($3) still does.
// Runs after LOCK_GROUP, so its snapshot shows what the producers before it committed.
static HEAD_STATE: Statement = Statement {
    sql: "SELECT COALESCE((SELECT d.dead_at IS NOT NULL FROM courier.message d WHERE d.id = $3), false), \
                 f.id, f.dead_at IS NOT NULL, f.head_at IS NOT NULL \
          FROM (SELECT 1) one LEFT JOIN LATERAL ( \
              SELECT m.id, m.dead_at, m.head_at FROM courier.message m \
              WHERE m.queue_id = $1 AND m.group_key = $2 AND m.group_seq IS NOT NULL \
              ORDER BY m.group_seq LIMIT 1) f ON true",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::INT8OID],
};

columns!(HeadStateColumn { StillBlocked, FirstId, FirstDead, FirstIsHead });

// The head of a group left (from number $3): the next message becomes the head, unless it is a
// dead letter (blocking its group in place) or a dead letter that moved away blocks the group.
// Its head_at: its own ready time ('oldest'), or no earlier than now ($5) ('fair', $4: the group
// goes behind the groups that were waiting). Returns the new head's head_at; no row when no
// message became the head (the caller then looks closer, groups.rs's ensure_head).
static PROMOTE: Statement = Statement {
    sql: "UPDATE courier.message m \
          SET head_at = CASE WHEN $4 THEN GREATEST(m.group_ready_at, $5) ELSE m.group_ready_at END \
          WHERE m.id = (SELECT x.id FROM courier.message x \
                        WHERE x.queue_id = $1 AND x.group_key = $2 AND x.group_seq > $3 \
                        ORDER BY x.group_seq LIMIT 1) \
            AND m.dead_at IS NULL \
            AND NOT EXISTS (SELECT FROM courier.message_group g \
                            WHERE g.queue_id = $1 AND g.group_key = $2 AND g.blocked_by IS NOT NULL) \
          RETURNING m.head_at",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::INT8OID, pg_sys::BOOLOID, pg_sys::TIMESTAMPTZOID],
};

// Makes a message its group's head.
static SET_HEAD: Statement = Statement {
    sql: "UPDATE courier.message m \
          SET head_at = CASE WHEN $2 THEN GREATEST(m.group_ready_at, $3) ELSE m.group_ready_at END \
          WHERE m.id = $1 RETURNING m.head_at",
    args: &[pg_sys::INT8OID, pg_sys::BOOLOID, pg_sys::TIMESTAMPTZOID],
};

// A dead letter that moved to a dead-letter queue blocks its group ('block'): the group keeps its
// id, and the number it goes back to when redriven. The first one a group gets blocks it. Like
// every statement that reads a group's row to write it, it runs with the row locked already
// (LOCK_GROUP): producers advance the counter in place (storage/direct.rs).
static SET_BLOCKED: Statement = Statement {
    sql: "UPDATE courier.message_group SET blocked_by = $3, blocked_seq = $4 \
          WHERE queue_id = $1 AND group_key = $2 AND blocked_by IS NULL",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::INT8OID, pg_sys::INT8OID],
};

static CLEAR_BLOCKED: Statement = Statement {
    sql: "UPDATE courier.message_group SET blocked_by = NULL, blocked_seq = NULL \
          WHERE queue_id = $1 AND group_key = $2",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID],
};

static DELETE_GROUP: Statement = Statement {
    sql: "DELETE FROM courier.message_group WHERE queue_id = $1 AND group_key = $2",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID],
};

// The distinct priority levels of queue $1, from the top (lease.rs's priority_levels!).
macro_rules! levels {
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

// A grouped queue's lease candidates, locked without waiting: up to $3 ungrouped ready messages
// (as storage/lease.rs's LEASE picks them: level $4 after ($5, $6), its floor or the scan hint)
// and up to $3 group heads that are leasable now (level $4 after ($7, $8), the heads' scan hint),
// each in its priority's order. The lease weighs them against each other before it leases any.
static PICK: Statement = Statement {
    sql: concat!(
        levels!(),
        ", u AS MATERIALIZED ( \
              SELECT c.* FROM levels l CROSS JOIN LATERAL ( \
                  SELECT m.id, m.visible_at AS since, m.attempt, m.lease_token, m.priority, \
                         NULL::pg_catalog.text AS group_key, NULL::pg_catalog.int8 AS group_seq, \
                         m.xmin::pg_catalog.text::pg_catalog.int8 AS version \
                  FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at <= $2 \
                    AND (m.visible_at, m.id) > (CASE WHEN l.p = $4 THEN $5 ELSE '-infinity'::pg_catalog.timestamptz END, \
                                                CASE WHEN l.p = $4 THEN $6 ELSE '-9223372036854775808'::pg_catalog.int8 END) \
                    AND (m.leased_until IS NULL OR m.leased_until <= $2) \
                  ORDER BY m.visible_at, m.id LIMIT $3 \
                  FOR UPDATE SKIP LOCKED) c \
              WHERE l.p IS NOT NULL LIMIT $3), \
          h AS MATERIALIZED ( \
              SELECT c.* FROM levels l CROSS JOIN LATERAL ( \
                  SELECT m.id, m.head_at AS since, m.attempt, m.lease_token, m.priority, m.group_key, m.group_seq, \
                         m.xmin::pg_catalog.text::pg_catalog.int8 AS version \
                  FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.priority = l.p AND m.head_at <= $2 \
                    AND (m.head_at, m.id) > (CASE WHEN l.p = $4 THEN $7 ELSE '-infinity'::pg_catalog.timestamptz END, \
                                             CASE WHEN l.p = $4 THEN $8 ELSE '-9223372036854775808'::pg_catalog.int8 END) \
                    AND (m.leased_until IS NULL OR m.leased_until <= $2) \
                  ORDER BY m.head_at, m.id LIMIT $3 \
                  FOR UPDATE SKIP LOCKED) c \
              WHERE l.p IS NOT NULL LIMIT $3) \
         SELECT * FROM u UNION ALL SELECT * FROM h"
    ),
    args: &PICK_ARGS,
};

const PICK_ARGS: [pg_sys::Oid; 8] = [
    pg_sys::INT4OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT4OID,
    pg_sys::INT2OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT8OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT8OID,
];

// PICK for a queue that has only ever used one priority ($4): the two range scans, without the
// level walk.
static PICK_ONE_LEVEL: Statement = Statement {
    sql: "WITH u AS MATERIALIZED ( \
              SELECT m.id, m.visible_at AS since, m.attempt, m.lease_token, m.priority, \
                     NULL::pg_catalog.text AS group_key, NULL::pg_catalog.int8 AS group_seq, \
                     m.xmin::pg_catalog.text::pg_catalog.int8 AS version \
              FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = $4 AND m.visible_at <= $2 AND (m.visible_at, m.id) > ($5, $6) \
                AND (m.leased_until IS NULL OR m.leased_until <= $2) \
              ORDER BY m.visible_at, m.id LIMIT $3 \
              FOR UPDATE SKIP LOCKED), \
          h AS MATERIALIZED ( \
              SELECT m.id, m.head_at AS since, m.attempt, m.lease_token, m.priority, m.group_key, m.group_seq, \
                         m.xmin::pg_catalog.text::pg_catalog.int8 AS version \
              FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = $4 AND m.head_at <= $2 AND (m.head_at, m.id) > ($7, $8) \
                AND (m.leased_until IS NULL OR m.leased_until <= $2) \
              ORDER BY m.head_at, m.id LIMIT $3 \
              FOR UPDATE SKIP LOCKED) \
          SELECT * FROM u UNION ALL SELECT * FROM h",
    args: &PICK_ARGS,
};

// PICK_ONE_LEVEL's heads alone, for a lease of one message per group from a queue level that has
// no ungrouped message ready (the first row says whether it has: `found`, with no head locked).
// The heads are locked in their range's order until there are $3, so the lease takes every row
// it locks and needs no subtransaction to give locks back (storage/lease.rs's lease_grouped). $9:
// heads this transaction locked already (its own locks do not make FOR UPDATE skip them).
static PICK_HEADS: Statement = Statement {
    sql: "WITH u AS MATERIALIZED ( \
              SELECT ( \
                  SELECT m.id FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.priority = $4 AND m.visible_at <= $2 \
                    AND (m.visible_at, m.id) > ($5, $6) \
                    AND (m.leased_until IS NULL OR m.leased_until <= $2) \
                  ORDER BY m.visible_at, m.id LIMIT 1) IS NOT NULL AS found) \
          SELECT h.*, u.found FROM u LEFT JOIN LATERAL ( \
              SELECT m.id, m.head_at AS since, m.attempt, m.lease_token, m.priority, m.group_key, m.group_seq, \
                     m.xmin::pg_catalog.text::pg_catalog.int8 AS version \
              FROM courier.message m \
              WHERE NOT u.found AND m.queue_id = $1 AND m.priority = $4 AND m.head_at <= $2 \
                AND (m.head_at, m.id) > ($7, $8) AND m.id <> ALL ($9) \
                AND (m.leased_until IS NULL OR m.leased_until <= $2) \
              ORDER BY m.head_at, m.id LIMIT $3 \
              FOR UPDATE SKIP LOCKED) h ON true",
    args: &super::concat_args::<8, 1, 9>(PICK_ARGS, [pg_sys::INT8ARRAYOID]),
};

columns!(PickColumn { Id, Since, Attempt, LeaseToken, Priority, GroupKey, GroupSeq, Version, Found });

// The messages after heads ($2 keys, $3 the heads' numbers), at most $4 per group, and which of
// them this transaction could lock without waiting. Read before they are locked: a message
// another transaction is changing comes back unlocked rather than being skipped over, so what a
// lease takes is always consecutive (courier_core::groups::plan decides).
static FOLLOWERS: Statement = Statement {
    sql: "WITH f AS MATERIALIZED ( \
              SELECT u.k, x.id, x.group_seq, x.group_ready_at, x.attempt, x.lease_token, x.dead, x.version \
              FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.int8[]), \
                              pg_catalog.unnest($4::pg_catalog.int4[])) AS u(k, s, n) \
              CROSS JOIN LATERAL ( \
                  SELECT m.id, m.group_seq, m.group_ready_at, m.attempt, m.lease_token, m.dead_at IS NOT NULL AS dead, \
                         m.xmin::pg_catalog.text::pg_catalog.int8 AS version \
                  FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.group_key = u.k AND m.group_seq > u.s \
                  ORDER BY m.group_seq LIMIT u.n) x), \
          l AS MATERIALIZED ( \
              SELECT m.id FROM courier.message m WHERE m.id = ANY (ARRAY(SELECT f.id FROM f)) \
              FOR UPDATE SKIP LOCKED) \
          SELECT f.k, f.id, f.group_seq, f.group_ready_at, f.attempt, f.lease_token, f.dead, \
                 f.id = ANY (ARRAY(SELECT l.id FROM l)), f.version \
          FROM f ORDER BY f.k, f.group_seq",
    args: &[pg_sys::INT4OID, pg_sys::TEXTARRAYOID, pg_sys::INT8ARRAYOID, pg_sys::INT4ARRAYOID],
};

columns!(FollowerColumn { GroupKey, Id, Seq, ReadyAt, Attempt, LeaseToken, Dead, Locked, Version });

// Locks again, without waiting, the messages a grouped lease chose after it gave back what it had
// locked to choose them (storage/lease.rs's lease_grouped): each with the version it has now, so
// that one changed in between is left alone.
static RELOCK: Statement = Statement {
    sql: "SELECT m.id, m.xmin::pg_catalog.text::pg_catalog.int8 FROM courier.message m WHERE m.id = ANY ($1) \
          FOR UPDATE SKIP LOCKED",
    args: &[pg_sys::INT8ARRAYOID],
};

columns!(RelockColumn { Id, Version });

// Leases the chosen messages ($1: heads, their followers and ungrouped ones alike) and clears
// the leases of the messages a previous holder of a taken group still had ($5).
static APPLY: Statement = Statement {
    sql: "WITH fenced AS ( \
              UPDATE courier.message m SET lease_token = NULL, leased_at = NULL, leased_until = NULL \
              WHERE m.id = ANY ($5)) \
          UPDATE courier.message m \
          SET leased_until = $2, lease_token = $3, leased_at = $4, attempt = m.attempt + 1 \
          WHERE m.id = ANY ($1) \
          RETURNING m.id, m.attempt, m.priority, m.enqueued_at, m.payload, m.headers, m.last_error, m.group_key",
    args: &[
        pg_sys::INT8ARRAYOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT8OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT8ARRAYOID,
    ],
};

columns!(AppliedColumn { Id, Attempt, Priority, EnqueuedAt, Payload, Headers, LastError, GroupKey });

/// Most messages of one group a lease may hold: where the messages a lease took after a head are
/// looked for (a nack's, a fence's).
macro_rules! max_group_batch {
    () => {
        "1000"
    };
}
const _: () = assert!(courier_core::groups::MAX_GROUP_BATCH == 1000, "max_group_batch! says 1000");

// A nack returns a message to the head of its group: the later messages its lease ($4) took, among
// the first ones after it ($3), are released with it, their deliveries not counted.
static RELEASE_TAIL: Statement = Statement {
    sql: concat!(
        "UPDATE courier.message m SET lease_token = NULL, leased_at = NULL, leased_until = NULL, \
                attempt = GREATEST(m.attempt - 1, 0) \
         FROM (SELECT x.id FROM courier.message x \
               WHERE x.queue_id = $1 AND x.group_key = $2 AND x.group_seq > $3 \
               ORDER BY x.group_seq LIMIT ",
        max_group_batch!(),
        ") p \
         WHERE m.id = p.id AND m.lease_token = $4"
    ),
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::INT8OID, pg_sys::INT8OID],
};

/// Heads in flight one due-time lookup walks per priority level at most.
macro_rules! head_walk {
    () => {
        "256"
    };
}

// When the next group of the queue becomes leasable after now: per level, the first head due later,
// and the earliest lease end among the first heads in flight (a bounded walk: a waiter looks again
// within a second anyway, lease.rs's ExpiryCache).
static NEXT_HEAD: Statement = Statement {
    sql: concat!(
        levels!(),
        " SELECT pg_catalog.min(LEAST(d.head_at, f.ends)) FROM levels l \
          LEFT JOIN LATERAL ( \
              SELECT m.head_at FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = l.p AND m.head_at > $2 \
              ORDER BY m.head_at, m.id LIMIT 1) d ON true \
          LEFT JOIN LATERAL ( \
              SELECT pg_catalog.min(w.leased_until) FILTER (WHERE w.leased_until > $2) AS ends FROM ( \
                  SELECT m.leased_until FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.priority = l.p AND m.head_at <= $2 \
                  ORDER BY m.head_at, m.id LIMIT ",
        head_walk!(),
        ") w) f ON true \
          WHERE l.p IS NOT NULL"
    ),
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID],
};

/// Rows a group gauge counts at most (as storage/gauges.rs's).
macro_rules! group_gauge_cap {
    () => {
        10000
    };
}
pub const GROUP_GAUGE_CAP: i64 = group_gauge_cap!();

// A queue's groups and the messages in their sequences, each from a bounded walk (as
// storage/gauges.rs's): groups, groups blocked by a dead letter that moved away; messages ready
// (in themselves: a message behind its group's head waits for it), in flight, waiting for their
// time; heads in flight (groups held) and dead letters blocking their group in place. Dead
// letters are counted with the queue's dead letters.
static GROUP_GAUGES: Statement = Statement {
    sql: concat!(
        "SELECT g.n, g.blocked, m.seen, m.ready, m.in_flight, m.delayed, m.held, m.dead, m.oldest_ready, \
                m.oldest_lease \
         FROM (SELECT pg_catalog.count(*) AS n, pg_catalog.count(*) FILTER (WHERE x.blocked_by IS NOT NULL) AS blocked \
               FROM (SELECT g.blocked_by FROM courier.message_group g WHERE g.queue_id = $1 \
                     ORDER BY g.group_key LIMIT ",
        group_gauge_cap!(),
        ") x) g, \
              (SELECT pg_catalog.count(*) AS seen, \
                      pg_catalog.count(*) FILTER (WHERE y.dead_at IS NULL AND y.group_ready_at <= $2 \
                          AND (y.leased_until IS NULL OR y.leased_until <= $2)) AS ready, \
                      pg_catalog.count(*) FILTER (WHERE y.leased_until > $2) AS in_flight, \
                      pg_catalog.count(*) FILTER (WHERE y.dead_at IS NULL AND y.group_ready_at > $2 \
                          AND (y.leased_until IS NULL OR y.leased_until <= $2)) AS delayed, \
                      pg_catalog.count(*) FILTER (WHERE y.head_at IS NOT NULL AND y.leased_until > $2) AS held, \
                      pg_catalog.count(*) FILTER (WHERE y.dead_at IS NOT NULL) AS dead, \
                      pg_catalog.min(y.group_ready_at) FILTER (WHERE y.dead_at IS NULL AND y.group_ready_at <= $2 \
                          AND (y.leased_until IS NULL OR y.leased_until <= $2)) AS oldest_ready, \
                      pg_catalog.min(y.leased_at) FILTER (WHERE y.leased_until > $2) AS oldest_lease \
               FROM (SELECT m.dead_at, m.leased_until, m.leased_at, m.group_ready_at, m.head_at \
                     FROM courier.message m \
                     WHERE m.queue_id = $1 AND m.group_key IS NOT NULL AND m.group_seq IS NOT NULL \
                     ORDER BY m.group_key, m.group_seq LIMIT ",
        group_gauge_cap!(),
        ") y) m"
    ),
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID],
};

columns!(GroupGaugeColumn {
    Groups,
    BlockedAway,
    Seen,
    Ready,
    InFlight,
    Delayed,
    Held,
    DeadInPlace,
    OldestReady,
    OldestLease,
});

/// What a queue's groups hold now.
#[derive(Default, Clone, Copy)]
pub struct GroupGauges {
    pub groups: i64,
    pub held: i64,
    pub blocked: i64,
    pub ready: i64,
    pub in_flight: i64,
    pub delayed: i64,
    /// Since when the longest-waiting ready message of a group has been ready (one behind its
    /// group's head waits too), and when the oldest running lease of one began; within the walk.
    pub oldest_ready: Option<pg_sys::TimestampTz>,
    pub oldest_lease: Option<pg_sys::TimestampTz>,
    /// A walk reached GROUP_GAUGE_CAP: the counts are lower bounds.
    pub capped: bool,
}

/// A lease candidate a grouped queue's PICK found: an ungrouped message or a group's head.
pub struct Candidate {
    pub id: i64,
    /// When it became leasable (visible_at, or the head's head_at).
    pub since: pg_sys::TimestampTz,
    pub attempt: i32,
    pub lease_token: Option<i64>,
    pub priority: i16,
    /// The head's group and number.
    pub group: Option<(String, i64)>,
    /// The row version read (its xmin): a lease that gave its locks back takes it only unchanged.
    pub version: i64,
}

/// A message a lease took, as APPLY returned it.
pub struct Applied {
    pub id: i64,
    pub attempt: i32,
    pub priority: i16,
    pub enqueued_at: pg_sys::TimestampTz,
    pub payload: Jsonb,
    pub headers: Option<Jsonb>,
    pub last_error: Option<String>,
    pub group_key: Option<String>,
}

/// A locked group's first message and what blocks it.
pub struct HeadState {
    /// The dead letter that blocked the group from elsewhere still does.
    pub still_blocked: bool,
    /// The first message of the sequence: its id, whether it is dead, whether it is the head.
    pub first: Option<(i64, bool, bool)>,
}

impl Store<'_> {
    /// Enqueues one message at the end of its group; returns its id.
    pub fn insert_grouped(
        &self,
        at: super::Placement,
        key: &str,
        headers: Option<Jsonb>,
        payload: Jsonb,
    ) -> i64 {
        let message = super::direct::NewMessage { headers, payload };
        if let Some(id) = super::direct::insert_grouped(at, message, key, self.search_path) {
            super::messages::note_write(super::WritePath::Direct);
            return id;
        }
        super::messages::note_write(super::WritePath::Statements);
        let args = at.args([headers.into(), payload.into(), key.into()]);
        self.run(&INSERT_GROUPED, &args).get::<i64>(0, Only).required("id")
    }

    /// The same with an id a dedup key claimed.
    pub fn insert_grouped_with_id(
        &self,
        at: super::Placement,
        key: &str,
        id: i64,
        headers: Option<Jsonb>,
        payload: Jsonb,
    ) {
        let args = at.args([headers.into(), payload.into(), key.into(), id.into()]);
        self.run(&INSERT_GROUPED_WITH_ID, &args);
    }

    /// Advances the counters of a batch's groups (creating rows for new ones) in key order;
    /// returns the first number of each group's messages (0: a new group).
    pub fn reserve_groups(&self, queue_id: i32, counts: &[(String, i64)]) -> Vec<(String, i64)> {
        use ReserveColumn as C;
        let keys: Vec<&str> = counts.iter().map(|(k, _)| k.as_str()).collect();
        let ns: Vec<i64> = counts.iter().map(|(_, n)| *n).collect();
        let rows = self.run(&RESERVE, &[queue_id.into(), keys.into(), ns.into()]);
        (0..rows.len())
            .map(|i| {
                let key = rows.get::<String>(i, C::GroupKey).required("group_key");
                let next = rows.get::<i64>(i, C::NextSeq).required("next_seq");
                let n = counts.iter().find(|(k, _)| *k == key).map_or(0, |(_, n)| *n);
                (key, next - n)
            })
            .collect()
    }

    /// Inserts a batch's messages, grouped or not (`keys` and `seqs`: one element per message,
    /// NULL for ungrouped ones), in input order; returns the ids in ascending order.
    pub fn insert_batch(
        &self,
        at: super::Placement,
        payloads: JsonbArray,
        headers: Option<JsonbArray>,
        keys: Vec<Option<String>>,
        seqs: Vec<Option<i64>>,
    ) -> Vec<i64> {
        let headers = super::opt_array_arg(headers, pg_sys::JSONBARRAYOID);
        let mut ids =
            self.run(&INSERT_BATCH, &at.args([payloads.into(), headers, keys.into(), seqs.into()])).ids();
        ids.sort_unstable();
        ids
    }

    /// Deletes the rows a keyed batch created for groups that got no message.
    pub fn delete_unused_groups(&self, queue_id: i32, keys: &[String]) {
        self.run(&DELETE_UNUSED, &[queue_id.into(), keys.to_vec().into()]);
    }

    /// Locks a group's row; None if the group has none (it holds no message). Otherwise the dead
    /// letter blocking it from elsewhere, with its number.
    pub fn lock_group(&self, queue_id: i32, key: &str) -> Option<Option<(i64, i64)>> {
        use LockColumn as C;
        let rows = self.run(&LOCK_GROUP, &[queue_id.into(), key.into()]);
        (!rows.is_empty()).then(|| rows.get::<i64>(0, C::BlockedBy).zip(rows.get::<i64>(0, C::BlockedSeq)))
    }

    /// A locked group's first message, and whether `blocked_by` still blocks it.
    pub fn head_state(&self, queue_id: i32, key: &str, blocked_by: Option<i64>) -> HeadState {
        use HeadStateColumn as C;
        let rows = self.run(&HEAD_STATE, &[queue_id.into(), key.into(), blocked_by.into()]);
        HeadState {
            still_blocked: rows.get::<bool>(0, C::StillBlocked).unwrap_or(false),
            first: rows.get::<i64>(0, C::FirstId).map(|id| {
                (
                    id,
                    rows.get::<bool>(0, C::FirstDead).unwrap_or(false),
                    rows.get::<bool>(0, C::FirstIsHead).unwrap_or(false),
                )
            }),
        }
    }

    /// The head of a group left from number `seq`: makes the next message the head, if one can
    /// be (see PROMOTE). Returns when the new head becomes leasable.
    pub fn promote_after(
        &self,
        queue_id: i32,
        key: &str,
        seq: i64,
        fair: bool,
        now: pg_sys::TimestampTz,
    ) -> Option<pg_sys::TimestampTz> {
        let args = [queue_id.into(), key.into(), seq.into(), fair.into(), timestamp_arg(now)];
        let rows = self.run(&PROMOTE, &args);
        if rows.is_empty() { None } else { rows.timestamp(0, Only) }
    }

    /// Makes a message its group's head; returns when it becomes leasable.
    pub fn set_head(&self, id: i64, fair: bool, now: pg_sys::TimestampTz) -> Option<pg_sys::TimestampTz> {
        let rows = self.run(&SET_HEAD, &[id.into(), fair.into(), timestamp_arg(now)]);
        if rows.is_empty() { None } else { rows.timestamp(0, Only) }
    }

    /// Records the dead letter that blocks a group from a dead-letter queue (if none does yet).
    pub fn set_blocked(&self, queue_id: i32, key: &str, id: i64, seq: i64) {
        self.run(&SET_BLOCKED, &[queue_id.into(), key.into(), id.into(), seq.into()]);
    }

    pub fn clear_blocked(&self, queue_id: i32, key: &str) {
        self.run(&CLEAR_BLOCKED, &[queue_id.into(), key.into()]);
    }

    pub fn delete_group(&self, queue_id: i32, key: &str) {
        self.run(&DELETE_GROUP, &[queue_id.into(), key.into()]);
    }

    /// A grouped queue's lease candidates (PICK), locked: on level `level`, ungrouped messages
    /// after `after` and heads after `heads_after`; `one_level`: the queue has no other level.
    #[allow(clippy::too_many_arguments)]
    pub fn pick_candidates(
        &self,
        queue_id: i32,
        now: pg_sys::TimestampTz,
        limit: i32,
        level: i16,
        one_level: bool,
        after: Position,
        heads_after: Position,
    ) -> Vec<Candidate> {
        let stmt = if one_level { &PICK_ONE_LEVEL } else { &PICK };
        let args = pick_args(queue_id, now, limit, level, after, heads_after);
        read_candidates(&self.run(stmt, &args))
    }

    /// The first `limit` leasable heads of one level, each locked (PICK_HEADS), none of
    /// `locked_already`; None, with nothing locked, if an ungrouped message after `after` is ready.
    #[allow(clippy::too_many_arguments)]
    pub fn pick_heads(
        &self,
        queue_id: i32,
        now: pg_sys::TimestampTz,
        limit: i32,
        level: i16,
        after: Position,
        heads_after: Position,
        locked_already: Vec<i64>,
    ) -> Option<Vec<Candidate>> {
        let [a1, a2, a3, a4, a5, a6, a7, a8] = pick_args(queue_id, now, limit, level, after, heads_after);
        let rows = self.run(&PICK_HEADS, &[a1, a2, a3, a4, a5, a6, a7, a8, locked_already.into()]);
        if rows.get::<bool>(0, PickColumn::Found).unwrap_or(true) {
            return None;
        }
        // No head leasable: the one row says only that no ungrouped message is ready.
        if rows.len() == 1 && rows.get::<i64>(0, PickColumn::Id).is_none() {
            return Some(Vec::new());
        }
        Some(read_candidates(&rows))
    }

    /// The messages after the given heads, (key, head number, how many), with which could be
    /// locked and the version read; in key and sequence order.
    pub fn followers(&self, queue_id: i32, heads: &[(String, i64, i32)]) -> Vec<(String, PrefixRow, i64)> {
        use FollowerColumn as C;
        if heads.is_empty() {
            return Vec::new();
        }
        let keys: Vec<&str> = heads.iter().map(|h| h.0.as_str()).collect();
        let seqs: Vec<i64> = heads.iter().map(|h| h.1).collect();
        let ns: Vec<i32> = heads.iter().map(|h| h.2).collect();
        let rows = self.run(&FOLLOWERS, &[queue_id.into(), keys.into(), seqs.into(), ns.into()]);
        (0..rows.len())
            .map(|i| {
                (
                    rows.get::<String>(i, C::GroupKey).required("group_key"),
                    PrefixRow {
                        id: rows.get::<i64>(i, C::Id).required("id"),
                        seq: rows.get::<i64>(i, C::Seq).required("group_seq"),
                        ready_at: rows.timestamp(i, C::ReadyAt).required("group_ready_at"),
                        attempt: rows.get::<i32>(i, C::Attempt).required("attempt"),
                        lease_token: rows.get::<i64>(i, C::LeaseToken),
                        dead: rows.get::<bool>(i, C::Dead).required("dead"),
                        locked: rows.get::<bool>(i, C::Locked).unwrap_or(false),
                    },
                    rows.get::<i64>(i, C::Version).required("version"),
                )
            })
            .collect()
    }

    /// Locks `ids` again without waiting; returns the version of each it locked.
    pub fn relock(&self, ids: Vec<i64>) -> HashMap<i64, i64> {
        let rows = self.run(&RELOCK, &[ids.into()]);
        (0..rows.len())
            .map(|i| {
                (
                    rows.get::<i64>(i, RelockColumn::Id).required("id"),
                    rows.get::<i64>(i, RelockColumn::Version).required("version"),
                )
            })
            .collect()
    }

    /// Prepares the statements a grouped lease runs inside its subtransaction, outside it: the
    /// first statement of a call also connects SPI and pins search_path, which must outlast it.
    pub fn prepare_grouped_lease(&self) {
        for stmt in [&PICK, &PICK_ONE_LEVEL, &FOLLOWERS] {
            self.plan(stmt);
        }
    }

    /// Leases `ids` and fences `fence`; returns the leased rows.
    pub fn apply_lease(
        &self,
        ids: Vec<i64>,
        fence: Vec<i64>,
        token: i64,
        now: pg_sys::TimestampTz,
        expires_at: pg_sys::TimestampTz,
    ) -> Vec<Applied> {
        use AppliedColumn as C;
        let args = [ids.into(), timestamp_arg(expires_at), token.into(), timestamp_arg(now), fence.into()];
        let rows = self.run(&APPLY, &args);
        (0..rows.len())
            .map(|i| Applied {
                id: rows.get::<i64>(i, C::Id).required("id"),
                attempt: rows.get::<i32>(i, C::Attempt).required("attempt"),
                priority: rows.get::<i16>(i, C::Priority).required("priority"),
                enqueued_at: rows.timestamp(i, C::EnqueuedAt).required("enqueued_at"),
                payload: self.keep_jsonb(rows.raw(i, C::Payload)).required("payload"),
                headers: self.keep_jsonb(rows.raw(i, C::Headers)),
                last_error: rows.get::<String>(i, C::LastError),
                group_key: rows.get::<String>(i, C::GroupKey),
            })
            .collect()
    }

    /// Releases the messages after number `seq` of a group that the lease `token` took.
    pub fn release_group_tail(&self, queue_id: i32, key: &str, seq: i64, token: i64) {
        self.run(&RELEASE_TAIL, &[queue_id.into(), key.into(), seq.into(), token.into()]);
    }

    /// What the queue's groups hold now.
    pub fn group_gauges(&self, queue_id: i32, now: pg_sys::TimestampTz) -> GroupGauges {
        use GroupGaugeColumn as C;
        let rows = self.run(&GROUP_GAUGES, &[queue_id.into(), timestamp_arg(now)]);
        let n = |c: C| rows.get::<i64>(0, c).unwrap_or(0);
        GroupGauges {
            groups: n(C::Groups),
            held: n(C::Held),
            blocked: n(C::BlockedAway) + n(C::DeadInPlace),
            ready: n(C::Ready),
            in_flight: n(C::InFlight),
            delayed: n(C::Delayed),
            oldest_ready: rows.timestamp(0, C::OldestReady),
            oldest_lease: rows.timestamp(0, C::OldestLease),
            capped: n(C::Groups) >= GROUP_GAUGE_CAP || n(C::Seen) >= GROUP_GAUGE_CAP,
        }
    }

    /// When the next group of the queue becomes leasable after now (a head comes due or a held
    /// group's lease ends), as far as a bounded walk can tell.
    pub fn next_head(&self, queue_id: i32, now: pg_sys::TimestampTz) -> Option<pg_sys::TimestampTz> {
        self.run(&NEXT_HEAD, &[queue_id.into(), timestamp_arg(now)]).timestamp(0, Only)
    }
}

/// This file's statements by name, for `courier._explain` (bin/check-statements keeps it complete).
pub(super) static STATEMENTS: &[(&str, &Statement)] = &[
    ("INSERT_GROUPED", &INSERT_GROUPED),
    ("INSERT_GROUPED_WITH_ID", &INSERT_GROUPED_WITH_ID),
    ("RESERVE", &RESERVE),
    ("INSERT_BATCH", &INSERT_BATCH),
    ("DELETE_UNUSED", &DELETE_UNUSED),
    ("LOCK_GROUP", &LOCK_GROUP),
    ("HEAD_STATE", &HEAD_STATE),
    ("PROMOTE", &PROMOTE),
    ("SET_HEAD", &SET_HEAD),
    ("SET_BLOCKED", &SET_BLOCKED),
    ("CLEAR_BLOCKED", &CLEAR_BLOCKED),
    ("DELETE_GROUP", &DELETE_GROUP),
    ("PICK", &PICK),
    ("PICK_ONE_LEVEL", &PICK_ONE_LEVEL),
    ("PICK_HEADS", &PICK_HEADS),
    ("FOLLOWERS", &FOLLOWERS),
    ("RELOCK", &RELOCK),
    ("APPLY", &APPLY),
    ("RELEASE_TAIL", &RELEASE_TAIL),
    ("NEXT_HEAD", &NEXT_HEAD),
    ("GROUP_GAUGES", &GROUP_GAUGES),
];

/// PICK_ARGS' values, shared by the three statements that find a grouped lease's candidates.
fn pick_args(
    queue_id: i32,
    now: pg_sys::TimestampTz,
    limit: i32,
    level: i16,
    after: Position,
    heads_after: Position,
) -> [DatumWithOid<'static>; 8] {
    [
        queue_id.into(),
        timestamp_arg(now),
        limit.into(),
        level.into(),
        timestamp_arg(after.0),
        after.1.into(),
        timestamp_arg(heads_after.0),
        heads_after.1.into(),
    ]
}

fn read_candidates(rows: &super::Rows) -> Vec<Candidate> {
    use PickColumn as C;
    (0..rows.len())
        .map(|i| Candidate {
            id: rows.get::<i64>(i, C::Id).required("id"),
            since: rows.timestamp(i, C::Since).required("since"),
            attempt: rows.get::<i32>(i, C::Attempt).required("attempt"),
            lease_token: rows.get::<i64>(i, C::LeaseToken),
            priority: rows.get::<i16>(i, C::Priority).required("priority"),
            group: rows.get::<String>(i, C::GroupKey).zip(rows.get::<i64>(i, C::GroupSeq)),
            version: rows.get::<i64>(i, C::Version).required("version"),
        })
        .collect()
}
