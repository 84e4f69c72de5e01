//! Message groups over storage: keeping group rows in step after their messages changed, and
//! waking leases when a group becomes eligible.
//!
//! Whatever settles, dead-letters or redrives a grouped message calls [`settle`] afterwards, in
//! the same transaction: it locks the groups' rows (after the messages, see storage/groups.rs for
//! the lock order) and recomputes them. A group that became eligible wakes the queue's waiting
//! leases when the transaction commits (requirement: a waiting lease wakes on an ack, nack or
//! dead letter of its holder, not only on enqueues).

use courier_core::groups::Order;

use crate::pg;
use crate::queues;
use crate::storage::Store;
use crate::wait;

/// Recomputes the rows of the groups whose messages this transaction changed: (queue, key) pairs,
/// in any order, duplicates allowed.
pub fn settle(store: &Store, mut changed: Vec<(i32, String)>) {
    if changed.is_empty() {
        return;
    }
    changed.sort_unstable();
    changed.dedup();
    let now = pg::now();
    let mut start = 0;
    while start < changed.len() {
        let queue_id = changed[start].0;
        let end = start + changed[start..].iter().take_while(|(q, _)| *q == queue_id).count();
        let keys: Vec<String> = changed[start..end].iter().map(|(_, k)| k.clone()).collect();
        start = end;
        // A queue dropped meanwhile took its groups with it.
        let Some(q) = queues::resolve_id(store, queue_id) else { continue };
        store.lock_groups(q.id, &keys);
        let eligible = store.sync_groups(q.id, &keys, q.group_order == Order::Fair);
        if eligible.is_some_and(|at| at <= now) {
            wait::became_ready(q.id, &q.name, q.notify);
        }
    }
}
