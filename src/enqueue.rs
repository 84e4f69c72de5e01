//! Enqueue: adding messages to a queue, as part of the caller's transaction, with optional
//! priority, schedule and deduplication key.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use courier_core::access::Privilege;
use courier_core::groups;
use courier_core::limits::MAX_DELAY_USECS;
use courier_core::policy;
use courier_core::{CourierError, ErrorKind};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::access;
use crate::announce;
use crate::args::{self, Argument};
use crate::call::{self, Call};
use crate::datum::{Jsonb, JsonbArray, TextArray};
use crate::effects;
use crate::errors::{OrRaise, arg, raise};
use crate::queues;
use crate::settings;
use crate::shmem::Counter;
use crate::srf::Materialized;
use crate::storage::{Inserted, NewMessage, Placement, QueueRef, Store};
use crate::sweep;
use crate::wait;

fn check_size(doc: &Jsonb, argument: Argument) {
    let limit = settings::max_payload_bytes();
    let size = doc.size();
    if size > limit {
        raise(
            CourierError::new(
                ErrorKind::LimitExceeded,
                format!("{argument} is too large ({size} bytes, the limit is {limit} bytes)"),
            )
            .with_hint("The limit is the courier.max_payload_size setting; store large blobs elsewhere and enqueue a reference."),
        );
    }
}

fn check_headers(doc: &Jsonb, argument: Argument) {
    if !doc.is_object() {
        raise(CourierError::invalid(format!("{argument} must be a JSON object")));
    }
    check_size(doc, argument);
}

/// When a new message becomes leasable: `delay` from now, or at `not_before`, not both.
struct Schedule {
    delay_usecs: i64,
    not_before: Option<pg_sys::TimestampTz>,
}

impl Schedule {
    fn parse(delay: Option<Interval>, not_before: Option<TimestampWithTimeZone>) -> Schedule {
        let delay_usecs = args::delay(arg(delay, "delay"), "delay");
        let not_before: Option<pg_sys::TimestampTz> = not_before.map(Into::into);
        if not_before.is_some() && delay_usecs != 0 {
            raise(CourierError::invalid("give delay or not_before, not both"));
        }
        if let Some(t) = not_before
            && (t == i64::MAX || t == i64::MIN)
        {
            raise(CourierError::invalid("not_before must be a finite time"));
        }
        Schedule { delay_usecs, not_before }
    }

    fn visible_at(&self, now: pg_sys::TimestampTz) -> pg_sys::TimestampTz {
        match self.not_before {
            Some(t) => {
                if t > now.saturating_add(MAX_DELAY_USECS) {
                    raise(CourierError::invalid(format!(
                        "not_before must be at most {} from now",
                        courier_core::timing::describe_usecs(MAX_DELAY_USECS)
                    )));
                }
                t.max(now)
            }
            None => now + self.delay_usecs,
        }
    }
}

#[track_caller]
fn priority(value: Option<i32>) -> i16 {
    policy::priority(arg(value, "priority"), "priority").or_raise()
}

fn dedup_key<'a>(key: &'a str, argument: &str) -> &'a str {
    policy::dedup_key(key, argument).or_raise();
    key
}

/// Resolves the queue messages are about to be put into, checks the caller may, and places them:
/// when they become leasable, at which priority.
fn place(call: &Call, name: &str, schedule: &Schedule, priority: i16) -> (Rc<QueueRef>, Placement) {
    let q = queues::resolve_for_insert(call, name);
    access::require(call, &q, Privilege::Enqueue);
    queues::note_priority(call, &q, priority);
    // A write into the queue's ready range (announce.rs).
    let now = announce::stamp();
    let at = Placement { queue_id: q.id, now, visible_at: schedule.visible_at(now), priority };
    (q, at)
}

fn group_key<'a>(key: &'a str, argument: &str) -> &'a str {
    groups::group_key(key, argument).or_raise();
    key
}

/// Inserts one message, deduplicated when a key is given, at the end of its group if it has one.
fn insert_one(
    store: &Store,
    q: &QueueRef,
    at: Placement,
    key: Option<&str>,
    headers: Option<Jsonb>,
    payload: Jsonb,
    group: Option<&str>,
) -> Inserted {
    if let Some(group) = group {
        return insert_grouped(store, q, at, key, headers, payload, group);
    }
    let Some(key) = key else {
        effects::add(q.id, Counter::Enqueued, 1);
        wait::became_ready(q.id, &q.name, q.notify);
        return Inserted { id: store.insert_message(at, headers, payload), duplicate: false };
    };
    sweep::after_keyed_enqueue(store, at.now);
    let expires = at.now.saturating_add(q.settings.dedup_window_usecs);
    let inserted = store.insert_keyed_message(at, key, expires, headers, payload);
    effects::add(q.id, if inserted.duplicate { Counter::Deduplicated } else { Counter::Enqueued }, 1);
    if !inserted.duplicate {
        wait::became_ready(q.id, &q.name, q.notify);
    }
    inserted
}

