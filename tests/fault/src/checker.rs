//! The history checker, after Jepsen's total-queue checker plus the lease rules courier promises.
//!
//! Time-free rules (they hold whatever the clocks did):
//! - lost ([`lost_values`]): a value whose enqueue committed (`ok`) was never delivered;
//! - unexpected ([`unexpected_values`]): a value was delivered that no enqueue attempted; an
//!   aborted read: a value was delivered whose enqueue definitely rolled back (`fail`);
//! - double lease ([`double_leases`]): two committed leases of one message gave the same attempt
//!   number;
//! - stale ack accepted ([`stale_acks`]): an ack returned true, yet the message was delivered
//!   again with a later attempt (either the ack used a superseded receipt, or the message came
//!   back after its ack);
//! - exactly-once processing ([`exactly_once`]): a value processed twice in ack transactions, an
//!   ack transaction that committed without its write, or a write that committed without its ack.
//!
//! One rule uses the server clock, which every lease reports: a message delivered again must have
//! been released first, by a nack of the earlier lease or by that lease's expiry (extended or
//! not). A redelivery before the earlier lease expired is unexplained
//! ([`released_before_redelivery`]).
//!
//! Unless `courier.durable_leases` is on, a transaction that only leased commits without waiting
//! for its WAL flush, so a server crash can forget a lease committed just before it: the message
//! is as it was before that lease (the same attempt number comes again, an older receipt may
//! still hold it). Each rule above accepts that for a lease that was taken at most
//! [`FORGET_WINDOW_US`] before a recorded crash (the WAL writer flushes an asynchronous commit
//! within three `wal_writer_delay`s, 600 ms by default) or while the server went down (after a
//! kill -9 of the postmaster its backends keep serving until they notice), and counts it as
//! forgotten; for any other lease the rules are as strict as with durable leases.
//!
//! Workers record the failures they tolerate (a lost connection, a strict ack's QC001) by code;
//! [`tolerated_errors`] counts them and fails the run on a code [`TOLERATED`] does not list.
//!
//! With `run --upgrade-from`, [`upgrade_attempts`] checks that every attempt of `ALTER EXTENSION
//! courier UPDATE` left the version its outcome implies (the update is transactional: a rolled-back
//! attempt changes nothing) and that the run ended at the default version.
//!
//! [`check`] indexes the history once into a [`History`], then calls one function per rule (or
//! per pair of related rules), each filling its part of the [`Report`]: a new rule is one more
//! such function and one more line in `check`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::RangeInclusive;

use crate::history::{Delivery, Event, Outcome, Upgrade};

/// How long before a crash a lease may have been committed and still be forgotten.
pub const FORGET_WINDOW_US: i64 = 1_000_000;

/// The failures a worker may see and the run still pass, with what causes them: the faults the
/// controller injects, and a strict ack that lost its lease. A SQLSTATE, or tokio-postgres's
/// words for a client-side failure.
pub const TOLERATED: [(&str, &str); 12] = [
    ("QC001", "strict ack: the lease was lost, the transaction rolls back"),
    ("57P01", "terminated: pg_terminate_backend or an immediate shutdown"),
    ("57P02", "another server process crashed"),
    ("57P03", "the server is starting up, in recovery or shutting down"),
    ("08000", "connection exception"),
    ("08003", "connection does not exist"),
    ("08006", "connection failure"),
    ("connection closed", "the server closed the connection"),
    ("error communicating with the server", "the connection broke mid-statement"),
    ("error connecting to server", "the server is down"),
    ("timeout waiting for server", "the connect timeout passed"),
    (crate::worker::CLIENT_TIMEOUT, "no answer in 30 s"),
];

#[derive(Default, Debug)]
pub struct Report {
    pub enqueue_tx: [usize; 3],
    /// Values by the outcome of their enqueue: ok, fail, info.
    pub values: [usize; 3],
    /// Values whose enqueue outcome was unknown and that were delivered.
    pub recovered: usize,
    pub leases: [usize; 3],
    pub deliveries: usize,
    pub duplicates: usize,
    pub duplicates_after_expiry: usize,
    pub duplicates_after_nack: usize,
    /// Leases a crash forgot: distinct leases whose repeated attempt or early redelivery only
    /// that explains.
    pub forgotten_leases: usize,
    pub acks: [usize; 3],
    pub acks_refused: usize,
    pub nacks: [usize; 3],
    pub extends: [usize; 3],
    pub processed: usize,
    pub lost: Vec<u64>,
    pub unexpected: Vec<u64>,
    pub aborted_reads: Vec<u64>,
    pub double_leases: Vec<String>,
    pub stale_acks: Vec<String>,
    pub unexplained: Vec<String>,
    pub processed_twice: Vec<u64>,
    pub ack_without_write: Vec<u64>,
    pub write_without_ack: Vec<u64>,
    /// The update's attempts, each with the number of messages that committed leases took while
    /// it ran (by the server clock the leases report): they show that the workers worked
    /// meanwhile.
    pub upgrades: Vec<(Upgrade, usize)>,
    /// extversion and the default version at the end of a run that updated.
    pub final_version: Option<(String, String)>,
    pub upgrade_anomalies: Vec<String>,
    /// Tolerated failures the workers saw, by code.
    pub tolerated: BTreeMap<String, usize>,
    pub errors: Vec<String>,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.aborted_reads.is_empty()
            && self.double_leases.is_empty()
            && self.stale_acks.is_empty()
            && self.unexplained.is_empty()
            && self.processed_twice.is_empty()
            && self.ack_without_write.is_empty()
            && self.write_without_ack.is_empty()
            && self.upgrade_anomalies.is_empty()
            && self.errors.is_empty()
    }
}

fn slot(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Info => 2,
    }
}

