//! Ack, nack and extend: what a consumer does with a lease, fenced by its receipt.
//!
//! A receipt acts only while its lease token is the message's current one. Once the message was
//! acked, nacked, or leased again after its visibility timeout passed, the old receipt does
//! nothing: the call returns false (or a smaller count). A lease whose timeout passed but that
//! nobody has taken over yet is still current, so a slow consumer's ack is not wasted work.
//!
//! The SQL-facing `ack`, `ack_batch`, `nack`, `nack_batch` and `extend` are thin SQL wrappers
//! (`sql/api.sql`) around the `_`-prefixed functions here. In strict mode these return NULL
//! instead of false, and the wrapper then raises SQLSTATE QC001 (lease lost), a code pgrx itself
//! cannot raise. The message for that error is left in [`LEASE_LOST`] for `_lease_lost_report`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};

use courier_core::CourierError;
use courier_core::access::Privilege;
use courier_core::lease_lost::{LeaseLost, Verb};
use courier_core::limits::MAX_ERROR_TEXT_BYTES;
use courier_core::nack::{DeadLetterGroups, Nack, NackDecision};
use courier_core::receipt::{self, Receipt};
use pgrx::prelude::*;

use crate::access;
use crate::announce;
use crate::args;
use crate::call::{self, Call};
use crate::datum::UuidArray;
use crate::dlq;
use crate::effects;
use crate::errors::{arg, raise};
use crate::groups;
use crate::pg;
use crate::queues;
use crate::shmem::Counter;
use crate::storage::{Nackable, ReceiptSet};
use crate::sweep;
use crate::vacuum;
use crate::wait;

thread_local! {
    static LEASE_LOST: RefCell<Option<LeaseLost>> = const { RefCell::new(None) };
}

/// Records why a strict call failed and returns the NULL that tells the wrapper to raise.
fn lease_lost<T>(report: LeaseLost) -> Option<T> {
    LEASE_LOST.with(|l| *l.borrow_mut() = Some(report));
    None
}

fn parse(receipt: &pgrx::Uuid, argument: &str) -> Receipt {
    let bytes: &[u8; 16] = receipt;
    Receipt::from_bytes(bytes).unwrap_or_else(|_| {
        raise(
            CourierError::invalid(format!("{argument} is not a courier receipt"))
                .with_detail("Receipts are the version 8 UUIDs returned by courier.lease()."),
        )
    })
}

fn token(r: &Receipt) -> i64 {
    r.token as i64
}

/// Decodes a receipt array: one-dimensional, 1..=MAX_BATCH non-null courier receipts, with
/// duplicates removed (acking the same receipt twice in one call is acking it once).
fn parse_many(receipts: Option<UuidArray>) -> Vec<Receipt> {
    let mut receipts = arg(receipts, "receipts");
    let elements = receipts.elements();
    args::batch_shape(elements.dimensions, elements.values.len(), "receipts");
    let mut seen = HashSet::with_capacity(elements.values.len());
    let mut out = Vec::with_capacity(elements.values.len());
    for (i, (datum, is_null)) in elements.values.iter().enumerate() {
        let argument = format!("receipts[{}]", i + 1);
        if *is_null {
            raise(CourierError::null(&argument));
        }
        // SAFETY: a non-null element of a uuid[] is a pointer to 16 bytes.
        let uuid = unsafe { pgrx::Uuid::from_datum(*datum, false) }.expect("non-null");
        let r = parse(&uuid, &argument);
        if seen.insert((r.message_id, r.token)) {
            out.push(r);
        }
    }
    out
}

/// The receipts as statement arguments: one set per lease token.
fn receipt_sets(receipts: &[Receipt]) -> Vec<ReceiptSet> {
    receipt::by_token(receipts)
        .into_iter()
        .map(|(token, ids)| ReceiptSet { ids, token: token as i64 })
        .collect()
}
/// Strict-mode outcome of a batch: the count, or NULL with the receipts that failed recorded.
fn batch_outcome(receipts: &[Receipt], done: &[(i64, i64)], strict: bool, verb: Verb) -> Option<i32> {
    if !strict {
        return Some(done.len() as i32);
    }
    match LeaseLost::batch(receipts, done, verb) {
        Some(report) => lease_lost(report),
        None => Some(done.len() as i32),
    }
}

