//! The history checker, after Jepsen's total-queue checker plus the lease rules courier promises.
//!
//! Time-free rules (they hold whatever the clocks did):
//! - lost: a value whose enqueue committed (`ok`) was never delivered;
//! - unexpected: a value was delivered that no enqueue attempted; an aborted read: a value was
//!   delivered whose enqueue definitely rolled back (`fail`);
//! - double lease: two committed leases of one message gave the same attempt number;
//! - stale ack accepted: an ack returned true, yet the message was delivered again with a later
//!   attempt (either the ack used a superseded receipt, or the message came back after its ack);
//! - exactly-once processing: a value processed twice in ack transactions, an ack transaction
//!   that committed without its write, or a write that committed without its ack.
//!
//! One rule uses the server clock, which every lease reports: a message delivered again must have
//! been released first, by a nack of the earlier lease or by that lease's expiry (extended or
//! not). A redelivery before the earlier lease expired is unexplained.
//!
//! Unless `courier.durable_leases` is on, a transaction that only leased commits without waiting
//! for its WAL flush, so a server crash can forget a lease committed just before it: the message
//! is as it was before that lease (the same attempt number comes again, an older receipt may
//! still hold it). Each rule above accepts that for a lease that was taken at most
//! [`FORGET_WINDOW_US`] before a recorded crash (the WAL writer flushes an asynchronous commit
//! within three `wal_writer_delay`s, 600 ms by default) or while the server went down (after a
//! kill -9 of the postmaster its backends keep serving until they notice), and counts it as
//! forgotten; for any other lease the rules are as strict as with durable leases.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::{Delivery, Event, Outcome};

/// How long before a crash a lease may have been committed and still be forgotten.
pub const FORGET_WINDOW_US: i64 = 1_000_000;

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
            && self.errors.is_empty()
    }
}

/// An extend of one lease: its outcome, its result, and the lower bound of the new expiry.
type Extension = (Outcome, Option<bool>, i64);

fn slot(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Info => 2,
    }
}

