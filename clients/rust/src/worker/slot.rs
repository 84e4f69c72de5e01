//! One of a worker's `concurrency` loops: on its own connection, lease a batch, run the
//! handler for each message while a heartbeat extends the batch's leases, ack and nack; after a
//! lost connection, reconnect with backoff and send what could not be sent.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Object;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::handler::{FailureKind, HandlerError, Job};
use super::metrics::Metrics;
use super::{Mode, Shared};
use crate::api::{self, LeaseOptions, NackOptions};
use crate::error::{Error, Result};
use crate::types::{Message, Receipt};

/// Exponential backoff with jitter, for reconnecting.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Backoff { min, max, next: min, rng: (t ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1 }
    }

    /// Sleeps between half and all of the current pause, then doubles it.
    pub(crate) async fn sleep(&mut self) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = 0.5 + (self.rng % 1000) as f64 / 2000.0;
        let pause = self.next.mul_f64(fraction);
        self.next = (self.next * 2).min(self.max);
        tokio::time::sleep(pause).await;
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// An ack or nack waiting for a connection to send it on.
enum Finalize {
    /// `retried`: an earlier attempt was cut off with the connection, so it may have been
    /// applied already (and a receipt that no longer acks is no news).
    Ack {
        receipts: Vec<Receipt>,
        retried: bool,
    },
    Nack {
        receipts: Vec<Receipt>,
        options: NackOptions,
    },
}

/// Why [`serve`] stopped.
enum Stop {
    /// Reconnect: the connection is gone. `discard`: it may still be open but is in an unknown
    /// state (a rollback that failed), so it must not go back to the pool.
    Connection { error: Error, discard: bool },
    /// Stop the worker.
    Fatal(Error),
}

fn connection_lost(error: Error) -> Stop {
    Stop::Connection { error, discard: false }
}

/// How one handler run ended.
enum Outcome {
    Done,
    Failed(HandlerError),
    Panicked(String),
    TimedOut,
    LeaseLost(&'static str),
    /// Shutdown's grace period ended while it ran.
    ShutDown,
    /// Exactly-once mode: the connection died before the commit; nothing committed.
    ConnectionLost,
    /// Exactly-once mode: the connection died during the commit; it may or may not have
    /// committed.
    CommitUnknown,
}

pub(crate) async fn run<T: DeserializeOwned + Send + 'static>(
    shared: Arc<Shared<T>>,
    n: usize,
) -> Result<()> {
    let c = &shared.config;
    let mut backoff = Backoff::new(c.reconnect_min, c.reconnect_max, n as u64 + 1);
    let mut pending: Vec<Finalize> = Vec::new();
    loop {
        if shared.grace_over.is_cancelled() || (shared.stop.is_cancelled() && pending.is_empty()) {
            if !pending.is_empty() {
                tracing::warn!(queue = %c.queue, "shutting down with acks or nacks unsent; those leases will expire");
            }
            return Ok(());
        }
        let attempt = async {
            let conn = timeout(c.io_timeout, shared.pool.get())
                .await
                .map_err(|_| Error::Timeout("connecting".into()))??;
            let pid: i32 = timeout(c.io_timeout, conn.query_one("SELECT pg_backend_pid()", &[]))
                .await
                .map_err(|_| Error::Timeout("connecting".into()))??
                .get(0);
            Ok::<_, Error>((conn, pid))
        };
        let stop = match attempt.await {
            Ok((conn, pid)) => serve(&shared, n, conn, pid, &mut pending, &mut backoff).await,
            Err(e) if e.is_connection_error() => Err(connection_lost(e)),
            Err(e) => Err(Stop::Fatal(e)),
        };
        match stop {
            Ok(()) => return Ok(()),
            Err(Stop::Fatal(e)) => return Err(e),
            Err(Stop::Connection { error, .. }) => {
                Metrics::add(&shared.metrics.reconnects, 1);
                tracing::warn!(queue = %c.queue, error = %error, "courier worker lost its connection; reconnecting");
                tokio::select! {
                    _ = backoff.sleep() => {}
                    _ = shared.grace_over.cancelled() => {}
                }
            }
        }
    }
}

