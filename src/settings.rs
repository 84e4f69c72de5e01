//! Configuration parameters (GUCs). All live under the reserved `courier.` prefix.

use courier_core::limits::{DEFAULT_MAX_PAYLOAD_BYTES, MAX_MAX_PAYLOAD_BYTES};
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Largest payload (and largest headers document) `enqueue` accepts, in bytes of the jsonb value.
/// Superuser-settable only: the limit protects the server from its clients, so a client session
/// must not be able to lift it.
pub static MAX_PAYLOAD_SIZE: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_MAX_PAYLOAD_BYTES);

pub fn init() {
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
    reserve_prefix();
}

#[cfg(not(any(feature = "pg13", feature = "pg14")))]
fn reserve_prefix() {
    // SAFETY: called from _PG_init in the backend's main thread with a static C string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"courier".as_ptr()) }
}

#[cfg(any(feature = "pg13", feature = "pg14"))]
fn reserve_prefix() {
    // SAFETY: called from _PG_init in the backend's main thread with a static C string.
    unsafe { pgrx::pg_sys::EmitWarningsOnPlaceholders(c"courier".as_ptr()) }
}