/// Checks a history. `processed` maps each value to how many rows the ack transactions wrote for
/// it (the consumers' own table, read after the drain).
pub fn check(events: &[Event], processed: &HashMap<u64, i64>) -> Report {
    let mut r = Report::default();
    let mut enqueued: HashMap<u64, Outcome> = HashMap::new();
    // Per message id: deliveries with the lease's outcome (ok or info), in history order.
    let mut deliveries: BTreeMap<i64, Vec<(Delivery, Outcome)>> = BTreeMap::new();
    let mut nacked: HashMap<&str, bool> = HashMap::new();
    let mut acked_true: Vec<(&str, i64)> = Vec::new();
    let mut extended: HashMap<&str, Vec<Extension>> = HashMap::new();
    let mut tx_acks: HashMap<u64, Vec<(Outcome, Option<bool>)>> = HashMap::new();
    // Crashes that can have forgotten leases (taken with durable_leases off).
    let crashes: Vec<(i64, i64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Crash { at, until, durable_leases: false } => Some((*at, *until)),
            _ => None,
        })
        .collect();
    let mut forgotten: HashSet<&str> = HashSet::new();
    let forgettable = |d: &Delivery| {
        crashes.iter().any(|(at, until)| (at - FORGET_WINDOW_US..=*until).contains(&d.leased_at()))
    };

    for e in events {
        match e {
            Event::Enqueue { vals, outcome, .. } => {
                r.enqueue_tx[slot(*outcome)] += 1;
                for v in vals {
                    r.values[slot(*outcome)] += 1;
                    if enqueued.insert(*v, *outcome).is_some() {
                        r.errors.push(format!("value {v} was enqueued twice by the clients"));
                    }
                }
            }
            Event::Lease { outcome, items, .. } => {
                r.leases[slot(*outcome)] += 1;
                if *outcome != Outcome::Fail {
                    for d in items {
                        deliveries.entry(d.id).or_default().push((d.clone(), *outcome));
                    }
                }
            }
            Event::Ack { v, id, receipt, tx, outcome, result, .. } => {
                r.acks[slot(*outcome)] += 1;
                if *outcome == Outcome::Ok && *result == Some(false) {
                    r.acks_refused += 1;
                }
                if *outcome == Outcome::Ok && *result == Some(true) {
                    acked_true.push((receipt, *id));
                }
                if *tx {
                    tx_acks.entry(*v).or_default().push((*outcome, *result));
                }
            }
            Event::Nack { receipt, outcome, result, .. } => {
                r.nacks[slot(*outcome)] += 1;
                // An unknown nack may have released the message: it can explain a redelivery.
                if *outcome == Outcome::Info || (*outcome == Outcome::Ok && *result == Some(true)) {
                    nacked.insert(receipt, true);
                }
            }
            Event::Extend { receipt, outcome, result, exp, .. } => {
                r.extends[slot(*outcome)] += 1;
                extended.entry(receipt).or_default().push((*outcome, *result, *exp));
            }
            Event::Error { w, what } => r.errors.push(format!("worker {w}: {what}")),
            Event::Crash { .. } => {}
        }
    }

    // Delivered values, and the checks that need only the deliveries of one message.
    let mut delivered: HashMap<u64, bool> = HashMap::new();
    let mut by_receipt: HashMap<&str, (i64, i32)> = HashMap::new();
    let mut max_ok_attempt: HashMap<i64, i32> = HashMap::new();
    for (id, ds) in &deliveries {
        let v = ds[0].0.v;
        if ds.iter().any(|(d, _)| d.v != v) {
            r.errors.push(format!("message {id} was delivered with two different values"));
        }
        let mut ok: Vec<&Delivery> = ds.iter().filter(|(_, o)| *o == Outcome::Ok).map(|(d, _)| d).collect();
        ok.sort_by_key(|d| (d.attempt, d.leased_at()));
        for pair in ok.windows(2) {
            if pair[0].attempt == pair[1].attempt {
                if forgettable(pair[0]) {
                    forgotten.insert(&pair[0].receipt);
                    continue;
                }
                r.double_leases.push(format!(
                    "message {id} (value {v}): two committed leases of attempt {}",
                    pair[0].attempt
                ));
            }
        }
        r.deliveries += ok.len();
        r.duplicates += ok.len().saturating_sub(1);
        // A delivery a crash may have forgotten cannot make an ack of an older receipt stale.
        if let Some(last) = ok.iter().rfind(|d| !forgettable(d)) {
            max_ok_attempt.insert(*id, last.attempt);
        }
        if !ok.is_empty() {
            delivered.insert(v, true);
        } else {
            delivered.entry(v).or_insert(false);
        }
        for (d, _) in ds {
            by_receipt.insert(&d.receipt, (*id, d.attempt));
        }

        // Every later delivery must follow a release of the earlier committed one.
        let mut all: Vec<&(Delivery, Outcome)> = ds.iter().collect();
        all.sort_by_key(|(d, _)| d.attempt);
        for (i, (d1, o1)) in all.iter().enumerate() {
            if *o1 != Outcome::Ok {
                continue;
            }
            let Some((d2, o2)) = all[i + 1..].iter().find(|(d, _)| d.attempt > d1.attempt) else {
                continue;
            };
            let released_by_nack = nacked.contains_key(d1.receipt.as_str());
            let mut expiry = d1.exp;
            for (o, res, exp) in extended.get(d1.receipt.as_str()).into_iter().flatten() {
                match (o, res) {
                    (Outcome::Ok, Some(true)) => expiry = *exp,
                    (Outcome::Info, _) => expiry = expiry.min(*exp),
                    _ => {}
                }
            }
            if d2.leased_at() >= expiry {
                if *o2 == Outcome::Ok {
                    r.duplicates_after_expiry += 1;
                }
            } else if released_by_nack {
                if *o2 == Outcome::Ok {
                    r.duplicates_after_nack += 1;
                }
            } else if forgettable(d1) {
                forgotten.insert(&d1.receipt);
            } else {
                r.unexplained.push(format!(
                    "message {id} (value {v}): attempt {} leased {} µs before attempt {}'s lease expired, \
                     without a nack",
                    d2.attempt,
                    expiry - d2.leased_at(),
                    d1.attempt
                ));
            }
        }
    }

    r.forgotten_leases = forgotten.len();

    for (receipt, id) in &acked_true {
        let Some((_, attempt)) = by_receipt.get(receipt) else {
            r.errors.push(format!("ack of a receipt no lease returned: {receipt}"));
            continue;
        };
        if let Some(max) = max_ok_attempt.get(id) {
            if max > attempt {
                r.stale_acks.push(format!(
                    "message {id}: the ack of attempt {attempt} returned true, and attempt {max} was delivered"
                ));
            }
        }
    }

    let mut lost: Vec<u64> = Vec::new();
    for (v, o) in &enqueued {
        let seen = delivered.get(v).copied().unwrap_or(false);
        match o {
            Outcome::Ok if !seen => lost.push(*v),
            Outcome::Info if delivered.contains_key(v) => r.recovered += 1,
            _ => {}
        }
    }
    lost.sort_unstable();
    r.lost = lost;
    // Rows an unknown lease returned came from the server too: they count here.
    for v in delivered.keys() {
        match enqueued.get(v) {
            None => r.unexpected.push(*v),
            Some(Outcome::Fail) => r.aborted_reads.push(*v),
            _ => {}
        }
    }
    r.unexpected.sort_unstable();
    r.aborted_reads.sort_unstable();

    // Exactly-once processing by the consumers that ack in their own transaction.
    for (v, n) in processed {
        r.processed += 1;
        if *n > 1 {
            r.processed_twice.push(*v);
        }
        let acks = tx_acks.get(v).map(Vec::as_slice).unwrap_or(&[]);
        if !acks.iter().any(|(o, res)| *o == Outcome::Info || (*o == Outcome::Ok && *res == Some(true))) {
            r.write_without_ack.push(*v);
        }
    }
    for (v, acks) in &tx_acks {
        if acks.iter().any(|(o, res)| *o == Outcome::Ok && *res == Some(true)) && !processed.contains_key(v) {
            r.ack_without_write.push(*v);
        }
    }
    r.processed_twice.sort_unstable();
    r.write_without_ack.sort_unstable();
    r.ack_without_write.sort_unstable();
    r
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
}