/// What a client saw of an ack, nack or extend.
#[derive(Clone, Copy, Debug)]
struct Reply {
    outcome: Outcome,
    /// The function's result, known only when its transaction committed.
    result: Option<bool>,
}

impl Reply {
    fn succeeded(self) -> bool {
        self.outcome == Outcome::Ok && self.result == Some(true)
    }

    /// An unknown outcome counts: the call may have committed and succeeded.
    fn may_have_succeeded(self) -> bool {
        self.outcome == Outcome::Info || self.succeeded()
    }
}

/// An extend of one lease.
#[derive(Debug)]
struct Extension {
    reply: Reply,
    /// A lower bound of the expiry it set: its transaction's start plus the timeout.
    exp: i64,
}

/// One delivery of a message, by a lease that committed or whose outcome is unknown.
#[derive(Debug)]
struct Delivered<'a> {
    delivery: &'a Delivery,
    committed: bool,
}

/// A message as the leases returned it.
#[derive(Debug)]
struct Message<'a> {
    /// The value of its first delivery, which names it in the report.
    v: u64,
    /// In history order.
    deliveries: Vec<Delivered<'a>>,
}

impl<'a> Message<'a> {
    /// The deliveries by committed leases, by attempt, then by lease time.
    fn committed_by_attempt(&self) -> Vec<&'a Delivery> {
        let mut ds: Vec<&Delivery> =
            self.deliveries.iter().filter(|x| x.committed).map(|x| x.delivery).collect();
        ds.sort_by_key(|d| (d.attempt, d.leased_at()));
        ds
    }
}

/// An ack that returned true: its receipt, and the id of the message the worker acked.
#[derive(Debug)]
struct Acked<'a> {
    receipt: &'a str,
    id: i64,
}

/// The history indexed in one pass, keyed the way the rules look things up.
#[derive(Default, Debug)]
struct History<'a> {
    /// Each value the clients enqueued, with its enqueue's outcome (the later one if enqueued
    /// twice).
    enqueued: HashMap<u64, Outcome>,
    /// Every message a lease that did not fail returned, by id.
    messages: BTreeMap<i64, Message<'a>>,
    /// Every receipt in `messages`, with its delivery.
    receipts: HashMap<&'a str, &'a Delivery>,
    /// The values of `messages` (each its first delivery's): true if a committed lease returned
    /// it, false if only leases of unknown outcome did.
    delivered: HashMap<u64, bool>,
    /// Receipts a nack may have released.
    nacked: HashSet<&'a str>,
    /// The extends of each receipt, in history order.
    extends: HashMap<&'a str, Vec<Extension>>,
    /// In history order.
    acked: Vec<Acked<'a>>,
    /// Per value, the acks made in the consumer's own transaction (`tx`).
    tx_acks: HashMap<u64, Vec<Reply>>,
    /// The lease times a crash may have forgotten: one window per crash with durable leases off.
    forget_windows: Vec<RangeInclusive<i64>>,
}

