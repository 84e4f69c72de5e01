//! The group rules, for histories of the grouped workload (`run --workload groups`; README:
//! Message groups). A group is a queue's group key; dead letters moved to a dead-letter queue left
//! their groups, so deliveries from such a queue only say that a message died.
//!
//! Enqueues are ordered only when that is certain: two values of one transaction by call order,
//! and otherwise `a` before `b` when `a`'s transaction committed (its COMMIT was acknowledged, host
//! clock `t1`) before `b`'s began (`t0`, taken before its BEGIN). The server runs on the same host,
//! so its clock (which every lease reports) is the same clock.
//!
//! - [`one_holder`]: per group, no two committed leases hold it at once. A lease holds the group
//!   from when it leased until it released every message of the group it took: the earliest expiry
//!   of them (extends counted), a nack of any of them (it releases the rest of the group in the
//!   lease), or the last of their acks. A release counts from the start of the ack's or nack's
//!   transaction (before its commit, so the bound is early, never late).
//! - [`group_order`]: first deliveries within a group follow the certain enqueue order.
//! - [`group_order`] too: no ack of a message returns true while a message certainly before it in
//!   its group is still pending (neither acked, nor an ack begun), except a dead letter under
//!   `'skip'` (delivered from the dead-letter queue: it left its group).
//! - [`starvation`]: a group's head that was ready is delivered before more than [`STARVE_BOUND`]
//!   messages that became ready after it (under `'fair'`, plus one turn of every other group: the
//!   queue's groups times the most messages of one group a lease took). Its ready time is known late, never early: its enqueue's
//!   commit and the completion of every message that may come before it in its group (its
//!   successful ack, or its first delivery from the dead-letter queue under 'skip'). A message
//!   counts as overtaking it if a committed lease of the same queue delivered it for the first
//!   time between those two moments, its enqueue began after the head was ready, and it was a
//!   group's first message in that lease or ungrouped: with `'oldest'` nothing younger may come
//!   first; with `'fair'` a group just served waits for every other group's turn, each up to a
//!   `group_batch`; the bound leaves room for the leases already under way when the head became
//!   ready.
//!
//! Times on both sides of a lease's rows carry [`MARGIN_US`]: a lease reads the clock (its
//! `leased_at`) before it takes its snapshot, and a backend that loses the CPU in between takes
//! its rows later than it says; comparisons of lease times are strict only beyond that margin.

use std::collections::{BTreeMap, HashMap};

use super::{History, Report, Settled};
use crate::history::Outcome;

/// How much later than its `leased_at` a lease may have taken its rows.
pub const MARGIN_US: i64 = 100_000;
/// How many younger messages may be delivered before a ready group head (see the module's doc).
pub const STARVE_BOUND: usize = 100;

/// A value of the grouped workload as its enqueue recorded it.
#[derive(Clone, Copy, Debug)]
pub struct Enqueued<'a> {
    pub queue: &'a str,
    pub group: Option<&'a str>,
    /// The enqueue transaction (its event's index) and the value's place in it.
    pub tx: usize,
    pub pos: usize,
    pub outcome: Outcome,
    pub t0: Option<i64>,
    pub t1: Option<i64>,
}

impl Enqueued<'_> {
    /// Whether this value certainly comes before `b` in their group.
    fn before(&self, b: &Enqueued) -> bool {
        if self.tx == b.tx {
            return self.pos < b.pos;
        }
        self.outcome == Outcome::Ok && matches!((self.t1, b.t0), (Some(t1), Some(t0)) if t1 < t0)
    }
}

/// A lease time and the lease: `(leased_at, lease, pos)`.
type At = (i64, usize, usize);

