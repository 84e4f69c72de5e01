//! Leasing: taking ready messages for a visibility timeout, and the statements that tell a lease
//! (or a waiting one) where to scan and when something becomes leasable.

use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;

use super::groups::Candidate;
use super::{
    Only, Position, Required, Rows, Statement, Store, columns, level_args, listed_args, timestamp_arg,
};
use crate::datum::Jsonb;
use crate::xact;

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

// The levels of a queue that the caller lists ($levels, top first, with where a scan of each
// starts: $ats, $ids) and any level above $top or below $bottom, as levels(p, at, after_id), top
// first. A level outside the listed range exists only while an enqueue that widens the queue's
// range commits; the walks that find it read an empty index range otherwise. Unlike
// priority_levels!, nothing here steps over the entries of a drained level (see LEASE_LISTED).
macro_rules! listed_levels {
    ($levels:literal, $ats:literal, $ids:literal, $top:literal, $bottom:literal) => {
        concat!(
            "WITH RECURSIVE above(p) AS ( \
                 SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 AND m.priority > ",
            $top,
            " ORDER BY m.priority DESC LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT m.priority FROM courier.message m \
                         WHERE m.queue_id = $1 AND m.priority > ",
            $top,
            " AND m.priority < a.p ORDER BY m.priority DESC LIMIT 1) \
                 FROM above a WHERE a.p IS NOT NULL), \
             below(p) AS ( \
                 SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 AND m.priority < ",
            $bottom,
            " ORDER BY m.priority DESC LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 AND m.priority < b.p \
                         ORDER BY m.priority DESC LIMIT 1) \
                 FROM below b WHERE b.p IS NOT NULL), \
             levels(p, at, after_id) AS ( \
                 SELECT a.p, '-infinity'::pg_catalog.timestamptz, '-9223372036854775808'::pg_catalog.int8 \
                 FROM above a WHERE a.p IS NOT NULL \
                 UNION ALL \
                 SELECT s.p, s.at, s.after_id \
                 FROM ROWS FROM (pg_catalog.unnest(",
            $levels,
            "), pg_catalog.unnest(",
            $ats,
            "), pg_catalog.unnest(",
            $ids,
            ")) AS s(p, at, after_id) \
                 UNION ALL \
                 SELECT b.p, '-infinity'::pg_catalog.timestamptz, '-9223372036854775808'::pg_catalog.int8 \
                 FROM below b WHERE b.p IS NOT NULL)"
        )
    };
}
pub(super) use listed_levels;

/// The parameter types listed_levels! takes, in its order.
pub(super) const LISTED_ARGS: [pg_sys::Oid; 5] = [
    pg_sys::INT2ARRAYOID,
    pg_sys::TIMESTAMPTZARRAYOID,
    pg_sys::INT8ARRAYOID,
    pg_sys::INT2OID,
    pg_sys::INT2OID,
];

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

columns!(LeaseColumn {
    /// true: a leased message; false: what a picked message was before the lease.
    Leased,
    Id,
    /// The attempt count after the lease (leased rows) or before it (picked rows).
    Attempt,
    Priority,
    EnqueuedAt,
    ReadyAt,
    /// Whether the picked message's previous lease had expired.
    Expired,
    Payload,
    Headers,
    LastError,
});

const LEASE_ARGS: [pg_sys::Oid; 6] = [
    pg_sys::INT4OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT4OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::INT8OID,
    pg_sys::INT4OID,
];

// Leases in (priority DESC, visible_at) order without visiting messages that are not ready yet:
// for each level the LATERAL subquery is a range scan bounded by visible_at <= now, so delayed and
// dead messages (which sort after now) are never read. Messages in flight stay in that range (a
// lease does not move them, see schema.sql) and are filtered out; the scan hint keeps most scans
// from walking past them (lease.rs). The MATERIALIZED CTE runs the
// SKIP LOCKED scan exactly once, and the update finds its rows by primary key (= ANY), which keeps
// the generic plan an index plan whatever the batch size. Level $7[i] starts after ($8[i], $9[i])
// (its floor, see floor.rs, or this backend's scan hint), a level not listed from its start; the
// subscripts depend only on the level and the parameters, so the row comparison stays an index
// bound of each level's scan.
static LEASE: Statement = Statement {
    sql: concat!(
        priority_levels!(),
        ", picked AS MATERIALIZED ( \
              SELECT c.id, c.visible_at AS ready_at, c.attempt, c.lease_token \
              FROM levels l CROSS JOIN LATERAL ( \
                  SELECT m.id, m.visible_at, m.attempt, m.lease_token FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at <= $2 \
                    AND (m.visible_at, m.id) > ( \
                        COALESCE($8[pg_catalog.array_position($7, l.p)], '-infinity'::pg_catalog.timestamptz), \
                        COALESCE($9[pg_catalog.array_position($7, l.p)], '-9223372036854775808'::pg_catalog.int8)) \
                    AND (m.leased_until IS NULL OR m.leased_until <= $2) \
                  ORDER BY m.visible_at, m.id LIMIT $3 \
                  FOR UPDATE SKIP LOCKED) c \
              WHERE l.p IS NOT NULL \
              LIMIT $3)",
        lease_tail!()
    ),
    args: &super::concat_args::<6, 3, 9>(
        LEASE_ARGS,
        [pg_sys::INT2ARRAYOID, pg_sys::TIMESTAMPTZARRAYOID, pg_sys::INT8ARRAYOID],
    ),
};

