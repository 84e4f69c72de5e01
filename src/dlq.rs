//! Moving messages into a queue's dead-letter queue, for the lease that finds a message out of
//! attempts and for the nack that gives up on one.
//!
//! A dead letter of a message group follows its queue's `group_on_dead`: under 'skip' it leaves
//! the group (whose next message becomes the head); under 'block' the group waits for it. Parked
//! in place it stays at its group's head; moved to a dead-letter queue it leaves the sequence and
//! its group remembers it (storage/groups.rs's BLOCK) until it is redriven, acked or purged.

use courier_core::groups::OnDead;

use crate::announce;
use crate::groups;
use crate::queues::{self, NameLock};
use crate::storage::{DeadLetterQueue, Store};
use crate::wait;

/// Dead-letters messages of `source` this transaction holds locked, into the queue's dead-letter
/// queue if it has one (whose name is locked against a concurrent drop first). Returns how many
/// moved.
pub fn dead_letter(
    store: &Store,
    source: i32,
    dead_letter_queue: &Option<DeadLetterQueue>,
    ids: Vec<i64>,
    error: Option<&str>,
) -> usize {
    if ids.is_empty() {
        return 0;
    }
    // Ready at once in the dead-letter queue: a write into its ready range (announce.rs).
    let now = announce::stamp();
    let target = dead_letter_queue.as_ref().and_then(|DeadLetterQueue { id, name }| {
        queues::lock_name(name, NameLock::Shared);
        // drop_queue refuses while a queue points at its dead-letter queue, so it still exists
        // unless it was detached and dropped since our lookup; then the messages are parked as
        // dead in place instead.
        store.lookup_queue(name, false).filter(|d| d.id == *id)
    });
    let block = queues::resolve_id(store, source).is_some_and(|q| q.group_on_dead == OnDead::Block);
    let dead = store.dead_letter(ids, target.as_ref().map(|d| d.id), now, error, block);
    crate::events::dead_lettered(store, source, target.as_ref(), &dead);
    if let Some(d) = &target {
        wait::became_ready(d.id, &d.name, d.notify);
    }
    // Their groups, in key order: under 'block' a dead letter that moved away blocks its group
    // (one parked in place does by being first); under 'skip' a dead head hands on to the next.
    let mut grouped: Vec<(&str, i64, i64, bool)> = dead
        .iter()
        .filter_map(|m| match &m.group {
            Some((key, Some(seq), head)) => Some((key.as_str(), m.id, *seq, *head)),
            _ => None,
        })
        .collect();
    grouped.sort_unstable_by_key(|g| (g.0, g.2));
    for (key, id, seq, head) in grouped {
        if block && target.is_some() {
            // Locked before it is read: a producer holding the row advances its counter in place
            // (storage/direct.rs), which an UPDATE that read the row before waiting for that
            // producer would write back as it was.
            store.lock_group(source, key);
            store.set_blocked(source, key, id, seq);
        }
        if head && !(block && target.is_none()) {
            groups::head_left(store, source, key, seq);
        }
    }
    dead.len()
}
