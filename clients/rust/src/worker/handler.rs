//! What a worker runs for each message, and how a handler says what went wrong.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::types::Message;

/// A boxed future, for handlers written as closures that borrow their transaction.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The transaction an exactly-once handler does its writes in; the worker acks the message
/// (strictly) in it and commits. It derefs to `tokio_postgres::Transaction`, and courier's
/// functions accept it, so a handler can enqueue follow-up messages in it too.
pub type Transaction<'a> = deadpool_postgres::Transaction<'a>;

/// One message handed to a handler.
pub struct Job<T> {
    /// The leased message, its payload deserialized.
    pub message: Message<T>,
    cancel: CancellationToken,
}

impl<T> Job<T> {
    pub(crate) fn new(message: Message<T>, cancel: CancellationToken) -> Self {
        Job { message, cancel }
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.message.payload
    }

    /// Completes when the worker gives up on this handler run (its lease was lost, it timed
    /// out, or shutdown's grace period ended). The handler's future is dropped then anyway;
    /// this is for work it started elsewhere (a `spawn_blocking`, a child task) that should
    /// stop too.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The token behind [`Job::cancelled`], to hand to spawned work.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// How a handler's failure is treated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Nack with the error text; the message comes back after the queue's backoff (and is
    /// dead-lettered after `max_attempts` deliveries).
    Retry,
    /// Nack with `retry_in`: the message comes back after this long.
    RetryIn(Duration),
    /// Poison: dead-letter the message now (`nack(..., dead => true)`), whatever its attempts.
    Poison,
}

/// A handler's failure: what to do with the message, and the text kept with it as its
/// `last_error`.
///
/// Any `std::error::Error` converts into a [`FailureKind::Retry`] failure, so `?` works in
/// handlers.
pub struct HandlerError {
    pub kind: FailureKind,
    pub message: String,
}

impl HandlerError {
    /// A failure retried after the queue's backoff.
    pub fn retry(message: impl fmt::Display) -> Self {
        HandlerError { kind: FailureKind::Retry, message: message.to_string() }
    }

    /// A failure retried after `delay`.
    pub fn retry_in(delay: Duration, message: impl fmt::Display) -> Self {
        HandlerError { kind: FailureKind::RetryIn(delay), message: message.to_string() }
    }

    /// A poison message: dead-letter it now.
    pub fn poison(message: impl fmt::Display) -> Self {
        HandlerError { kind: FailureKind::Poison, message: message.to_string() }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        HandlerError::retry(message)
    }
}

/// A handler for at-least-once processing: the worker acks the message when it returns `Ok`.
///
/// Implemented for closures `Fn(Job<T>) -> impl Future<Output = Result<(), HandlerError>>`.
pub trait Handler<T>: Send + Sync + 'static {
    fn handle(&self, job: Job<T>) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<T, F, Fut> Handler<T> for F
where
    F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, job: Job<T>) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(job)
    }
}

/// A handler for exactly-once processing: it does its writes in the transaction it is given,
/// and the worker acks the message strictly in the same transaction and commits, so the writes
/// and the ack commit together or not at all.
///
/// Implemented for closures `Fn(&Transaction, Job<T>) -> BoxFuture<Result<(), HandlerError>>`,
/// written as `|tx, job| Box::pin(async move { ... })`.
pub trait TxHandler<T>: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        job: Job<T>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

impl<T, F> TxHandler<T> for F
where
    F: for<'a> Fn(&'a Transaction<'a>, Job<T>) -> BoxFuture<'a, Result<(), HandlerError>>
        + Send
        + Sync
        + 'static,
{
    fn handle<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        job: Job<T>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        self(tx, job)
    }
}

/// The handlers behind trait objects, so that a worker's type does not name its handler.
pub(crate) trait ErasedHandler<T>: Send + Sync {
    fn call(&self, job: Job<T>) -> BoxFuture<'_, Result<(), HandlerError>>;
}

impl<T: Send + 'static, H: Handler<T>> ErasedHandler<T> for H {
    fn call(&self, job: Job<T>) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(self.handle(job))
    }
}

pub(crate) trait ErasedTxHandler<T>: Send + Sync {
    fn call<'a>(&'a self, tx: &'a Transaction<'a>, job: Job<T>) -> BoxFuture<'a, Result<(), HandlerError>>;
}

impl<T: Send + 'static, H: TxHandler<T>> ErasedTxHandler<T> for H {
    fn call<'a>(&'a self, tx: &'a Transaction<'a>, job: Job<T>) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(self.handle(tx, job))
    }
}
