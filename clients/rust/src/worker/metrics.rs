//! A worker's counters, readable (and exportable) while it runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one worker since it was built. Read them with [`Metrics::snapshot`] (e.g. from
/// a Prometheus or OpenTelemetry exporter of your own); they only grow.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) leased: AtomicU64,
    pub(crate) processed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) reconnects: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Messages leased.
    pub leased: u64,
    /// Handler succeeded and the ack was accepted (exactly-once mode: committed with the
    /// handler's writes), or sent as the connection was lost and so maybe accepted.
    pub processed: u64,
    /// Handler returned an error, panicked, or the payload did not deserialize: nacked (or
    /// dead-lettered, for poison and for the last attempt).
    pub failed: u64,
    /// Handler overran its timeout: cancelled and nacked with `timeout after ...`.
    pub timed_out: u64,
    /// The lease was lost before the ack (heartbeat refused, lease expired unextended, ack
    /// refused): nothing acked; in exactly-once mode the handler's writes rolled back.
    pub lease_lost: u64,
    /// Given back at shutdown with `retry_in => 0`: not started, or cancelled after the grace
    /// period.
    pub released: u64,
    /// Connections lost and opened again.
    pub reconnects: u64,
}

impl Metrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            leased: g(&self.leased),
            processed: g(&self.processed),
            failed: g(&self.failed),
            timed_out: g(&self.timed_out),
            lease_lost: g(&self.lease_lost),
            released: g(&self.released),
            reconnects: g(&self.reconnects),
        }
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}