/// What the history says of one grouped value.
#[derive(Clone, Debug, Default)]
struct Facts {
    /// Its first delivery from its own queue, by a lease that committed or may have.
    first: Option<At>,
    /// Its first delivery from a dead-letter queue: it had died by then.
    dead: Option<i64>,
    /// The earliest start of an ack that may have succeeded (from either queue): it was pending
    /// at least until then. `i64::MIN` when such an ack recorded no time.
    done_from: Option<i64>,
    /// The earliest end of an ack that succeeded: it was complete by then.
    done_by: Option<i64>,
    /// Its acks in its own queue that returned true: the host clock around each, and the lease
    /// of its receipt.
    acked: Vec<(i64, i64, usize)>,
    /// Its deliveries by leases of its own queue: the lease, and until when at the latest its
    /// receipt could still work: until a later committed lease took the message (an expired
    /// lease's receipt works until then), `i64::MIN` if a nack may have released it.
    held: Vec<(usize, i64)>,
}

impl Facts {
    /// By when the value certainly left its group, given its queue's `group_on_dead`.
    fn left_by(&self, skip: bool) -> Option<i64> {
        let dead = if skip { self.dead } else { None };
        [self.done_by, dead].into_iter().flatten().min()
    }
}

fn facts(h: &History) -> HashMap<u64, Facts> {
    let mut out: HashMap<u64, Facts> = HashMap::new();
    for ((queue, _), m) in &h.messages {
        let Some(e) = h.enqueues.get(&m.v) else { continue };
        let f = out.entry(m.v).or_default();
        let from_dead_letters = h.dead_letter_queues.contains(queue);
        for x in &m.deliveries {
            let at = (x.delivery.leased_at(), x.lease, x.pos);
            if from_dead_letters {
                f.dead = Some(f.dead.map_or(at.0, |d| d.min(at.0)));
            } else if *queue == e.queue {
                if f.first.is_none_or(|first| at < first) {
                    f.first = Some(at);
                }
                let settled = h.settled.get(x.delivery.receipt.as_str()).into_iter().flatten();
                let nacked = settled.filter(|s| !s.ack).any(|s| s.reply.may_have_succeeded());
                let superseded = m
                    .deliveries
                    .iter()
                    .filter(|y| y.committed && !h.forgettable(y.delivery) && y.lease != x.lease)
                    .filter(|y| y.delivery.leased_at() > x.delivery.leased_at())
                    .map(|y| y.delivery.leased_at())
                    .min();
                let until = if nacked { i64::MIN } else { superseded.unwrap_or(i64::MAX) };
                f.held.push((x.lease, until));
            }
            for s in h.settled.get(x.delivery.receipt.as_str()).into_iter().flatten().filter(|s| s.ack) {
                if s.reply.may_have_succeeded() {
                    let from = s.at.map_or(i64::MIN, |a| a.0);
                    f.done_from = Some(f.done_from.map_or(from, |d| d.min(from)));
                }
                if let (true, Some((t0, t1))) = (s.reply.succeeded(), s.at) {
                    f.done_by = Some(f.done_by.map_or(t1, |d| d.min(t1)));
                    if *queue == e.queue {
                        f.acked.push((t0, t1, x.lease));
                    }
                }
            }
        }
    }
    out
}

/// The members of each group: (queue, key) to values, in enqueue order as far as it is known
/// (by `t0`, then transaction and call order). Values whose enqueue rolled back are left out.
fn members<'a>(h: &History<'a>) -> BTreeMap<(&'a str, &'a str), Vec<(u64, Enqueued<'a>)>> {
    let mut groups: BTreeMap<(&str, &str), Vec<(u64, Enqueued)>> = BTreeMap::new();
    for (v, e) in &h.enqueues {
        if let (Some(g), true) = (e.group, h.grouped_queues.contains_key(e.queue))
            && e.outcome != Outcome::Fail
            && (e.outcome == Outcome::Ok || h.delivered.contains_key(v))
        {
            groups.entry((e.queue, g)).or_default().push((*v, *e));
        }
    }
    for values in groups.values_mut() {
        values.sort_by_key(|(_, e)| (e.t0, e.tx, e.pos));
    }
    groups
}

