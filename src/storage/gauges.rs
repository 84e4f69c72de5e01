//! What a queue holds now: the gauges of `courier.stats`.
//!
//! Counting a queue's rows costs a visit per row, so a queue with ten million messages would
//! make every stats call (and every monitoring scrape) read ten million rows. Each gauge is
//! therefore counted from a bounded walk of its part of each priority level: up to
//! [`GAUGE_CAP`] rows per level and gauge. A queue that holds more reports the cap's worth and
//! says its counts are lower bounds.

use pgrx::pg_sys;

use super::{Position, Required, Statement, Store, columns, timestamp_arg};

/// Rows per level and gauge a stats call counts at most.
macro_rules! gauge_cap {
    () => {
        10000
    };
}
pub const GAUGE_CAP: i64 = gauge_cap!();

// Per level of `levels` (p; at and after_id where the levels are listed): messages delayed (before
// the groups' parked range: messages in groups are counted from their groups, groups.rs) and
// parked dead (index entries only), and, from a walk of the ready range after $start (a row of
// visible_at and id), messages ready and in flight with the oldest of each.
macro_rules! level_gauges {
    ($start:literal) => {
        concat!(
            " SELECT l.p, \
                (SELECT pg_catalog.count(*) FROM (SELECT FROM courier.message m \
                     WHERE m.queue_id = $1 AND m.priority = l.p \
                       AND m.visible_at > $2 AND m.visible_at < ",
            super::groups::parked!(),
            " \
                     ORDER BY m.visible_at, m.id LIMIT ",
            gauge_cap!(),
            ") d), \
                (SELECT pg_catalog.count(*) FROM (SELECT FROM courier.message m \
                     WHERE m.queue_id = $1 AND m.priority = l.p \
                       AND m.visible_at >= 'infinity'::pg_catalog.timestamptz \
                     ORDER BY m.visible_at, m.id LIMIT ",
            gauge_cap!(),
            ") d), \
                r.ready, r.in_flight, r.oldest_ready, r.oldest_lease, r.seen \
         FROM levels l CROSS JOIN LATERAL ( \
             SELECT pg_catalog.count(*) FILTER (WHERE w.leased_until IS NULL OR w.leased_until <= $2) AS ready, \
                    pg_catalog.count(*) FILTER (WHERE w.leased_until > $2) AS in_flight, \
                    pg_catalog.min(w.visible_at) FILTER (WHERE w.leased_until IS NULL OR w.leased_until <= $2) \
                        AS oldest_ready, \
                    pg_catalog.min(w.leased_at) FILTER (WHERE w.leased_until > $2) AS oldest_lease, \
                    pg_catalog.count(*) AS seen \
             FROM (SELECT m.visible_at, m.leased_until, m.leased_at FROM courier.message m \
                   WHERE m.queue_id = $1 AND m.priority = l.p AND m.visible_at <= $2 \
                     AND (m.visible_at, m.id) > ",
            $start,
            " \
                   ORDER BY m.visible_at, m.id LIMIT ",
            gauge_cap!(),
            ") w) r"
        )
    };
}

// The gauges of every level the walk finds, each ready range walked from the level's floor of all
// rows (($4[i], $5[i]) for the level $3[i]), else from its start.
static GAUGES: Statement = Statement {
    sql: concat!(
        "WITH RECURSIVE levels(p) AS ( \
             SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 \
                     ORDER BY m.priority DESC LIMIT 1) \
             UNION ALL \
             SELECT (SELECT m.priority FROM courier.message m WHERE m.queue_id = $1 AND m.priority < l.p \
                     ORDER BY m.priority DESC LIMIT 1) \
             FROM levels l WHERE l.p IS NOT NULL)",
        level_gauges!(
            "(COALESCE($4[pg_catalog.array_position($3, l.p)], '-infinity'::pg_catalog.timestamptz), \
              COALESCE($5[pg_catalog.array_position($3, l.p)], '-9223372036854775808'::pg_catalog.int8))"
        ),
        " WHERE l.p IS NOT NULL"
    ),
    args: &[
        pg_sys::INT4OID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::INT2ARRAYOID,
        pg_sys::TIMESTAMPTZARRAYOID,
        pg_sys::INT8ARRAYOID,
    ],
};