// The same for a queue whose levels are listed ($7, top first, each with where its scan starts:
// $8, $9; every level of the queue's cached priority range, $10 down to $11): the levels are
// taken from the list rather than found by the walk, whose probes step backwards over every entry
// of a level that has been drained and not yet vacuumed (the whole level, while a snapshot holds
// its acked messages). A level outside the range can exist only while an enqueue that widens the
// range commits (the range in this backend's cache lags it): the two walks, above $10 and below
// $11, find it; they read an empty index range otherwise.
static LEASE_LISTED: Statement = Statement {
    sql: concat!(
        listed_levels!("$7", "$8", "$9", "$10", "$11"),
        ", \
         picked AS MATERIALIZED ( \
              SELECT c.id, c.visible_at AS ready_at, c.attempt, c.lease_token \
              FROM levels l CROSS JOIN LATERAL ( \
                  SELECT m.id, m.visible_at, m.attempt, m.lease_token FROM courier.message m \
                  WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at <= $2 \
                    AND (m.visible_at, m.id) > (l.at, l.after_id) \
                    AND (m.leased_until IS NULL OR m.leased_until <= $2) \
                  ORDER BY m.visible_at, m.id LIMIT $3 \
                  FOR UPDATE SKIP LOCKED) c \
              LIMIT $3)",
        lease_tail!()
    ),
    args: &super::concat_args::<6, 5, 11>(
        LEASE_ARGS,
        [
            pg_sys::INT2ARRAYOID,
            pg_sys::TIMESTAMPTZARRAYOID,
            pg_sys::INT8ARRAYOID,
            pg_sys::INT2OID,
            pg_sys::INT2OID,
        ],
    ),
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
    args: &super::concat_args::<6, 3, 9>(
        LEASE_ARGS,
        [pg_sys::INT2OID, pg_sys::TIMESTAMPTZOID, pg_sys::INT8OID],
    ),
};

// When the next delayed or retrying message becomes ready: the earliest visible_at after now, one
// index probe per priority level. Messages in groups (parked) and dead letters ('infinity') are
// not in that range; groups have their own (storage/groups.rs).
static NEXT_DUE: Statement = Statement {
    sql: concat!(
        priority_levels!(),
        " SELECT pg_catalog.min(n.visible_at) FROM levels l CROSS JOIN LATERAL ( \
              SELECT m.visible_at FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at > $2 \
                AND m.visible_at < ",
        super::groups::parked!(),
        " \
              ORDER BY m.visible_at LIMIT 1) n \
          WHERE l.p IS NOT NULL"
    ),
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID],
};

// The same for the levels listed ($3, see listed_levels!).
static NEXT_DUE_LISTED: Statement = Statement {
    sql: concat!(
        listed_levels!("$3", "$4", "$5", "$6", "$7"),
        " SELECT pg_catalog.min(n.visible_at) FROM levels l CROSS JOIN LATERAL ( \
              SELECT m.visible_at FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at > $2 \
                AND m.visible_at < ",
        super::groups::parked!(),
        " \
              ORDER BY m.visible_at LIMIT 1) n"
    ),
    args: &super::concat_args::<2, 5, 7>([pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID], LISTED_ARGS),
};

// The statements below walk a ready range in index order under a constant LIMIT, and Rust
// computes what the range holds from the rows, rather than aggregating over the range in SQL:
// `min(leased_until)` over a range has no index to stop at and is estimated at a ninth of the
// table, so its generic plan was a sequential scan once the table was large (4.2 million rows
// filtered for one floor learning). A walk that comes back full tells the caller its answer is
// partial; each caller says what it does then.

/// Rows per page of a walk.
macro_rules! walk_page {
    () => {
        128
    };
}
const WALK_PAGE: usize = walk_page!();
/// Rows of in-flight messages one floor learning may pass (floor.rs): the ready floor advances
/// by at most this many per learning through a block of messages in flight.
const FLOOR_WALK_PAGES: usize = 8;
/// Rows one expiry lookup of a one-level queue may walk.
macro_rules! expiry_walk_rows {
    () => {
        1024
    };
}
const EXPIRY_WALK_ROWS: usize = expiry_walk_rows!();
/// Rows per level one expiry lookup of a multi-level queue may walk.
macro_rules! expiry_walk_per_level {
    () => {
        256
    };
}
const EXPIRY_WALK_PER_LEVEL: i64 = expiry_walk_per_level!();

// The rows of a level after a position, in order, a page at a time: a floor learning walks them
// to the first one that is not in flight beyond its clock reading (floor.rs).
static LEVEL_WALK: Statement = Statement {
    sql: concat!(
        "SELECT m.visible_at, m.id, m.leased_until FROM courier.message m \
         WHERE m.queue_id = $1 AND m.priority = $2 AND (m.visible_at, m.id) > ($3, $4) \
         ORDER BY m.visible_at, m.id LIMIT ",
        walk_page!()
    ),
    args: &[pg_sys::INT4OID, pg_sys::INT2OID, pg_sys::TIMESTAMPTZOID, pg_sys::INT8OID],
};