/// Runs the group rules (a no-op on a history without grouped queues).
pub fn check(h: &History, r: &mut Report) {
    if h.grouped_queues.is_empty() {
        return;
    }
    group_keys(h, r);
    let facts = facts(h);
    let groups = members(h);
    r.groups = groups.len();
    r.grouped_values = groups.values().map(Vec::len).sum();
    r.dead_letters = facts.values().filter(|f| f.dead.is_some()).count();
    r.released_with_group = h.released_with_group.len();
    r.drained = (h.messages.iter())
        .filter(|((q, _), _)| h.grouped_queues.contains_key(q) || h.dead_letter_queues.contains(q))
        .map(|(_, m)| m.deliveries.iter().filter(|x| x.committed && x.worker == 0).count())
        .sum();
    one_holder(h, r);
    group_order(h, &groups, &facts, r);
    starvation(h, &groups, &facts, r);
}

/// Every delivery from a grouped queue carries the group key its value was enqueued with.
fn group_keys(h: &History, r: &mut Report) {
    for ((queue, id), m) in &h.messages {
        let Some(e) = h.enqueues.get(&m.v) else { continue };
        if h.dead_letter_queues.contains(queue) || *queue != e.queue {
            continue;
        }
        if m.deliveries.iter().any(|x| x.delivery.g.as_deref() != e.group) {
            r.errors
                .push(format!("message {queue}/{id} (value {}) was delivered without its group key", m.v));
        }
    }
}

/// One group's hold by one committed lease.
struct Hold<'a> {
    start: i64,
    release: i64,
    forgettable: bool,
    values: Vec<u64>,
    lease: usize,
    group: &'a str,
}

/// The earliest moment the lease that returned `receipt` may have released it by an ack (`ack`)
/// or a nack: the start of the first such call that may have succeeded.
fn released_by(h: &History, receipt: &str, ack: bool, start: i64) -> Option<i64> {
    let calls = h.settled.get(receipt).into_iter().flatten();
    let may: Vec<&Settled> = calls.filter(|s| s.ack == ack && s.reply.may_have_succeeded()).collect();
    may.iter().map(|s| s.at.map_or(start, |a| a.0)).min()
}

/// Rule (a): per group, the holds of distinct committed leases do not overlap.
fn one_holder(h: &History, r: &mut Report) {
    let mut holds: HashMap<(&str, &str, usize), Vec<&super::Delivered>> = HashMap::new();
    for ((queue, _), m) in &h.messages {
        if !h.grouped_queues.contains_key(queue) {
            continue;
        }
        for x in m.deliveries.iter().filter(|x| x.committed) {
            if let Some(g) = x.delivery.g.as_deref() {
                holds.entry((queue, g, x.lease)).or_default().push(x);
            }
        }
    }
    let mut by_group: BTreeMap<(&str, &str), Vec<Hold>> = BTreeMap::new();
    for ((queue, group, lease), xs) in holds {
        let start = xs[0].delivery.leased_at();
        let expiry = xs.iter().map(|x| h.earliest_expiry(x.delivery)).min().unwrap_or(i64::MAX);
        let nacked = xs.iter().filter_map(|x| released_by(h, &x.delivery.receipt, false, start)).min();
        let acks: Vec<Option<i64>> =
            xs.iter().map(|x| released_by(h, &x.delivery.receipt, true, start)).collect();
        let all_acked =
            acks.iter().all(Option::is_some).then(|| acks.iter().flatten().copied().max()).flatten();
        let release = [Some(expiry), nacked, all_acked].into_iter().flatten().min().unwrap_or(expiry);
        let forgettable = xs.iter().any(|x| h.forgettable(x.delivery));
        let values = xs.iter().map(|x| x.delivery.v).collect();
        by_group.entry((queue, group)).or_default().push(Hold {
            start,
            release,
            forgettable,
            values,
            lease,
            group,
        });
    }
    for ((queue, _), mut hs) in by_group {
        hs.sort_by_key(|x| (x.start, x.lease));
        r.group_leases += hs.len();
        for (i, a) in hs.iter().enumerate().filter(|(_, a)| !a.forgettable) {
            for b in &hs[i + 1..] {
                if b.start + MARGIN_US >= a.release {
                    break;
                }
                if b.start >= a.start + MARGIN_US && b.lease != a.lease {
                    r.group_overlaps.push(format!(
                        "group {:?} of {queue}: a lease took {:?} {} µs after another took {:?}, which it held \
                         {} µs longer",
                        short(a.group),
                        b.values,
                        b.start - a.start,
                        a.values,
                        a.release - b.start
                    ));
                }
            }
        }
    }
}

