//! Redrive: sending dead letters back to where they came from.

use pgrx::pg_sys;

use super::{Required, Statement, Store, columns, timestamp_arg};

// Dead letters of a queue that nobody holds: messages moved here from another queue, or parked
// dead here. Leased and locked ones are skipped, so redrive never takes a message from a consumer.
// Two statements, not one with `$2 IS NULL OR id = ANY ($2)`: a generic plan cannot make such an
// OR an index bound, and would walk every dead letter of the queue to find the few asked for.
macro_rules! candidates {
    ($ids:literal) => {
        candidates!($ids, "m.group_key, m.group_seq")
    };
    ($ids:literal, $groups:literal) => {
        concat!(
            "SELECT m.id, m.origin_queue_id, o.name, o.notify, ",
            $groups,
            " FROM courier.message m \
             LEFT JOIN courier.queue o ON o.queue_id = m.origin_queue_id \
             WHERE m.queue_id = $1 AND m.dead_at IS NOT NULL",
            $ids,
            " AND NOT (m.leased_until IS NOT NULL AND m.leased_until > $2) \
             ORDER BY m.id LIMIT $3 \
             FOR UPDATE OF m SKIP LOCKED"
        )
    };
}

static REDRIVE_CANDIDATES: Statement =
    Statement { sql: candidates!(""), args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID, pg_sys::INT4OID] };

static REDRIVE_CANDIDATES_BY_ID: Statement = Statement {
    sql: candidates!(" AND m.id = ANY ($4)"),
    args: &[pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID, pg_sys::INT4OID, pg_sys::INT8ARRAYOID],
};

static REDRIVE: Statement = Statement {
    sql: "UPDATE courier.message m SET queue_id = COALESCE(m.origin_queue_id, m.queue_id), \
              origin_queue_id = NULL, origin_attempts = NULL, attempt = 0, dead_at = NULL, \
              lease_token = NULL, leased_at = NULL, leased_until = NULL, visible_at = $2 \
          WHERE m.id = ANY ($1) \
            AND (m.origin_queue_id IS NULL OR EXISTS (SELECT FROM courier.queue q WHERE q.queue_id = m.origin_queue_id))",
    args: &[pg_sys::INT8ARRAYOID, pg_sys::TIMESTAMPTZOID],
};

// Dead letters of groups ($1) go back into their group's sequence at the numbers given ($3),
// ready at $2.
static REDRIVE_GROUPED: Statement = Statement {
    sql: concat!(
        "UPDATE courier.message m SET queue_id = COALESCE(m.origin_queue_id, m.queue_id), \
             origin_queue_id = NULL, origin_attempts = NULL, attempt = 0, dead_at = NULL, \
             lease_token = NULL, leased_at = NULL, leased_until = NULL, visible_at = ",
        super::groups::parked!(),
        ", group_ready_at = $2, group_seq = u.s \
         FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($3::pg_catalog.int8[])) AS u(id, s) \
         WHERE m.id = u.id"
    ),
    args: &[pg_sys::INT8ARRAYOID, pg_sys::TIMESTAMPTZOID, pg_sys::INT8ARRAYOID],
};

columns!(CandidateColumn { Id, OriginQueueId, OriginName, OriginNotify, GroupKey, GroupSeq });

/// Where a redriven dead letter goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// It was parked dead in its own queue: it is revived in place.
    InPlace,
    /// It came from this queue, which still exists.
    Origin { queue_id: i32, name: String, notify: bool },
    /// It came from a queue that no longer exists: it stays where it is.
    OriginGone,
}

/// A dead letter locked for redrive.
pub struct DeadLetter {
    pub id: i64,
    pub destination: Destination,
    /// Its group key, and its number if it is still in its group's sequence (parked in place
    /// under 'block').
    pub group: Option<(String, Option<i64>)>,
}

impl Store<'_> {
    pub fn redrive_candidates(
        &self,
        queue_id: i32,
        ids: Option<Vec<i64>>,
        now: pg_sys::TimestampTz,
        limit: i32,
    ) -> Vec<DeadLetter> {
        use CandidateColumn as C;
        let rows = match ids {
            None => self.run(&REDRIVE_CANDIDATES, &[queue_id.into(), timestamp_arg(now), limit.into()]),
            Some(ids) => {
                let args = [queue_id.into(), timestamp_arg(now), limit.into(), ids.into()];
                self.run(&REDRIVE_CANDIDATES_BY_ID, &args)
            }
        };
        (0..rows.len())
            .map(|i| {
                let destination =
                    match (rows.get::<i32>(i, C::OriginQueueId), rows.get::<String>(i, C::OriginName)) {
                        (None, _) => Destination::InPlace,
                        (Some(_), None) => Destination::OriginGone,
                        (Some(queue_id), Some(name)) => Destination::Origin {
                            queue_id,
                            name,
                            notify: rows.get::<bool>(i, C::OriginNotify).unwrap_or(false),
                        },
                    };
                DeadLetter {
                    id: rows.get::<i64>(i, C::Id).required("id"),
                    destination,
                    group: rows.get::<String>(i, C::GroupKey).map(|k| (k, rows.get::<i64>(i, C::GroupSeq))),
                }
            })
            .collect()
    }

    pub fn redrive(&self, ids: Vec<i64>, now: pg_sys::TimestampTz) -> usize {
        self.run(&REDRIVE, &[ids.into(), timestamp_arg(now)]).len()
    }

    /// Puts locked dead letters back into their groups at the given numbers.
    pub fn redrive_grouped(&self, ids: Vec<i64>, seqs: Vec<i64>, now: pg_sys::TimestampTz) -> usize {
        self.run(&REDRIVE_GROUPED, &[ids.into(), timestamp_arg(now), seqs.into()]).len()
    }
}

/// This file's statements by name, for `courier._explain` (bin/check-statements keeps it complete).
pub(super) static STATEMENTS: &[(&str, &Statement)] = &[
    ("REDRIVE_CANDIDATES", &REDRIVE_CANDIDATES),
    ("REDRIVE_CANDIDATES_BY_ID", &REDRIVE_CANDIDATES_BY_ID),
    ("REDRIVE", &REDRIVE),
    ("REDRIVE_GROUPED", &REDRIVE_GROUPED),
];

/// Texts of this file's statements for 0.1.0's schema (see mod.rs's Schema), where they differ.
pub(super) static LEGACY: &[(&Statement, &str)] = &[
    (&REDRIVE_CANDIDATES, candidates!("", "NULL::pg_catalog.text, NULL::pg_catalog.int8")),
    (
        &REDRIVE_CANDIDATES_BY_ID,
        candidates!(" AND m.id = ANY ($4)", "NULL::pg_catalog.text, NULL::pg_catalog.int8"),
    ),
];