/// Leases and processes on one connection until shutdown or until the connection is lost.
async fn serve<T: DeserializeOwned + Send + 'static>(
    shared: &Shared<T>,
    n: usize,
    mut conn: Object,
    pid: i32,
    pending: &mut Vec<Finalize>,
    backoff: &mut Backoff,
) -> Result<(), Stop> {
    let result = serve_on(shared, n, &mut conn, pid, pending, backoff).await;
    if let Err(Stop::Connection { discard: true, .. }) = &result {
        // Closes it instead of returning it to the pool.
        drop(Object::take(conn));
    }
    result
}

async fn serve_on<T: DeserializeOwned + Send + 'static>(
    shared: &Shared<T>,
    n: usize,
    conn: &mut Object,
    pid: i32,
    pending: &mut Vec<Finalize>,
    backoff: &mut Backoff,
) -> Result<(), Stop> {
    let c = &shared.config;
    flush(shared, conn, pending).await?;
    let options = LeaseOptions {
        batch_size: c.batch_size,
        visibility_timeout: Some(c.visibility_timeout),
        wait: c.wait,
        group_batch: c.group_batch,
    };
    loop {
        if shared.stop.is_cancelled() {
            return Ok(());
        }
        shared.set_waiting(n, Some(pid));
        if shared.stop.is_cancelled() {
            shared.set_waiting(n, None);
            return Ok(());
        }
        let sent = Instant::now();
        let leased = timeout(c.wait + c.io_timeout, api::lease(&**conn, &c.queue, &options)).await;
        shared.set_waiting(n, None);
        let messages = match leased {
            Err(_) => return Err(connection_lost(Error::Timeout("lease".into()))),
            // Shutdown cancelled the wait (or a statement_timeout did): nothing was leased.
            Ok(Err(Error::Cancelled(_))) => continue,
            Ok(Err(e)) if e.is_connection_error() => return Err(connection_lost(e)),
            Ok(Err(e)) => return Err(Stop::Fatal(e)),
            Ok(Ok(m)) => m,
        };
        backoff.reset();
        if messages.is_empty() {
            continue;
        }
        Metrics::add(&shared.metrics.leased, messages.len() as u64);
        let result = batch(shared, conn, pid, messages, sent + c.visibility_timeout, pending).await;
        // What the batch left to send is sent now, or after reconnecting.
        match result {
            Ok(()) => flush(shared, conn, pending).await?,
            Err(stop) => return Err(stop),
        }
    }
}

/// The leases of one batch, kept alive by the heartbeat while its handlers run.
struct Leases {
    /// Receipts the heartbeat extends.
    held: Mutex<Vec<Receipt>>,
    /// Cancelled when that message's lease is lost, with the reason.
    lost: Mutex<HashMap<Receipt, (CancellationToken, &'static str)>>,
}

impl Leases {
    fn new(receipts: Vec<Receipt>) -> Self {
        let lost = receipts.iter().map(|r| (*r, (CancellationToken::new(), ""))).collect();
        Leases { held: Mutex::new(receipts), lost: Mutex::new(lost) }
    }

    fn token(&self, r: Receipt) -> CancellationToken {
        self.lost.lock().expect("not poisoned")[&r].0.clone()
    }

    fn reason(&self, r: Receipt) -> &'static str {
        self.lost.lock().expect("not poisoned")[&r].1
    }

    fn release(&self, r: Receipt) {
        self.held.lock().expect("not poisoned").retain(|h| *h != r);
    }

    fn held(&self) -> Vec<Receipt> {
        self.held.lock().expect("not poisoned").clone()
    }

