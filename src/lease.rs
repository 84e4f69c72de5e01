//! Lease: handing messages to a consumer for a visibility timeout.
//!
//! A leased message is invisible to every other lease until its timeout passes. Each lease draws
//! a fresh random token; the receipt returned to the consumer carries it, and ack, nack and extend
//! only act while the token is still the message's current one.
//!
//! A message that has already been delivered max_attempts times is not delivered again: when a
//! lease finds it ready (its last lease expired), it is dead-lettered instead, and the lease looks
//! further to fill the batch.
//!
//! Scan hint. Acked messages leave index entries behind at the head of the ready range until
//! vacuum removes them, and messages in flight stay in the range (a lease does not move a message,
//! see schema.sql); a scan from the start of the range walks all of them. So each backend
//! remembers, per queue, the (ready time, id) of the last message its previous lease took, and
//! starts its next scan after it. Almost nothing leasable is skipped that way: the scan is ordered
//! and takes the first unlocked ready messages, so up to the last one it took nothing was left
//! leasable, and what becomes ready later by being enqueued, coming due, being nacked or redriven
//! becomes ready at or after any hint taken earlier. Three things can sit behind a hint: a message
//! whose lease expired (it keeps its place), a message whose enqueuing transaction took its
//! timestamp before the hint but committed after it, and a message another session had locked
//! while we scanned past it and then released by rolling back. So the hint is ignored whenever a
//! hinted scan comes back short, and at least every 100 ms: such a message waits 100 ms at most,
//! only while the queue is busy enough that every scan is filled. Those scans of the whole range
//! start at the queue's floor (floor.rs), which all backends share: before it lies nothing that
//! is or can become leasable. A queue with several priorities keeps both per level: a level's
//! scan starts after its own floor raised to this backend's hint of that level, and a drained
//! level above the one being consumed costs its scan the few entries past its floor rather than
//! every acked message vacuum has not removed yet (bench/results/2026-12-03-levels).

use std::cell::RefCell;

use courier_core::access::Privilege;
use courier_core::groups;
use courier_core::limits::MAX_BATCH;
use courier_core::receipt::Receipt;
use courier_core::scan_hint::ScanHints;
use courier_core::tuning::{EXPIRY_RECHECK_USECS, LEASE_DEAD_LETTER_ROUNDS};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::access;
use crate::args;
use crate::call;
use crate::dlq;
use crate::effects;
use crate::errors::{OrRaise, arg};
use crate::floor;
use crate::pg;
use crate::queues;
use crate::shmem::Counter;
use crate::srf::Materialized;
use crate::storage::{LeaseRequest, Leased, LevelStarts, QueueRef, START, Store};
use crate::wait;

thread_local! {
    /// Where this backend's next scan of each queue starts (see the module comment).
    static HINTS: RefCell<ScanHints> = RefCell::new(ScanHints::default());
    /// The same per level of each queue with several priorities.
    static LEVEL_HINTS: RefCell<ScanHints<(i32, i16)>> = RefCell::new(ScanHints::default());
    /// The same for the scan of each queue's group heads (storage/groups.rs), which has no
    /// shared floor: a group's next head may become leasable at its own, earlier, ready time.
    static HEAD_HINTS: RefCell<ScanHints> = RefCell::new(ScanHints::default());
}

/// Leases up to `limit` messages (at most `group_batch` of one group), dead-lettering exhausted
/// ones on the way. The flag says whether the call wrote anything besides leases
/// (dead-lettering), after which it must not wait.
fn lease_from(store: &Store, q: &QueueRef, limit: i32, vt: i64, group_batch: i32) -> (Vec<Leased>, bool) {
    let token = pg::new_token();
    let single_priority = q.single_priority();
    let floor = single_priority.map_or(START, |p| floor::of(store, q.id, p).ready);
    let now = pg::now();
    let mut request = LeaseRequest {
        queue_id: q.id,
        now,
        expires_at: now + vt,
        limit,
        token,
        max_attempts: q.settings.max_attempts,
        single_priority,
        scan_after: HINTS.with_borrow_mut(|h| h.scan_after_floor(q.id, now, floor)),
        floor,
        heads_after: match single_priority {
            Some(_) if q.grouped => HEAD_HINTS.with_borrow_mut(|h| h.scan_after(q.id, now)),
            _ => START,
        },
    };
    let levels = level_starts(store, q, now);
    let mut leased = Vec::new();
    let mut wrote = false;
    // Each round dead-letters what it found exhausted; bounded so that a queue full of exhausted
    // messages cannot make one call run away.
    for _ in 0..LEASE_DEAD_LETTER_ROUNDS {
        let outcome = if q.grouped {
            store.lease_grouped(&request, group_batch)
        } else {
            store.lease(&request, &levels)
        };
        HINTS.with_borrow_mut(|h| h.remember(q.id, outcome.resume_after));
        if !levels.floors.is_empty() {
            remember_levels(q.id, &outcome);
        }
        HEAD_HINTS.with_borrow_mut(|h| h.remember(q.id, outcome.resume_heads_after));
        effects::add(q.id, Counter::Leased, outcome.leased.len() as u64);
        effects::add(q.id, Counter::Expired, outcome.expired);
        crate::events::taken_over(&q.name, &outcome);
        let exhausted = outcome.exhausted.len();
        leased.extend(outcome.leased);
        if exhausted == 0 {
            break;
        }
        crate::durability::wrote_other();
        let moved = dlq::dead_letter(store, q.id, &q.dead_letter_queue, outcome.exhausted, None);
        effects::add(q.id, Counter::DeadLettered, moved as u64);
        wrote = true;
        request.limit = limit - leased.len() as i32;
        if request.limit == 0 {
            break;
        }
    }
    if let Some(p) = single_priority
        && !leased.is_empty()
    {
        floor::count_taken(q.id, p, u32::try_from(leased.len()).unwrap_or(u32::MAX));
    }
    // A grouped queue's lease comes in serving order already, each group's messages in their
    // group's order (which neither priority nor ids follow).
    if !q.grouped {
        leased.sort_unstable_by_key(|r| (std::cmp::Reverse(r.priority), r.ready_at, r.id));
    }
    (leased, wrote)
}