/// Truncates nack's error text on a character boundary; a failing consumer must not fail twice.
fn error_text(error: Option<&str>) -> Option<&str> {
    error.map(|e| {
        if e.len() <= MAX_ERROR_TEXT_BYTES {
            e
        } else {
            let mut end = MAX_ERROR_TEXT_BYTES;
            while !e.is_char_boundary(end) {
                end -= 1;
            }
            &e[..end]
        }
    })
}

#[pg_extern(name = "_ack")]
#[search_path(pg_catalog, courier, pg_temp)]
fn ack_internal(receipt: Option<pgrx::Uuid>, strict: Option<bool>) -> Option<bool> {
    let r = parse(&arg(receipt, "receipt"), "receipt");
    let strict = arg(strict, "strict");
    let done = call::with(|s| {
        let now = pg::now();
        let acked = s.ack(r.message_id, token(&r), now, queues::any_retention(s));
        let queue = acked.map(|(queue_id, group)| {
            access::require_id(s, queue_id, Privilege::Consume);
            groups::apply(s, group.into_iter().collect());
            queue_id
        });
        sweep::after_ack(s, now);
        queue
    });
    if let Some(queue_id) = done {
        effects::add(queue_id, Counter::Acked, 1);
        vacuum::count_churn(1);
    }
    if done.is_some() || !strict {
        Some(done.is_some())
    } else {
        lease_lost(LeaseLost::single(r, Verb::Acknowledged))
    }
}

#[pg_extern(name = "_ack_batch")]
#[search_path(pg_catalog, courier, pg_temp)]
fn ack_batch_internal(receipts: Option<UuidArray>, strict: Option<bool>) -> Option<i32> {
    let receipts = parse_many(receipts);
    let strict = arg(strict, "strict");
    let done = call::with(|s| {
        let now = pg::now();
        let retention = queues::any_retention(s);
        let done: Vec<_> =
            receipt_sets(&receipts).into_iter().flat_map(|set| s.ack_many(set, now, retention)).collect();
        require_consume(s, done.iter().map(|a| a.queue_id));
        groups::apply(s, done.iter().filter_map(|a| a.group.clone()).collect());
        sweep::after_ack(s, now);
        done
    });
    for a in &done {
        effects::add(a.queue_id, Counter::Acked, 1);
    }
    vacuum::count_churn(done.len());
    let pairs: Vec<(i64, i64)> = done.iter().map(|a| (a.id, a.token)).collect();
    batch_outcome(&receipts, &pairs, strict, Verb::Acknowledged)
}

/// Raises 42501 unless the caller may consume from every one of these queues.
fn require_consume(call: &Call, queue_ids: impl Iterator<Item = i32>) {
    let mut ids: Vec<i32> = queue_ids.collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        access::require_id(call, id, Privilege::Consume);
    }
}

/// Nacks the receipts that hold their lease: each message is released for a retry (after
/// `retry_in`, or the queue's backoff for its attempt) or, when `dead` is set or its attempts are
/// used up, dead-lettered. Returns the (id, token) pairs that held their lease.
fn nack_receipts(
    receipts: &[Receipt],
    retry_in: Option<i64>,
    error: Option<&str>,
    dead: bool,
) -> Vec<(i64, i64)> {
    call::with(|s| {
        // Retries move messages within their ready range, past ready floors (announce.rs).
        let now = announce::stamp();
        let locked: Vec<_> =
            receipt_sets(receipts).into_iter().flat_map(|set| s.lock_for_nack(set)).collect();
        require_consume(s, locked.iter().map(|m| m.queue_id));
        release_group_tails(s, &locked);
        let nack = Nack { now, retry_in, dead };
        let mut release_ids = Vec::new();
        let mut release_at = Vec::new();
        let mut dead_groups = DeadLetterGroups::new();
        for m in &locked {
            effects::add(m.queue_id, Counter::Nacked, 1);
            match nack.decide(m.attempt, m.max_attempts, &m.retry, pg::random_unit) {
                NackDecision::DeadLetter => dead_groups.add(&m.dead_letter_queue, m.queue_id, m.id),
                NackDecision::Retry { at } => {
                    release_ids.push(m.id);
                    release_at.push(at);
                    wait::became_ready(m.queue_id, &m.queue_name, m.notify);
                }
            }
        }
        if !release_ids.is_empty() {
            s.release(release_ids, release_at, error);
        }
        for group in dead_groups {
            let moved = dlq::dead_letter(s, group.source_queue, &group.destination, group.message_ids, error);
            effects::add(group.source_queue, Counter::DeadLettered, moved as u64);
        }
        // A retry moves the row in the ready index, so it is not a HOT update either.
        vacuum::count_churn(locked.len());
        locked.iter().map(|m| (m.id, m.token)).collect()
    })
}

