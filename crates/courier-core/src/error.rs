//! The error vocabulary shared by every courier function.
//!
//! Each kind maps to exactly one SQLSTATE (see `src/errors.rs` in the extension), so a client can
//! branch on the code and a human can read the message, which always names the offending argument.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// An argument was SQL NULL where a value is required (22004).
    NullValue,
    /// An argument is outside its documented range or otherwise unusable (22023).
    InvalidParameter,
    /// A queue name breaks the naming rule (42602).
    InvalidName,
    /// A queue name is longer than allowed (42622).
    NameTooLong,
    /// The named queue does not exist (42704).
    UndefinedQueue,
    /// A queue with that name already exists (42710).
    DuplicateQueue,
    /// A payload or header document is larger than the configured limit (54000).
    LimitExceeded,
    /// The operation cannot run at the transaction's isolation level (25000).
    InvalidTransactionState,
    /// Another queue depends on this one (it is that queue's dead-letter queue) (2BP01).
    DependentObjects,
    /// Some other named object (a role) does not exist (42704).
    UndefinedObject,
    /// The caller lacks the queue privilege the operation needs (42501).
    InsufficientPrivilege,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CourierError {
    pub kind: ErrorKind,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl CourierError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CourierError { kind, message: message.into(), detail: None, hint: None }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn null(argument: &str) -> Self {
        CourierError::new(ErrorKind::NullValue, format!("{argument} must not be null"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        CourierError::new(ErrorKind::InvalidParameter, message)
    }

    pub fn undefined_queue(name: &str) -> Self {
        CourierError::new(ErrorKind::UndefinedQueue, format!("queue \"{name}\" does not exist"))
    }

    pub fn duplicate_queue(name: &str) -> Self {
        CourierError::new(ErrorKind::DuplicateQueue, format!("queue \"{name}\" already exists"))
            .with_hint("Pass if_not_exists => true to make create_queue idempotent.")
    }
}

impl fmt::Display for CourierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CourierError {}

/// Unwraps a nullable SQL argument or reports it by name.
pub fn required<T>(value: Option<T>, argument: &str) -> Result<T, CourierError> {
    value.ok_or_else(|| CourierError::null(argument))
}
