//! Enqueue: adding messages to a queue, as part of the caller's transaction.

use courier_core::limits::MAX_BATCH;
use courier_core::{CourierError, ErrorKind};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::catalog::{self, queue_name};
use crate::datum::{Jsonb, JsonbArray};
use crate::errors::{arg, raise};
use crate::settings::MAX_PAYLOAD_SIZE;
use crate::storage;

fn check_size(doc: &Jsonb, argument: &str) {
    let limit = MAX_PAYLOAD_SIZE.get();
    let size = doc.size();
    if size > limit as usize {
        raise(
            CourierError::new(
                ErrorKind::LimitExceeded,
                format!("{argument} is too large ({size} bytes, the limit is {limit} bytes)"),
            )
            .with_hint("The limit is the courier.max_payload_size setting; store large blobs elsewhere and enqueue a reference."),
        );
    }
}

fn check_payload(doc: &Jsonb, argument: &str) {
    check_size(doc, argument);
}

fn check_headers(doc: &Jsonb, argument: &str) {
    if !doc.is_object() {
        raise(CourierError::invalid(format!("{argument} must be a JSON object")));
    }
    check_size(doc, argument);
}

fn now() -> pg_sys::TimestampTz {
    // SAFETY: reads the system clock; this is clock_timestamp(), not the transaction start.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// Enqueues one message and returns its id. The message becomes visible to consumers when the
/// calling transaction commits (and `delay` has passed); if it rolls back, it never existed.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, courier, pg_temp)]
fn enqueue(
    queue: Option<&str>,
    payload: Option<Jsonb>,
    headers: default!(Option<Jsonb>, "NULL"),
    delay: default!(Option<Interval>, "'0'"),
) -> i64 {
    let name = queue_name(queue, "queue");
    let payload = arg(payload, "payload");
    check_payload(&payload, "payload");
    if let Some(h) = &headers {
        check_headers(h, "headers");
    }
    let delay = catalog::delay(arg(delay, "delay"), "delay");
    storage::with(|store| {
        let q = catalog::resolve_for_enqueue(store, name);
        let now = now();
        store.insert_message(q, now, now + delay, headers, payload)
    })
}

/// Enqueues many messages in one call and returns their ids in input order. `headers`, when
/// given, has one element (or NULL) per payload.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, courier, pg_temp)]
fn enqueue_batch(
    queue: Option<&str>,
    payloads: Option<JsonbArray>,
    headers: default!(Option<JsonbArray>, "NULL"),
    delay: default!(Option<Interval>, "'0'"),
) -> SetOfIterator<'static, i64> {
    let name = queue_name(queue, "queue");
    let mut payloads = arg(payloads, "payloads");
    let elements = payloads.elements();
    check_shape(elements.dimensions, elements.values.len(), "payloads");
    for (i, (datum, is_null)) in elements.values.iter().enumerate() {
        if *is_null {
            raise(CourierError::null(&format!("payloads[{}]", i + 1)));
        }
        // SAFETY: a non-null element of a jsonb[] is a jsonb datum.
        let doc = unsafe { Jsonb::from_datum(*datum, false) }.expect("non-null");
        check_payload(&doc, &format!("payloads[{}]", i + 1));
    }
    let mut headers = headers;
    if let Some(h) = headers.as_mut() {
        let hs = h.elements();
        if hs.dimensions > 1 {
            raise(CourierError::invalid("headers must be a one-dimensional array"));
        }
        if hs.values.len() != elements.values.len() {
            raise(CourierError::invalid(format!(
                "headers must have one element per payload ({} payloads, {} headers)",
                elements.values.len(),
                hs.values.len()
            )));
        }
        for (i, (datum, is_null)) in hs.values.iter().enumerate() {
            if !*is_null {
                // SAFETY: as above.
                let doc = unsafe { Jsonb::from_datum(*datum, false) }.expect("non-null");
                check_headers(&doc, &format!("headers[{}]", i + 1));
            }
        }
    }
    let delay = catalog::delay(arg(delay, "delay"), "delay");
    let ids = storage::with(|store| {
        let q = catalog::resolve_for_enqueue(store, name);
        let now = now();
        store.insert_messages(q, now, now + delay, payloads, headers)
    });
    SetOfIterator::new(ids)
}

/// Checks a batch array: one-dimensional, 1 to MAX_BATCH elements.
pub fn check_shape(dimensions: i32, len: usize, argument: &str) {
    if dimensions > 1 {
        raise(CourierError::invalid(format!("{argument} must be a one-dimensional array")));
    }
    if len == 0 {
        raise(CourierError::invalid(format!("{argument} must not be empty")));
    }
    if len > MAX_BATCH as usize {
        raise(CourierError::invalid(format!("{argument} has {len} elements, the maximum is {MAX_BATCH}")));
    }
}
