//! Message groups: what a lease takes from a group, and in which order a lease serves groups and
//! ungrouped messages.
//!
//! A group is a sequence of messages sharing a key within a queue, numbered in the commit order
//! of their enqueues (the extension serialises producers of one group until commit). A lease
//! takes a group's first messages as a consecutive prefix, only if the first is ready, and while
//! any message of a group is leased no other lease takes one. The database work is in the
//! extension (storage/groups.rs); the decisions are here.

use std::cmp::{Ordering, Reverse};

use crate::error::CourierError;

/// Group keys are at most this many bytes, like dedup keys.
pub const MAX_GROUP_KEY_BYTES: usize = 512;

/// Most messages of one group a lease may take (`group_batch`): a whole lease's worth.
pub const MAX_GROUP_BATCH: i32 = crate::limits::MAX_BATCH;

/// What a dead letter does to its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnDead {
    /// It leaves the group; the next message becomes the head (SQS).
    #[default]
    Skip,
    /// The group waits until the dead letter is redriven, acked or purged (pg-boss).
    Block,
}

/// Which eligible group of one priority a lease serves first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Order {
    /// The group whose head became leasable first.
    #[default]
    Oldest,
    /// The group served least recently, so that one busy group cannot crowd out the others.
    Fair,
}

impl OnDead {
    pub fn parse(value: &str, argument: &str) -> Result<OnDead, CourierError> {
        match value {
            "skip" => Ok(OnDead::Skip),
            "block" => Ok(OnDead::Block),
            _ => Err(CourierError::invalid(format!("{argument} must be 'skip' or 'block', not \"{value}\""))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnDead::Skip => "skip",
            OnDead::Block => "block",
        }
    }
}

impl Order {
    pub fn parse(value: &str, argument: &str) -> Result<Order, CourierError> {
        match value {
            "oldest" => Ok(Order::Oldest),
            "fair" => Ok(Order::Fair),
            _ => {
                Err(CourierError::invalid(format!("{argument} must be 'oldest' or 'fair', not \"{value}\"")))
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Order::Oldest => "oldest",
            Order::Fair => "fair",
        }
    }
}

/// Checks a group key: 1 to [`MAX_GROUP_KEY_BYTES`] bytes.
pub fn group_key(key: &str, argument: &str) -> Result<(), CourierError> {
    if key.is_empty() {
        return Err(CourierError::invalid(format!("{argument} must not be empty")));
    }
    if key.len() > MAX_GROUP_KEY_BYTES {
        return Err(CourierError::invalid(format!(
            "{argument} is too long ({} bytes, the maximum is {MAX_GROUP_KEY_BYTES})",
            key.len()
        )));
    }
    Ok(())
}

/// Checks `group_batch`: 1 to [`MAX_GROUP_BATCH`], like a lease's batch_size.
pub fn group_batch(value: i32, argument: &str) -> Result<i32, CourierError> {
    crate::timing::batch_size(argument, i64::from(value), MAX_GROUP_BATCH)
}

/// One of a group's first messages, as a lease read it, in sequence order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixRow {
    pub id: i64,
    pub seq: i64,
    /// When it may be delivered (its delay, not_before or retry time).
    pub ready_at: i64,
    pub attempt: i32,
    /// The token of the lease that last took it, if that lease was not settled.
    pub lease_token: Option<i64>,
    pub dead: bool,
    /// The lease could lock it without waiting (no other transaction is changing it).
    pub locked: bool,
}

/// A group a lease locked because its row said it was eligible, with its first messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Where the group's row says its sequence starts.
    pub head_seq: i64,
    /// The lease that held the group last (its lease has ended, or the group was not eligible).
    pub held_token: Option<i64>,
    pub rows: Vec<PrefixRow>,
}

/// What a lease does with a group it locked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Leave it: its head is not what its row says, not ready, or a message it would take or
    /// fence is being changed by another transaction. A later lease will find it consistent.
    Skip,
    /// Its head has been delivered max_attempts times and its last lease ended: dead-letter it
    /// (and look at the group again).
    Exhausted(i64),
    /// Lease `take` (a consecutive prefix starting at the head); clear the lease of `fence`
    /// (messages the previous holder still had, which this lease does not take), so that the
    /// previous holder's late receipts stop working.
    Take { take: Vec<i64>, fence: Vec<i64> },
}