    fn lose(&self, receipts: &[Receipt], reason: &'static str) {
        let mut lost = self.lost.lock().expect("not poisoned");
        for r in receipts {
            if let Some((token, why)) = lost.get_mut(r)
                && !token.is_cancelled()
            {
                *why = reason;
                token.cancel();
            }
        }
    }
}

/// Extends the batch's leases every third of the visibility timeout; a lease the server says
/// is lost, or that could not be extended before it ran out, is marked lost. Never returns.
async fn heartbeat<T>(shared: &Shared<T>, leases: &Leases, mut deadline: Instant) {
    let vt = shared.config.visibility_timeout;
    if !shared.config.heartbeat {
        sleep_until(deadline).await;
        leases.lose(&leases.held(), "the lease expired (no heartbeat)");
        return std::future::pending().await;
    }
    let mut next = deadline - vt + vt / 3;
    loop {
        sleep_until(next).await;
        let held = leases.held();
        let sent = Instant::now();
        let extend = async {
            let conn = shared.pool.get().await?;
            api::extend_each(&conn, &held, vt).await
        };
        match timeout_at(deadline, extend).await {
            Ok(Ok(lost)) => {
                deadline = sent + vt;
                next = sent + vt / 3;
                if !lost.is_empty() {
                    leases.lose(&lost, "the heartbeat found the lease taken over");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(queue = %shared.config.queue, error = %e, "heartbeat failed; retrying");
                next = (Instant::now() + (vt / 10).min(Duration::from_secs(1))).min(deadline);
            }
            Err(_) => {
                leases.lose(&held, "the lease expired before the heartbeat could extend it");
                return std::future::pending().await;
            }
        }
    }
}

/// Processes one leased batch: each message's handler in turn, while the heartbeat runs.
/// Leaves the acks and nacks to send in `pending`.
async fn batch<T: DeserializeOwned + Send + 'static>(
    shared: &Shared<T>,
    conn: &mut Object,
    pid: i32,
    messages: Vec<Message>,
    deadline: Instant,
    pending: &mut Vec<Finalize>,
) -> Result<(), Stop> {
    let c = &shared.config;
    let leases = Leases::new(messages.iter().map(|m| m.receipt).collect());
    let mut acks = Vec::new();
    let mut released = Vec::new();
    let mut stop = None;
    // Groups one of whose messages in this batch did not succeed.
    let mut broken: HashSet<String> = HashSet::new();
    let work = async {
        for message in messages {
            let receipt = message.receipt;
            let group = message.group_key.clone();
            let token = leases.token(receipt);
            if stop.is_some() || shared.stop.is_cancelled() {
                released.push(receipt);
                continue;
            }
            if let Some(g) = &message.group_key
                && broken.contains(g)
            {
                // An earlier message of its group did not succeed: its nack gives this one
                // back too (or its lease runs out with theirs); running it would break the
                // group's order.
                tracing::debug!(queue = %c.queue, id = message.id, group = %g, "left for later: its group's earlier message did not succeed");
                continue;
            }
            if token.is_cancelled() {
                Metrics::add(&shared.metrics.lease_lost, 1);
                tracing::warn!(queue = %c.queue, id = message.id, reason = leases.reason(receipt), "lease lost before the handler started");
                continue;
            }
            let span = tracing::info_span!("courier.message", queue = %c.queue, id = message.id, attempt = message.attempt);
            let (outcome, conn_ok) = async {
                let r = process(shared, conn, pid, message, token, &leases).await;
                note(shared, &r.0, &leases, receipt);
                r
            }
            .instrument(span)
            .await;
            if !matches!(outcome, Outcome::Done)
                && let Some(g) = group
            {
                broken.insert(g);
            }
            match outcome {
                Outcome::Done => {
                    if matches!(shared.mode, Mode::Plain(_)) {
                        acks.push(receipt);
                    }
                }
                Outcome::Failed(e) => pending.push(nack(receipt, failure_options(e))),
                Outcome::Panicked(m) => {
                    pending.push(nack(receipt, NackOptions::error(format!("handler panicked: {m}"))))
                }
                Outcome::TimedOut => pending.push(nack(
                    receipt,
                    NackOptions::error(format!("timeout after {:?}", c.handler_timeout)),
                )),
                Outcome::LeaseLost(_) => {}
                Outcome::ShutDown => released.push(receipt),
                Outcome::ConnectionLost | Outcome::CommitUnknown => {
                    // Redeliver it at once if nothing committed; if the commit went through,
                    // its receipt no longer works and this nack does nothing.
                    pending.push(nack(
                        receipt,
                        NackOptions {
                            retry_in: Some(Duration::ZERO),
                            ..NackOptions::error("connection lost during processing")
                        },
                    ));
                }
            }
            if !conn_ok {
                stop = Some(Stop::Connection {
                    error: Error::Timeout("connection lost during processing".into()),
                    discard: true,
                });
            }
        }
    };
    tokio::select! {
        biased;
        _ = work => {}
        _ = heartbeat(shared, &leases, deadline) => unreachable!("the heartbeat never returns"),
    }
    if !acks.is_empty() {
        pending.insert(0, Finalize::Ack { receipts: acks, retried: false });
    }
    if !released.is_empty() {
        Metrics::add(&shared.metrics.released, released.len() as u64);
        pending.push(Finalize::Nack {
            receipts: released,
            options: NackOptions {
                retry_in: Some(Duration::ZERO),
                ..NackOptions::error("released at worker shutdown")
            },
        });
    }
    match stop {
        Some(s) => Err(s),
        None => Ok(()),
    }
}

