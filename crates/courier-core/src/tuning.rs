//! Internal tuning: how often courier does its background chores, how much each does, and how
//! big its shared-memory tables are. None of these is a user-facing limit (those are in
//! [`crate::limits`], and settings are GUCs); they are defined together so that their couplings
//! are visible and a change to one is weighed against the others. README's Limits section
//! repeats the shared-memory sizes; change both together.

use crate::limits::USECS_PER_SEC;

// ---------------------------------------------------------------------------------------------
// Sweeping expired dedup keys and completed messages as part of ordinary calls
// ---------------------------------------------------------------------------------------------

/// Every this many keyed enqueues, a backend deletes up to [`SWEEP_KEYS_BATCH`] expired keys: at
/// most a quarter of the keys inserted are ever waiting to be reclaimed beyond their expiry rate,
/// so the table stays bounded by the window's worth of keys.
pub const SWEEP_KEYS_EVERY: u32 = 64;
pub const SWEEP_KEYS_BATCH: i32 = 256;

/// Every this many ack calls, a backend deletes up to [`SWEEP_COMPLETED_BATCH`] completed messages
/// past their queue's retention, so the audit trail stays bounded without a background job.
pub const SWEEP_COMPLETED_EVERY: u32 = 128;
pub const SWEEP_COMPLETED_BATCH: i32 = 256;

/// `maintain()` deletes in statements of at most this many rows, so a catch-up after a burst
/// holds no lock on many rows at once.
pub const MAINTAIN_CHUNK: i32 = 1000;

// ---------------------------------------------------------------------------------------------
// The lease path
// ---------------------------------------------------------------------------------------------

/// How often each backend scans a queue's ready range from its floor instead of from its own
/// scan hint, and how often one backend per queue level learns the floor. The two are one
/// interval on purpose: a message that a hint stepped past (it became leasable behind the hint)
/// waits at most this long, and by then the floor it is scanned from is at most this old.
pub const FULL_SCAN_EVERY_USECS: i64 = 100_000;
pub const FLOOR_LEARN_EVERY_USECS: i64 = FULL_SCAN_EVERY_USECS;

/// How often a floor is learned from the start of the range instead of from itself: the bound on
/// how long a message written in a way announcements cannot cover (a clock stepped backwards, a
/// prepared transaction committed late, a row written by hand) stays behind the floor, while no
/// transaction that was running at the previous such learning is still open.
pub const FLOOR_RELEARN_EVERY_USECS: i64 = 50 * FLOOR_LEARN_EVERY_USECS;

/// A level's floor is learned again only once this many messages may have been leased from it
/// since it was last learned (the default of `courier.floor_learn_after`). A floor that stays put
/// costs a scan from it a walk past what left the head since, one index entry per message taken,
/// while learning costs two statements and two exclusive locks of the floor table. With many
/// queues sharing the traffic, every lease of a queue would otherwise find its floor 100 ms old
/// and learn it (with 1,000 queues that halved the consume rate, measured).
pub const FLOOR_LEARN_AFTER_TAKEN: u32 = 64;

/// A level's floor is learned before [`FLOOR_LEARN_EVERY_USECS`] has passed once this many
/// messages (or `courier.floor_learn_after`, if more) were leased from it since it was last
/// learned. A learning walks one index entry per message that left the head since the last one,
/// visiting each one's heap tuple (nothing else has), so what a lease that learns pays grows with
/// the consume rate times the interval: one lease of 100 in about 35 learned, with one client,
/// and walked 3,500 entries (2.2 ms, 5,500 buffers; the lease took 1.2 ms). Bounding the walk by
/// a count instead spreads the same work over more, smaller learnings (a learning's own cost is
/// two short statements and two exclusive locks of the floor table).
pub const FLOOR_LEARN_EARLY_AFTER_TAKEN: u32 = 1024;

/// A queue with several priorities has floors for each level of its range (min to max priority
/// used) while the range spans at most this many: each lease then reads that many floors (one
/// shared lock each) and keeps that many slots of the floor table warm. A wider range is scanned
/// level by level from each level's start after each backend's hint, as before floors existed.
pub const MAX_FLOOR_LEVELS: usize = 16;

/// A lease that finds messages out of attempts dead-letters them and looks again to fill its
/// batch, at most this many times: a queue full of exhausted messages cannot make one call run
/// away.
pub const LEASE_DEAD_LETTER_ROUNDS: usize = 16;

/// How often a waiting lease looks up the earliest lease expiry again (it costs a walk of the
/// messages in flight).
pub const EXPIRY_RECHECK_USECS: i64 = USECS_PER_SEC;

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Even with wakeups, a waiter tries again this often: what becomes leasable without an event
/// (a lease that rolled back, a prepared transaction) is found within this long.
pub const WAIT_RECHECK_MS: i64 = 5_000;

/// Without shared memory a waiter polls, starting at this interval and doubling up to the next.
pub const POLL_START_MS: i64 = 10;
pub const POLL_MAX_MS: i64 = 200;

// ---------------------------------------------------------------------------------------------
// Shared memory (sized at server start)
// ---------------------------------------------------------------------------------------------

/// Queues whose counters can be tracked at once (per cluster). A slot is freed when its queue is
/// dropped; beyond this, new queues are not counted (and `stats` says so).
pub const MAX_TRACKED_QUEUES: usize = 8192;

/// Queues that can be waited on at the same time (per cluster); beyond this, waiters poll.
pub const MAX_WAITED_QUEUES: usize = 1024;

/// A queue's wake slot is within this many slots of its hash position, so a committing producer
/// checks at most this many slots per queue (a few nanoseconds each) to find its waiters.
pub const WAKE_PROBE: usize = 64;

/// Backends (by proc number) that can announce an uncommitted write into a ready range; a
/// backend beyond this counts in a shared counter that stops every floor from rising.
pub const MAX_ANNOUNCING_BACKENDS: usize = 4096;

/// Queue levels whose scan floor is remembered (per cluster); a level without one scans from the
/// start of its range, as if its floor were unknown.
pub const MAX_FLOORS: usize = 1024;

/// A level's floor slot is within this many slots of its hash position.
pub const FLOOR_PROBE: usize = 64;

/// Databases whose churn is tracked for courier's VACUUM worker at once (per cluster); beyond
/// this, the database that launched least recently gives up its slot.
pub const MAX_VACUUM_DATABASES: usize = 64;

/// How long a launched VACUUM worker may take before its slot is launched again anyway (it may
/// never have started: the postmaster can fail to fork it).
pub const VACUUM_STALE_USECS: i64 = 600 * USECS_PER_SEC;

// The couplings above, checked when the crate compiles.
const _: () = {
    // A hint is ignored no less often than the floor it falls back to is refreshed.
    assert!(FULL_SCAN_EVERY_USECS >= FLOOR_LEARN_EVERY_USECS);
    assert!(FLOOR_RELEARN_EVERY_USECS > FLOOR_LEARN_EVERY_USECS);
    assert!(POLL_START_MS <= POLL_MAX_MS && POLL_MAX_MS <= WAIT_RECHECK_MS);
    assert!(WAKE_PROBE <= MAX_WAITED_QUEUES && FLOOR_PROBE <= MAX_FLOORS);
    assert!(SWEEP_KEYS_BATCH as u32 >= SWEEP_KEYS_EVERY);
};