/// A group key for a report line: long ones shortened.
fn short(key: &str) -> String {
    if key.len() > 24 {
        format!("{}…({} bytes)", key.chars().take(12).collect::<String>(), key.len())
    } else {
        key.into()
    }
}

/// Rules (b) and (c), over each pair of a group's values whose order is certain.
fn group_order(
    h: &History,
    groups: &BTreeMap<(&str, &str), Vec<(u64, Enqueued)>>,
    facts: &HashMap<u64, Facts>,
    r: &mut Report,
) {
    let none = Facts::default();
    for ((queue, group), values) in groups {
        let skip = h.grouped_queues.get(queue).is_some_and(|m| *m == "skip");
        // Looked up once per value: a hot group's pairs run into the tens of millions.
        let fs: Vec<&Facts> = values.iter().map(|(v, _)| facts.get(v).unwrap_or(&none)).collect();
        for ((vb, eb), fb) in values.iter().zip(&fs) {
            for ((va, _), fa) in values.iter().zip(&fs).filter(|((_, ea), _)| ea.before(eb)) {
                if let (Some(a), Some(b)) = (fa.first, fb.first) {
                    let reversed = if a.1 == b.1 { b.2 < a.2 } else { b.0 + MARGIN_US < a.0 };
                    if reversed {
                        r.group_order.push(format!(
                            "group {:?} of {queue}: value {vb} was first delivered before value {va}, enqueued \
                             before it",
                            short(group)
                        ));
                    }
                }
                if skip && fa.dead.is_some() {
                    continue;
                }
                for (t0, t1, lease) in &fb.acked {
                    if fa.done_from.is_some_and(|from| from <= *t1) {
                        continue;
                    }
                    // The same lease still held the earlier message (expired perhaps, but no
                    // other lease had taken it): the group's holder acked out of its order, which
                    // courier accepts (a receipt behind the head works while the head carries its
                    // lease); counted, not a violation.
                    if fa.held.iter().any(|(l, until)| l == lease && t0 < until) {
                        r.acks_ahead_in_lease += 1;
                        continue;
                    }
                    {
                        r.group_early_acks.push(format!(
                            "group {:?} of {queue}: value {vb} was acked while value {va}, enqueued before it, was \
                             pending",
                            short(group)
                        ));
                    }
                }
            }
        }
    }
}