columns!(LevelWalkColumn { VisibleAt, Id, LeasedUntil });

// The lease ends of a one-level queue's ready range ($3), from its floor ($4, $5) to now ($2):
// every message in flight sits after the floor (floor.rs).
static EXPIRY_WALK_ONE_LEVEL: Statement = Statement {
    sql: concat!(
        "SELECT m.leased_until FROM courier.message m \
         WHERE m.queue_id = $1 AND m.priority = $3 AND (m.visible_at, m.id) > ($4, $5) \
           AND m.visible_at <= $2 \
         ORDER BY m.visible_at, m.id LIMIT ",
        expiry_walk_rows!()
    ),
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT2OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT8OID,
    ],
};

// The same for every level of a queue, a bounded walk per level from the level's floor of all rows
// ($3[i]: ($4[i], $5[i])) or from its start: for each level, how many rows the walk saw and the
// earliest lease end after now among them.
static EXPIRY_WALK: Statement = Statement {
    sql: concat!(
        priority_levels!(),
        " SELECT l.p, pg_catalog.count(*), pg_catalog.min(w.leased_until) FILTER (WHERE w.leased_until > $2) \
          FROM levels l CROSS JOIN LATERAL ( \
              SELECT m.leased_until FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at <= $2 \
                AND (m.visible_at, m.id) > ( \
                    COALESCE($4[pg_catalog.array_position($3, l.p)], '-infinity'::pg_catalog.timestamptz), \
                    COALESCE($5[pg_catalog.array_position($3, l.p)], '-9223372036854775808'::pg_catalog.int8)) \
              ORDER BY m.visible_at, m.id LIMIT ",
        expiry_walk_per_level!(),
        ") w \
          WHERE l.p IS NOT NULL GROUP BY l.p"
    ),
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT2ARRAYOID,
        pg_sys::TIMESTAMPTZARRAYOID,
        pg_sys::INT8ARRAYOID,
    ],
};

// The same for the levels listed ($3, each from its floor of all rows: $4, $5; see
// listed_levels!).
static EXPIRY_WALK_LISTED: Statement = Statement {
    sql: concat!(
        listed_levels!("$3", "$4", "$5", "$6", "$7"),
        " SELECT l.p, pg_catalog.count(*), pg_catalog.min(w.leased_until) FILTER (WHERE w.leased_until > $2) \
          FROM levels l CROSS JOIN LATERAL ( \
              SELECT m.leased_until FROM courier.message m \
              WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at <= $2 \
                AND (m.visible_at, m.id) > (l.at, l.after_id) \
              ORDER BY m.visible_at, m.id LIMIT ",
        expiry_walk_per_level!(),
        ") w \
          GROUP BY l.p"
    ),
    args: &super::concat_args::<2, 5, 7>([pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID], LISTED_ARGS),
};

columns!(ExpiryWalkColumn { Priority, Seen, Earliest });

// The first row of a level after a position that the statement's snapshot shows: where the
// level's floor can rise to (floor.rs). Rows in flight, delayed or dead count; acked ones do not.
static FIRST_ROW_AFTER: Statement = Statement {
    sql: "SELECT m.visible_at, m.id FROM courier.message m \
          WHERE m.queue_id = $1 AND m.priority = $2 AND (m.visible_at, m.id) > ($3, $4) \
          ORDER BY m.visible_at, m.id LIMIT 1",
    args: &[pg_sys::INT4OID, pg_sys::INT2OID, pg_sys::TIMESTAMPTZOID, pg_sys::INT8OID],
};

/// The earliest end of a lease in flight, as far as a bounded walk could tell.
#[derive(Clone, Copy, Debug, Default)]
pub struct Expiry {
    /// The earliest lease end after now among the rows walked.
    pub earliest: Option<pg_sys::TimestampTz>,
    /// Whether the walk saw every row that can be in flight; if not, a lease beyond it may end
    /// earlier, and the caller must look again soon.
    pub complete: bool,
}

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
    /// The group whose head it was or is part of (the group is held until the lease ends).
    pub group_key: Option<String>,
}

/// A message the lease statement picked (locked), as it was before.
struct Picked {
    ready_at: pg_sys::TimestampTz,
    /// A previous lease of it had expired.
    expired: bool,
}

/// What one lease statement did.
#[derive(Default)]
pub struct LeaseOutcome {
    pub leased: Vec<Leased>,
    /// Of the leased messages, how many had a previous lease that expired.
    pub expired: u64,
    /// Which those were (for events.rs's log lines).
    pub expired_ids: Vec<i64>,
    /// Messages whose attempts were exhausted, still locked by this transaction.
    pub exhausted: Vec<i64>,
    /// The last message the one-level scan leased: where the next one may resume.
    pub resume_after: Option<Position>,
    /// The same per level for a queue with several priorities (its hinted scan's).
    pub resume_levels: Vec<(i16, Position)>,
    /// The same for the scan of the groups' heads.
    pub resume_heads_after: Option<Position>,
}