/// Decides what a lease at `now` takes from a group: at most `group_batch` consecutive messages
/// from the head, each ready, not dead and not exhausted (`max_attempts` 0: unlimited).
pub fn plan(c: &Candidate, now: i64, group_batch: usize, max_attempts: i32) -> Plan {
    let Some(head) = c.rows.first() else { return Plan::Skip };
    if head.seq != c.head_seq || !head.locked || head.dead || head.ready_at > now {
        return Plan::Skip;
    }
    let exhausted = |r: &PrefixRow| max_attempts > 0 && r.attempt >= max_attempts;
    if exhausted(head) {
        return Plan::Exhausted(head.id);
    }
    let take: Vec<i64> = c
        .rows
        .iter()
        .take(group_batch)
        .take_while(|r| r.locked && !r.dead && r.ready_at <= now && !exhausted(r))
        .map(|r| r.id)
        .collect();
    // Whatever the previous holder still has and this lease does not take is fenced; if one of
    // those is being changed (its late ack, say), the group is left for a later lease.
    let mut fence = Vec::new();
    for r in c.rows.iter().skip(take.len()) {
        if r.lease_token.is_some() && r.lease_token == c.held_token {
            if !r.locked {
                return Plan::Skip;
            }
            fence.push(r.id);
        }
    }
    Plan::Take { take, fence }
}

/// Something a lease can hand out, in the order leases serve them: a group's prefix (as one
/// unit, it is never split by another unit) or an ungrouped message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// The priority it competes with (a group: its head's).
    pub priority: i16,
    /// When it became leasable (a group: when it became eligible, see `Order`).
    pub since: i64,
    /// Ties: lower first (a message id; for a group, its head's id).
    pub tie: i64,
    /// How many messages it holds.
    pub size: usize,
}

impl Unit {
    fn key(&self) -> (Reverse<i16>, i64, i64) {
        (Reverse(self.priority), self.since, self.tie)
    }
}