impl<'a> History<'a> {
    fn index(events: &'a [Event]) -> History<'a> {
        let mut h = History::default();
        for e in events {
            match e {
                Event::Enqueue { vals, outcome, .. } => {
                    for v in vals {
                        h.enqueued.insert(*v, *outcome);
                    }
                }
                Event::Lease { outcome: Outcome::Fail, .. } => {}
                Event::Lease { outcome, items, .. } => {
                    for d in items {
                        let m =
                            h.messages.entry(d.id).or_insert_with(|| Message { v: d.v, deliveries: vec![] });
                        m.deliveries.push(Delivered { delivery: d, committed: *outcome == Outcome::Ok });
                    }
                }
                Event::Ack { v, id, receipt, tx, outcome, result, .. } => {
                    let reply = Reply { outcome: *outcome, result: *result };
                    if reply.succeeded() {
                        h.acked.push(Acked { receipt, id: *id });
                    }
                    if *tx {
                        h.tx_acks.entry(*v).or_default().push(reply);
                    }
                }
                Event::Nack { receipt, outcome, result, .. } => {
                    // An unknown nack may have released the message: it can explain a redelivery.
                    if (Reply { outcome: *outcome, result: *result }).may_have_succeeded() {
                        h.nacked.insert(receipt);
                    }
                }
                Event::Extend { receipt, outcome, result, exp, .. } => {
                    let reply = Reply { outcome: *outcome, result: *result };
                    h.extends.entry(receipt).or_default().push(Extension { reply, exp: *exp });
                }
                Event::Crash { at, until, durable_leases: false } => {
                    h.forget_windows.push(at - FORGET_WINDOW_US..=*until);
                }
                Event::Crash { durable_leases: true, .. }
                | Event::Upgrade(_)
                | Event::Version { .. }
                | Event::Tolerated { .. }
                | Event::Error { .. } => {}
            }
        }
        for m in h.messages.values() {
            *h.delivered.entry(m.v).or_default() |= m.deliveries.iter().any(|x| x.committed);
            for x in &m.deliveries {
                h.receipts.insert(&x.delivery.receipt, x.delivery);
            }
        }
        h
    }

    /// Deliveries by committed leases taken between `from` and `until` (microseconds since the
    /// Unix epoch, server clock).
    fn leases_between(&self, from: i64, until: i64) -> usize {
        let during = |x: &&Delivered| x.committed && (from..=until).contains(&x.delivery.leased_at());
        self.messages.values().map(|m| m.deliveries.iter().filter(during).count()).sum()
    }

    /// Whether a crash may have forgotten the lease that returned `d`.
    fn forgettable(&self, d: &Delivery) -> bool {
        self.forget_windows.iter().any(|w| w.contains(&d.leased_at()))
    }

    /// The earliest the lease that returned `d` may have expired, given its extends: one that
    /// succeeded set a new expiry, one of unknown outcome may have, and an extend can bring the
    /// expiry forward as well as push it back.
    fn earliest_expiry(&self, d: &Delivery) -> i64 {
        let mut expiry = d.exp;
        for x in self.extends.get(d.receipt.as_str()).into_iter().flatten() {
            if x.reply.succeeded() {
                expiry = x.exp;
            } else if x.reply.outcome == Outcome::Info {
                expiry = expiry.min(x.exp);
            }
        }
        expiry
    }
}

/// Checks a history. `processed` maps each value to how many rows the ack transactions wrote for
/// it (the consumers' own table, read after the drain).
pub fn check(events: &[Event], processed: &HashMap<u64, i64>) -> Report {
    let mut r = Report::default();
    count_operations(events, &mut r);
    harness_errors(events, &mut r);
    tolerated_errors(events, &mut r);
    let h = History::index(events);
    one_value_per_message(&h, &mut r);
    count_deliveries(&h, &mut r);
    // One forgotten lease can explain both a repeated attempt and an early redelivery: the set
    // counts it once.
    let mut forgotten = HashSet::new();
    double_leases(&h, &mut forgotten, &mut r);
    released_before_redelivery(&h, &mut forgotten, &mut r);
    r.forgotten_leases = forgotten.len();
    stale_acks(&h, &mut r);
    lost_values(&h, &mut r);
    unexpected_values(&h, &mut r);
    exactly_once(&h, processed, &mut r);
    upgrade_attempts(events, &h, &mut r);
    r
}

/// Every operation by outcome, for the report; `acks_refused` counts the committed acks that
/// returned false, their receipt having been superseded.
fn count_operations(events: &[Event], r: &mut Report) {
    for e in events {
        match e {
            Event::Enqueue { vals, outcome, .. } => {
                r.enqueue_tx[slot(*outcome)] += 1;
                r.values[slot(*outcome)] += vals.len();
            }
            Event::Lease { outcome, .. } => r.leases[slot(*outcome)] += 1,
            Event::Ack { outcome, result, .. } => {
                r.acks[slot(*outcome)] += 1;
                if *outcome == Outcome::Ok && *result == Some(false) {
                    r.acks_refused += 1;
                }
            }
            Event::Nack { outcome, .. } => r.nacks[slot(*outcome)] += 1,
            Event::Extend { outcome, .. } => r.extends[slot(*outcome)] += 1,
            Event::Crash { .. }
            | Event::Upgrade(_)
            | Event::Version { .. }
            | Event::Tolerated { .. }
            | Event::Error { .. } => {}
        }
    }
}

/// The harness itself worked: no worker recorded an error (a statement failed in a way the
/// harness does not expect), and no value was enqueued twice. Producers number their values
/// uniquely, so a repeat is a harness bug, and it would leave the value rules unable to tell which
/// enqueue a delivery came from.
fn harness_errors(events: &[Event], r: &mut Report) {
    let mut enqueued = HashSet::new();
    for e in events {
        match e {
            Event::Enqueue { vals, .. } => {
                for v in vals {
                    if !enqueued.insert(*v) {
                        r.errors.push(format!("value {v} was enqueued twice by the clients"));
                    }
                }
            }
            Event::Error { w, what } => r.errors.push(format!("worker {w}: {what}")),
            _ => {}
        }
    }
}

/// Every failure a worker tolerated is one the harness documents ([`TOLERATED`]): a worker treats
/// any 57P or 08 SQLSTATE as a lost connection, and a code nothing here explains (57P04, the
/// database was dropped) must not pass unnoticed.
fn tolerated_errors(events: &[Event], r: &mut Report) {
    for e in events {
        if let Event::Tolerated { w, code } = e {
            *r.tolerated.entry(code.clone()).or_default() += 1;
            if !TOLERATED.iter().any(|(c, _)| c == code) {
                r.errors.push(format!("worker {w}: {code}, which the harness does not expect"));
            }
        }
    }
}

/// Every delivery of a message carries the value it was first delivered with: leasing never
/// rewrites a payload, so another value under the same id means rows were mixed up (by the server
/// or by the harness reading them).
fn one_value_per_message(h: &History, r: &mut Report) {
    for (id, m) in &h.messages {
        if m.deliveries.iter().any(|x| x.delivery.v != m.v) {
            r.errors.push(format!("message {id} was delivered with two different values"));
        }
    }
}

/// Deliveries by committed leases, and duplicates: every such delivery of a message after its
/// first. Leases of unknown outcome count in neither.
fn count_deliveries(h: &History, r: &mut Report) {
    for m in h.messages.values() {
        let committed = m.deliveries.iter().filter(|x| x.committed).count();
        r.deliveries += committed;
        r.duplicates += committed.saturating_sub(1);
    }
}

/// No double lease: two committed leases of one message never report the same attempt, since each
/// lease increments the attempt while it holds the message's row lock.
///
/// Without durable leases, a crash can forget the earlier of the two, and the message then comes
/// again with the same attempt; when the earlier lease was forgettable, it counts as forgotten.
fn double_leases<'a>(h: &History<'a>, forgotten: &mut HashSet<&'a str>, r: &mut Report) {
    for (id, m) in &h.messages {
        for pair in m.committed_by_attempt().windows(2) {
            let (first, second) = (pair[0], pair[1]);
            if first.attempt != second.attempt {
                continue;
            }
            if h.forgettable(first) {
                forgotten.insert(&first.receipt);
            } else {
                r.double_leases.push(format!(
                    "message {id} (value {}): two committed leases of attempt {}",
                    m.v, first.attempt
                ));
            }
        }
    }
}