/// Where a lease of a queue with several priorities starts each level: after the level's floor
/// (floor.rs), raised to this backend's hint of the level. Without floors a level's scan starts
/// at its start, and once a level has been drained its start is a run of acked messages until
/// vacuum removes them, or of every message acked since the oldest snapshot while one is held:
/// each lease of the level below walked all of them. Empty where floor::levels is.
fn level_starts(store: &Store, q: &QueueRef, now: pg_sys::TimestampTz) -> LevelStarts {
    let mut starts = LevelStarts::default();
    for p in floor::levels(q) {
        let floor = floor::of(store, q.id, p).ready;
        let hinted = LEVEL_HINTS.with_borrow_mut(|h| h.scan_after_floor((q.id, p), now, floor));
        starts.floors.push((p, floor));
        starts.hinted.push((p, hinted));
    }
    starts
}

/// After a lease of a queue with several priorities: each level's hint moves to the last
/// message taken from it, and what was taken counts towards learning the level's floor again.
fn remember_levels(queue_id: i32, outcome: &crate::storage::LeaseOutcome) {
    LEVEL_HINTS.with_borrow_mut(|h| {
        for &(p, at) in &outcome.resume_levels {
            h.remember((queue_id, p), Some(at));
        }
    });
    let mut taken: Vec<(i16, u32)> = Vec::new();
    for m in &outcome.leased {
        match taken.iter_mut().find(|(p, _)| *p == m.priority) {
            Some((_, n)) => *n += 1,
            None => taken.push((m.priority, 1)),
        }
    }
    for (p, n) in taken {
        floor::count_taken(queue_id, p, n);
    }
}

/// The earliest lease expiry of a queue, as a waiting lease last looked it up.
///
/// The lookup costs a walk of the messages in flight (storage/lease.rs), so a waiter looks it up
/// at its first empty attempt and then again only once it has passed or is a second old:
/// wakeups after commits would otherwise repeat it for every waiter on every message, which is
/// what a long-running snapshot (nothing prunable) made expensive. A lease taken meanwhile is
/// noticed within that second of its expiry.
#[derive(Default)]
struct ExpiryCache {
    /// When it was looked up, and what it was.
    checked: Option<(pg_sys::TimestampTz, Option<pg_sys::TimestampTz>)>,
}

impl ExpiryCache {
    /// The earliest expiry after `now` of a lease in flight, if any. When the lookup could not
    /// see every message in flight (storage bounds its walk), it answers "within a second" at
    /// the latest, so the waiter looks again then.
    fn next_expiry(
        &mut self,
        store: &Store,
        q: &QueueRef,
        now: pg_sys::TimestampTz,
    ) -> Option<pg_sys::TimestampTz> {
        let stale = match self.checked {
            None => true,
            Some((at, next)) => now - at >= EXPIRY_RECHECK_USECS || next.is_some_and(|e| e <= now),
        };
        if stale {
            let listed = floor::listed(store, q);
            let floors = listed.clone().unwrap_or_else(|| floor::all_floors(store, q));
            let expiry =
                store.next_expiry(q.id, now, q.single_priority().is_some(), &floors, listed.is_some());
            let recheck = now + EXPIRY_RECHECK_USECS;
            let next = match (expiry.complete, expiry.earliest) {
                (true, earliest) => earliest,
                (false, earliest) => Some(earliest.map_or(recheck, |e| e.min(recheck))),
            };
            self.checked = Some((now, next));
        }
        self.checked.and_then(|(_, e)| e).filter(|&e| e > now)
    }
}

