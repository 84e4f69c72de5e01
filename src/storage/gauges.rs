//! What a queue holds now: the gauges of `courier.stats`.

use pgrx::pg_sys;

use super::{Statement, Store, columns, timestamp_arg};

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

columns!(GaugeColumn { Ready, Delayed, InFlight, Dead, OldestReady, OldestLease });

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
        use GaugeColumn as C;
        let g = self.run(&GAUGES, &[queue_id.into(), timestamp_arg(now)]);
        Gauges {
            ready: g.get::<i64>(0, C::Ready).unwrap_or(0),
            delayed: g.get::<i64>(0, C::Delayed).unwrap_or(0),
            in_flight: g.get::<i64>(0, C::InFlight).unwrap_or(0),
            dead: g.get::<i64>(0, C::Dead).unwrap_or(0),
            oldest_ready: g.timestamp(0, C::OldestReady),
            oldest_lease: g.timestamp(0, C::OldestLease),
        }
    }
}