/// Where a lease of a queue with several priorities starts each level's scan: after the position
/// listed for it, from its start for a level not listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LevelStarts {
    /// The levels' floors, each raised to this backend's scan hint of the level.
    pub hinted: Vec<(i16, Position)>,
    /// The floors alone: where a hinted scan that came back short looks again (lease.rs).
    pub floors: Vec<(i16, Position)>,
}

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
    /// Where the one-level scan of the groups' heads starts (the heads' scan hint; lease.rs).
    pub heads_after: Position,
}

columns!(PositionColumn { VisibleAt, Id });

/// A position from its two columns, if the row has one.
fn position(rows: &Rows, visible_at: impl super::Column, id: impl super::Column) -> Option<Position> {
    if rows.is_empty() {
        return None;
    }
    rows.timestamp(0, visible_at).map(|at| (at, rows.get::<i64>(0, id).required("id")))
}

impl Store<'_> {
    /// The next time a message of the queue that is not ready now becomes ready, if any.
    /// `listed`: the queue's levels, when it has a range listed_levels! can take.
    pub fn next_due(
        &self,
        queue_id: i32,
        now: pg_sys::TimestampTz,
        listed: Option<&[(i16, Position)]>,
    ) -> Option<pg_sys::TimestampTz> {
        match listed {
            Some(levels) => {
                let mut args = vec![queue_id.into(), timestamp_arg(now)];
                args.extend(listed_args(levels));
                self.run(&NEXT_DUE_LISTED, &args).timestamp(0, Only)
            }
            None => self.run(&NEXT_DUE, &[queue_id.into(), timestamp_arg(now)]).timestamp(0, Only),
        }
    }

    /// When the earliest running lease expires, from a bounded walk of each level from its floor
    /// of all rows (`floors`; a level not listed from its start). A queue whose floors list one
    /// level, and that has only ever used that one, has a statement of its own.
    pub fn next_expiry(
        &self,
        queue_id: i32,
        now: pg_sys::TimestampTz,
        one_level: bool,
        floors: &[(i16, Position)],
        listed: bool,
    ) -> Expiry {
        match floors {
            &[(priority, (at, id))] if one_level => {
                let args =
                    [queue_id.into(), timestamp_arg(now), priority.into(), timestamp_arg(at), id.into()];
                let rows = self.run(&EXPIRY_WALK_ONE_LEVEL, &args);
                let earliest =
                    (0..rows.len()).filter_map(|i| rows.timestamp(i, Only)).filter(|&e| e > now).min();
                Expiry { earliest, complete: rows.len() < EXPIRY_WALK_ROWS }
            }
            _ => {
                use ExpiryWalkColumn as C;
                let rows = if listed {
                    let mut args = vec![queue_id.into(), timestamp_arg(now)];
                    args.extend(listed_args(floors));
                    self.run(&EXPIRY_WALK_LISTED, &args)
                } else {
                    let [levels, ats, ids] = level_args(floors);
                    self.run(&EXPIRY_WALK, &[queue_id.into(), timestamp_arg(now), levels, ats, ids])
                };
                let mut expiry = Expiry { earliest: None, complete: true };
                for i in 0..rows.len() {
                    let seen = rows.get::<i64>(i, C::Seen).required("seen");
                    expiry.complete &= seen < EXPIRY_WALK_PER_LEVEL;
                    if let Some(e) = rows.timestamp(i, C::Earliest) {
                        expiry.earliest = Some(expiry.earliest.map_or(e, |x| x.min(e)));
                    }
                }
                expiry
            }
        }
    }

    /// The first row of a level after `after` that is not in flight beyond `at`, and the earliest
    /// end of the leases in flight beyond `at` before it: where the level's ready floor can rise
    /// to, and until when it holds (floor.rs).
    ///
    /// The walk passes at most FLOOR_WALK_PAGES pages of messages in flight. If they are all in
    /// flight, it reports a first row just after the last one walked: the ready floor stops
    /// there, everything before it being in flight until the lease end reported, and the next
    /// learning continues from it. Pages are separate statements, each with its own snapshot:
    /// a row a later page shows and an earlier one did not was written after the learner's
    /// clock and announcement readings, so it sits after the bound no floor passes (floor.rs).
    pub fn first_leasable_after(
        &self,
        queue_id: i32,
        priority: i16,
        after: Position,
        at: pg_sys::TimestampTz,
    ) -> (Option<Position>, Option<pg_sys::TimestampTz>) {
        use LevelWalkColumn as C;
        let mut from = after;
        let mut lease_ends: Option<pg_sys::TimestampTz> = None;
        for _ in 0..FLOOR_WALK_PAGES {
            let args = [queue_id.into(), priority.into(), timestamp_arg(from.0), from.1.into()];
            let rows = self.run(&LEVEL_WALK, &args);
            for i in 0..rows.len() {
                let row = (
                    rows.timestamp(i, C::VisibleAt).required("visible_at"),
                    rows.get::<i64>(i, C::Id).required("id"),
                );
                match rows.timestamp(i, C::LeasedUntil) {
                    Some(end) if end > at => lease_ends = Some(lease_ends.map_or(end, |e| e.min(end))),
                    _ => return (Some(row), lease_ends),
                }
                from = row;
            }
            if rows.len() < WALK_PAGE {
                return (None, lease_ends);
            }
        }
        (Some((from.0, from.1.saturating_add(1))), lease_ends)
    }

    /// The first row of a level after `after` that this statement's snapshot shows.
    pub fn first_row_after(&self, queue_id: i32, priority: i16, after: Position) -> Option<Position> {
        let args = [queue_id.into(), priority.into(), timestamp_arg(after.0), after.1.into()];
        let rows = self.run(&FIRST_ROW_AFTER, &args);
        position(&rows, PositionColumn::VisibleAt, PositionColumn::Id)
    }

    /// Leases for `r`; a queue with several priorities starts each level's scan as `levels` says.
    pub fn lease(&self, r: &LeaseRequest, levels: &LevelStarts) -> LeaseOutcome {
        let Some(p) = r.single_priority else {
            return self.lease_levels(r, levels);
        };
        let mut out = self.lease_with(&LEASE_ONE_LEVEL, r, one_level_args(p, r.scan_after));
        // The scan takes the first leasable messages in (visible_at, id) order, so up to the last
        // one it took nothing leasable is left (bar lease.rs's exceptions).
        out.resume_after = out.leased.iter().map(|m| (m.ready_at, m.id)).max();
        let found = (out.leased.len() + out.exhausted.len()) as i32;
        if found >= r.limit {
            return out;
        }
        // A short result from the one-level statement is completed by the level walk, this level
        // from its floor and any other from its start: the cached priority range may lag behind
        // an enqueue that just committed a new priority, or the scan hint may have stepped past a
        // message that became ready late (see lease.rs). What the first statement took is no
        // longer ready, so nothing comes twice.
        let rest = LeaseRequest { limit: r.limit - found, ..*r };
        let more = self.lease_with(&LEASE_LISTED, &rest, listed_args(&[(p, r.floor)]));
        out.expired += more.expired;
        out.expired_ids.extend(more.expired_ids);
        out.leased.extend(more.leased);
        out.exhausted.extend(more.exhausted);
        out.leased.sort_unstable_by_key(|m| (std::cmp::Reverse(m.priority), m.ready_at, m.id));
        out
    }

    /// A queue with several priorities: every level scanned after its floor raised to this
    /// backend's hint, and, when that comes back short, again after the floors alone for the rest
    /// (a hint may have stepped past a message that became ready late, see lease.rs).
    fn lease_levels(&self, r: &LeaseRequest, levels: &LevelStarts) -> LeaseOutcome {
        // No list (a priority range too wide to list): every level found by the walk and scanned
        // from its start.
        if levels.hinted.is_empty() {
            return self.lease_with(&LEASE, r, level_args(&[]).into());
        }
        let mut out = self.lease_with(&LEASE_LISTED, r, listed_args(&levels.hinted));
        // Per level, the scan takes the first leasable messages in (visible_at, id) order, so up
        // to the last one it took from a level nothing leasable is left there.
        let mut resume: HashMap<i16, Position> = HashMap::new();
        for m in &out.leased {
            let at = resume.entry(m.priority).or_insert((m.ready_at, m.id));
            *at = (*at).max((m.ready_at, m.id));
        }
        out.resume_levels = resume.into_iter().collect();
        let found = (out.leased.len() + out.exhausted.len()) as i32;
        if found >= r.limit || levels.hinted == levels.floors {
            return out;
        }
        let rest = LeaseRequest { limit: r.limit - found, ..*r };
        let more = self.lease_with(&LEASE_LISTED, &rest, listed_args(&levels.floors));
        out.expired += more.expired;
        out.expired_ids.extend(more.expired_ids);
        out.leased.extend(more.leased);
        out.exhausted.extend(more.exhausted);
        out.leased.sort_unstable_by_key(|m| (std::cmp::Reverse(m.priority), m.ready_at, m.id));
        out
    }

    fn lease_with(
        &self,
        stmt: &'static Statement,
        r: &LeaseRequest,
        starts: Vec<DatumWithOid<'static>>,
    ) -> LeaseOutcome {
        let mut args = vec![
            r.queue_id.into(),
            timestamp_arg(r.now),
            r.limit.into(),
            timestamp_arg(r.expires_at),
            r.token.into(),
            r.max_attempts.into(),
        ];
        args.extend(starts);
        let rows = self.run(stmt, &args);
        let (mut leased, mut picked) = (Vec::new(), HashMap::new());
        for i in 0..rows.len() {
            let id = rows.get::<i64>(i, LeaseColumn::Id).required("id");
            if rows.get::<bool>(i, LeaseColumn::Leased).required("leased") {
                leased.push(self.read_leased(&rows, i, id, r));
            } else {
                picked.insert(id, read_picked(&rows, i));
            }
        }
        let mut out = LeaseOutcome::default();
        for mut m in leased {
            if let Some(p) = picked.remove(&m.id) {
                m.ready_at = p.ready_at;
                out.expired += u64::from(p.expired);
                out.expired_ids.extend(p.expired.then_some(m.id));
            }
            out.leased.push(m);
        }
        // Whatever was picked and not leased had used up its attempts.
        out.exhausted = picked.into_keys().collect();
        out.exhausted.sort_unstable();
        out.leased.sort_unstable_by_key(|m| (std::cmp::Reverse(m.priority), m.ready_at, m.id));
        out
    }

    /// A leased row; its ready_at comes from the picked row of the same message.
    fn read_leased(&self, rows: &Rows, i: usize, id: i64, r: &LeaseRequest) -> Leased {
        use LeaseColumn as C;
        Leased {
            id,
            token: r.token,
            expires_at: r.expires_at,
            attempt: rows.get::<i32>(i, C::Attempt).required("attempt"),
            priority: rows.get::<i16>(i, C::Priority).required("priority"),
            enqueued_at: rows.timestamp(i, C::EnqueuedAt).required("enqueued_at"),
            ready_at: 0,
            payload: self.keep_jsonb(rows.raw(i, C::Payload)).required("payload"),
            headers: self.keep_jsonb(rows.raw(i, C::Headers)),
            last_error: rows.get::<String>(i, C::LastError),
            group_key: None,
        }
    }

    /// Leases from a queue with message groups: the ready ungrouped messages and the groups'
    /// leasable heads (with up to `group_batch` consecutive messages after each) are weighed in
    /// serving order (priority, then since when, courier_core::groups::choose) and the first
    /// `limit` messages leased.
    ///
    /// Choosing means locking more candidates than the lease takes (up to `limit` of each kind,
    /// and what follows each head), and a row lock lasts until the transaction ends: a lease whose
    /// transaction stays open (a consumer that leases and works in one transaction, or one
    /// stopped before its COMMIT) would keep every other consumer from the groups it looked at and
    /// did not take. So the candidates are locked in a subtransaction of their own. When it
    /// locked only what the lease keeps, the lease is made inside it too and it is committed.
    /// Otherwise (or when the transaction already holds as many of them as it may, xact.rs) it
    /// is rolled back, every lock given back, and what was chosen is locked again without
    /// waiting, each unit taken only if all its rows are unchanged since they were read.
    ///
    /// The common case needs none of that: a lease of one message per group (`group_batch` 1)
    /// from a queue with one priority level, when no ungrouped message is ready, locks the heads
    /// in their own order until it has `limit` (PICK_HEADS) and takes every one it locked. A
    /// subtransaction costs a transaction id, a pg_subtrans entry and a lock of its own: skipping
    /// it made a grouped lease + ack 14 % cheaper (bench/results/2026-12-02-groups-3).
    pub fn lease_grouped(&self, r: &LeaseRequest, group_batch: i32) -> LeaseOutcome {
        if let (Some(level), 1) = (r.single_priority, group_batch)
            && let Some(heads) = self.pick_heads_only(r, level)
        {
            // Heads of one message each, locked in serving order until there are enough, and
            // no ungrouped message to weigh them against: the lease takes all it locked, so it
            // needs no subtransaction to give locks back.
            let d = self.choose_grouped(r, group_batch, Some(heads));
            return self.take_grouped(r, d);
        }
        self.prepare_grouped_lease();
        let may_keep = xact::Subtransaction::may_keep();
        let chosen = xact::Subtransaction::run(|| {
            let d = self.choose_grouped(r, group_batch, None);
            let kept = d.kept();
            if may_keep && d.locked.keys().all(|id| kept.contains(id)) {
                // Leased by the subtransaction that locked the rows: a row locked by one
                // transaction id and then updated by another (its parent's) would need a
                // MultiXact, which every later reader of the row must look up.
                (Err(self.take_grouped(r, d)), xact::End::Keep)
            } else {
                (Ok((d, kept)), xact::End::Undo)
            }
        });
        let (mut d, kept) = match chosen {
            Err(out) => return out,
            Ok(chosen) => chosen,
        };
        let wanted: Vec<i64> = d.locked.keys().copied().filter(|id| kept.contains(id)).collect();
        let now_locked = if wanted.is_empty() { HashMap::new() } else { self.relock(wanted) };
        let unchanged = |id: &i64| now_locked.get(id).is_some_and(|v| d.locked.get(id) == Some(v));
        d.units.retain(|u| u.take.iter().chain(&u.fence).all(unchanged));
        d.exhausted.retain(unchanged);
        self.take_grouped(r, d)
    }

    /// Leases and fences what a grouped lease chose, holding the locks on all of it.
    fn take_grouped(&self, r: &LeaseRequest, d: Decision) -> LeaseOutcome {
        let mut out = LeaseOutcome { exhausted: d.exhausted, ..LeaseOutcome::default() };
        let (mut ids, mut fence, mut order) = (Vec::new(), Vec::new(), Vec::new());
        for u in &d.units {
            // Where the next scans may resume: after the last head and the last ungrouped message
            // taken (chosen in each range's own order, so nothing leasable is left before them).
            let at = r.single_priority.map(|_| (u.since, u.tie));
            if u.head {
                out.resume_heads_after = out.resume_heads_after.max(at);
            } else {
                out.resume_after = out.resume_after.max(at);
            }
            ids.extend_from_slice(&u.take);
            fence.extend_from_slice(&u.fence);
            out.expired += u64::from(u.token.is_some());
            out.expired_ids.extend(u.token.map(|_| u.take[0]));
            order.extend(u.take.iter().map(|id| (*id, u.since)));
        }
        if ids.is_empty() {
            return out;
        }
        let mut applied: HashMap<i64, super::groups::Applied> = self
            .apply_lease(ids, fence, r.token, r.now, r.expires_at)
            .into_iter()
            .map(|a| (a.id, a))
            .collect();
        for (id, ready_at) in order {
            let Some(a) = applied.remove(&id) else { continue };
            out.leased.push(Leased {
                id,
                token: r.token,
                expires_at: r.expires_at,
                attempt: a.attempt,
                priority: a.priority,
                enqueued_at: a.enqueued_at,
                ready_at,
                payload: a.payload,
                headers: a.headers,
                last_error: a.last_error,
                group_key: a.group_key,
            });
        }
        out
    }

    /// The heads a lease of one message per group takes from a level, locked (PICK_HEADS), when
    /// no ungrouped message after the scan's start is ready; None (nothing locked) when one is.
    fn pick_heads_only(&self, r: &LeaseRequest, level: i16) -> Option<Vec<Candidate>> {
        let mut heads =
            self.pick_heads(r.queue_id, r.now, r.limit, level, r.scan_after, r.heads_after, Vec::new())?;
        if heads.len() < r.limit as usize && (r.heads_after != super::START || r.scan_after != r.floor) {
            // A hinted scan that came back short is completed from the floors, as below.
            let mine = heads.iter().map(|c| c.id).collect();
            let rest = r.limit - heads.len() as i32;
            match self.pick_heads(r.queue_id, r.now, rest, level, r.floor, super::START, mine) {
                Some(more) => heads.extend(more),
                // An ungrouped message behind the hint: with nothing locked yet, the general path
                // weighs it; else the next full scan (within 100 ms, lease.rs) finds it.
                None if heads.is_empty() => return None,
                None => {}
            }
        }
        Some(heads)
    }

    /// Locks the candidates of a grouped lease (unless `picked` already) and chooses among them
    /// (lease_grouped's first part, run in its subtransaction unless picked).
    fn choose_grouped(&self, r: &LeaseRequest, group_batch: i32, picked: Option<Vec<Candidate>>) -> Decision {
        use courier_core::groups::{self, Plan, PrefixRow, Unit, choose, plan};
        let level = r.single_priority.unwrap_or(i16::MIN);
        let one_level = r.single_priority.is_some();
        let exact = picked.is_some();
        let mut candidates = picked.unwrap_or_else(|| {
            self.pick_candidates(r.queue_id, r.now, r.limit, level, one_level, r.scan_after, r.heads_after)
        });
        // A hinted scan that came back short is completed from the start of its range, as lease()
        // does (lease.rs says what a hint can step past). What the first scan picked it picks
        // again (this transaction's own locks do not make it skip them): those are dropped.
        let heads = candidates.iter().filter(|c| c.group.is_some()).count();
        let short_heads = heads < r.limit as usize && r.heads_after != super::START;
        let short_singles = candidates.len() - heads < r.limit as usize && r.scan_after != r.floor;
        if !exact && (short_heads || short_singles) {
            // The level walk, as lease() completes its one-level scan: the cached priority range
            // may lag behind an enqueue that just committed a new priority.
            let again = self.pick_candidates(r.queue_id, r.now, r.limit, level, false, r.floor, super::START);
            let seen: std::collections::HashSet<i64> = candidates.iter().map(|c| c.id).collect();
            candidates.extend(again.into_iter().filter(|c| !seen.contains(&c.id)));
        }
        let mut locked: HashMap<i64, i64> = candidates.iter().map(|c| (c.id, c.version)).collect();
        // A head needs what follows it when the lease may take more than one message of a group.
        // (What a previous lease of the group took after the head needs no fence: a receipt of a
        // message behind the head works only while the head carries its lease, settle.rs.)
        let wanted: Vec<(String, i64, i32)> = if group_batch > 1 {
            candidates
                .iter()
                .filter_map(|c| c.group.as_ref().map(|(key, seq)| (key.clone(), *seq, group_batch - 1)))
                .collect()
        } else {
            Vec::new()
        };
        let mut followers: HashMap<String, Vec<PrefixRow>> = HashMap::new();
        for (key, row, version) in self.followers(r.queue_id, &wanted) {
            if row.locked {
                locked.insert(row.id, version);
            }
            followers.entry(key).or_default().push(row);
        }
        let mut exhausted_ids = Vec::new();
        let exhausted = |attempt: i32| r.max_attempts > 0 && attempt >= r.max_attempts;
        // What each unit is: a group's head with its plan's take and fence, or a message.
        let mut units = Vec::new();
        let mut taken: Vec<Taken> = Vec::new();
        for c in &candidates {
            let Some((key, seq)) = &c.group else {
                if c.lease_token.is_some() && exhausted(c.attempt) {
                    exhausted_ids.push(c.id);
                } else {
                    units.push(Unit { priority: c.priority, since: c.since, tie: c.id, size: 1 });
                    taken.push(Taken {
                        take: vec![c.id],
                        fence: Vec::new(),
                        token: c.lease_token,
                        head: false,
                    });
                }
                continue;
            };
            let head = PrefixRow {
                id: c.id,
                seq: *seq,
                ready_at: c.since,
                attempt: c.attempt,
                lease_token: c.lease_token,
                dead: false,
                locked: true,
            };
            let mut rows = vec![head];
            rows.extend(followers.remove(key).unwrap_or_default());
            let group = groups::Candidate { head_seq: *seq, held_token: c.lease_token, rows };
            match plan(&group, r.now, group_batch as usize, r.max_attempts) {
                Plan::Skip => {}
                Plan::Exhausted(id) => exhausted_ids.push(id),
                Plan::Take { take, mut fence } => {
                    // What the previous holder had beyond what this lease may take is fenced too.
                    let cut = take.len().min(group_batch as usize);
                    fence.extend(take[cut..].iter().copied());
                    let take = take[..cut].to_vec();
                    units.push(Unit { priority: c.priority, since: c.since, tie: c.id, size: take.len() });
                    taken.push(Taken { take, fence, token: c.lease_token, head: true });
                }
            }
        }
        let chosen = choose(&units, (r.limit as usize).saturating_sub(exhausted_ids.len()));
        let units = chosen
            .into_iter()
            .map(|(u, n)| {
                let Taken { take, mut fence, token, head } = std::mem::take(&mut taken[u]);
                // A group cut short: the previous holder's messages it did not take are fenced.
                if token.is_some() {
                    fence.extend_from_slice(&take[n..]);
                }
                Chosen {
                    take: take[..n].to_vec(),
                    fence,
                    token,
                    head,
                    since: units[u].since,
                    tie: units[u].tie,
                }
            })
            .collect();
        Decision { units, exhausted: exhausted_ids, locked }
    }
}