fn nack(receipt: Receipt, options: NackOptions) -> Finalize {
    Finalize::Nack { receipts: vec![receipt], options }
}

fn failure_options(e: HandlerError) -> NackOptions {
    match e.kind {
        FailureKind::Retry => NackOptions::error(e.message),
        FailureKind::RetryIn(d) => NackOptions::retry_in(d).with_error(e.message),
        FailureKind::Poison => NackOptions::dead(e.message),
    }
}

/// Counts and logs an outcome, inside the message's span.
fn note<T>(shared: &Shared<T>, outcome: &Outcome, leases: &Leases, receipt: Receipt) {
    let m = &shared.metrics;
    match outcome {
        // Plain mode counts it when the ack is accepted.
        Outcome::Done => {
            if matches!(shared.mode, Mode::Tx(_)) {
                Metrics::add(&m.processed, 1);
            }
            tracing::debug!("processed");
        }
        Outcome::Failed(e) => {
            Metrics::add(&m.failed, 1);
            tracing::warn!(error = %e.message, kind = ?e.kind, "handler failed");
        }
        Outcome::Panicked(p) => {
            Metrics::add(&m.failed, 1);
            tracing::error!(panic = %p, "handler panicked");
        }
        Outcome::TimedOut => {
            Metrics::add(&m.timed_out, 1);
            tracing::warn!(timeout = ?shared.config.handler_timeout, "handler timed out");
        }
        Outcome::LeaseLost(why) => {
            Metrics::add(&m.lease_lost, 1);
            let why = if why.is_empty() { leases.reason(receipt) } else { why };
            match shared.mode {
                Mode::Tx(_) => {
                    tracing::warn!(reason = why, "lease lost: the handler's writes were rolled back")
                }
                Mode::Plain(_) => tracing::warn!(reason = why, "lease lost: handler cancelled, not acked"),
            }
        }
        Outcome::ShutDown => tracing::warn!("handler cancelled at the end of the grace period"),
        Outcome::ConnectionLost => tracing::warn!("connection lost during processing; rolled back"),
        Outcome::CommitUnknown => tracing::warn!("connection lost during the commit; it may have committed"),
    }
}