/// Leases up to `batch_size` ready messages (at most `group_batch` consecutive ones of one message
/// group), highest priority first and oldest-ready first within a priority, for
/// `visibility_timeout` (the queue's own timeout when NULL). Never blocks on messages other
/// sessions are leasing or acking. With a `wait`, an empty queue makes it sleep until messages
/// may have become leasable (see wait.rs), at most that long.
fn lease_messages(
    queue: Option<&str>,
    batch_size: Option<i32>,
    visibility_timeout: Option<Interval>,
    wait: Option<Interval>,
    group_batch: i32,
) -> Vec<Leased> {
    let name = args::queue_name(queue, "queue");
    let batch_size = args::batch_size(batch_size, "batch_size", MAX_BATCH);
    let vt = visibility_timeout.map(|v| args::visibility_timeout(v, "visibility_timeout"));
    let wait = args::wait(arg(wait, "wait"));
    crate::durability::lease_begins();
    let rows = call::with(|store| {
        let q = queues::resolve(store, name);
        access::require(store, &q, Privilege::Consume);
        let vt = vt.unwrap_or(q.settings.visibility_timeout_usecs);
        if wait == 0 {
            return lease_from(store, &q, batch_size, vt, group_batch).0;
        }
        let mut expiry = ExpiryCache::default();
        wait::run(q.id, pg::now() + wait, Vec::new, || {
            // Looked up again on every attempt: the queue may have gained message groups while
            // this lease waited (its first grouped enqueue commits a catalog change).
            let q = queues::resolve(store, name);
            let (leased, wrote) = lease_from(store, &q, batch_size, vt, group_batch);
            if !leased.is_empty() || wrote {
                // Having written (dead-lettered), this transaction now holds row locks: stop
                // rather than wait with them.
                return wait::Attempt::Done(leased);
            }
            let now = pg::now();
            let groups = if q.grouped { store.next_head(q.id, now) } else { None };
            let levels = floor::range(&q).map(|r| r.into_iter().map(|p| (p, START)).collect::<Vec<_>>());
            let next_due =
                [store.next_due(q.id, now, levels.as_deref()), expiry.next_expiry(store, &q, now), groups]
                    .into_iter()
                    .flatten()
                    .min();
            wait::Attempt::Empty { next_due }
        })
    });
    crate::durability::lease_ends();
    rows
}

/// One output row of a lease: 0.1.0's columns, then (`with_group`) the group key.
fn push_row(out: &mut Materialized, m: Leased, with_group: bool) {
    let mut row = vec![
        m.id.into_datum(),
        pgrx::Uuid::from_bytes(Receipt::new(m.id, m.token as u64).to_bytes()).into_datum(),
        m.payload.into_datum(),
        m.headers.into_datum(),
        m.attempt.into_datum(),
        pg::timestamptz(m.enqueued_at).into_datum(),
        pg::timestamptz(m.expires_at).into_datum(),
        m.priority.into_datum(),
        m.last_error.into_datum(),
    ];
    if with_group {
        row.push(m.group_key.into_datum());
    }
    out.push(&row);
}

/// 0.1.0's lease (its SQL declaration binds this symbol until the extension is updated): no
/// group_batch, no group_key column.
#[pg_extern(sql = false)]
fn lease(
    queue: Option<&str>,
    batch_size: Option<i32>,
    visibility_timeout: Option<Interval>,
    wait: Option<Interval>,
    fcinfo: pg_sys::FunctionCallInfo,
) {
    let rows = lease_messages(queue, batch_size, visibility_timeout, wait, 1);
    // SAFETY: fcinfo is the FunctionCallInfo PostgreSQL passed to this call, as begin requires.
    let mut out = unsafe { Materialized::begin(fcinfo) };
    for m in rows {
        push_row(&mut out, m, false);
    }
}

/// courier.lease. Declared in sql/api.sql (it returns its rows in materialize mode, see srf.rs):
/// RETURNS TABLE (id, receipt, payload, headers, attempt, enqueued_at, lease_expires_at, priority,
/// last_error, group_key).
#[pg_extern(sql = false)]
fn lease_v2(
    queue: Option<&str>,
    batch_size: Option<i32>,
    visibility_timeout: Option<Interval>,
    wait: Option<Interval>,
    group_batch: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) {
    let group_batch = groups::group_batch(arg(group_batch, "group_batch"), "group_batch").or_raise();
    let rows = lease_messages(queue, batch_size, visibility_timeout, wait, group_batch);
    // SAFETY: fcinfo is the FunctionCallInfo PostgreSQL passed to this call, as begin requires.
    let mut out = unsafe { Materialized::begin(fcinfo) };
    for m in rows {
        push_row(&mut out, m, true);
    }
}
