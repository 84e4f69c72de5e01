//! Redrive: putting dead letters back to work.
//!
//! A message dies when it is nacked with `dead => true` or runs out of attempts. With a
//! dead-letter queue it moves there (ready at once, attempt 0, its origin and attempt count
//! recorded); without one it stays in its queue, parked where no lease reaches it. Redrive sends
//! the first kind back to the queue it came from and revives the second kind in place, both with
//! their attempt count reset. It never takes a message a consumer currently holds.

use courier_core::CourierError;
use courier_core::access::Privilege;
use courier_core::limits::MAX_REDRIVE;
use pgrx::prelude::*;

use crate::access;
use crate::announce;
use crate::args;
use crate::call;
use crate::errors::raise;
use crate::pg;
use crate::queues::{self, NameLock};
use crate::storage::{DeadLetter, Destination};
use crate::wait;

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
    let ids = message_ids.map(message_id_list);
    let limit = args::batch_size(max_messages, "max_messages", MAX_REDRIVE);
    call::with(|store| {
        let q = queues::resolve(store, name);
        access::require(store, &q, Privilege::Manage);
        let candidates = store.redrive_candidates(q.id, ids, pg::now(), limit);
        let origins = lock_origins(&candidates);
        let gone = candidates.iter().filter(|c| c.destination == Destination::OriginGone).count();
        if gone > 0 {
            pgrx::notice!(
                "{gone} dead letters stay in \"{name}\": the queue they came from no longer exists"
            );
        }
        let ids: Vec<i64> =
            candidates.iter().filter(|c| c.destination != Destination::OriginGone).map(|c| c.id).collect();
        if ids.is_empty() {
            return 0;
        }
        // Ready at once where they go: a write into that ready range (announce.rs).
        let moved = store.redrive(ids, announce::stamp()) as i64;
        for o in &origins {
            wait::became_ready(o.queue_id, o.name, o.notify);
        }
        if candidates.iter().any(|c| c.destination == Destination::InPlace) {
            wait::became_ready(q.id, &q.name, q.notify);
        }
        moved
    })
}

/// The message_ids argument: at most MAX_REDRIVE, none NULL.
fn message_id_list(ids: Vec<Option<i64>>) -> Vec<i64> {
    if ids.len() > MAX_REDRIVE as usize {
        raise(CourierError::invalid(format!(
            "message_ids has {} elements, the maximum is {MAX_REDRIVE}",
            ids.len()
        )));
    }
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| {
            id.unwrap_or_else(|| {
                raise(CourierError::null(&args::Argument::element("message_ids", i).to_string()))
            })
        })
        .collect()
}

/// A queue dead letters go back to.
#[derive(PartialEq, Eq)]
struct Origin<'a> {
    queue_id: i32,
    name: &'a str,
    notify: bool,
}

/// Locks the names of the queues the candidates go back to, like an enqueue does, so a
/// concurrent drop of one cannot strand them. Sorted by name, so two redrives never wait for
/// each other in opposite orders.
fn lock_origins(candidates: &[DeadLetter]) -> Vec<Origin<'_>> {
    let mut origins: Vec<Origin> = candidates
        .iter()
        .filter_map(|c| match &c.destination {
            Destination::Origin { queue_id, name, notify } => {
                Some(Origin { queue_id: *queue_id, name: name.as_str(), notify: *notify })
            }
            _ => None,
        })
        .collect();
    origins.sort_unstable_by(|a, b| a.name.cmp(b.name));
    origins.dedup();
    for o in &origins {
        queues::lock_name(o.name, NameLock::Shared);
    }
    origins
}
