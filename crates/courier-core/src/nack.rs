//! Nack: whether a nacked message is retried or dead-lettered, and where it goes.
//!
//! A message that has been delivered max_attempts times would only fail again, so its nack
//! dead-letters it just as `dead => true` does; 0 means attempts are unlimited. Dead letters are
//! moved per (destination, source queue): one statement per destination, and the source queue's
//! dead-letter counter bumped by what actually moved.

use crate::retry::RetryPolicy;

/// What happens to one nacked message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackDecision {
    /// Released, leasable again at `at` (microseconds).
    Retry { at: i64 },
    /// Moved to its queue's dead-letter queue (or parked as dead without one).
    DeadLetter,
}

/// The arguments of one nack call, shared by every message it nacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The write's timestamp (announced, see `floor`): retries are due relative to it.
    pub now: i64,
    /// The caller's retry delay, overriding the queue's backoff.
    pub retry_in: Option<i64>,
    /// The caller asked to dead-letter regardless of attempts left.
    pub dead: bool,
}

/// Whether a message on its `attempt`-th delivery has used up `max_attempts` (0: unlimited).
pub fn attempts_exhausted(attempt: i32, max_attempts: i32) -> bool {
    max_attempts > 0 && attempt >= max_attempts
}

impl Nack {
    /// The fate of a message on its `attempt`-th delivery, of a queue allowing `max_attempts`
    /// with backoff `retry`. `random_unit` (uniform in [0, 1), for the jitter) is called only when
    /// the backoff is used, so no strong random bytes are drawn for dead letters or `retry_in`.
    pub fn decide(
        &self,
        attempt: i32,
        max_attempts: i32,
        retry: &RetryPolicy,
        random_unit: impl FnOnce() -> f64,
    ) -> NackDecision {
        if self.dead || attempts_exhausted(attempt, max_attempts) {
            return NackDecision::DeadLetter;
        }
        let wait = self.retry_in.unwrap_or_else(|| retry.delay_usecs(attempt, random_unit()));
        // Both are bounded far below i64::MAX; saturating keeps an absurd input from wrapping
        // into the past, which would make the message leasable at once.
        NackDecision::Retry { at: self.now.saturating_add(wait) }
    }
}

/// Messages of one source queue going to one dead-letter destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterGroup<D> {
    /// Where they go; the extension uses `Option<(queue id, queue name)>`, None parking them
    /// as dead in place.
    pub destination: D,
    /// The queue they were nacked from, whose dead-letter counter counts them.
    pub source_queue: i32,
    /// In the order they were added.
    pub message_ids: Vec<i64>,
}

/// Dead letters of one nack call, grouped by (destination, source queue) in order of first
/// appearance (messages of one batch may come from several queues).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterGroups<D> {
    groups: Vec<DeadLetterGroup<D>>,
}

impl<D> Default for DeadLetterGroups<D> {
    fn default() -> Self {
        DeadLetterGroups { groups: Vec::new() }
    }
}

impl<D: PartialEq + Clone> DeadLetterGroups<D> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a message to its group, starting the group (with a clone of `destination`) if this
    /// is its first message. A batch holds few groups, so a linear search is cheapest.
    pub fn add(&mut self, destination: &D, source_queue: i32, message_id: i64) {
        match self.groups.iter_mut().find(|g| g.destination == *destination && g.source_queue == source_queue)
        {
            Some(g) => g.message_ids.push(message_id),
            None => self.groups.push(DeadLetterGroup {
                destination: destination.clone(),
                source_queue,
                message_ids: vec![message_id],
            }),
        }
    }
}

impl<D> DeadLetterGroups<D> {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The groups, in order of first appearance.
    pub fn groups(&self) -> &[DeadLetterGroup<D>] {
        &self.groups
    }
}

impl<D> IntoIterator for DeadLetterGroups<D> {
    type Item = DeadLetterGroup<D>;
    type IntoIter = std::vec::IntoIter<DeadLetterGroup<D>>;

