//! Typed client and worker runtime for courier, durable at-least-once message queues inside
//! PostgreSQL (see the repository's README.md for the SQL API these calls wrap).
//!
//! - **Calls**: one async function per SQL function ([`enqueue`], [`lease`], [`ack`],
//!   [`nack`], [`extend`], the batch and strict forms, queues, dead letters, stats,
//!   privileges). Each takes the connection or transaction to run on — a
//!   `tokio_postgres::Client` or `Transaction`, or a deadpool-postgres client or transaction
//!   — so an application enqueues in the same transaction as its own writes.
//! - **Errors**: each courier SQLSTATE is an [`Error`] variant; a strict ack whose lease is
//!   gone is [`Error::LeaseLost`].
//! - **[`Worker`]**: leases from a queue with bounded concurrency and a long poll, runs a
//!   handler per message under a hard timeout with a heartbeat, nacks failures with their error
//!   text (or retries them later, or dead-letters poison), survives handler panics, reconnects
//!   with backoff, shuts down gracefully on SIGTERM/SIGINT, and offers an exactly-once mode in
//!   which the handler's writes and a strict ack commit in one transaction.
//!
//! Queue names, payloads and every other argument are bound parameters, never spliced into SQL.
//!
//! The examples run against the database named by `COURIER_TEST_URL` (`clients/rust/test.sh`
//! sets it); without it they fail.

mod api;
mod error;
mod executor;
mod sql;
mod types;
mod worker;

pub use api::*;
pub use error::{Error, Result, ServerError};
pub use executor::{Executor, Statement};
pub use types::{
    CompletedMessage, DeadLetter, Enqueued, GroupInfo, GroupOnDead, GroupOrder, Maintained, Message,
    Privilege, QueueInfo, QueueStats, Receipt,
};
pub use worker::{
    BoxFuture, FailureKind, Handler, HandlerError, Job, Metrics, MetricsSnapshot, ShutdownHandle,
    Transaction, TxHandler, Worker, WorkerBuilder,
};

/// What [`WorkerBuilder::shutdown_on`] takes.
pub use tokio_util::sync::CancellationToken;
/// Re-exported so that applications use the same versions as this crate.
pub use {deadpool_postgres, tokio_postgres};
