//! Queue statistics: what is in a queue now (gauges) and what has happened to it (counters).
//!
//! Gauges are read from the queue's rows (storage/gauges.rs). Counters come from shared memory
//! (shmem/counters.rs) and are NULL unless courier is preloaded.

use courier_core::access::Privilege;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::access;
use crate::args;
use crate::call;
use crate::floor;
use crate::pg;
use crate::queues;
use crate::shmem::{self, Counter};
use crate::storage;
use crate::sweep;

fn age(now: pgrx::pg_sys::TimestampTz, since: Option<pgrx::pg_sys::TimestampTz>) -> Option<Interval> {
    since.map(|t| Interval::from_micros((now - t).max(0)))
}

/// What stats() reports about one queue.
struct Snapshot {
    name: String,
    gauges: storage::Gauges,
    /// The queue's message groups (all zero for a queue that never had one).
    groups: storage::GroupGauges,
    now: pg_sys::TimestampTz,
    counters: Option<([u64; shmem::N_COUNTERS], pg_sys::TimestampTz)>,
}

impl Snapshot {
    fn take(queue: Option<&str>) -> Snapshot {
        let name = args::queue_name(queue, "queue");
        // In the caller's snapshot: courier.queue_stats lists the queues and calls this for each,
        // and a queue dropped in between must still be found (storage::in_snapshot).
        let (id, mut gauges, groups, now) = call::reading_in_snapshot(|store| {
            let q = queues::resolve(store, name);
            let now = pg::now();
            // Each level's messages all sit after its floor of all rows: counting starts there.
            let (floors, listed) = match floor::listed(store, &q) {
                Some(levels) => (levels, true),
                None => (floor::all_floors(store, &q), false),
            };
            let groups =
                if q.grouped { store.group_gauges(q.id, now) } else { storage::GroupGauges::default() };
            (q.id, store.gauges(q.id, now, &floors, listed), groups, now)
        });
        gauges.add_groups(&groups);
        Snapshot { name: name.to_string(), gauges, groups, now, counters: shmem::read(id) }
    }

    fn counter(&self, k: Counter) -> Option<i64> {
        self.counters.map(|(c, _)| c[k as usize] as i64)
    }

    fn since(&self) -> Option<TimestampWithTimeZone> {
        self.counters.map(|(_, since)| pg::timestamptz(since))
    }
}

/// One queue's gauges and counters. Each gauge counts at most 10,000 messages per priority level
/// (storage/gauges.rs), so a call costs the same on any backlog; `counts_capped` says a count
/// reached that limit and is a lower bound.
#[allow(clippy::type_complexity)]
#[pg_extern(name = "stats")]
#[search_path(pg_catalog, courier, pg_temp)]
fn stats_v2(
    queue: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(queue, String),
        name!(ready, i64),
        name!(delayed, i64),
        name!(in_flight, i64),
        name!(dead, i64),
        name!(oldest_ready_age, Option<Interval>),
        name!(oldest_lease_age, Option<Interval>),
        name!(enqueued_total, Option<i64>),
        name!(deduplicated_total, Option<i64>),
        name!(leased_total, Option<i64>),
        name!(expired_total, Option<i64>),
        name!(acked_total, Option<i64>),
        name!(nacked_total, Option<i64>),
        name!(dead_lettered_total, Option<i64>),
        name!(counters_since, Option<TimestampWithTimeZone>),
        name!(counts_capped, bool),
        name!(groups, i64),
        name!(groups_held, i64),
        name!(groups_blocked, i64),
    ),
> {
    let s = Snapshot::take(queue);
    let g = &s.gauges;
    TableIterator::once((
        s.name.clone(),
        g.ready,
        g.delayed,
        g.in_flight,
        g.dead,
        age(s.now, g.oldest_ready),
        age(s.now, g.oldest_lease),
        s.counter(Counter::Enqueued),
        s.counter(Counter::Deduplicated),
        s.counter(Counter::Leased),
        s.counter(Counter::Expired),
        s.counter(Counter::Acked),
        s.counter(Counter::Nacked),
        s.counter(Counter::DeadLettered),
        s.since(),
        g.capped,
        s.groups.groups,
        s.groups.held,
        s.groups.blocked,
    ))
}

/// stats() as 0.1.0's SQL declares it (without counts_capped), for databases not updated yet:
/// the symbol 0.1.0's install script binds must keep its result shape (CONTRIBUTING.md).
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn stats(
    queue: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(queue, String),
        name!(ready, i64),
        name!(delayed, i64),
        name!(in_flight, i64),
        name!(dead, i64),
        name!(oldest_ready_age, Option<Interval>),
        name!(oldest_lease_age, Option<Interval>),
        name!(enqueued_total, Option<i64>),
        name!(deduplicated_total, Option<i64>),
        name!(leased_total, Option<i64>),
        name!(expired_total, Option<i64>),
        name!(acked_total, Option<i64>),
        name!(nacked_total, Option<i64>),
        name!(dead_lettered_total, Option<i64>),
        name!(counters_since, Option<TimestampWithTimeZone>),
    ),
> {
    let s = Snapshot::take(queue);
    let g = &s.gauges;
    TableIterator::once((
        s.name.clone(),
        g.ready,
        g.delayed,
        g.in_flight,
        g.dead,
        age(s.now, g.oldest_ready),
        age(s.now, g.oldest_lease),
        s.counter(Counter::Enqueued),
        s.counter(Counter::Deduplicated),
        s.counter(Counter::Leased),
        s.counter(Counter::Expired),
        s.counter(Counter::Acked),
        s.counter(Counter::Nacked),
        s.counter(Counter::DeadLettered),
        s.since(),
    ))
}

/// Zeroes the counters of one queue, or of every queue in this database; false when courier is
/// not preloaded (there are no counters then).
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn stats_reset(queue: default!(Option<&str>, "NULL")) -> bool {
    match queue {
        None => {
            call::with(|store| access::require_table_owner(store, "reset the counters of every queue"));
            shmem::reset(None)
        }
        Some(_) => {
            let name = args::queue_name(queue, "queue");
            let id = call::with(|store| {
                let q = queues::resolve(store, name);
                access::require(store, &q, Privilege::Manage);
                q.id
            });
            shmem::reset(Some(id))
        }
    }
}

/// Reclaims expired dedup keys and completed messages past their retention, up to `max_rows`
/// of each. courier does this in small batches as it goes; call this to catch up after a burst.
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn maintain(
    max_rows: default!(Option<i32>, 100000),
) -> TableIterator<'static, (name!(expired_keys, i64), name!(expired_completed, i64))> {
    let max_rows = args::batch_size(max_rows, "max_rows", i32::MAX);
    let done = call::with(|store| sweep::catch_up(store, pg::now(), max_rows));
    TableIterator::once((done.keys, done.completed))
}
