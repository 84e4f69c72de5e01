//! Facts about the running backend and conversions between PostgreSQL's representations and
//! courier's: the clock, the database, the transaction's isolation, strong random numbers, and
//! timestamps and intervals as microseconds.
//!
//! One home for these keeps every module from reading backend globals its own way (each read
//! needs its own SAFETY argument) and from converting units inline.

use courier_core::receipt::TOKEN_MASK;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The current time (`clock_timestamp()`, not the transaction's start): a lease or an ack in a
/// long transaction must compare against the real time.
pub fn now() -> pg_sys::TimestampTz {
    // SAFETY: GetCurrentTimestamp only reads the system clock; callable at any time in a backend.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// The OID of the database this backend is connected to, as the key shared memory uses.
pub fn my_database() -> u32 {
    // SAFETY: MyDatabaseId is a backend-local global, set before any SQL runs and never changed
    // afterwards; reading it from the backend's own thread is always valid.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// True at REPEATABLE READ and SERIALIZABLE, where statements share one snapshot.
pub fn uses_transaction_snapshot() -> bool {
    // SAFETY: XactIsoLevel is a backend-local global, read from the backend's own thread.
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// Whether this transaction has been assigned a transaction id, i.e. has written something.
pub fn has_transaction_id() -> bool {
    // SAFETY: reads backend-local transaction state; assigns nothing.
    unsafe { pg_sys::GetTopTransactionIdIfAny() != pg_sys::InvalidTransactionId }
}

/// The transaction id the server will assign next, as a FullTransactionId's 64-bit value: every
/// transaction that has or had an id has a smaller one.
pub fn next_full_xid() -> u64 {
    // SAFETY: ReadNextFullTransactionId reads shared transaction state under XidGenLock (shared);
    // it assigns nothing and may be called from any backend at any time.
    unsafe { pg_sys::ReadNextFullTransactionId() }.value
}

/// Whether whatever transaction `fxid`, or any before it, deleted is dead to every snapshot in the
/// cluster (every database's, prepared transactions', replication slots' and standbys' feedback),
/// so that a scan passing its index entries can mark them dead and vacuum can remove them. True
/// where this backend has taken no snapshot yet, which PostgreSQL needs to answer.
pub fn removable_for_all(fxid: u64) -> bool {
    // SAFETY: RecentXmin is a backend-local global, read from the backend's own thread.
    if unsafe { pg_sys::RecentXmin } == pg_sys::InvalidTransactionId {
        return true;
    }
    // SAFETY: a snapshot was taken in this backend (RecentXmin is set), which GlobalVisTestFor
    // requires; a null relation asks for the horizon of shared relations, the oldest of all, and
    // the call only reads (it may recompute the horizons under ProcArrayLock, shared).
    unsafe {
        pg_sys::GlobalVisCheckRemovableFullXid(
            std::ptr::null_mut(),
            pg_sys::FullTransactionId { value: fxid },
        )
    }
}

/// Random bytes from the server's strong random source.
pub fn strong_random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: pg_strong_random writes exactly buf.len() bytes into buf.
    let ok = unsafe { pg_sys::pg_strong_random(buf.as_mut_ptr().cast(), buf.len()) };
    if !ok {
        pgrx::error!("courier: could not read random bytes");
    }
    u64::from_ne_bytes(buf)
}

/// A fresh lease token: the bits a receipt can carry (courier_core::receipt).
pub fn new_token() -> i64 {
    (strong_random_u64() & TOKEN_MASK) as i64
}

/// Uniform in [0, 1), for retry jitter.
pub fn random_unit() -> f64 {
    (strong_random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A timestamp as SQL's timestamptz; courier only builds finite ones.
pub fn timestamptz(t: pg_sys::TimestampTz) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(t).expect("courier's timestamps are finite and in range")
}

/// An interval in microseconds, as PostgreSQL compares intervals (a month is 30 days, a day 24
/// hours). Wider than i64 because an interval's three fields can add up to more.
pub fn interval_usecs(i: Interval) -> i128 {
    courier_core::timing::interval_usecs(i.months(), i.days(), i.micros())
}

/// A duration in microseconds as whole milliseconds, rounded up: a sleep must not end early.
pub fn usecs_to_ms_ceil(usecs: i64) -> i64 {
    usecs.saturating_add(999) / 1000
}

/// The OID of one of courier's relations, or `None` if it (or the courier schema) does not exist.
pub fn courier_relation(name: &std::ffi::CStr) -> Option<pg_sys::Oid> {
    // SAFETY: syscache lookups by constant names, with missing_ok; they raise nothing else.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"courier".as_ptr(), true);
        if namespace == pg_sys::InvalidOid {
            return None;
        }
        let relid = pg_sys::get_relname_relid(name.as_ptr(), namespace);
        (relid != pg_sys::InvalidOid).then_some(relid)
    }
}
