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

pub use api::*;
pub use error::{Error, Result, ServerError};
pub use executor::{Executor, Statement};
pub use types::{
    CompletedMessage, DeadLetter, Enqueued, Maintained, Message, Privilege, QueueInfo, QueueStats, Receipt,
};

/// Re-exported so that applications use the same versions as this crate.
pub use deadpool_postgres;
pub use tokio_postgres;