// The same for the levels listed ($3, each counted from its floor of all rows: $4, $5; see
// storage/lease.rs's listed_levels!).
static GAUGES_LISTED: Statement = Statement {
    sql: concat!(
        super::lease::listed_levels!("$3", "$4", "$5", "$6", "$7"),
        level_gauges!("(l.at, l.after_id)")
    ),
    args: &super::concat_args::<2, 5, 7>(
        [pg_sys::INT4OID, pg_sys::TIMESTAMPTZOID],
        super::lease::LISTED_ARGS,
    ),
};

columns!(GaugeColumn { Priority, Delayed, Dead, Ready, InFlight, OldestReady, OldestLease, Seen });

#[derive(Default)]
pub struct Gauges {
    pub ready: i64,
    pub delayed: i64,
    pub in_flight: i64,
    pub dead: i64,
    pub oldest_ready: Option<pg_sys::TimestampTz>,
    pub oldest_lease: Option<pg_sys::TimestampTz>,
    /// Some level held more than GAUGE_CAP rows of some gauge: the counts are lower bounds (and
    /// the oldest lease may be older than reported).
    pub capped: bool,
}

impl Gauges {
    /// Adds what the queue's message groups hold: messages in groups count as ready, in flight or
    /// delayed like the others (a message behind its group's head is ready in itself), and their
    /// oldest ready message and lease count for the ages.
    pub fn add_groups(&mut self, groups: &super::GroupGauges) {
        self.ready += groups.ready;
        self.in_flight += groups.in_flight;
        self.delayed += groups.delayed;
        self.capped |= groups.capped;
        self.oldest_ready = earliest(self.oldest_ready, groups.oldest_ready);
        self.oldest_lease = earliest(self.oldest_lease, groups.oldest_lease);
    }
}

fn earliest(a: Option<pg_sys::TimestampTz>, b: Option<pg_sys::TimestampTz>) -> Option<pg_sys::TimestampTz> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Store<'_> {
    /// The queue's gauges at `now`; `floors` are the floors of all rows of the levels that have
    /// one (no message of the level sits before it).
    /// With `listed`, `floors` lists every level of the queue's range (START where it has no
    /// floor), for GAUGES_LISTED.
    pub fn gauges(
        &self,
        queue_id: i32,
        now: pg_sys::TimestampTz,
        floors: &[(i16, Position)],
        listed: bool,
    ) -> Gauges {
        use GaugeColumn as C;
        let mut args = vec![queue_id.into(), timestamp_arg(now)];
        let rows = if listed {
            args.extend(super::listed_args(floors));
            self.run(&GAUGES_LISTED, &args)
        } else {
            args.extend(super::level_args(floors));
            self.run(&GAUGES, &args)
        };
        let mut g = Gauges::default();
        for i in 0..rows.len() {
            let delayed = rows.get::<i64>(i, C::Delayed).required("delayed");
            let dead = rows.get::<i64>(i, C::Dead).required("dead");
            let seen = rows.get::<i64>(i, C::Seen).required("seen");
            g.delayed += delayed;
            g.dead += dead;
            g.ready += rows.get::<i64>(i, C::Ready).required("ready");
            g.in_flight += rows.get::<i64>(i, C::InFlight).required("in_flight");
            g.oldest_ready = earliest(g.oldest_ready, rows.timestamp(i, C::OldestReady));
            g.oldest_lease = earliest(g.oldest_lease, rows.timestamp(i, C::OldestLease));
            g.capped |= delayed >= GAUGE_CAP || dead >= GAUGE_CAP || seen >= GAUGE_CAP;
        }
        g
    }
}

/// This file's statements by name, for `courier._explain` (bin/check-statements keeps it complete).
pub(super) static STATEMENTS: &[(&str, &Statement)] =
    &[("GAUGES", &GAUGES), ("GAUGES_LISTED", &GAUGES_LISTED)];