/// What a grouped queue's lease would take for one unit: the messages, the messages of the
/// previous holder it fences, that holder's token (its lease had ended), and whether the unit is a
/// group's head.
#[derive(Default)]
struct Taken {
    take: Vec<i64>,
    fence: Vec<i64>,
    token: Option<i64>,
    head: bool,
}

/// A unit a grouped lease chose: what it leases and fences, in serving order.
struct Chosen {
    take: Vec<i64>,
    fence: Vec<i64>,
    /// The previous holder's token, when its lease had ended.
    token: Option<i64>,
    head: bool,
    since: pg_sys::TimestampTz,
    tie: i64,
}

/// What a grouped lease chose, and every row it locked to choose (with the version it read).
struct Decision {
    units: Vec<Chosen>,
    /// Messages whose attempts were exhausted, to be dead-lettered by the caller.
    exhausted: Vec<i64>,
    locked: HashMap<i64, i64>,
}

impl Decision {
    /// The rows the lease keeps: it leases, fences or dead-letters them.
    fn kept(&self) -> std::collections::HashSet<i64> {
        let units = self.units.iter().flat_map(|u| u.take.iter().chain(&u.fence));
        self.exhausted.iter().chain(units).copied().collect()
    }
}

fn read_picked(rows: &Rows, i: usize) -> Picked {
    Picked {
        ready_at: rows.timestamp(i, LeaseColumn::ReadyAt).required("ready_at"),
        expired: rows.get::<bool>(i, LeaseColumn::Expired).required("expired"),
    }
}

