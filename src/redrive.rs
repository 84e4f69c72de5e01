//! Redrive: putting dead letters back to work.
//!
//! A message dies when it is nacked with `dead => true` or runs out of attempts. With a
//! dead-letter queue it moves there (ready at once, attempt 0, its origin and attempt count
//! recorded); without one it stays in its queue, parked where no lease reaches it. Redrive sends
//! the first kind back to the queue it came from and revives the second kind in place, both with
//! their attempt count reset. It never takes a message a consumer currently holds.

use std::collections::{BTreeMap, HashMap};

use courier_core::CourierError;
use courier_core::access::Privilege;
use courier_core::limits::MAX_REDRIVE;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::access;
use crate::announce;
use crate::args;
use crate::call;
use crate::errors::raise;
use crate::groups;
use crate::pg;
use crate::queues::{self, NameLock};
use crate::storage::{DeadLetter, Destination, Store};
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
        let now = announce::stamp();
        let grouped: Vec<&DeadLetter> = candidates
            .iter()
            .filter(|c| c.destination != Destination::OriginGone && c.group.is_some())
            .collect();
        let plain: Vec<i64> = ids.into_iter().filter(|id| !grouped.iter().any(|c| c.id == *id)).collect();
        let mut moved = if plain.is_empty() { 0 } else { store.redrive(plain, now) as i64 };
        moved += redrive_grouped(store, q.id, &grouped, now) as i64;
        for o in &origins {
            wait::became_ready(o.queue_id, o.name, o.notify);
        }
        if candidates.iter().any(|c| c.destination == Destination::InPlace) {
            wait::became_ready(q.id, &q.name, q.notify);
        }
        crate::events::redriven(store, &q.name, moved);
        moved
    })
}

/// Puts dead letters of message groups back into their groups: in place if it still blocks its
/// group (parked first in it, or remembered by its group after it moved to a dead-letter queue:
/// 'block'), else at the end of its group ('skip'). A group without a head then gets one.
/// Returns how many moved.
fn redrive_grouped(store: &Store, queue_id: i32, letters: &[&DeadLetter], now: pg_sys::TimestampTz) -> usize {
    // By destination queue, then key.
    let mut by_queue: BTreeMap<i32, Vec<&DeadLetter>> = BTreeMap::new();
    for c in letters {
        let dest = match &c.destination {
            Destination::Origin { queue_id, .. } => *queue_id,
            _ => queue_id,
        };
        by_queue.entry(dest).or_default().push(c);
    }
    let mut moved = 0;
    for (dest, mut letters) in by_queue {
        letters.sort_unstable_by_key(|c| c.id);
        let mut keys: Vec<String> =
            letters.iter().filter_map(|c| c.group.as_ref().map(|g| g.0.clone())).collect();
        keys.sort_unstable();
        keys.dedup();
        // The groups' rows, in key order (after the messages, as everywhere).
        let blocked: HashMap<&str, (i64, i64)> = keys
            .iter()
            .filter_map(|k| store.lock_group(dest, k).flatten().map(|b| (k.as_str(), b)))
            .collect();
        let mut seqs: Vec<Option<i64>> = letters
            .iter()
            .map(|c| {
                let (key, seq) = c.group.as_ref().expect("grouped");
                match (seq, blocked.get(key.as_str())) {
                    // Still in its group's sequence (parked there under 'block').
                    (Some(seq), _) => Some(*seq),
                    // Moved to a dead-letter queue, remembered by the group it blocks.
                    (None, Some((id, at))) if *id == c.id => Some(*at),
                    _ => None,
                }
            })
            .collect();
        let mut tails: BTreeMap<String, i64> = BTreeMap::new();
        for (c, seq) in letters.iter().zip(&seqs) {
            if seq.is_none() {
                *tails.entry(c.group.as_ref().expect("grouped").0.clone()).or_default() += 1;
            }
        }
        if !tails.is_empty() {
            let counts: Vec<(String, i64)> = tails.into_iter().collect();
            let mut next: HashMap<String, i64> = store.reserve_groups(dest, &counts).into_iter().collect();
            for (c, seq) in letters.iter().zip(seqs.iter_mut()) {
                if seq.is_none() {
                    let n = next.get_mut(&c.group.as_ref().expect("grouped").0).expect("reserved");
                    *seq = Some(*n);
                    *n += 1;
                }
            }
        }
        let ids: Vec<i64> = letters.iter().map(|c| c.id).collect();
        let seqs: Vec<i64> = seqs.into_iter().map(|s| s.expect("numbered")).collect();
        moved += store.redrive_grouped(ids, seqs, now);
        if let Some(q) = queues::resolve_id(store, dest) {
            for key in &keys {
                groups::ensure_head(store, &q, key);
            }
        }
    }
    moved
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
