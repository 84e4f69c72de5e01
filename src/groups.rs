//! Message groups over storage: handing a group's head on when it leaves, and unblocking or
//! forgetting groups. storage/groups.rs says how a group is kept; this module decides when.
//!
//! Whatever removes a group's head (an ack, a dead letter under 'skip') or ends what blocks a
//! group (a dead letter acked, purged or redriven) calls in here, in the same transaction and
//! after it changed the messages (the lock order: messages, then a group's row). A group whose
//! head becomes leasable now wakes the queue's waiting leases when the transaction commits (a
//! waiting lease wakes on an ack, nack or dead letter of a holder, not only on enqueues).

use std::rc::Rc;

use courier_core::groups::Order;
use pgrx::pg_sys;

use crate::pg;
use crate::queues;
use crate::storage::{GroupChange, QueueRef, Store};
use crate::wait;

/// Hands on the heads and unblocks the groups these changes concern, in queue and key order.
pub fn apply(store: &Store, mut changes: Vec<GroupChange>) {
    changes.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
    changes.dedup();
    for change in changes {
        match change {
            GroupChange::HeadLeft { queue, key, seq } => head_left(store, queue, &key, seq),
            GroupChange::BlockerGone { queue, key } => {
                if let Some(q) = queues::resolve_id(store, queue) {
                    ensure_head(store, &q, &key);
                }
            }
        }
    }
}

fn key(c: &GroupChange) -> (i32, &str) {
    match c {
        GroupChange::HeadLeft { queue, key, .. } | GroupChange::BlockerGone { queue, key } => (*queue, key),
    }
}

/// The head of a group left its sequence (acked, or dead under 'skip'): the next message becomes
/// the head. Only when none could does this look closer (ensure_head): wait for the group's
/// producers in flight, and delete the group if it emptied.
pub fn head_left(store: &Store, queue_id: i32, key: &str, seq: i64) {
    // A queue dropped meanwhile took its groups with it.
    let Some(q) = queues::resolve_id(store, queue_id) else { return };
    let now = pg::now();
    match store.promote_after(q.id, key, seq, q.group_order == Order::Fair, now) {
        Some(head_at) => woke(&q, Some(head_at), now),
        None => ensure_head(store, &q, key),
    }
}

/// Makes a group's first message its head unless something blocks it, and deletes the group's
/// row if it holds nothing: after locking the row, which waits for producers in flight, so that
/// a message they commit is seen (storage/groups.rs).
pub fn ensure_head(store: &Store, q: &Rc<QueueRef>, key: &str) {
    let Some(blocked_by) = store.lock_group(q.id, key) else { return };
    let state = store.head_state(q.id, key, blocked_by.map(|(id, _)| id));
    if blocked_by.is_some() {
        if state.still_blocked {
            return;
        }
        store.clear_blocked(q.id, key);
    }
    match state.first {
        None => store.delete_group(q.id, key),
        // A dead letter blocks its group in place ('block'), or the group has its head.
        Some((_, true, _)) | Some((_, _, true)) => {}
        Some((id, false, false)) => {
            let now = pg::now();
            let head_at = store.set_head(id, q.group_order == Order::Fair, now);
            woke(q, head_at, now);
        }
    }
}

/// Wakes the queue's waiting leases (at commit) if a head became leasable now.
fn woke(q: &QueueRef, head_at: Option<pg_sys::TimestampTz>, now: pg_sys::TimestampTz) {
    if head_at.is_some_and(|at| at <= now) {
        wait::became_ready(q.id, &q.name, q.notify);
    }
}