/// insert_one for a message of a group. Its group's row stays locked until this transaction
/// ends: producers into one group take turns, which numbers the group's messages in commit order.
fn insert_grouped(
    store: &Store,
    q: &QueueRef,
    at: Placement,
    key: Option<&str>,
    headers: Option<Jsonb>,
    payload: Jsonb,
    group: &str,
) -> Inserted {
    queues::note_grouped(store, q);
    let inserted = match key {
        None => Inserted { id: store.insert_grouped(at, group, headers, payload), duplicate: false },
        Some(key) => {
            sweep::after_keyed_enqueue(store, at.now);
            let expires = at.now.saturating_add(q.settings.dedup_window_usecs);
            store.insert_keyed_grouped(at, key, expires, group, headers, payload)
        }
    };
    effects::add(q.id, if inserted.duplicate { Counter::Deduplicated } else { Counter::Enqueued }, 1);
    if !inserted.duplicate {
        wait::became_ready(q.id, &q.name, q.notify);
    }
    inserted
}

#[allow(clippy::too_many_arguments)]
fn enqueue_one(
    queue: Option<&str>,
    payload: Option<Jsonb>,
    headers: Option<Jsonb>,
    delay: Option<Interval>,
    priority: Option<i32>,
    not_before: Option<TimestampWithTimeZone>,
    dedup_key: Option<&str>,
    group: Option<&str>,
) -> Inserted {
    let name = args::queue_name(queue, "queue");
    let payload = arg(payload, "payload");
    check_size(&payload, Argument::whole("payload"));
    if let Some(h) = &headers {
        check_headers(h, Argument::whole("headers"));
    }
    let schedule = Schedule::parse(delay, not_before);
    let priority = self::priority(priority);
    let key = dedup_key.map(|k| self::dedup_key(k, "dedup_key"));
    let group = group.map(|g| self::group_key(g, "group_key"));
    call::with(|call| {
        let (q, at) = place(call, name, &schedule, priority);
        insert_one(call, &q, at, key, headers, payload, group)
    })
}

/// Enqueues one message and returns its id. The message becomes visible to consumers when the
/// calling transaction commits (and its delay or not_before has passed); if it rolls back, it
/// never existed. With a dedup_key already used within the queue's dedup window, nothing is
/// enqueued and the original message's id is returned. With a group_key, it goes to the end of
/// that message group.
///
/// Declared without `SET search_path`: it pins the same path itself before anything that could
/// resolve a name (search_path.rs), which its common path never does.
#[allow(clippy::too_many_arguments)]
#[pg_extern(name = "enqueue")]
fn enqueue_v2(
    queue: Option<&str>,
    payload: Option<Jsonb>,
    headers: default!(Option<Jsonb>, "NULL"),
    delay: default!(Option<Interval>, "'0'"),
    priority: default!(Option<i32>, 0),
    not_before: default!(Option<TimestampWithTimeZone>, "NULL"),
    dedup_key: default!(Option<&str>, "NULL"),
    group_key: default!(Option<&str>, "NULL"),
) -> i64 {
    enqueue_one(queue, payload, headers, delay, priority, not_before, dedup_key, group_key).id
}

/// 0.1.0's enqueue (its SQL declaration binds this symbol until the extension is updated).
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn enqueue(
    queue: Option<&str>,
    payload: Option<Jsonb>,
    headers: Option<Jsonb>,
    delay: Option<Interval>,
    priority: Option<i32>,
    not_before: Option<TimestampWithTimeZone>,
    dedup_key: Option<&str>,
) -> i64 {
    enqueue_one(queue, payload, headers, delay, priority, not_before, dedup_key, None).id
}

/// Returns (id, duplicate) rows in materialize mode (see srf.rs).
fn id_rows(fcinfo: pg_sys::FunctionCallInfo, rows: &[Inserted]) {
    // SAFETY: fcinfo is the FunctionCallInfo PostgreSQL passed to this call, as begin requires.
    let mut out = unsafe { Materialized::begin(fcinfo) };
    for row in rows {
        out.push(&[row.id.into_datum(), row.duplicate.into_datum()]);
    }
}

/// Like enqueue with a (required) dedup_key, and says whether the key was already taken.
/// Declared in sql/api.sql: RETURNS TABLE (id bigint, duplicate boolean).
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn enqueue_unique_v2(
    queue: Option<&str>,
    payload: Option<Jsonb>,
    dedup_key: Option<&str>,
    headers: Option<Jsonb>,
    delay: Option<Interval>,
    priority: Option<i32>,
    not_before: Option<TimestampWithTimeZone>,
    group_key: Option<&str>,
    fcinfo: pg_sys::FunctionCallInfo,
) {
    let key = arg(dedup_key, "dedup_key");
    let row = enqueue_one(queue, payload, headers, delay, priority, not_before, Some(key), group_key);
    id_rows(fcinfo, &[row]);
}

