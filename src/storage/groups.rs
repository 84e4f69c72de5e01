//! Message groups: numbering a group's messages in commit order, finding the groups a lease may
//! take, and keeping each group's row (courier.message_group) in step with its messages.
//!
//! Lock order. Every statement that changes a group's messages locks the messages first and the
//! group's row second ([`Store::lock_groups`], in key order), except a lease, which locks groups
//! first and then their messages, but never waits for either (SKIP LOCKED): a group or message
//! another transaction is changing is left for a later lease. So no two transactions can wait for
//! each other over a group, except producers and batch acks of several groups, which lock group
//! rows in key order.
//!
//! The row of a group is recomputed from its messages ([`Store::sync_groups`]) by a statement that
//! starts after the row was locked: its snapshot then shows every change of anyone who held the
//! lock before (enqueues, leases, settlements), which a statement that waited for the lock midway
//! would not see.

use courier_core::groups::{Candidate, PrefixRow};
use pgrx::pg_sys;

use super::{Only, Required, Statement, Store, columns, timestamp_arg};
use crate::datum::{Jsonb, JsonbArray};

/// The visible_at of a message in a group's sequence: later than any time an ungrouped lease,
/// a due time or a gauge reads (they stop at 'infinity' or before it), earlier than 'infinity',
/// where dead letters are parked. Its group's row says when it may be leased.
macro_rules! parked {
    () => {
        "'9999-12-31 00:00:00+00'::pg_catalog.timestamptz"
    };
}
pub(super) use parked;

