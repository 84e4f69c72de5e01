//! Configuration parameters (GUCs). All live under the reserved `courier.` prefix.
//!
//! The settings themselves are private; the rest of courier reads them through the accessors at
//! the end of this file, in the units it computes with, so no call site converts units itself.

use std::ffi::{CStr, CString};

use courier_core::events::{DEFAULT_LOG_EVENTS, LogEvents};
use courier_core::limits::{DEFAULT_MAX_PAYLOAD_BYTES, MAX_MAX_PAYLOAD_BYTES, USECS_PER_SEC};
use courier_core::tuning::FLOOR_LEARN_AFTER_TAKEN;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, pg_sys};

/// Largest payload (and largest headers document) `enqueue` accepts, in bytes of the jsonb value.
/// Superuser-settable only: the limit protects the server from its clients, so a client session
/// must not be able to lift it.
static MAX_PAYLOAD_SIZE: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_MAX_PAYLOAD_BYTES);

/// Longest wait a lease may ask for, in milliseconds. A waiting lease holds its snapshot (and so
/// holds back vacuum) while it waits; administrators cap that here.
static MAX_WAIT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);

/// Whether a transaction that did nothing but lease waits for its commit to be flushed (see
/// durability.rs). Off: such commits are asynchronous, and a crash can forget the last leases.
static DURABLE_LEASES: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Message rows acked or nacked in a database since courier last vacuumed its message table there
/// before it does again (vacuum.rs); 0 leaves the table to autovacuum alone.
static VACUUM_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// Least time between two of courier's vacuums of one database's message table, in seconds.
static VACUUM_NAPTIME_S: GucSetting<i32> = GucSetting::<i32>::new(5);

/// Which events courier writes to the server log (events.rs), as courier_core::events parses
/// it. Superuser-settable only: a role that purges a queue must not be able to keep its purge out
/// of the log.
static LOG_EVENTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(DEFAULT_LOG_EVENTS));

/// Messages that may leave a queue level's head before its scan floor is learned again
/// (floor.rs). Superuser-settable only: it is a trade of one level's scan length against every
/// backend's share of the floor table's lock, and tests set it to 1 to learn on every due lease.
static FLOOR_LEARN_AFTER: GucSetting<i32> = GucSetting::<i32>::new(FLOOR_LEARN_AFTER_TAKEN as i32);

pub fn init() {
    // SAFETY: check_log_events is a pg_guard'ed check hook of the signature PostgreSQL expects;
    // the setting is a static that lives as long as the library.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"courier.log_events",
            c"Events courier writes to the server log, one line each.",
            c"A list of dead_letter, redrive, purge and lease_expired, or all or none; payloads adds each dead letter's payload to its line. Lines are written when the transaction commits.",
            &LOG_EVENTS,
            GucContext::Suset,
            GucFlags::from_bits_retain(pg_sys::GUC_LIST_INPUT as i32),
            Some(check_log_events),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"courier.vacuum_threshold",
        c"Acked or nacked messages after which courier vacuums its message table.",
        c"Needs shared_preload_libraries. A background worker vacuums courier.message once this many messages were acked or nacked in the database and courier.vacuum_naptime has passed since the last one; 0 leaves the table to autovacuum.",
        &VACUUM_THRESHOLD,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"courier.vacuum_naptime",
        c"Least time between two of courier's vacuums of the message table in one database.",
        c"See courier.vacuum_threshold.",
        &VACUUM_NAPTIME_S,
        1,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"courier.durable_leases",
        c"Makes transactions that only lease wait for their commit to reach disk.",
        c"Off: such a commit does not wait for its WAL flush, and a crash can forget the leases of its last moments; their messages are delivered again early.",
        &DURABLE_LEASES,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"courier.max_wait",
        c"Longest wait courier.lease accepts.",
        c"A waiting lease holds back vacuum while it waits; longer waits are rejected with SQLSTATE 22023.",
        &MAX_WAIT_MS,
        0,
        3_600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"courier.max_payload_size",
        c"Largest payload or headers document courier.enqueue accepts.",
        c"Measured as the size of the jsonb value; larger documents are rejected with SQLSTATE 54000.",
        &MAX_PAYLOAD_SIZE,
        1,
        MAX_MAX_PAYLOAD_BYTES,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"courier.floor_learn_after",
        c"Messages leased from a queue before its scan floor is learned again.",
        c"A developer option. Lower learns more often (two statements and two exclusive locks of a shared table); higher lets scans walk past more acked messages.",
        &FLOOR_LEARN_AFTER,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::from_bits_retain(pg_sys::GUC_NOT_IN_SAMPLE as i32),
    );
    reserve_prefix();
}

/// Rejects a courier.log_events value that does not parse, saying why in the errdetail.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_log_events(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a valid pointer to the proposed value, a C string or NULL.
    let value = unsafe { (*newval).as_ref().map(|p| CStr::from_ptr(p)) };
    let text = value.map(|v| v.to_string_lossy()).unwrap_or_default();
    match LogEvents::parse(&text) {
        Ok(_) => true,
        Err(why) => {
            let why = CString::new(why).unwrap_or_default();
            // SAFETY: GUC_check_errdetail_string is read by the GUC code right after we return
            // false; pstrdup copies the message into the current memory context, as the C macro
            // GUC_check_errdetail does.
            unsafe { pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(why.as_ptr()) };
            false
        }
    }
}

#[cfg(not(feature = "pg14"))]
fn reserve_prefix() {
    // SAFETY: called from _PG_init in the backend's main thread with a static C string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"courier".as_ptr()) }
}

#[cfg(feature = "pg14")]
fn reserve_prefix() {
    // SAFETY: called from _PG_init in the backend's main thread with a static C string.
    unsafe { pgrx::pg_sys::EmitWarningsOnPlaceholders(c"courier".as_ptr()) }
}

/// `courier.floor_learn_after`: messages taken from a level before its floor is learned again.
pub fn floor_learn_after() -> u32 {
    u32::try_from(FLOOR_LEARN_AFTER.get()).unwrap_or(1).max(1)
}

/// `courier.max_payload_size`: the largest payload or headers document, in bytes.
pub fn max_payload_bytes() -> usize {
    // The GUC's minimum is 1, so the value is positive.
    MAX_PAYLOAD_SIZE.get() as usize
}

/// `courier.max_wait`: the longest wait a lease may ask for, in microseconds.
pub fn max_wait_usecs() -> i64 {
    i64::from(MAX_WAIT_MS.get()) * 1000
}

/// `courier.durable_leases`.
pub fn durable_leases() -> bool {
    DURABLE_LEASES.get()
}

/// `courier.vacuum_threshold`, or `None` when it is 0 (courier leaves the table to autovacuum).
pub fn vacuum_threshold() -> Option<u64> {
    u64::try_from(VACUUM_THRESHOLD.get()).ok().filter(|&t| t > 0)
}

/// `courier.vacuum_naptime`, in microseconds.
pub fn vacuum_naptime_usecs() -> i64 {
    i64::from(VACUUM_NAPTIME_S.get()) * USECS_PER_SEC
}

/// `courier.log_events`. The check hook accepted the value, so it parses; the boot value is
/// courier_core's default (a unit test there parses it).
pub fn log_events() -> LogEvents {
    let value = LOG_EVENTS.get();
    let text = value.as_deref().map(CStr::to_string_lossy).unwrap_or_default();
    LogEvents::parse(&text).unwrap_or_default()
}