/// A nack returns a message to the head of its group (a head stays the head, leasable at its
/// retry time), and the later messages of the group that its lease took go back with it: their
/// receipts stop working and their deliveries do not count.
fn release_group_tails(s: &Call, locked: &[Nackable]) {
    // Per group and lease: the earliest nacked message.
    let mut first: BTreeMap<(i32, String, i64), i64> = BTreeMap::new();
    for m in locked {
        if let Some((key, seq, _)) = &m.group {
            let e = first.entry((m.queue_id, key.clone(), m.token)).or_insert(*seq);
            *e = (*e).min(*seq);
        }
    }
    for ((queue_id, key, token), seq) in first {
        s.release_group_tail(queue_id, &key, seq, token);
    }
}

fn retry_in(value: Option<Interval>) -> Option<i64> {
    value.map(|v| args::delay(v, "retry_in"))
}

#[pg_extern(name = "_nack")]
#[search_path(pg_catalog, courier, pg_temp)]
fn nack_internal(
    receipt: Option<pgrx::Uuid>,
    retry_in: Option<Interval>,
    error: Option<&str>,
    dead: Option<bool>,
    strict: Option<bool>,
) -> Option<bool> {
    let r = parse(&arg(receipt, "receipt"), "receipt");
    let retry_in = self::retry_in(retry_in);
    let dead = arg(dead, "dead");
    let strict = arg(strict, "strict");
    let done = !nack_receipts(&[r], retry_in, error_text(error), dead).is_empty();
    if done || !strict { Some(done) } else { lease_lost(LeaseLost::single(r, Verb::Nacked)) }
}

#[pg_extern(name = "_nack_batch")]
#[search_path(pg_catalog, courier, pg_temp)]
fn nack_batch_internal(
    receipts: Option<UuidArray>,
    retry_in: Option<Interval>,
    error: Option<&str>,
    dead: Option<bool>,
    strict: Option<bool>,
) -> Option<i32> {
    let receipts = parse_many(receipts);
    let retry_in = self::retry_in(retry_in);
    let dead = arg(dead, "dead");
    let strict = arg(strict, "strict");
    let done = nack_receipts(&receipts, retry_in, error_text(error), dead);
    batch_outcome(&receipts, &done, strict, Verb::Nacked)
}

#[pg_extern(name = "_extend")]
#[search_path(pg_catalog, courier, pg_temp)]
fn extend_internal(
    receipt: Option<pgrx::Uuid>,
    visibility_timeout: Option<Interval>,
    strict: Option<bool>,
) -> Option<bool> {
    let r = parse(&arg(receipt, "receipt"), "receipt");
    let vt = args::visibility_timeout(arg(visibility_timeout, "visibility_timeout"), "visibility_timeout");
    let strict = arg(strict, "strict");
    let done = call::with(|s| {
        let queue = s.extend(r.message_id, token(&r), pg::now() + vt);
        if let Some(e) = &queue {
            access::require_id(s, e.queue_id, Privilege::Consume);
            if e.shortened {
                effects::lease_shortened(e.queue_id);
            }
        }
        queue
    })
    .is_some();
    if done || !strict { Some(done) } else { lease_lost(LeaseLost::single(r, Verb::Extended)) }
}

/// The message and detail of the last strict failure in this backend, for the QC001 error.
#[pg_extern(name = "_lease_lost_report")]
#[search_path(pg_catalog, pg_temp)]
fn lease_lost_report() -> Vec<String> {
    let report = LEASE_LOST.with(|l| l.borrow_mut().take()).unwrap_or_else(LeaseLost::unrecorded);
    vec![report.message, report.detail]
}
