//! Lease: handing messages to a consumer for a visibility timeout.
//!
//! A leased message is invisible to every other lease until its timeout passes. Each lease draws
//! a fresh random token; the receipt returned to the consumer carries it, and ack, nack and extend
//! only act while the token is still the message's current one.

use courier_core::limits::MAX_BATCH;
use courier_core::receipt::{Receipt, TOKEN_MASK};
use courier_core::timing;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::catalog::{self, queue_name};
use crate::datum::Jsonb;
use crate::errors::{arg, OrRaise};
use crate::storage;

/// A fresh 58-bit lease token from the server's strong random source.
pub fn new_token() -> i64 {
    let mut buf = [0u8; 8];
    // SAFETY: pg_strong_random writes exactly buf.len() bytes into buf.
    let ok = unsafe { pg_sys::pg_strong_random(buf.as_mut_ptr().cast(), buf.len()) };
    if !ok {
        pgrx::error!("courier: could not generate a random lease token");
    }
    (u64::from_ne_bytes(buf) & TOKEN_MASK) as i64
}

pub fn now() -> pg_sys::TimestampTz {
    // SAFETY: reads the system clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

pub fn timestamp(t: pg_sys::TimestampTz) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(t).expect("lease timestamps are finite and in range")
}

/// Leases up to `batch_size` ready messages, oldest ready first, for `visibility_timeout` (the
/// queue's own timeout when NULL). Never blocks on messages other sessions are leasing or acking.
// pgrx reads the column names from the return type itself, so it cannot be a type alias.
#[allow(clippy::type_complexity)]
#[pg_extern(security_definer)]
#[search_path(pg_catalog, courier, pg_temp)]
fn lease(
    queue: Option<&str>,
    batch_size: default!(Option<i32>, 1),
    visibility_timeout: default!(Option<Interval>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(receipt, pgrx::Uuid),
        name!(payload, Jsonb),
        name!(headers, Option<Jsonb>),
        name!(attempt, i32),
        name!(enqueued_at, TimestampWithTimeZone),
        name!(lease_expires_at, TimestampWithTimeZone),
    ),
> {
    let name = queue_name(queue, "queue");
    let batch_size =
        timing::batch_size("batch_size", i64::from(arg(batch_size, "batch_size")), MAX_BATCH).or_raise();
    let vt = visibility_timeout.map(|v| catalog::visibility_timeout(v, "visibility_timeout"));
    let rows = storage::with(|store| {
        let q = catalog::resolve(store, name);
        let vt = vt.unwrap_or(q.visibility_timeout_usecs);
        let token = new_token();
        let now = now();
        let expires_at = now + vt;
        store
            .lease(q, now, expires_at, batch_size, token)
            .into_iter()
            .map(|m| {
                let receipt = Receipt::new(m.id, token as u64).to_bytes();
                (
                    m.id,
                    pgrx::Uuid::from_bytes(receipt),
                    m.payload,
                    m.headers,
                    m.attempt,
                    timestamp(m.enqueued_at),
                    timestamp(expires_at),
                )
            })
            .collect::<Vec<_>>()
    });
    TableIterator::new(rows)
}
