//! Logic of the courier extension that does not need a running PostgreSQL.
//!
//! Everything here is deterministic and unit-tested with plain `cargo test`; the extension crate
//! maps [`error::CourierError`] onto SQLSTATEs and does the database work.

#![forbid(unsafe_code)]

pub mod access;
pub mod error;
pub mod events;
pub mod floor;
pub mod groups;
pub mod lease_lost;
pub mod limits;
pub mod nack;
pub mod name;
pub mod policy;
pub mod position;
pub mod receipt;
pub mod retry;
pub mod scan_hint;
pub mod timing;
pub mod tuning;

pub use error::{CourierError, ErrorKind};