fn panic_text(p: Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

/// Runs the handler for one message; returns how it ended and whether the connection is still
/// fit for use.
async fn process<T: DeserializeOwned + Send + 'static>(
    shared: &Shared<T>,
    conn: &mut Object,
    pid: i32,
    message: Message,
    lost: CancellationToken,
    leases: &Leases,
) -> (Outcome, bool) {
    let c = &shared.config;
    let receipt = message.receipt;
    let message = match message.decode::<T>() {
        Ok(m) => m,
        Err((_, e)) => {
            return (
                Outcome::Failed(HandlerError::poison(format!("payload does not deserialize: {e}"))),
                true,
            );
        }
    };
    let cancel = CancellationToken::new();
    let job = Job::new(message, cancel.clone());
    match &shared.mode {
        Mode::Plain(handler) => {
            let run = AssertUnwindSafe(handler.call(job)).catch_unwind();
            let outcome = tokio::select! {
                biased;
                _ = lost.cancelled() => Outcome::LeaseLost(""),
                _ = shared.grace_over.cancelled() => Outcome::ShutDown,
                r = timeout(c.handler_timeout, run) => finished(r),
            };
            if !matches!(outcome, Outcome::Done) {
                cancel.cancel();
            }
            (outcome, true)
        }
        Mode::Tx(handler) => {
            let tx = match timeout(c.io_timeout, conn.transaction()).await {
                Ok(Ok(tx)) => tx,
                _ => return (Outcome::ConnectionLost, false),
            };
            let outcome = {
                let run = AssertUnwindSafe(handler.call(&tx, job)).catch_unwind();
                tokio::select! {
                    biased;
                    _ = lost.cancelled() => Outcome::LeaseLost(""),
                    _ = shared.grace_over.cancelled() => Outcome::ShutDown,
                    r = timeout(c.handler_timeout, run) => finished(r),
                }
            };
            if !matches!(outcome, Outcome::Done) {
                cancel.cancel();
                if matches!(outcome, Outcome::LeaseLost(_) | Outcome::TimedOut | Outcome::ShutDown) {
                    // The handler's future was dropped, maybe with a statement running in the
                    // transaction; cancel that so the rollback need not wait for it.
                    cancel_backend(shared, pid).await;
                }
                let rolled_back = matches!(timeout(c.io_timeout, tx.rollback()).await, Ok(Ok(())));
                let closed = conn.is_closed();
                return match outcome {
                    Outcome::Failed(_) | Outcome::Panicked(_) if closed => (Outcome::ConnectionLost, false),
                    o => (o, rolled_back && !closed),
                };
            }
            // Done: the ack goes in the same transaction; the heartbeat lets go of it first so
            // that its extend does not wait for this transaction's row lock.
            leases.release(receipt);
            match timeout(c.io_timeout, api::ack_strict(&tx, receipt)).await {
                Ok(Ok(())) => match timeout(c.io_timeout, tx.commit()).await {
                    Ok(Ok(())) => (Outcome::Done, true),
                    Ok(Err(e)) if crate::error::is_connection_error(&e) => (Outcome::CommitUnknown, false),
                    Ok(Err(e)) => (
                        Outcome::Failed(HandlerError::retry(format!("commit failed: {e}"))),
                        !conn.is_closed(),
                    ),
                    Err(_) => (Outcome::CommitUnknown, false),
                },
                Ok(Err(Error::LeaseLost(_))) => {
                    let ok = matches!(timeout(c.io_timeout, tx.rollback()).await, Ok(Ok(())));
                    (Outcome::LeaseLost("the strict ack found the lease taken over (QC001)"), ok)
                }
                Ok(Err(e)) if e.is_connection_error() => (Outcome::ConnectionLost, false),
                Ok(Err(e)) => {
                    let ok = matches!(timeout(c.io_timeout, tx.rollback()).await, Ok(Ok(())));
                    (Outcome::Failed(HandlerError::retry(format!("ack failed: {e}"))), ok)
                }
                Err(_) => (Outcome::ConnectionLost, false),
            }
        }
    }
}

