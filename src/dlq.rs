//! Moving messages into a queue's dead-letter queue, for the lease that finds a message out of
//! attempts and for the nack that gives up on one.

use crate::announce;
use crate::queues::{self, NameLock};
use crate::storage::{DeadLetterQueue, Store};
use crate::wait;

/// Dead-letters messages this transaction holds locked, into the queue's dead-letter queue if
/// it has one (whose name is locked against a concurrent drop first). Returns how many moved.
pub fn dead_letter(
    store: &Store,
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
    let moved = store.dead_letter(ids, target.as_ref().map(|d| d.id), now, error);
    if let Some(d) = target {
        wait::became_ready(d.id, &d.name, d.notify);
    }
    moved
}
