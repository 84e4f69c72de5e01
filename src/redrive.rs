//! Redrive: putting dead letters back to work.
//!
//! A message dies when it is nacked with `dead => true` or runs out of attempts. With a
//! dead-letter queue it moves there (ready at once, attempt 0, its origin and attempt count
//! recorded); without one it stays in its queue, parked where no lease reaches it. Redrive sends
//! the first kind back to the queue it came from and revives the second kind in place, both with
//! their attempt count reset. It never takes a message a consumer currently holds.

use courier_core::access::Privilege;
use courier_core::limits::MAX_BATCH;
use courier_core::CourierError;
use pgrx::prelude::*;

use crate::access;
use crate::announce;
use crate::args;
use crate::call;
use crate::errors::raise;
use crate::pg;
use crate::queues::{self, NameLock};
use crate::wait;

/// Most dead letters one redrive call moves; call it again for more.
const MAX_REDRIVE: i32 = 10 * MAX_BATCH;

/// Moves up to `max_messages` dead letters of `queue` (optionally only `message_ids`) back to
/// where they came from, with attempts reset; returns how many moved.
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn redrive(
    queue: Option<&str>,
    message_ids: default!(Option<Vec<Option<i64>>>, "NULL"),
    max_messages: default!(Option<i32>, 1000),
) -> i64 {
    let name = args::queue_name(queue, "queue");
    let ids = message_ids.map(|ids| {
        if ids.len() > MAX_REDRIVE as usize {
            raise(CourierError::invalid(format!(
                "message_ids has {} elements, the maximum is {MAX_REDRIVE}",
                ids.len()
            )));
        }
        ids.into_iter()
            .enumerate()
            .map(|(i, id)| {
                id.unwrap_or_else(|| raise(CourierError::null(&format!("message_ids[{}]", i + 1))))
            })
            .collect::<Vec<i64>>()
    });
    let limit = args::batch_size(max_messages, "max_messages", MAX_REDRIVE);
    call::with(|store| {
        let q = queues::resolve(store, name);
        access::require(store, &q, Privilege::Manage);
        let now = pg::now();
        let candidates = store.redrive_candidates(q.id, ids, now, limit);
        // Messages going back into a queue take that queue's name lock, like an enqueue, so a
        // concurrent drop of the origin cannot strand them. Sorted, so two redrives never wait
        // for each other in opposite orders.
        let mut origins: Vec<(i32, &str, bool)> = candidates
            .iter()
            .filter_map(|c| {
                c.origin.as_ref().and_then(|(id, n)| n.as_ref().map(|(n, notify)| (*id, n.as_str(), *notify)))
            })
            .collect();
        origins.sort_unstable_by(|a, b| a.1.cmp(b.1));
        origins.dedup();
        for (_, origin, _) in &origins {
            queues::lock_name(origin, NameLock::Shared);
        }
        let gone = candidates.iter().filter(|c| matches!(c.origin, Some((_, None)))).count();
        if gone > 0 {
            pgrx::notice!(
                "{gone} dead letters stay in \"{name}\": the queue they came from no longer exists"
            );
        }
        let ids: Vec<i64> =
            candidates.iter().filter(|c| !matches!(c.origin, Some((_, None)))).map(|c| c.id).collect();
        if ids.is_empty() {
            return 0;
        }
        // Ready at once where they go: a write into that ready range (announce.rs).
        let moved = store.redrive(ids, announce::stamp()) as i64;
        for (id, origin, notify) in &origins {
            wait::became_ready(*id, origin, *notify);
        }
        if candidates.iter().any(|c| c.origin.is_none()) {
            wait::became_ready(q.id, &q.name, q.notify);
        }
        moved
    })
}
