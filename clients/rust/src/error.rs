//! courier's SQLSTATEs as typed errors.

use std::fmt;

/// What the server said, for errors it raised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    /// The SQLSTATE, e.g. `QC001`.
    pub code: String,
    /// The message, lower-case and naming the argument (pinned by courier's regression tests).
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// Everything a courier call can fail with. Each SQLSTATE of the README's "Errors" table has its
/// own variant; [`Error::Database`] is any other server error or a lost connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `QC001`: a strict ack, nack or extend whose receipt no longer holds its lease. The
    /// transaction it ran in is aborted: roll back the work done under the lease.
    #[error("lease lost: {0}")]
    LeaseLost(ServerError),
    /// `42704`: the queue (or dead-letter queue, or the role given to `grant`) does not exist.
    #[error("not found: {0}")]
    NotFound(ServerError),
    /// `42710`: the queue already exists.
    #[error("already exists: {0}")]
    AlreadyExists(ServerError),
    /// `22023`: an argument out of range or malformed (batch size, timeout, delay, priority,
    /// setting, array shape, headers, dedup key, receipt, dead-letter cycle).
    #[error("invalid argument: {0}")]
    InvalidArgument(ServerError),
    /// `22004`: an argument (or array element) is NULL where a value is required.
    #[error("null argument: {0}")]
    NullArgument(ServerError),
    /// `22P02`: text that is not a UUID where a receipt was expected.
    #[error("invalid text representation: {0}")]
    InvalidText(ServerError),
    /// `42602` / `42622`: a queue name empty, too long or with a character outside the rule.
    #[error("invalid queue name: {0}")]
    InvalidName(ServerError),
    /// `54000`: payload or headers larger than `courier.max_payload_size`.
    #[error("too large: {0}")]
    TooLarge(ServerError),
    /// `25000`: `drop_queue`, or a lease with a `wait`, at REPEATABLE READ or SERIALIZABLE.
    #[error("invalid transaction state: {0}")]
    InvalidTransactionState(ServerError),
    /// `2BP01`: dropping a queue that is another queue's dead-letter queue.
    #[error("queue in use: {0}")]
    DependentObjects(ServerError),
    /// `40001`: an enqueue at REPEATABLE READ racing a `drop_queue` of its queue.
    #[error("serialization failure: {0}")]
    SerializationFailure(ServerError),
    /// `42501`: no USAGE, no EXECUTE, or no privilege on the queue.
    #[error("permission denied: {0}")]
    PermissionDenied(ServerError),
    /// `57014`: the statement was cancelled (`pg_cancel_backend`, `statement_timeout`).
    #[error("cancelled: {0}")]
    Cancelled(ServerError),
    /// A payload that does not serialize, or a leased one that does not deserialize.
    #[error("payload: {0}")]
    Json(#[from] serde_json::Error),
    /// No connection from the pool.
    #[error("pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A worker configuration that cannot work, refused when it is built or started.
    #[error("configuration: {0}")]
    Config(String),
    /// A statement got no answer in time; the connection is treated as lost.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Any other error from the server or the connection.
    #[error("database: {0}")]
    Database(#[source] tokio_postgres::Error),
}

impl Error {
    /// The SQLSTATE, for errors the server raised.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::LeaseLost(e)
            | Error::NotFound(e)
            | Error::AlreadyExists(e)
            | Error::InvalidArgument(e)
            | Error::NullArgument(e)
            | Error::InvalidText(e)
            | Error::InvalidName(e)
            | Error::TooLarge(e)
            | Error::InvalidTransactionState(e)
            | Error::DependentObjects(e)
            | Error::SerializationFailure(e)
            | Error::PermissionDenied(e)
            | Error::Cancelled(e) => Some(&e.code),
            Error::Database(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// Whether the connection is gone (closed, terminated by an administrator, server shut
    /// down or crashed), so that a new one is needed: what a worker reconnects after.
    pub fn is_connection_error(&self) -> bool {
        match self {
            Error::Database(e) => is_connection_error(e),
            Error::Pool(_) | Error::Timeout(_) => true,
            _ => false,
        }
    }
}

pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        // 57P01 admin shutdown (pg_terminate_backend, fast shutdown), 57P02 crash shutdown,
        // 57P03 cannot connect now, 08xxx connection exceptions.
        Some(db) => {
            let c = db.code().code();
            c.starts_with("57P") || c.starts_with("08")
        }
        None => true,
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            return Error::Database(e);
        };
        let server = ServerError {
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        };
        match server.code.as_str() {
            "QC001" => Error::LeaseLost(server),
            "42704" => Error::NotFound(server),
            "42710" => Error::AlreadyExists(server),
            "22023" => Error::InvalidArgument(server),
            "22004" => Error::NullArgument(server),
            "22P02" => Error::InvalidText(server),
            "42602" | "42622" => Error::InvalidName(server),
            "54000" => Error::TooLarge(server),
            "25000" => Error::InvalidTransactionState(server),
            "2BP01" => Error::DependentObjects(server),
            "40001" => Error::SerializationFailure(server),
            "42501" => Error::PermissionDenied(server),
            "57014" => Error::Cancelled(server),
            _ => Error::Database(e),
        }
    }
}

/// `Result` with courier's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