/// Chooses what a lease of at most `limit` messages hands out: units in serving order (priority,
/// then since, then tie) until the limit; a group unit that does not fit whole is cut to what
/// fits. Returns (index into `units`, messages taken from it), in serving order.
pub fn choose(units: &[Unit], limit: usize) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by(|&a, &b| match units[a].key().cmp(&units[b].key()) {
        Ordering::Equal => a.cmp(&b),
        o => o,
    });
    let mut left = limit;
    let mut out = Vec::new();
    for i in order {
        if left == 0 {
            break;
        }
        let n = units[i].size.min(left);
        if n > 0 {
            out.push((i, n));
            left -= n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, seq: i64) -> PrefixRow {
        PrefixRow { id, seq, ready_at: 0, attempt: 0, lease_token: None, dead: false, locked: true }
    }

    fn group(rows: Vec<PrefixRow>) -> Candidate {
        Candidate { head_seq: rows.first().map_or(0, |r| r.seq), held_token: None, rows }
    }

    #[test]
    fn takes_a_consecutive_ready_prefix() {
        let mut rows = vec![row(10, 1), row(11, 2), row(12, 3), row(13, 4)];
        rows[2].ready_at = 100; // delayed: it and everything after it wait
        let c = group(rows);
        assert_eq!(plan(&c, 50, 10, 0), Plan::Take { take: vec![10, 11], fence: vec![] });
        assert_eq!(plan(&c, 50, 1, 0), Plan::Take { take: vec![10], fence: vec![] });
        assert_eq!(plan(&c, 100, 10, 0), Plan::Take { take: vec![10, 11, 12, 13], fence: vec![] });
    }

    #[test]
    fn only_if_the_head_is_ready_unlocked_and_where_the_row_says() {
        let mut c = group(vec![row(10, 1), row(11, 2)]);
        c.rows[0].ready_at = 60;
        assert_eq!(plan(&c, 50, 2, 0), Plan::Skip);
        let mut c = group(vec![row(10, 1), row(11, 2)]);
        c.rows[0].locked = false;
        assert_eq!(plan(&c, 50, 2, 0), Plan::Skip, "never skip a locked head and take the next");
        let mut c = group(vec![row(11, 2)]);
        c.head_seq = 1; // the snapshot does not show the head the row names
        assert_eq!(plan(&c, 50, 2, 0), Plan::Skip);
        assert_eq!(plan(&group(vec![]), 50, 2, 0), Plan::Skip);
        let mut c = group(vec![row(10, 1)]);
        c.rows[0].dead = true; // a dead letter blocking its group
        assert_eq!(plan(&c, 50, 2, 0), Plan::Skip);
    }

    #[test]
    fn a_locked_middle_message_ends_the_prefix() {
        let mut c = group(vec![row(10, 1), row(11, 2), row(12, 3)]);
        c.rows[1].locked = false;
        assert_eq!(plan(&c, 50, 3, 0), Plan::Take { take: vec![10], fence: vec![] });
    }

    #[test]
    fn exhausted_head_is_dead_lettered_and_an_exhausted_follower_ends_the_prefix() {
        let mut c = group(vec![row(10, 1), row(11, 2)]);
        c.rows[0].attempt = 3;
        assert_eq!(plan(&c, 50, 2, 3), Plan::Exhausted(10));
        assert_eq!(plan(&c, 50, 2, 0), Plan::Take { take: vec![10, 11], fence: vec![] }, "0 = unlimited");
        let mut c = group(vec![row(10, 1), row(11, 2)]);
        c.rows[1].attempt = 3;
        assert_eq!(plan(&c, 50, 2, 3), Plan::Take { take: vec![10], fence: vec![] });
    }

    #[test]
    fn the_previous_holders_remaining_messages_are_fenced() {
        // An expired lease (token 7) held three messages; this lease takes one.
        let mut c = group(vec![row(10, 1), row(11, 2), row(12, 3), row(13, 4)]);
        c.held_token = Some(7);
        for r in &mut c.rows[..3] {
            r.lease_token = Some(7);
        }
        assert_eq!(plan(&c, 50, 1, 0), Plan::Take { take: vec![10], fence: vec![11, 12] });
        // One of them is being acked late by the previous holder: leave the group alone.
        c.rows[2].locked = false;
        assert_eq!(plan(&c, 50, 1, 0), Plan::Skip);
        // Taking them all fences nothing.
        c.rows[2].locked = true;
        assert_eq!(plan(&c, 50, 4, 0), Plan::Take { take: vec![10, 11, 12, 13], fence: vec![] });
    }

    #[test]
    fn units_are_served_by_priority_then_age_and_groups_are_cut_to_fit() {
        let units = [
            Unit { priority: 0, since: 5, tie: 1, size: 3 }, // group, old
            Unit { priority: 0, since: 7, tie: 2, size: 1 }, // ungrouped, younger
            Unit { priority: 5, since: 9, tie: 3, size: 1 }, // ungrouped, higher priority
            Unit { priority: 0, since: 6, tie: 4, size: 2 }, // group
        ];
        assert_eq!(choose(&units, 1), vec![(2, 1)]);
        assert_eq!(choose(&units, 3), vec![(2, 1), (0, 2)]);
        assert_eq!(choose(&units, 10), vec![(2, 1), (0, 3), (3, 2), (1, 1)]);
        assert_eq!(choose(&units, 0), vec![]);
    }

    #[test]
    fn settings_and_arguments() {
        assert_eq!(OnDead::parse("block", "group_on_dead").unwrap(), OnDead::Block);
        assert_eq!(Order::parse("fair", "group_order").unwrap(), Order::Fair);
        let e = OnDead::parse("drop", "group_on_dead").unwrap_err();
        assert!(e.message.contains("group_on_dead must be 'skip' or 'block'"), "{}", e.message);
        assert!(Order::parse("FAIR", "group_order").is_err());
        assert!(group_key("", "group_key").unwrap_err().message.contains("must not be empty"));
        assert!(group_key(&"k".repeat(512), "group_key").is_ok());
        assert!(
            group_key(&"k".repeat(513), "group_keys[2]")
                .unwrap_err()
                .message
                .starts_with("group_keys[2] is too long")
        );
        assert_eq!(group_batch(1, "group_batch").unwrap(), 1);
        assert!(group_batch(0, "group_batch").is_err());
        assert!(group_batch(MAX_GROUP_BATCH + 1, "group_batch").is_err());
    }
}