/// No unexplained redelivery: after a committed lease, the next attempt of its message comes only
/// once that lease released it, by its expiry (extended or not, on the server clock every lease
/// reports) or by a nack that may have succeeded; otherwise two consumers held the message at
/// once. The next attempt counts whether or not its own lease committed (its rows came from the
/// server either way); only committed ones count as duplicates after an expiry or a nack.
///
/// Without durable leases, a crash can forget the earlier lease, releasing the message early; when
/// that lease was forgettable, it counts as forgotten.
fn released_before_redelivery<'a>(h: &History<'a>, forgotten: &mut HashSet<&'a str>, r: &mut Report) {
    for (id, m) in &h.messages {
        let mut by_attempt: Vec<&Delivered> = m.deliveries.iter().collect();
        by_attempt.sort_by_key(|x| x.delivery.attempt);
        for (i, earlier) in by_attempt.iter().enumerate().filter(|(_, x)| x.committed) {
            let d1 = earlier.delivery;
            let Some(next) = by_attempt[i + 1..].iter().find(|x| x.delivery.attempt > d1.attempt) else {
                continue;
            };
            let d2 = next.delivery;
            let expiry = h.earliest_expiry(d1);
            if d2.leased_at() >= expiry {
                if next.committed {
                    r.duplicates_after_expiry += 1;
                }
            } else if h.nacked.contains(d1.receipt.as_str()) {
                if next.committed {
                    r.duplicates_after_nack += 1;
                }
            } else if h.forgettable(d1) {
                forgotten.insert(&d1.receipt);
            } else {
                r.unexplained.push(format!(
                    "message {id} (value {}): attempt {} leased {} µs before attempt {}'s lease expired, \
                     without a nack",
                    m.v,
                    d2.attempt,
                    expiry - d2.leased_at(),
                    d1.attempt
                ));
            }
        }
    }
}

/// No stale ack accepted: an ack returns true only while its receipt's lease is the message's
/// current one, and it completes the message, so no committed lease delivers a later attempt than
/// the acked one; one that does means the ack used a superseded receipt or the message came back
/// after its ack. Every acked receipt must come from a lease in the history.
///
/// Without durable leases, a crash can forget a later lease, giving the message back to the older
/// receipt: a forgettable delivery does not make an ack stale.
fn stale_acks(h: &History, r: &mut Report) {
    let newest: HashMap<i64, i32> = h
        .messages
        .iter()
        .filter_map(|(id, m)| {
            let lasting = m.deliveries.iter().filter(|x| x.committed && !h.forgettable(x.delivery));
            lasting.map(|x| x.delivery.attempt).max().map(|attempt| (*id, attempt))
        })
        .collect();
    for a in &h.acked {
        let Some(d) = h.receipts.get(a.receipt) else {
            r.errors.push(format!("ack of a receipt no lease returned: {}", a.receipt));
            continue;
        };
        let (id, attempt) = (a.id, d.attempt);
        if let Some(max) = newest.get(&id).filter(|max| **max > attempt) {
            r.stale_acks.push(format!(
                "message {id}: the ack of attempt {attempt} returned true, and attempt {max} was delivered"
            ));
        }
    }
}

/// No lost value: a value whose enqueue committed was delivered by a committed lease (the drain at
/// the end of a run leases until the queue is empty). A value whose enqueue is unknown may be
/// missing; delivered, it counts as recovered.
fn lost_values(h: &History, r: &mut Report) {
    for (v, o) in &h.enqueued {
        match o {
            Outcome::Ok if !h.delivered.get(v).copied().unwrap_or(false) => r.lost.push(*v),
            Outcome::Info if h.delivered.contains_key(v) => r.recovered += 1,
            _ => {}
        }
    }
    r.lost.sort_unstable();
}

/// Nothing is delivered that was not enqueued (unexpected), or whose enqueue rolled back (an
/// aborted read). Rows an unknown lease returned came from the server too: they count here.
fn unexpected_values(h: &History, r: &mut Report) {
    for v in h.delivered.keys() {
        match h.enqueued.get(v) {
            None => r.unexpected.push(*v),
            Some(Outcome::Fail) => r.aborted_reads.push(*v),
            _ => {}
        }
    }
    r.unexpected.sort_unstable();
    r.aborted_reads.sort_unstable();
}

/// Exactly-once processing by the consumers that write and ack (strictly) in one transaction: the
/// write commits if and only if the ack succeeds, so each value is written at most once (a
/// second ack of it fails and rolls its write back), no successful ack lacks its write, and no
/// write lacks an ack that succeeded or may have.
fn exactly_once(h: &History, processed: &HashMap<u64, i64>, r: &mut Report) {
    for (v, n) in processed {
        r.processed += 1;
        if *n > 1 {
            r.processed_twice.push(*v);
        }
        let acks = h.tx_acks.get(v).map(Vec::as_slice).unwrap_or(&[]);
        if !acks.iter().any(|a| a.may_have_succeeded()) {
            r.write_without_ack.push(*v);
        }
    }
    for (v, acks) in &h.tx_acks {
        if acks.iter().any(|a| a.succeeded()) && !processed.contains_key(v) {
            r.ack_without_write.push(*v);
        }
    }
    r.processed_twice.sort_unstable();
    r.write_without_ack.sort_unstable();
    r.ack_without_write.sort_unstable();
}