// One message into a group, numbered after the group's last: the group's row is created or its
// counter advanced, which locks it until this transaction ends, so the messages of one group are
// numbered in the order their transactions commit. A new group's row names the message as its
// head, ready when the message is. The placement ($1..$6) is messages.rs's, $7 the group key.
macro_rules! insert_grouped {
    ($id:literal, $with_id:literal) => {
        concat!(
            "WITH i AS MATERIALIZED (SELECT ",
            $id,
            " AS id), \
             g AS (INSERT INTO courier.message_group AS g \
                       (queue_id, group_key, next_seq, head_seq, head_id, head_priority, head_ready_at, eligible_at) \
                   SELECT $1, $7, 1, 0, i.id, $4, $2, $2 FROM i \
                   ON CONFLICT (queue_id, group_key) DO UPDATE SET next_seq = g.next_seq + 1 \
                   RETURNING g.next_seq - 1 AS seq) \
             INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, priority, headers, payload, \
                                          group_key, group_seq, group_ready_at) \
             SELECT i.id, $1, ",
            parked!(),
            ", $3, $4, $5, $6, $7, g.seq, $2 FROM i, g RETURNING id",
            $with_id
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

static INSERT_GROUPED: Statement = Statement {
    sql: insert_grouped!("pg_catalog.nextval('courier.message_id_seq')", ""),
    args: &GROUPED_ARGS,
};

// The same with the id a dedup key claimed ($8).
static INSERT_GROUPED_WITH_ID: Statement = Statement {
    sql: insert_grouped!("$8::pg_catalog.int8", ""),
    args: &super::concat_args::<7, 1, 8>(GROUPED_ARGS, [pg_sys::INT8OID]),
};

// A batch's groups, in key order (so two batches lock them in the same order): each group's
// counter advances by its number of messages ($3), rows created for new groups without a head
// yet. Returns the counter after, and whether the row is new.
static RESERVE: Statement = Statement {
    sql: "INSERT INTO courier.message_group AS g (queue_id, group_key, next_seq) \
          SELECT $1, u.k, u.n FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.int8[])) AS u(k, n) \
          ORDER BY u.k \
          ON CONFLICT (queue_id, group_key) DO UPDATE SET next_seq = g.next_seq + excluded.next_seq \
          RETURNING g.group_key, g.next_seq, g.head_seq IS NULL",
    args: &[pg_sys::INT4OID, pg_sys::TEXTARRAYOID, pg_sys::INT8ARRAYOID],
};

columns!(ReserveColumn { GroupKey, NextSeq, Fresh });

// A batch's messages, grouped ($7 keys, $8 numbers, NULL for ungrouped ones) or not, in input
// order. The placement is messages.rs's.
static INSERT_BATCH: Statement = Statement {
    sql: concat!(
        "INSERT INTO courier.message (id, queue_id, visible_at, enqueued_at, priority, headers, payload, \
                                      group_key, group_seq, group_ready_at) \
         SELECT pg_catalog.nextval('courier.message_id_seq'), $1, \
                CASE WHEN u.k IS NULL THEN $2 ELSE ",
        parked!(),
        " END, $3, $4, u.h, u.p, u.k, u.s, CASE WHEN u.k IS NULL THEN NULL ELSE $2 END \
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

// Locks group rows of a queue in key order; with what a nack needs to know about each holder, and
// a redrive about what blocks it.
static LOCK_GROUPS: Statement = Statement {
    sql: "SELECT g.group_key, g.held_token, g.held_span, g.blocked, g.head_id, g.head_seq \
          FROM courier.message_group g \
          WHERE g.queue_id = $1 AND g.group_key = ANY ($2) ORDER BY g.group_key FOR UPDATE",
    args: &[pg_sys::INT4OID, pg_sys::TEXTARRAYOID],
};

columns!(LockColumn { GroupKey, HeldToken, HeldSpan, Blocked, HeadId, HeadSeq });

// Recomputes locked group rows ($2) from their messages: the head is the first message of the
// sequence; the group is held while a message its last lease took is leased (held_until: the
// latest such lease end, read from the first held_span messages, where a lease's messages are);
// blocked while its head is a dead letter, or while the dead letter it was blocked by (head_id)
// is dead anywhere else (moved to a dead-letter queue). A group with neither messages nor a
// blocking dead letter is deleted. eligible_at: when its head may be leased ('fair', $3: no
// earlier than when it was last served). Returns the rows' new eligible_at.
static SYNC: Statement = Statement {
    sql: "WITH g AS MATERIALIZED ( \
             SELECT g.group_key, g.held_token, g.held_span, g.served_at, \
                    g.blocked AND COALESCE((SELECT d.dead_at IS NOT NULL AND (d.queue_id <> $1 OR d.group_seq IS NULL) \
                                            FROM courier.message d WHERE d.id = g.head_id), false) AS away \
             FROM courier.message_group g WHERE g.queue_id = $1 AND g.group_key = ANY ($2)), \
         c AS MATERIALIZED ( \
             SELECT g.group_key, g.away, g.served_at, h.id AS head_id, h.group_seq AS head_seq, h.priority, \
                    h.group_ready_at, h.dead_at IS NOT NULL AS head_dead, \
                    (SELECT pg_catalog.max(x.leased_until) FROM ( \
                         SELECT m.leased_until, m.lease_token FROM courier.message m \
                         WHERE m.queue_id = $1 AND m.group_key = g.group_key AND m.group_seq IS NOT NULL \
                         ORDER BY m.group_seq LIMIT g.held_span) x \
                     WHERE x.lease_token = g.held_token) AS held_until \
             FROM g LEFT JOIN LATERAL ( \
                 SELECT m.id, m.group_seq, m.priority, m.group_ready_at, m.dead_at FROM courier.message m \
                 WHERE m.queue_id = $1 AND m.group_key = g.group_key AND m.group_seq IS NOT NULL \
                 ORDER BY m.group_seq LIMIT 1) h ON true), \
         gone AS (DELETE FROM courier.message_group t USING c \
                  WHERE t.queue_id = $1 AND t.group_key = c.group_key AND c.head_id IS NULL AND NOT c.away) \
         UPDATE courier.message_group t SET \
             head_seq = CASE WHEN c.away THEN t.head_seq ELSE c.head_seq END, \
             head_id = CASE WHEN c.away THEN t.head_id ELSE c.head_id END, \
             head_priority = COALESCE(c.priority, t.head_priority), \
             head_ready_at = c.group_ready_at, \
             held_token = CASE WHEN c.held_until IS NULL THEN NULL ELSE t.held_token END, \
             held_until = c.held_until, \
             held_span = CASE WHEN c.held_until IS NULL THEN 0 ELSE t.held_span END, \
             blocked = c.away OR c.head_dead, \
             eligible_at = CASE WHEN c.away OR c.head_dead THEN NULL \
                                ELSE GREATEST(c.group_ready_at, c.held_until, CASE WHEN $3 THEN c.served_at END) END \
         FROM c WHERE t.queue_id = $1 AND t.group_key = c.group_key AND (c.head_id IS NOT NULL OR c.away) \
         RETURNING t.eligible_at",
    args: &[pg_sys::INT4OID, pg_sys::TEXTARRAYOID, pg_sys::BOOLOID],
};

// A group whose dead letter blocks it ('block') remembers it, wherever it goes.
static BLOCK: Statement = Statement {
    sql: "UPDATE courier.message_group g SET blocked = true, head_id = u.id, head_seq = u.s, eligible_at = NULL \
          FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.int8[]), pg_catalog.unnest($4::pg_catalog.int8[])) AS u(k, id, s) \
          WHERE g.queue_id = $1 AND g.group_key = u.k",
    args: &[pg_sys::INT4OID, pg_sys::TEXTARRAYOID, pg_sys::INT8ARRAYOID, pg_sys::INT8ARRAYOID],
};

// The eligible groups a lease may take, highest head priority first and by eligible_at within a
// priority (one index range per priority level), locked without waiting; with each group's first
// messages (at least $4, at least as many as its last lease took) and which of those this
// transaction could lock without waiting. The prefix is read before it is locked: a message
// another transaction is changing comes back unlocked rather than being skipped over, so what a
// lease takes is always consecutive (courier_core::groups::plan decides).
static PICK: Statement = Statement {
    sql: "WITH RECURSIVE levels(p) AS ( \
              SELECT (SELECT g.head_priority FROM courier.message_group g \
                      WHERE g.queue_id = $1 AND g.eligible_at IS NOT NULL ORDER BY g.head_priority DESC LIMIT 1) \
              UNION ALL \
              SELECT (SELECT g.head_priority FROM courier.message_group g \
                      WHERE g.queue_id = $1 AND g.eligible_at IS NOT NULL AND g.head_priority < l.p \
                      ORDER BY g.head_priority DESC LIMIT 1) \
              FROM levels l WHERE l.p IS NOT NULL), \
          picked AS MATERIALIZED ( \
              SELECT c.* FROM levels l CROSS JOIN LATERAL ( \
                  SELECT g.group_key, g.head_seq, g.head_priority, g.eligible_at, g.held_token, g.held_span \
                  FROM courier.message_group g \
                  WHERE g.queue_id = $1 AND g.head_priority = l.p AND g.eligible_at IS NOT NULL \
                    AND g.eligible_at <= $2 \
                  ORDER BY g.eligible_at LIMIT $3 \
                  FOR UPDATE SKIP LOCKED) c \
              WHERE l.p IS NOT NULL LIMIT $3), \
          prefix AS MATERIALIZED ( \
              SELECT p.group_key, x.id, x.group_seq, x.group_ready_at, x.attempt, x.lease_token, x.dead \
              FROM picked p CROSS JOIN LATERAL ( \
                  SELECT m.id, m.group_seq, m.group_ready_at, m.attempt, m.lease_token, m.dead_at IS NOT NULL AS dead \
                  FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.group_key = p.group_key AND m.group_seq IS NOT NULL \
                  ORDER BY m.group_seq LIMIT GREATEST($4, p.held_span)) x), \
          locked AS MATERIALIZED ( \
              SELECT m.id FROM courier.message m WHERE m.id = ANY (ARRAY(SELECT x.id FROM prefix x)) \
              FOR UPDATE SKIP LOCKED) \
          SELECT p.group_key, p.head_seq, p.head_priority, p.eligible_at, p.held_token, \
                 x.id, x.group_seq, x.group_ready_at, x.attempt, x.lease_token, x.dead, \
                 x.id = ANY (ARRAY(SELECT l.id FROM locked l)) \
          FROM picked p LEFT JOIN prefix x ON x.group_key = p.group_key \
          ORDER BY p.head_priority DESC, p.eligible_at, p.group_key, x.group_seq",
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID, pg_sys::INT4OID, pg_sys::INT4OID],
};

columns!(PickColumn {
    GroupKey,
    HeadSeq,
    HeadPriority,
    EligibleAt,
    HeldToken,
    Id,
    Seq,
    ReadyAt,
    Attempt,
    LeaseToken,
    Dead,
    Locked,
});

// Leases the chosen messages ($1: of groups and ungrouped alike), clears the leases of the
// messages a previous holder of a taken group still had ($5), and makes each taken group held by
// this lease ($6 keys, $7 how many of its messages it took) until it ends.
static APPLY: Statement = Statement {
    sql: "WITH fenced AS ( \
              UPDATE courier.message m SET lease_token = NULL, leased_at = NULL, leased_until = NULL \
              WHERE m.id = ANY ($5)), \
          held AS ( \
              UPDATE courier.message_group g SET held_token = $3, held_until = $2, held_span = u.n, \
                     served_at = $4, eligible_at = $2 \
              FROM ROWS FROM (pg_catalog.unnest($6::pg_catalog.text[]), pg_catalog.unnest($7::pg_catalog.int4[])) AS u(k, n) \
              WHERE g.queue_id = $8 AND g.group_key = u.k) \
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
        pg_sys::TEXTARRAYOID,
        pg_sys::INT4ARRAYOID,
        pg_sys::INT4OID,
    ],
};

columns!(AppliedColumn { Id, Attempt, Priority, EnqueuedAt, Payload, Headers, LastError, GroupKey });

// A nack returns a message to the head of its group: the later messages its lease took ($4, among
// the first $5 of the group) are released with it, their deliveries not counted.
static RELEASE_TAIL: Statement = Statement {
    sql: "UPDATE courier.message m SET lease_token = NULL, leased_at = NULL, leased_until = NULL, \
                 attempt = GREATEST(m.attempt - 1, 0) \
          FROM (SELECT x.id FROM courier.message x \
                WHERE x.queue_id = $1 AND x.group_key = $2 AND x.group_seq IS NOT NULL \
                ORDER BY x.group_seq LIMIT $5) p \
          WHERE m.id = p.id AND m.group_seq > $3 AND m.lease_token = $4",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::INT8OID, pg_sys::INT8OID, pg_sys::INT4OID],
};

// When the next group of the queue becomes eligible after now: one probe per priority level.
static NEXT_ELIGIBLE: Statement = Statement {
    sql: "WITH RECURSIVE levels(p) AS ( \
              SELECT (SELECT g.head_priority FROM courier.message_group g \
                      WHERE g.queue_id = $1 AND g.eligible_at IS NOT NULL ORDER BY g.head_priority DESC LIMIT 1) \
              UNION ALL \
              SELECT (SELECT g.head_priority FROM courier.message_group g \
                      WHERE g.queue_id = $1 AND g.eligible_at IS NOT NULL AND g.head_priority < l.p \
                      ORDER BY g.head_priority DESC LIMIT 1) \
              FROM levels l WHERE l.p IS NOT NULL) \
          SELECT pg_catalog.min(n.eligible_at) FROM levels l CROSS JOIN LATERAL ( \
              SELECT g.eligible_at FROM courier.message_group g \
              WHERE g.queue_id = $1 AND g.head_priority = l.p AND g.eligible_at IS NOT NULL AND g.eligible_at > $2 \
              ORDER BY g.eligible_at LIMIT 1) n \
          WHERE l.p IS NOT NULL",
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
// storage/gauges.rs's): groups, groups held by a lease, groups blocked by a dead letter; messages
// ready (in themselves: a message behind its group's head waits for it), in flight, and waiting
// for their time. Dead letters in a sequence are counted with the queue's dead letters.
static GROUP_GAUGES: Statement = Statement {
    sql: concat!(
        "SELECT g.n, g.held, g.blocked, m.seen, m.ready, m.in_flight, m.delayed FROM \
             (SELECT pg_catalog.count(*) AS n, pg_catalog.count(*) FILTER (WHERE x.held_until > $2) AS held, \
                     pg_catalog.count(*) FILTER (WHERE x.blocked) AS blocked \
              FROM (SELECT g.held_until, g.blocked FROM courier.message_group g WHERE g.queue_id = $1 \
                    ORDER BY g.group_key LIMIT ",
        group_gauge_cap!(),
        ") x) g, \
             (SELECT pg_catalog.count(*) AS seen, \
                     pg_catalog.count(*) FILTER (WHERE y.dead_at IS NULL AND y.group_ready_at <= $2 \
                         AND (y.leased_until IS NULL OR y.leased_until <= $2)) AS ready, \
                     pg_catalog.count(*) FILTER (WHERE y.leased_until > $2) AS in_flight, \
                     pg_catalog.count(*) FILTER (WHERE y.dead_at IS NULL AND y.group_ready_at > $2 \
                         AND (y.leased_until IS NULL OR y.leased_until <= $2)) AS delayed \
              FROM (SELECT m.dead_at, m.leased_until, m.group_ready_at FROM courier.message m \
                    WHERE m.queue_id = $1 AND m.group_key IS NOT NULL AND m.group_seq IS NOT NULL \
                    ORDER BY m.group_key, m.group_seq LIMIT ",
        group_gauge_cap!(),
        ") y) m"
    ),
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID],
};

columns!(GroupGaugeColumn { Groups, Held, Blocked, Seen, Ready, InFlight, Delayed });

/// What a queue's groups hold now.
#[derive(Default, Clone, Copy)]
pub struct GroupGauges {
    pub groups: i64,
    pub held: i64,
    pub blocked: i64,
    pub ready: i64,
    pub in_flight: i64,
    pub delayed: i64,
    /// A walk reached GROUP_GAUGE_CAP: the counts are lower bounds.
    pub capped: bool,
}

/// What a lease found in one group it locked.
pub struct PickedGroup {
    pub key: String,
    pub priority: i16,
    pub eligible_at: pg_sys::TimestampTz,
    pub candidate: Candidate,
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

/// A locked group row: its key, the lease that holds it (token, how many messages it took), and
/// whether a dead letter blocks it (which, and where in the sequence it was).
pub struct LockedGroup {
    pub key: String,
    pub held_token: Option<i64>,
    pub held_span: i32,
    pub blocked_by: Option<(i64, i64)>,
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
    /// returns, per key given, the first number its messages get and whether its row is new.
    pub fn reserve_groups(&self, queue_id: i32, counts: &[(String, i64)]) -> Vec<(String, i64, bool)> {
        use ReserveColumn as C;
        let keys: Vec<&str> = counts.iter().map(|(k, _)| k.as_str()).collect();
        let ns: Vec<i64> = counts.iter().map(|(_, n)| *n).collect();
        let rows = self.run(&RESERVE, &[queue_id.into(), keys.into(), ns.into()]);
        (0..rows.len())
            .map(|i| {
                let key = rows.get::<String>(i, C::GroupKey).required("group_key");
                let next = rows.get::<i64>(i, C::NextSeq).required("next_seq");
                let n = counts.iter().find(|(k, _)| *k == key).map_or(0, |(_, n)| *n);
                (key, next - n, rows.get::<bool>(i, C::Fresh).required("fresh"))
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

    /// Locks group rows of a queue in key order (those that exist).
    pub fn lock_groups(&self, queue_id: i32, keys: &[String]) -> Vec<LockedGroup> {
        use LockColumn as C;
        let rows = self.run(&LOCK_GROUPS, &[queue_id.into(), keys.to_vec().into()]);
        (0..rows.len())
            .map(|i| LockedGroup {
                key: rows.get::<String>(i, C::GroupKey).required("group_key"),
                held_token: rows.get::<i64>(i, C::HeldToken),
                held_span: rows.get::<i32>(i, C::HeldSpan).required("held_span"),
                blocked_by: rows
                    .get::<bool>(i, C::Blocked)
                    .unwrap_or(false)
                    .then(|| rows.get::<i64>(i, C::HeadId).zip(rows.get::<i64>(i, C::HeadSeq)))
                    .flatten(),
            })
            .collect()
    }

    /// Recomputes locked group rows from their messages; returns the earliest time one of them
    /// becomes eligible (None: all blocked or gone).
    pub fn sync_groups(&self, queue_id: i32, keys: &[String], fair: bool) -> Option<pg_sys::TimestampTz> {
        if keys.is_empty() {
            return None;
        }
        let rows = self.run(&SYNC, &[queue_id.into(), keys.to_vec().into(), fair.into()]);
        (0..rows.len()).filter_map(|i| rows.timestamp(i, Only)).min()
    }

    /// Marks locked groups as blocked by their dead letters: (key, message id, its number).
    pub fn block_groups(&self, queue_id: i32, blocked: &[(String, i64, i64)]) {
        if blocked.is_empty() {
            return;
        }
        let keys: Vec<&str> = blocked.iter().map(|b| b.0.as_str()).collect();
        let ids: Vec<i64> = blocked.iter().map(|b| b.1).collect();
        let seqs: Vec<i64> = blocked.iter().map(|b| b.2).collect();
        self.run(&BLOCK, &[queue_id.into(), keys.into(), ids.into(), seqs.into()]);
    }

    /// Locks up to `limit` eligible groups with their first messages (see PICK).
    pub fn pick_groups(
        &self,
        queue_id: i32,
        now: pg_sys::TimestampTz,
        limit: i32,
        group_batch: i32,
    ) -> Vec<PickedGroup> {
        use PickColumn as C;
        let rows = self.run(&PICK, &[queue_id.into(), timestamp_arg(now), limit.into(), group_batch.into()]);
        let mut out: Vec<PickedGroup> = Vec::new();
        for i in 0..rows.len() {
            let key = rows.get::<String>(i, C::GroupKey).required("group_key");
            if out.last().is_none_or(|g| g.key != key) {
                out.push(PickedGroup {
                    key,
                    priority: rows.get::<i16>(i, C::HeadPriority).required("head_priority"),
                    eligible_at: rows.timestamp(i, C::EligibleAt).required("eligible_at"),
                    candidate: Candidate {
                        head_seq: rows.get::<i64>(i, C::HeadSeq).unwrap_or(-1),
                        held_token: rows.get::<i64>(i, C::HeldToken),
                        rows: Vec::new(),
                    },
                });
            }
            let Some(id) = rows.get::<i64>(i, C::Id) else { continue };
            let group = out.last_mut().expect("pushed above");
            group.candidate.rows.push(PrefixRow {
                id,
                seq: rows.get::<i64>(i, C::Seq).required("group_seq"),
                ready_at: rows.timestamp(i, C::ReadyAt).required("group_ready_at"),
                attempt: rows.get::<i32>(i, C::Attempt).required("attempt"),
                lease_token: rows.get::<i64>(i, C::LeaseToken),
                dead: rows.get::<bool>(i, C::Dead).required("dead"),
                locked: rows.get::<bool>(i, C::Locked).unwrap_or(false),
            });
        }
        out
    }

    /// Leases `ids`, fences `fence`, and marks the taken groups held; returns the leased rows.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_lease(
        &self,
        queue_id: i32,
        ids: Vec<i64>,
        fence: Vec<i64>,
        groups: Vec<(String, i32)>,
        token: i64,
        now: pg_sys::TimestampTz,
        expires_at: pg_sys::TimestampTz,
    ) -> Vec<Applied> {
        use AppliedColumn as C;
        let keys: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
        let spans: Vec<i32> = groups.iter().map(|g| g.1).collect();
        let args = [
            ids.into(),
            timestamp_arg(expires_at),
            token.into(),
            timestamp_arg(now),
            fence.into(),
            keys.into(),
            spans.into(),
            queue_id.into(),
        ];
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

    /// Releases the messages after `seq` that the lease `token` took from a locked group.
    pub fn release_group_tail(&self, queue_id: i32, key: &str, seq: i64, token: i64, span: i32) {
        self.run(&RELEASE_TAIL, &[queue_id.into(), key.into(), seq.into(), token.into(), span.into()]);
    }

    /// What the queue's groups hold now.
    pub fn group_gauges(&self, queue_id: i32, now: pg_sys::TimestampTz) -> GroupGauges {
        use GroupGaugeColumn as C;
        let rows = self.run(&GROUP_GAUGES, &[queue_id.into(), timestamp_arg(now)]);
        let n = |c: C| rows.get::<i64>(0, c).unwrap_or(0);
        GroupGauges {
            groups: n(C::Groups),
            held: n(C::Held),
            blocked: n(C::Blocked),
            ready: n(C::Ready),
            in_flight: n(C::InFlight),
            delayed: n(C::Delayed),
            capped: n(C::Groups) >= GROUP_GAUGE_CAP || n(C::Seen) >= GROUP_GAUGE_CAP,
        }
    }

    /// When the next group of the queue becomes eligible after now.
    pub fn next_eligible(&self, queue_id: i32, now: pg_sys::TimestampTz) -> Option<pg_sys::TimestampTz> {
        self.run(&NEXT_ELIGIBLE, &[queue_id.into(), timestamp_arg(now)]).timestamp(0, Only)
    }
}

/// This file's statements by name, for `courier._explain` (bin/check-statements keeps it complete).
pub(super) static STATEMENTS: &[(&str, &Statement)] = &[
    ("INSERT_GROUPED", &INSERT_GROUPED),
    ("INSERT_GROUPED_WITH_ID", &INSERT_GROUPED_WITH_ID),
    ("RESERVE", &RESERVE),
    ("INSERT_BATCH", &INSERT_BATCH),
    ("LOCK_GROUPS", &LOCK_GROUPS),
    ("SYNC", &SYNC),
    ("BLOCK", &BLOCK),
    ("PICK", &PICK),
    ("APPLY", &APPLY),
    ("RELEASE_TAIL", &RELEASE_TAIL),
    ("NEXT_ELIGIBLE", &NEXT_ELIGIBLE),
    ("GROUP_GAUGES", &GROUP_GAUGES),
];