/// Rule (d): no ready group head waits while more than `STARVE_BOUND` younger messages are served.
fn starvation(
    h: &History,
    groups: &BTreeMap<(&str, &str), Vec<(u64, Enqueued)>>,
    facts: &HashMap<u64, Facts>,
    r: &mut Report,
) {
    // Per queue, the first deliveries by committed leases that could overtake a head: ungrouped
    // messages, and the first message of a group in its lease. (leased_at, the value's t0.)
    let mut served: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    let mut firsts: HashMap<(usize, &str), usize> = HashMap::new();
    // And per queue, the most messages of one group a worker's lease took (the drain's, after the
    // workers stopped, take whole backlogs).
    let mut taken: HashMap<(usize, &str), usize> = HashMap::new();
    let mut prefix: HashMap<&str, usize> = HashMap::new();
    for ((queue, _), m) in &h.messages {
        if !h.grouped_queues.contains_key(queue) {
            continue;
        }
        for x in m.deliveries.iter().filter(|x| x.committed) {
            if let Some(g) = x.delivery.g.as_deref() {
                let p = firsts.entry((x.lease, g)).or_insert(x.pos);
                *p = (*p).min(x.pos);
                if x.worker != 0 {
                    let n = taken.entry((x.lease, g)).or_default();
                    *n += 1;
                    let most = prefix.entry(queue).or_default();
                    *most = (*most).max(*n);
                }
            }
        }
    }
    for ((queue, _), m) in &h.messages {
        let Some(e) = h.enqueues.get(&m.v) else { continue };
        if !h.grouped_queues.contains_key(queue) || e.queue != *queue {
            continue;
        }
        let Some(first) = m.deliveries.iter().filter(|x| x.committed).min_by_key(|x| x.delivery.leased_at())
        else {
            continue;
        };
        let head = match first.delivery.g.as_deref() {
            None => true,
            Some(g) => firsts.get(&(first.lease, g)) == Some(&first.pos),
        };
        if let (true, Some(t0)) = (head, e.t0) {
            served.entry(queue).or_default().push((first.delivery.leased_at(), t0));
        }
    }
    for s in served.values_mut() {
        s.sort_unstable();
    }
    let none = Facts::default();
    for ((queue, group), values) in groups {
        let skip = h.grouped_queues.get(queue).is_some_and(|m| *m == "skip");
        let served = served.get(queue).map(Vec::as_slice).unwrap_or(&[]);
        let bound = if h.fair_queues.contains(queue) {
            let groups_of_queue = groups.keys().filter(|(q, _)| q == queue).count();
            STARVE_BOUND + groups_of_queue * prefix.get(queue).copied().unwrap_or(1)
        } else {
            STARVE_BOUND
        };
        let left: Vec<Option<i64>> =
            values.iter().map(|(v, _)| facts.get(v).unwrap_or(&none).left_by(skip)).collect();
        for (vm, em) in values {
            let (Some(t1), Some(delivered)) = (em.t1, facts.get(vm).and_then(|f| f.first)) else { continue };
            // Ready once it committed and every value that may precede it had left the group.
            let mut ready = Some(t1);
            for ((vx, ex), left) in values.iter().zip(&left) {
                let after = vx == vm || em.before(ex);
                if !after {
                    ready = ready.zip(*left).map(|(a, b)| a.max(b));
                }
            }
            let Some(ready) = ready else { continue };
            let (from, until) = (ready + MARGIN_US, delivered.0 - MARGIN_US);
            if from >= until {
                continue;
            }
            r.heads_waited += 1;
            let lo = served.partition_point(|s| s.0 <= from);
            let hi = served.partition_point(|s| s.0 < until);
            let overtakes = served[lo..hi].iter().filter(|s| s.1 > ready).count();
            if overtakes > r.max_overtakes || r.worst_wait.is_none() {
                r.worst_wait = Some(format!(
                    "group {:?} of {queue}, value {vm}: ready for {} ms, {overtakes} younger messages served \
                     first (bound {bound}), {} messages served meanwhile",
                    short(group),
                    (delivered.0 - ready) / 1000,
                    hi - lo
                ));
            }
            r.max_overtakes = r.max_overtakes.max(overtakes);
            if overtakes > bound {
                r.group_starved.push(format!(
                    "group {:?} of {queue}: value {vm} was ready for {} ms while {overtakes} younger messages were \
                     served first",
                    short(group),
                    (delivered.0 - ready) / 1000
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::checker::check;
    use crate::history::{Delivery, Event};

    const VT: i64 = 2_000_000;
    const SKIP: &str = "fg_skip";
    const BLOCK: &str = "fg_block";
    const DEAD: &str = "fg_dead";

    fn queues() -> Vec<Event> {
        [(SKIP, "skip", "oldest"), (BLOCK, "block", "fair")]
            .map(|(name, on_dead, order)| Event::Queue {
                name: name.into(),
                group_on_dead: on_dead.into(),
                group_order: order.into(),
                dead_letter_queue: Some(DEAD.into()),
            })
            .into()
    }

    /// One transaction enqueueing `vals` into `q`, each in group `g` (None: ungrouped), from `t0`
    /// to `t1`.
    fn enq(q: &str, vals: &[u64], g: Option<&str>, t0: i64, t1: i64) -> Event {
        Event::Enqueue {
            w: 1,
            vals: vals.to_vec(),
            outcome: Outcome::Ok,
            q: Some(q.into()),
            groups: vec![g.map(String::from); if g.is_some() { vals.len() } else { 0 }],
            t0: Some(t0),
            t1: Some(t1),
        }
    }

    fn d(v: u64, attempt: i32, leased_at: i64, g: Option<&str>) -> Delivery {
        Delivery {
            v,
            id: v as i64 + 1000,
            receipt: format!("r{v}-{attempt}-{leased_at}"),
            attempt,
            exp: leased_at + VT,
            vt: VT,
            g: g.map(String::from),
        }
    }

    fn lease(q: &str, items: &[&Delivery]) -> Event {
        Event::Lease {
            w: 2,
            outcome: Outcome::Ok,
            items: items.iter().map(|d| (*d).clone()).collect(),
            q: Some(q.into()),
        }
    }

    fn ack(d: &Delivery, result: bool, t0: i64) -> Event {
        Event::Ack {
            w: 2,
            v: d.v,
            id: d.id,
            receipt: d.receipt.clone(),
            tx: false,
            outcome: Outcome::Ok,
            result: Some(result),
            at: Some((t0, t0 + 1000)),
        }
    }

    fn nack(d: &Delivery, t0: i64) -> Event {
        Event::Nack {
            w: 2,
            v: d.v,
            id: d.id,
            receipt: d.receipt.clone(),
            outcome: Outcome::Ok,
            result: Some(true),
            at: Some((t0, t0 + 1000)),
        }
    }

    fn run(events: Vec<Event>) -> Report {
        let mut h = queues();
        h.extend(events);
        check(&h, &HashMap::new())
    }

    /// Values 1 and 2 of group "g" enqueued one after the other.
    fn two(q: &str) -> Vec<Event> {
        vec![enq(q, &[1], Some("g"), 0, 10), enq(q, &[2], Some("g"), 20, 30)]
    }

    #[test]
    fn a_grouped_history_in_order_is_valid() {
        let (a, b) = (d(1, 1, 1_000_000, Some("g")), d(2, 1, 2_000_000, Some("g")));
        let mut h = two(SKIP);
        h.extend([
            lease(SKIP, &[&a]),
            ack(&a, true, 1_500_000),
            lease(SKIP, &[&b]),
            ack(&b, true, 2_500_000),
        ]);
        let r = run(h);
        assert!(r.valid(), "{r:?}");
        assert_eq!((r.groups, r.grouped_values, r.group_leases), (1, 2, 2));
        // One lease may take both, in order.
        let (a, b) = (d(1, 1, 1_000_000, Some("g")), d(2, 1, 1_000_000, Some("g")));
        let mut h = two(BLOCK);
        h.extend([lease(BLOCK, &[&a, &b]), ack(&a, true, 1_100_000), ack(&b, true, 1_200_000)]);
        let r = run(h);
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.group_leases, 1);
    }

    #[test]
    fn two_leases_holding_a_group_at_once_are_found() {
        // Value 1's lease holds the group until it expires at 3 s; value 2 is leased at 1.5 s.
        let (a, b) = (d(1, 1, 1_000_000, Some("g")), d(2, 1, 1_500_000, Some("g")));
        let h = |settle_a: Option<Event>| {
            let mut h = two(SKIP);
            h.push(lease(SKIP, &[&a]));
            h.extend(settle_a);
            h.push(lease(SKIP, &[&b]));
            h
        };
        let r = run(h(None));
        assert_eq!(r.group_overlaps.len(), 1, "{r:?}");
        assert!(!r.valid());
        // Acked, or nacked, before the second lease: no overlap.
        assert!(run(h(Some(ack(&a, true, 1_200_000)))).valid());
        assert!(run(h(Some(nack(&a, 1_200_000)))).valid());
        // An ack that began within the margin of the second lease proves nothing.
        assert!(run(h(Some(ack(&a, true, 1_450_000)))).valid());
        // Other groups and ungrouped messages may be held meanwhile.
        let c = d(3, 1, 1_500_000, Some("other"));
        let u = d(4, 1, 1_500_000, None);
        let mut h = two(SKIP);
        h.extend([enq(SKIP, &[3], Some("other"), 0, 10), enq(SKIP, &[4], None, 0, 10)]);
        h.extend([lease(SKIP, &[&a]), lease(SKIP, &[&c, &u])]);
        assert!(run(h).group_overlaps.is_empty());
    }

    #[test]
    fn first_deliveries_out_of_enqueue_order_are_found() {
        // 2 was enqueued after 1 committed, yet delivered (and acked) first.
        let (a, b) = (d(1, 1, 3_500_000, Some("g")), d(2, 1, 1_000_000, Some("g")));
        let mut h = two(SKIP);
        h.extend([
            lease(SKIP, &[&b]),
            ack(&b, true, 1_100_000),
            lease(SKIP, &[&a]),
            ack(&a, true, 3_600_000),
        ]);
        let r = run(h);
        assert_eq!(r.group_order.len(), 1, "{r:?}");
        assert_eq!(r.group_early_acks.len(), 1, "{r:?}");
        // Within one transaction, call order: one lease returning them the other way round.
        let (a, b) = (d(1, 1, 1_000_000, Some("g")), d(2, 1, 1_000_000, Some("g")));
        let h = vec![enq(BLOCK, &[1, 2], Some("g"), 0, 10), lease(BLOCK, &[&b, &a])];
        assert_eq!(run(h).group_order.len(), 1);
        // Overlapping enqueues have no order: either may come first.
        let h = vec![
            enq(SKIP, &[1], Some("g"), 0, 100),
            enq(SKIP, &[2], Some("g"), 50, 60),
            lease(SKIP, &[&b]),
            ack(&b, true, 1_100_000),
            lease(SKIP, &[&d(1, 1, 3_500_000, Some("g"))]),
        ];
        assert!(run(h).valid());
    }

    /// 1 and 2 leased together; 1 is nacked (releasing 2 with it), then 2's ack returns `acked`;
    /// 1 comes back and dies (its dead letter delivered from the dead-letter queue) or is acked.
    fn nacked_head(q: &str, acked: bool, dies: bool) -> Vec<Event> {
        let (a, b) = (d(1, 1, 1_000_000, Some("g")), d(2, 1, 1_000_000, Some("g")));
        let a2 = d(1, 2, 1_300_000, Some("g"));
        let mut h = two(q);
        h.extend([lease(q, &[&a, &b]), nack(&a, 1_100_000), ack(&b, acked, 1_200_000), lease(q, &[&a2])]);
        if dies {
            let dead = Delivery { receipt: "dead".into(), ..d(1, 1, 1_600_000, Some("g")) };
            h.extend([nack(&a2, 1_400_000), lease(DEAD, &[&dead]), ack(&dead, true, 1_700_000)]);
        } else {
            h.push(ack(&a2, true, 1_400_000));
        }
        h
    }

    #[test]
    fn an_ack_while_an_earlier_message_is_pending_is_found() {
        let r = run(nacked_head(SKIP, true, false));
        assert_eq!(r.group_early_acks.len(), 1, "{r:?}");
        assert!(!r.valid());
        // The nack released 2 with 1: its ack returning false is right, and its attempt comes again.
        let r = run(nacked_head(SKIP, false, false));
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.released_with_group, 1);
        // Under 'skip' a dead letter leaves its group; under 'block' it holds it until its ack.
        assert!(run(nacked_head(SKIP, true, true)).valid());
        assert_eq!(run(nacked_head(BLOCK, true, true)).group_early_acks.len(), 1);
        assert_eq!(run(nacked_head(SKIP, false, true)).dead_letters, 1);
    }

    #[test]
    fn an_ack_ahead_of_the_same_leases_head_is_counted_not_failed() {
        // The lease holds 1 and 2; its consumer acks 2 first, 1 expires and comes again.
        let (a, b) = (d(1, 1, 1_000_000, Some("g")), d(2, 1, 1_000_000, Some("g")));
        let a2 = d(1, 2, 3_100_000, Some("g"));
        let mut h = two(SKIP);
        h.extend([
            lease(SKIP, &[&a, &b]),
            ack(&b, true, 1_200_000),
            lease(SKIP, &[&a2]),
            ack(&a2, true, 3_200_000),
        ]);
        let r = run(h.clone());
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.acks_ahead_in_lease, 1);
        // After the head's lease expired, the receipt behind it works until another lease takes
        // the head (at 3.1 s), and no longer.
        h[3] = ack(&b, true, 3_050_000);
        assert!(run(h.clone()).valid());
        h[3] = ack(&b, true, 3_150_000);
        assert_eq!(run(h).group_early_acks.len(), 1);
    }

    /// Group "g" has one message, ready at 10 µs and delivered at 3 s; meanwhile `n` ungrouped
    /// messages enqueued after it are delivered.
    fn waiting_head(q: &str, n: u64) -> Vec<Event> {
        let mut h = vec![enq(q, &[1], Some("g"), 0, 10)];
        for i in 0..n {
            let v = 100 + i;
            let y = d(v, 1, 1_000_000 + i as i64 * 1000, None);
            h.extend([enq(q, &[v], None, 200_000 + i as i64, 200_010 + i as i64), lease(q, &[&y])]);
            h.push(ack(&y, true, y.leased_at() + 100));
        }
        let head = d(1, 1, 3_000_000, Some("g"));
        h.extend([lease(q, &[&head]), ack(&head, true, 3_100_000)]);
        h
    }

    #[test]
    fn a_starved_group_is_found() {
        let over = STARVE_BOUND as u64 + 1;
        let r = run(waiting_head(SKIP, over));
        assert_eq!(r.group_starved.len(), 1, "{r:?}");
        assert_eq!(r.max_overtakes, over as usize);
        // Under 'fair' every other group may have a turn first: here one group, one message a
        // lease.
        assert!(run(waiting_head(BLOCK, over)).valid());
        assert_eq!(run(waiting_head(BLOCK, over + 1)).group_starved.len(), 1);
        let r = run(waiting_head(SKIP, STARVE_BOUND as u64));
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.max_overtakes, STARVE_BOUND);
        assert_eq!(r.heads_waited, 1);
    }

    #[test]
    fn a_head_waiting_for_its_predecessor_is_not_starved() {
        // 2 waits behind 1, whose lease a consumer holds (and extends) until 3 s: 2 is not ready.
        let mut h = vec![enq(SKIP, &[1, 2], Some("g"), 0, 10)];
        let a = d(1, 1, 50_000, Some("g"));
        h.push(lease(SKIP, &[&a]));
        for i in 0..(STARVE_BOUND as i64 * 2) {
            let v = 100 + i as u64;
            let y = d(v, 1, 1_000_000 + i * 1000, None);
            h.extend([
                enq(SKIP, &[v], None, 200_000 + i, 200_010 + i),
                lease(SKIP, &[&y]),
                ack(&y, true, 1_900_000),
            ]);
        }
        let b = d(2, 1, 3_100_000, Some("g"));
        h.extend([ack(&a, true, 2_990_000), lease(SKIP, &[&b]), ack(&b, true, 3_200_000)]);
        let r = run(h);
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.max_overtakes, 0);
    }

    #[test]
    fn a_delivery_without_its_group_key_fails_the_run() {
        let a = d(1, 1, 1_000_000, None);
        let r = run(vec![enq(SKIP, &[1], Some("g"), 0, 10), lease(SKIP, &[&a])]);
        assert_eq!(r.errors.len(), 1, "{r:?}");
    }
}