/// 0.1.0's enqueue_unique (see enqueue).
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn enqueue_unique(
    queue: Option<&str>,
    payload: Option<Jsonb>,
    dedup_key: Option<&str>,
    headers: Option<Jsonb>,
    delay: Option<Interval>,
    priority: Option<i32>,
    not_before: Option<TimestampWithTimeZone>,
    fcinfo: pg_sys::FunctionCallInfo,
) {
    let key = arg(dedup_key, "dedup_key");
    let row = enqueue_one(queue, payload, headers, delay, priority, not_before, Some(key), None);
    id_rows(fcinfo, &[row]);
}

/// The messages of a batch, checked: payloads with their headers, dedup keys and group keys if
/// given.
struct Batch {
    messages: Vec<NewMessage>,
    keys: Option<Vec<Option<String>>>,
    /// None when no message has a group key.
    groups: Option<Vec<Option<String>>>,
}

/// Decodes and checks enqueue_batch's parallel arrays.
fn decode_batch(
    payloads: &mut JsonbArray,
    headers: Option<&mut JsonbArray>,
    keys: Option<TextArray>,
    groups: Option<TextArray>,
) -> Batch {
    let elements = payloads.elements();
    let n = elements.values.len();
    args::batch_shape(elements.dimensions, n, "payloads");
    let mut messages = Vec::with_capacity(n);
    for (i, (datum, is_null)) in elements.values.iter().enumerate() {
        if *is_null {
            raise(CourierError::null(&Argument::element("payloads", i).to_string()));
        }
        // SAFETY: a non-null element of a jsonb[] is a jsonb datum.
        let doc = unsafe { Jsonb::from_datum(*datum, false) }.expect("non-null");
        check_size(&doc, Argument::element("payloads", i));
        messages.push(NewMessage { headers: None, payload: doc });
    }
    if let Some(h) = headers {
        let hs = h.elements();
        args::parallel_shape(hs.dimensions, hs.values.len(), n, "headers");
        for (i, (datum, is_null)) in hs.values.iter().enumerate() {
            if !*is_null {
                // SAFETY: a non-null element of a jsonb[] is a jsonb datum.
                let doc = unsafe { Jsonb::from_datum(*datum, false) }.expect("non-null");
                check_headers(&doc, Argument::element("headers", i));
                messages[i].headers = Some(doc);
            }
        }
    }
    let keys = keys.map(|mut k| {
        let ks = k.strings();
        args::parallel_shape(ks.dimensions, ks.values.len(), n, "dedup_keys");
        for (i, key) in ks.values.iter().enumerate() {
            if let Some(key) = key {
                self::dedup_key(key, &Argument::element("dedup_keys", i).to_string());
            }
        }
        ks.values
    });
    let groups = groups.and_then(|mut g| {
        let gs = g.strings();
        args::parallel_shape(gs.dimensions, gs.values.len(), n, "group_keys");
        for (i, key) in gs.values.iter().enumerate() {
            if let Some(key) = key {
                self::group_key(key, &Argument::element("group_keys", i).to_string());
            }
        }
        gs.values.iter().any(Option::is_some).then_some(gs.values)
    });
    Batch { messages, keys, groups }
}

/// Inserts a batch's messages one by one under their keys (and into their groups, if `groups`);
/// a key repeated within the batch is a duplicate of its first occurrence.
fn insert_keyed_batch(
    store: &Store,
    q: &QueueRef,
    at: Placement,
    messages: &[NewMessage],
    keys: &[Option<String>],
    groups: Option<&[Option<String>]>,
) -> Vec<Inserted> {
    // The batch's groups are locked first, in key order (as an unkeyed batch locks them), so that
    // two batches into the same groups cannot wait for each other.
    let reserved: Vec<String> =
        groups.map(|g| reserve(store, q, g, false).into_keys().collect()).unwrap_or_default();
    let mut seen: HashMap<&str, i64> = HashMap::new();
    let rows = messages
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(i, (message, key))| match key.as_deref() {
            Some(k) if seen.contains_key(k) => {
                effects::add(q.id, Counter::Deduplicated, 1);
                Inserted { id: seen[k], duplicate: true }
            }
            k => {
                let group = groups.and_then(|g| g[i].as_deref());
                let row = insert_one(store, q, at, k, message.headers, message.payload, group);
                if let Some(k) = k {
                    seen.insert(k, row.id);
                }
                row
            }
        })
        .collect();
    // A new group that got no message (each was a duplicate) goes again.
    if !reserved.is_empty() {
        store.delete_unused_groups(q.id, &reserved);
    }
    rows
}