/// The update under load: `ALTER EXTENSION courier UPDATE` is transactional, so each attempt
/// leaves the version its outcome says (committed: the new one; rolled back: the one before it;
/// unknown: either), an attempt that failed other than by a lost connection is an anomaly, none
/// runs once the update is in, and the run ends at the default version, which is the one the
/// attempts aimed at. A run that recorded its final version and no attempt must already be at
/// the default.
fn upgrade_attempts(events: &[Event], h: &History, r: &mut Report) {
    let mut current: Option<&str> = None;
    for e in events {
        let Event::Upgrade(a) = e else { continue };
        let before = current.unwrap_or(&a.from);
        let n = a.attempt;
        if before == a.to {
            r.upgrade_anomalies.push(format!("attempt {n} ran after the update was in"));
        }
        let expected: &[&str] = match a.outcome {
            Outcome::Ok => &[&a.to],
            Outcome::Fail => &[before],
            Outcome::Info => &[before, &a.to],
        };
        if !expected.contains(&a.version.as_str()) {
            r.upgrade_anomalies.push(format!(
                "attempt {n} ended {:?} with extversion {}, expected {}",
                a.outcome,
                a.version,
                expected.join(" or ")
            ));
        }
        if let Some(error) = &a.error {
            r.upgrade_anomalies.push(format!("attempt {n} failed: {error}"));
        }
        current = Some(&a.version);
        r.upgrades.push((a.clone(), h.leases_between(a.at, a.until)));
    }
    r.final_version = events.iter().rev().find_map(|e| match e {
        Event::Version { version, default } => Some((version.clone(), default.clone())),
        _ => None,
    });
    match (&r.final_version, r.upgrades.last()) {
        (None, Some(_)) => r.upgrade_anomalies.push("the final extversion was not recorded".into()),
        (Some((version, default)), last) => {
            if version != default {
                r.upgrade_anomalies.push(format!("the run ended at extversion {version}, not at {default}"));
            }
            if let Some((a, _)) = last.filter(|(a, _)| a.to != *default) {
                r.upgrade_anomalies.push(format!("the update aimed at {}, the default is {default}", a.to));
            }
        }
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VT: i64 = 2_000_000;

    fn enq(v: u64, outcome: Outcome) -> Event {
        Event::Enqueue { w: 1, vals: vec![v], outcome }
    }

    fn delivery(v: u64, attempt: i32, leased_at: i64) -> Delivery {
        Delivery {
            v,
            id: v as i64 + 1000,
            receipt: format!("r{v}-{attempt}"),
            attempt,
            exp: leased_at + VT,
            vt: VT,
        }
    }

    fn lease(d: Delivery, outcome: Outcome) -> Event {
        Event::Lease { w: 2, outcome, items: vec![d] }
    }

    fn ack(d: &Delivery, result: bool, tx: bool) -> Event {
        Event::Ack {
            w: 2,
            v: d.v,
            id: d.id,
            receipt: d.receipt.clone(),
            tx,
            outcome: Outcome::Ok,
            result: Some(result),
        }
    }

    fn nack(d: &Delivery) -> Event {
        Event::Nack {
            w: 2,
            v: d.v,
            id: d.id,
            receipt: d.receipt.clone(),
            outcome: Outcome::Ok,
            result: Some(true),
        }
    }

    fn none() -> HashMap<u64, i64> {
        HashMap::new()
    }

    #[test]
    fn a_clean_history_is_valid() {
        let d1 = delivery(1, 1, 0);
        let d2 = delivery(2, 1, 10);
        let h = vec![
            enq(1, Outcome::Ok),
            enq(2, Outcome::Ok),
            enq(3, Outcome::Fail),
            enq(4, Outcome::Info),
            lease(d1.clone(), Outcome::Ok),
            lease(d2.clone(), Outcome::Ok),
            ack(&d1, true, false),
            ack(&d2, true, false),
        ];
        let r = check(&h, &none());
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.values, [2, 1, 1]);
        assert_eq!(r.deliveries, 2);
        assert_eq!(r.recovered, 0);
    }

    #[test]
    fn finds_lost_messages() {
        let r = check(&[enq(1, Outcome::Ok), enq(2, Outcome::Info)], &none());
        assert_eq!(r.lost, vec![1], "an unknown enqueue may be missing; a confirmed one may not");
        assert!(!r.valid());
    }

    #[test]
    fn an_unknown_lease_does_not_count_as_a_delivery() {
        let h = vec![enq(1, Outcome::Ok), lease(delivery(1, 1, 0), Outcome::Info)];
        assert_eq!(check(&h, &none()).lost, vec![1]);
    }

    #[test]
    fn finds_unexpected_and_aborted_reads() {
        let h = vec![
            enq(1, Outcome::Fail),
            lease(delivery(1, 1, 0), Outcome::Ok),
            lease(delivery(9, 1, 0), Outcome::Ok),
        ];
        let r = check(&h, &none());
        assert_eq!(r.aborted_reads, vec![1]);
        assert_eq!(r.unexpected, vec![9]);
    }

    #[test]
    fn redelivery_after_expiry_or_nack_is_explained() {
        let d1 = delivery(1, 1, 0);
        let d2 = delivery(1, 2, VT); // exactly at expiry
        let d3 = delivery(1, 3, VT + 10); // d2 nacked first
        let h = vec![
            enq(1, Outcome::Ok),
            lease(d1.clone(), Outcome::Ok),
            lease(d2.clone(), Outcome::Ok),
            nack(&d2),
            lease(d3.clone(), Outcome::Ok),
            ack(&d1, false, false),
            ack(&d3, true, false),
        ];
        let r = check(&h, &none());
        assert!(r.valid(), "{r:?}");
        assert_eq!((r.duplicates, r.duplicates_after_expiry, r.duplicates_after_nack), (2, 1, 1));
        assert_eq!(r.acks_refused, 1);
    }

    #[test]
    fn early_redelivery_is_unexplained() {
        let d1 = delivery(1, 1, 0);
        let d2 = delivery(1, 2, VT - 1);
        let h = vec![enq(1, Outcome::Ok), lease(d1, Outcome::Ok), lease(d2, Outcome::Ok)];
        let r = check(&h, &none());
        assert_eq!(r.unexplained.len(), 1, "{r:?}");
    }

    #[test]
    fn an_extension_moves_the_expiry() {
        let d1 = delivery(1, 1, 0);
        let d2 = delivery(1, 2, VT + 5);
        let ext = Event::Extend {
            w: 2,
            v: 1,
            id: d1.id,
            receipt: d1.receipt.clone(),
            outcome: Outcome::Ok,
            result: Some(true),
            exp: VT + 100,
        };
        let h = vec![enq(1, Outcome::Ok), lease(d1, Outcome::Ok), ext, lease(d2, Outcome::Ok)];
        assert_eq!(check(&h, &none()).unexplained.len(), 1);
    }

    fn crash(at: i64, durable_leases: bool) -> Event {
        Event::Crash { at, until: at + 1000, durable_leases }
    }

    /// A lease forgotten by a crash: the same attempt again, before the first lease's expiry.
    fn forgotten_history(crash_event: Event) -> Vec<Event> {
        let d1 = delivery(1, 1, 0);
        let mut again = delivery(1, 1, 300_000);
        again.receipt = "again".into();
        vec![
            enq(1, Outcome::Ok),
            lease(d1, Outcome::Ok),
            crash_event,
            lease(again.clone(), Outcome::Ok),
            ack(&again, true, false),
        ]
    }

    #[test]
    fn a_crash_may_forget_a_lease_taken_just_before_it() {
        let r = check(&forgotten_history(crash(200_000, false)), &none());
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.forgotten_leases, 1);
    }

    #[test]
    fn a_forgotten_lease_is_counted_once() {
        // The forgotten lease explains both the repeated attempt 1 and attempt 2, which came
        // before its expiry (after a nack of the repeat).
        let mut h = forgotten_history(crash(200_000, false));
        let again = delivery(1, 1, 300_000);
        h.pop();
        h.push(nack(&Delivery { receipt: "again".into(), ..again }));
        h.push(lease(delivery(1, 2, 500_000), Outcome::Ok));
        let r = check(&h, &none());
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.forgotten_leases, 1);
    }

    #[test]
    fn only_a_recent_lease_without_durable_leases_may_be_forgotten() {
        // Durable leases survive crashes.
        let r = check(&forgotten_history(crash(200_000, true)), &none());
        assert_eq!((r.double_leases.len(), r.forgotten_leases), (1, 0), "{r:?}");
        // A crash over before the lease, or long after it, explains nothing.
        for at in [-1001, FORGET_WINDOW_US + 1] {
            let r = check(&forgotten_history(crash(at, false)), &none());
            assert_eq!((r.double_leases.len(), r.forgotten_leases), (1, 0), "crash at {at}: {r:?}");
        }
    }

    #[test]
    fn a_forgotten_lease_revives_the_older_receipt() {
        // Attempt 2 was leased after attempt 1 expired, then a crash forgot it: attempt 1's
        // receipt holds the message again and its ack is not stale.
        let d1 = delivery(1, 1, 0);
        let d2 = delivery(1, 2, VT + 10);
        let h = |c: Event| {
            vec![
                enq(1, Outcome::Ok),
                lease(d1.clone(), Outcome::Ok),
                lease(d2.clone(), Outcome::Ok),
                c,
                ack(&d1, true, false),
            ]
        };
        let r = check(&h(crash(VT + 500_000, false)), &none());
        assert!(r.valid(), "{r:?}");
        assert_eq!(check(&h(crash(VT + 500_000, true)), &none()).stale_acks.len(), 1);
    }

    #[test]
    fn finds_double_leases_and_stale_acks() {
        let d1 = delivery(1, 1, 0);
        let mut twin = delivery(1, 1, 5);
        twin.receipt = "other".into();
        let d2 = delivery(1, 2, VT);
        let h = vec![
            enq(1, Outcome::Ok),
            lease(d1.clone(), Outcome::Ok),
            lease(twin, Outcome::Ok),
            lease(d2, Outcome::Ok),
            ack(&d1, true, false),
        ];
        let r = check(&h, &none());
        assert_eq!(r.double_leases.len(), 1);
        assert_eq!(r.stale_acks.len(), 1);
        assert!(!r.valid());
    }

    #[test]
    fn delivery_after_a_successful_ack_is_a_stale_ack() {
        let d1 = delivery(1, 1, 0);
        let d2 = delivery(1, 2, VT * 5);
        let h = vec![
            enq(1, Outcome::Ok),
            lease(d1.clone(), Outcome::Ok),
            ack(&d1, true, false),
            lease(d2, Outcome::Ok),
        ];
        assert_eq!(check(&h, &none()).stale_acks.len(), 1);
    }

    #[test]
    fn exactly_once_processing_rules() {
        let d1 = delivery(1, 1, 0);
        let d2 = delivery(2, 1, 0);
        let d3 = delivery(3, 1, 0);
        let h = vec![
            enq(1, Outcome::Ok),
            enq(2, Outcome::Ok),
            enq(3, Outcome::Ok),
            lease(d1.clone(), Outcome::Ok),
            lease(d2.clone(), Outcome::Ok),
            lease(d3.clone(), Outcome::Ok),
            ack(&d1, true, true),
            ack(&d2, true, true),
            ack(&d3, false, true),
        ];
        let good: HashMap<u64, i64> = [(1, 1), (2, 1)].into();
        assert!(check(&h, &good).valid());
        let twice: HashMap<u64, i64> = [(1, 2), (2, 1)].into();
        assert_eq!(check(&h, &twice).processed_twice, vec![1]);
        let missing: HashMap<u64, i64> = [(1, 1)].into();
        assert_eq!(check(&h, &missing).ack_without_write, vec![2]);
        let extra: HashMap<u64, i64> = [(1, 1), (2, 1), (3, 1)].into();
        assert_eq!(check(&h, &extra).write_without_ack, vec![3]);
    }

    fn tolerated(code: &str) -> Event {
        Event::Tolerated { w: 3, code: code.into() }
    }

    #[test]
    fn tolerated_failures_are_counted_by_code() {
        let h =
            vec![tolerated("QC001"), tolerated("57P02"), tolerated("QC001"), tolerated("connection closed")];
        let r = check(&h, &none());
        assert!(r.valid(), "{r:?}");
        let counts: Vec<(&str, usize)> = r.tolerated.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        assert_eq!(counts, [("57P02", 1), ("QC001", 2), ("connection closed", 1)]);
    }

    #[test]
    fn an_undocumented_failure_fails_the_run() {
        // A worker counts every 57P code as a lost connection; the database being dropped is not
        // a fault the harness injects.
        let r = check(&[tolerated("57P01"), tolerated("57P04")], &none());
        assert_eq!(r.errors, ["worker 3: 57P04, which the harness does not expect"], "{r:?}");
        assert_eq!(r.tolerated.len(), 2);
    }

    #[test]
    fn worker_errors_fail_the_run() {
        let r = check(&[Event::Error { w: 3, what: "boom".into() }], &none());
        assert!(!r.valid());
    }

    fn nack_with(d: &Delivery, outcome: Outcome, result: Option<bool>) -> Event {
        Event::Nack { w: 2, v: d.v, id: d.id, receipt: d.receipt.clone(), outcome, result }
    }

    fn extend(d: &Delivery, outcome: Outcome, result: Option<bool>, exp: i64) -> Event {
        Event::Extend { w: 2, v: d.v, id: d.id, receipt: d.receipt.clone(), outcome, result, exp }
    }

    #[test]
    fn a_value_enqueued_twice_fails_the_run() {
        let r = check(&[enq(1, Outcome::Ok), enq(1, Outcome::Fail)], &none());
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert_eq!(r.values, [1, 1, 0]);
    }

    #[test]
    fn a_message_delivered_with_two_values_fails_the_run() {
        let d1 = delivery(1, 1, 0);
        let other = Delivery { v: 2, receipt: "other".into(), attempt: 2, ..delivery(1, 2, VT) };
        let h = vec![enq(1, Outcome::Ok), lease(d1, Outcome::Ok), lease(other, Outcome::Ok)];
        let r = check(&h, &none());
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert!(!r.valid());
    }

    #[test]
    fn an_ack_of_a_receipt_no_lease_returned_fails_the_run() {
        let d = delivery(1, 1, 0);
        let nowhere = Delivery { receipt: "nowhere".into(), ..d.clone() };
        let h = vec![enq(1, Outcome::Ok), lease(d, Outcome::Ok), ack(&nowhere, true, false)];
        let r = check(&h, &none());
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert!(r.stale_acks.is_empty());
    }

    #[test]
    fn a_delivered_unknown_enqueue_is_recovered() {
        let r = check(&[enq(1, Outcome::Info), lease(delivery(1, 1, 0), Outcome::Ok)], &none());
        assert!(r.valid(), "{r:?}");
        assert_eq!((r.values, r.recovered), ([0, 0, 1], 1));
    }

    #[test]
    fn a_redelivery_by_an_unknown_lease_is_checked_but_not_counted() {
        let d1 = delivery(1, 1, 0);
        let h = |d2: Delivery| {
            vec![enq(1, Outcome::Ok), lease(d1.clone(), Outcome::Ok), lease(d2, Outcome::Info)]
        };
        let r = check(&h(delivery(1, 2, VT)), &none());
        assert!(r.valid(), "{r:?}");
        assert_eq!((r.deliveries, r.duplicates, r.duplicates_after_expiry), (1, 0, 0));
        assert_eq!(check(&h(delivery(1, 2, VT - 1)), &none()).unexplained.len(), 1);
    }

    #[test]
    fn an_unknown_nack_may_explain_a_redelivery() {
        let d1 = delivery(1, 1, 0);
        let d2 = delivery(1, 2, 10);
        let h = |n: Event| {
            vec![enq(1, Outcome::Ok), lease(d1.clone(), Outcome::Ok), n, lease(d2.clone(), Outcome::Ok)]
        };
        let r = check(&h(nack_with(&d1, Outcome::Info, None)), &none());
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.duplicates_after_nack, 1);
        // A nack that returned false released nothing.
        assert_eq!(check(&h(nack_with(&d1, Outcome::Ok, Some(false))), &none()).unexplained.len(), 1);
    }

    #[test]
    fn an_unknown_extension_may_have_brought_the_expiry_forward() {
        // An extend sets the expiry to its own start plus the timeout, which can be earlier.
        let d1 = delivery(1, 1, 0);
        let d2 = delivery(1, 2, VT / 2 + 1);
        let h = |x: Event| {
            vec![enq(1, Outcome::Ok), lease(d1.clone(), Outcome::Ok), x, lease(d2.clone(), Outcome::Ok)]
        };
        let r = check(&h(extend(&d1, Outcome::Info, None, VT / 2)), &none());
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.duplicates_after_expiry, 1);
        // An unknown extend to a later time leaves the lease's own expiry as the earliest.
        assert_eq!(check(&h(extend(&d1, Outcome::Info, None, VT * 2)), &none()).unexplained.len(), 1);
        // An extend that returned false changed nothing.
        assert_eq!(check(&h(extend(&d1, Outcome::Ok, Some(false), VT / 2)), &none()).unexplained.len(), 1);
    }

    #[test]
    fn an_unknown_ack_may_have_committed_its_write() {
        let d = delivery(1, 1, 0);
        let unknown = Event::Ack {
            w: 2,
            v: d.v,
            id: d.id,
            receipt: d.receipt.clone(),
            tx: true,
            outcome: Outcome::Info,
            result: None,
        };
        let h = vec![enq(1, Outcome::Ok), lease(d, Outcome::Ok), unknown];
        // Either way is consistent: written and acked, or neither.
        assert!(check(&h, &[(1, 1)].into()).valid());
        assert!(check(&h, &none()).valid());
    }

    fn attempt(n: u32, outcome: Outcome, version: &str) -> Upgrade {
        Upgrade {
            attempt: n,
            from: "0.1.0".into(),
            to: "0.2.0".into(),
            at: 1_000_000 * i64::from(n),
            until: 1_000_000 * i64::from(n) + 20_000,
            offset_ms: 1000 * u64::from(n),
            statement_us: Some(15_000),
            hold_ms: 100,
            interrupted_by: None,
            outcome,
            version: version.into(),
            error: None,
        }
    }

    fn version(version: &str) -> Event {
        Event::Version { version: version.into(), default: "0.2.0".into() }
    }

    fn upgrade_anomalies(h: &[Event]) -> Vec<String> {
        check(h, &none()).upgrade_anomalies
    }

    #[test]
    fn an_update_under_load_is_valid() {
        // The first attempt committed, and one lease of the workers fell inside it.
        let d = delivery(1, 1, 1_010_000);
        let h = vec![
            enq(1, Outcome::Ok),
            lease(d.clone(), Outcome::Ok),
            ack(&d, true, false),
            Event::Upgrade(attempt(1, Outcome::Ok, "0.2.0")),
            version("0.2.0"),
        ];
        let r = check(&h, &none());
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.upgrades.iter().map(|(a, n)| (a.attempt, *n)).collect::<Vec<_>>(), [(1, 1)]);
        assert_eq!(r.final_version, Some(("0.2.0".into(), "0.2.0".into())));
    }

    #[test]
    fn an_interrupted_update_rolls_back_and_is_retried() {
        let interrupted =
            Upgrade { interrupted_by: Some("kill9".into()), ..attempt(1, Outcome::Fail, "0.1.0") };
        let h = vec![
            Event::Upgrade(interrupted),
            Event::Upgrade(attempt(2, Outcome::Ok, "0.2.0")),
            version("0.2.0"),
        ];
        assert!(check(&h, &none()).valid());
        // An unknown outcome may have gone either way.
        for v in ["0.1.0", "0.2.0"] {
            let h = vec![
                Event::Upgrade(attempt(1, Outcome::Info, v)),
                Event::Upgrade(attempt(2, Outcome::Ok, "0.2.0")),
                version("0.2.0"),
            ];
            let anomalies = upgrade_anomalies(&h);
            let retried_after_success = ["attempt 2 ran after the update was in".to_string()];
            assert_eq!(anomalies, if v == "0.2.0" { &retried_after_success[..] } else { &[] }, "{v}");
        }
    }

    #[test]
    fn an_update_that_is_not_transactional_is_an_anomaly() {
        // Rolled back, yet the version moved; committed, yet it did not; unknown, yet a third one.
        let cases = [
            (
                attempt(1, Outcome::Fail, "0.2.0"),
                "attempt 1 ended Fail with extversion 0.2.0, expected 0.1.0",
            ),
            (attempt(1, Outcome::Ok, "0.1.0"), "attempt 1 ended Ok with extversion 0.1.0, expected 0.2.0"),
            (
                attempt(1, Outcome::Info, "0.1.5"),
                "attempt 1 ended Info with extversion 0.1.5, expected 0.1.0 or 0.2.0",
            ),
        ];
        for (a, expected) in cases {
            let anomalies = upgrade_anomalies(&[Event::Upgrade(a), version("0.2.0")]);
            assert_eq!(anomalies, [expected]);
        }
    }

    #[test]
    fn a_failed_update_is_an_anomaly() {
        let failed =
            Upgrade { error: Some("40P01 deadlock detected".into()), ..attempt(1, Outcome::Fail, "0.1.0") };
        let h =
            vec![Event::Upgrade(failed), Event::Upgrade(attempt(2, Outcome::Ok, "0.2.0")), version("0.2.0")];
        assert_eq!(upgrade_anomalies(&h), ["attempt 1 failed: 40P01 deadlock detected"]);
        assert!(!check(&h, &none()).valid(), "an update anomaly fails the run");
    }

    #[test]
    fn the_run_must_end_at_the_default_version() {
        let ok = Event::Upgrade(attempt(1, Outcome::Ok, "0.2.0"));
        assert_eq!(upgrade_anomalies(std::slice::from_ref(&ok)), ["the final extversion was not recorded"]);
        assert_eq!(
            upgrade_anomalies(&[ok, version("0.1.0")]),
            ["the run ended at extversion 0.1.0, not at 0.2.0"]
        );
        // No attempt at all (the controller never got to it): still at the old version.
        assert_eq!(
            upgrade_anomalies(&[version("0.1.0")]),
            ["the run ended at extversion 0.1.0, not at 0.2.0"]
        );
        // An update aimed at another version than the default.
        let elsewhere = Upgrade { to: "0.3.0".into(), ..attempt(1, Outcome::Ok, "0.3.0") };
        let h =
            [Event::Upgrade(elsewhere), Event::Version { version: "0.3.0".into(), default: "0.2.0".into() }];
        assert_eq!(
            upgrade_anomalies(&h),
            [
                "the run ended at extversion 0.3.0, not at 0.2.0",
                "the update aimed at 0.3.0, the default is 0.2.0"
            ]
        );
    }

    #[test]
    fn a_run_without_an_update_has_no_update_anomaly() {
        let r = check(&[enq(1, Outcome::Fail)], &none());
        assert!(r.upgrades.is_empty() && r.final_version.is_none() && r.upgrade_anomalies.is_empty());
    }
}