type Finished = Result<
    std::result::Result<std::result::Result<(), HandlerError>, Box<dyn Any + Send>>,
    tokio::time::error::Elapsed,
>;

fn finished(r: Finished) -> Outcome {
    match r {
        Err(_) => Outcome::TimedOut,
        Ok(Err(panic)) => Outcome::Panicked(panic_text(panic)),
        Ok(Ok(Ok(()))) => Outcome::Done,
        Ok(Ok(Err(e))) => Outcome::Failed(e),
    }
}

/// `pg_cancel_backend` of a loop's own connection, from another one.
async fn cancel_backend<T>(shared: &Shared<T>, pid: i32) {
    let cancel = async {
        let conn = shared.pool.get().await?;
        conn.execute("SELECT pg_cancel_backend($1)", &[&pid]).await?;
        Ok::<_, Error>(())
    };
    if let Ok(Err(e)) | Err(e) = timeout(shared.config.io_timeout, cancel)
        .await
        .map_err(|_| Error::Timeout("pg_cancel_backend".into()))
    {
        tracing::debug!(error = %e, "could not cancel the handler's statement");
    }
}

/// Sends the acks and nacks left over, oldest first. A lost connection keeps the rest for the
/// next one.
async fn flush<T>(shared: &Shared<T>, conn: &Object, pending: &mut Vec<Finalize>) -> Result<(), Stop> {
    let c = &shared.config;
    let m = &shared.metrics;
    let mut cancelled = 0;
    while let Some(f) = pending.first_mut() {
        let send = async {
            match &*f {
                Finalize::Ack { receipts, .. } if receipts.len() == 1 => {
                    api::ack(&**conn, receipts[0]).await.map(|held| held as i32)
                }
                Finalize::Ack { receipts, .. } => api::ack_batch(&**conn, receipts).await,
                Finalize::Nack { receipts, options } if receipts.len() == 1 => {
                    api::nack(&**conn, receipts[0], options).await.map(|held| held as i32)
                }
                Finalize::Nack { receipts, options } => api::nack_batch(&**conn, receipts, options).await,
            }
        };
        let sent =
            timeout(c.io_timeout, send).await.unwrap_or_else(|_| Err(Error::Timeout("ack or nack".into())));
        match sent {
            Ok(held) => {
                if let Finalize::Ack { receipts, retried } = f {
                    let all = receipts.len() as u64;
                    let held = held.max(0) as u64;
                    if *retried {
                        // Sent before the connection was lost: what no longer acks now was
                        // probably acked then.
                        Metrics::add(&m.processed, all);
                        if held < all {
                            tracing::debug!(queue = %c.queue, acked = held, of = all, "ack repeated after reconnecting");
                        }
                    } else {
                        Metrics::add(&m.processed, held);
                        if held < all {
                            Metrics::add(&m.lease_lost, all - held);
                            tracing::warn!(queue = %c.queue, lost = all - held, "ack refused: lease lost after the handler finished");
                        }
                    }
                }
                pending.remove(0);
            }
            // Shutdown's cancel of a waiting lease can land on the statement that follows it.
            Err(Error::Cancelled(_)) if cancelled < 3 => cancelled += 1,
            Err(e) if e.is_connection_error() => {
                if let Finalize::Ack { retried, .. } = f {
                    *retried = true;
                }
                return Err(connection_lost(e));
            }
            Err(e) => {
                tracing::error!(queue = %c.queue, error = %e, "ack or nack refused; those leases will expire");
                pending.remove(0);
            }
        }
    }
    Ok(())
}

impl<T> Shared<T> {
    fn set_waiting(&self, n: usize, pid: Option<i32>) {
        self.waiting.lock().expect("not poisoned")[n] = pid;
    }
}