    fn into_iter(self) -> Self::IntoIter {
        self.groups.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 800_000_000_000_000;
    const SEC: i64 = 1_000_000;
    const BACKOFF: RetryPolicy = RetryPolicy { base_usecs: SEC, max_usecs: 60 * SEC, jitter: 0.0 };

    fn nack(retry_in: Option<i64>, dead: bool) -> Nack {
        Nack { now: T, retry_in, dead }
    }

    fn never() -> f64 {
        panic!("random drawn although the backoff is not used")
    }

    #[test]
    fn zero_max_attempts_means_unlimited() {
        assert!(!attempts_exhausted(1_000_000, 0));
        let d = nack(None, false).decide(i32::MAX, 0, &BACKOFF, || 0.0);
        assert_eq!(d, NackDecision::Retry { at: T + 60 * SEC });
    }

    #[test]
    fn exhausted_at_exactly_max_attempts() {
        assert!(!attempts_exhausted(4, 5));
        assert!(attempts_exhausted(5, 5));
        assert!(attempts_exhausted(6, 5));
        assert_eq!(nack(None, false).decide(4, 5, &BACKOFF, || 0.0), NackDecision::Retry { at: T + 8 * SEC });
        assert_eq!(nack(None, false).decide(5, 5, &BACKOFF, never), NackDecision::DeadLetter);
        assert_eq!(nack(Some(SEC), false).decide(5, 5, &BACKOFF, never), NackDecision::DeadLetter);
    }

    #[test]
    fn dead_overrides_attempts_left_and_retry_in() {
        assert_eq!(nack(None, true).decide(1, 0, &BACKOFF, never), NackDecision::DeadLetter);
        assert_eq!(nack(Some(SEC), true).decide(1, 25, &BACKOFF, never), NackDecision::DeadLetter);
    }

    #[test]
    fn retry_in_overrides_the_backoff_and_draws_no_random() {
        assert_eq!(nack(Some(0), false).decide(3, 25, &BACKOFF, never), NackDecision::Retry { at: T });
        assert_eq!(
            nack(Some(7 * SEC), false).decide(3, 25, &BACKOFF, never),
            NackDecision::Retry { at: T + 7 * SEC }
        );
    }

    #[test]
    fn backoff_follows_the_attempt_and_the_jitter() {
        let jittered = RetryPolicy { jitter: 0.5, ..BACKOFF };
        assert_eq!(nack(None, false).decide(1, 25, &jittered, || 0.0), NackDecision::Retry { at: T + SEC });
        assert_eq!(
            nack(None, false).decide(3, 25, &jittered, || 0.5),
            NackDecision::Retry { at: T + 3 * SEC }
        );
    }

    #[test]
    fn retry_time_does_not_wrap() {
        let n = Nack { now: i64::MAX - 1, retry_in: Some(SEC), dead: false };
        assert_eq!(n.decide(1, 0, &BACKOFF, never), NackDecision::Retry { at: i64::MAX });
    }

    #[test]
    fn groups_by_destination_and_source_in_first_appearance_order() {
        let dlq = Some((9, "failed".to_string()));
        let other = Some((8, "parked".to_string()));
        let mut g = DeadLetterGroups::new();
        assert!(g.is_empty());
        g.add(&other, 2, 20);
        g.add(&dlq, 1, 10);
        g.add(&dlq, 3, 30);
        g.add(&other, 2, 21);
        g.add(&None, 4, 40);
        g.add(&dlq, 1, 11);
        g.add(&None, 4, 41);
        let groups: Vec<_> = g.into_iter().map(|g| (g.destination, g.source_queue, g.message_ids)).collect();
        assert_eq!(
            groups,
            vec![
                (other.clone(), 2, vec![20, 21]),
                (dlq.clone(), 1, vec![10, 11]),
                (dlq, 3, vec![30]),
                (None, 4, vec![40, 41]),
            ]
        );
    }

    #[test]
    fn same_source_different_destination_is_a_different_group() {
        // The key is the pair, not the source queue alone.
        let mut g = DeadLetterGroups::new();
        g.add(&Some(1), 5, 1);
        g.add(&Some(2), 5, 2);
        g.add(&Some(1), 5, 3);
        let keys: Vec<_> = g.groups().iter().map(|g| (g.destination, g.source_queue)).collect();
        assert_eq!(keys, vec![(Some(1), 5), (Some(2), 5)]);
        assert_eq!(g.groups()[0].message_ids, vec![1, 3]);
    }
}