/// Locks (creating them where new) the groups of a batch in key order and, if `count`, advances
/// each one's counter by its number of messages. Returns the first number of each group's
/// messages (0: a new group, whose first message is its head).
fn reserve(store: &Store, q: &QueueRef, groups: &[Option<String>], count: bool) -> BTreeMap<String, i64> {
    queues::note_grouped(store, q);
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for g in groups.iter().flatten() {
        *counts.entry(g.clone()).or_default() += i64::from(count);
    }
    let counts: Vec<(String, i64)> = counts.into_iter().collect();
    store.reserve_groups(q.id, &counts).into_iter().collect()
}

/// Inserts an unkeyed batch with group keys: the groups' counters advance once per group, in key
/// order, and the messages are numbered in input order within each group.
fn insert_grouped_batch(
    store: &Store,
    q: &QueueRef,
    at: Placement,
    groups: &[Option<String>],
    payloads: JsonbArray,
    headers: Option<JsonbArray>,
) -> Vec<Inserted> {
    let mut next = reserve(store, q, groups, true);
    let seqs: Vec<Option<i64>> = groups
        .iter()
        .map(|g| {
            g.as_ref().map(|g| {
                let n = next.get_mut(g).expect("reserved");
                *n += 1;
                *n - 1
            })
        })
        .collect();
    let ids = store.insert_batch(at, payloads, headers, groups.to_vec(), seqs);
    effects::add(q.id, Counter::Enqueued, ids.len() as u64);
    wait::became_ready(q.id, &q.name, q.notify);
    ids.into_iter().map(|id| Inserted { id, duplicate: false }).collect()
}

/// Enqueues many messages in one call; one row per payload, in input order, with the message id
/// and whether its dedup key (dedup_keys[i], if given) was already taken. `headers`,
/// `dedup_keys` and `group_keys`, when given, have one element (or NULL) per payload.
/// Declared in sql/api.sql: RETURNS TABLE (id bigint, duplicate boolean), without `SET
/// search_path`, like enqueue.
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn enqueue_batch_v2(
    queue: Option<&str>,
    payloads: Option<JsonbArray>,
    headers: Option<JsonbArray>,
    delay: Option<Interval>,
    priority: Option<i32>,
    not_before: Option<TimestampWithTimeZone>,
    dedup_keys: Option<TextArray>,
    group_keys: Option<TextArray>,
    fcinfo: pg_sys::FunctionCallInfo,
) {
    let rows = enqueue_many(queue, payloads, headers, delay, priority, not_before, dedup_keys, group_keys);
    id_rows(fcinfo, &rows);
}

/// 0.1.0's enqueue_batch (see enqueue).
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn enqueue_batch(
    queue: Option<&str>,
    payloads: Option<JsonbArray>,
    headers: Option<JsonbArray>,
    delay: Option<Interval>,
    priority: Option<i32>,
    not_before: Option<TimestampWithTimeZone>,
    dedup_keys: Option<TextArray>,
    fcinfo: pg_sys::FunctionCallInfo,
) {
    let rows = enqueue_many(queue, payloads, headers, delay, priority, not_before, dedup_keys, None);
    id_rows(fcinfo, &rows);
}

#[allow(clippy::too_many_arguments)]
fn enqueue_many(
    queue: Option<&str>,
    payloads: Option<JsonbArray>,
    headers: Option<JsonbArray>,
    delay: Option<Interval>,
    priority: Option<i32>,
    not_before: Option<TimestampWithTimeZone>,
    dedup_keys: Option<TextArray>,
    group_keys: Option<TextArray>,
) -> Vec<Inserted> {
    let name = args::queue_name(queue, "queue");
    let mut payloads = arg(payloads, "payloads");
    let mut headers = headers;
    let batch = decode_batch(&mut payloads, headers.as_mut(), dedup_keys, group_keys);
    let schedule = Schedule::parse(delay, not_before);
    let priority = self::priority(priority);
    call::with(|call| {
        let (q, at) = place(call, name, &schedule, priority);
        match (&batch.keys, &batch.groups) {
            (Some(keys), groups) => {
                insert_keyed_batch(call, &q, at, &batch.messages, keys, groups.as_deref())
            }
            (None, Some(groups)) => insert_grouped_batch(call, &q, at, groups, payloads, headers),
            (None, None) => {
                effects::add(q.id, Counter::Enqueued, batch.messages.len() as u64);
                wait::became_ready(q.id, &q.name, q.notify);
                let ids = call.insert_messages(at, &batch.messages, payloads, headers);
                ids.into_iter().map(|id| Inserted { id, duplicate: false }).collect()
            }
        }
    })
}