/// LEASE_ONE_LEVEL's last three parameters: its level, and where its scan starts.
fn one_level_args(priority: i16, after: Position) -> Vec<DatumWithOid<'static>> {
    vec![priority.into(), timestamp_arg(after.0), after.1.into()]
}

/// This file's statements by name, for `courier._explain` (bin/check-statements keeps it complete).
pub(super) static STATEMENTS: &[(&str, &Statement)] = &[
    ("LEASE", &LEASE),
    ("LEASE_LISTED", &LEASE_LISTED),
    ("LEASE_ONE_LEVEL", &LEASE_ONE_LEVEL),
    ("NEXT_DUE", &NEXT_DUE),
    ("NEXT_DUE_LISTED", &NEXT_DUE_LISTED),
    ("LEVEL_WALK", &LEVEL_WALK),
    ("EXPIRY_WALK_ONE_LEVEL", &EXPIRY_WALK_ONE_LEVEL),
    ("EXPIRY_WALK", &EXPIRY_WALK),
    ("EXPIRY_WALK_LISTED", &EXPIRY_WALK_LISTED),
    ("FIRST_ROW_AFTER", &FIRST_ROW_AFTER),
];

/// Texts of this file's statements for 0.1.0's schema (see mod.rs's Schema), where they differ.
pub(super) static LEGACY: &[(&Statement, &str)] = &[];
