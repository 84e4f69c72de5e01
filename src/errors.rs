//! Raising courier errors with their SQLSTATEs.
//!
//! | kind                     | SQLSTATE | condition name               |
//! |--------------------------|----------|------------------------------|
//! | NullValue                | 22004    | null_value_not_allowed       |
//! | InvalidParameter         | 22023    | invalid_parameter_value      |
//! | InvalidName              | 42602    | invalid_name                 |
//! | NameTooLong              | 42622    | name_too_long                |
//! | UndefinedQueue           | 42704    | undefined_object             |
//! | DuplicateQueue           | 42710    | duplicate_object             |
//! | LimitExceeded            | 54000    | program_limit_exceeded       |
//! | InvalidTransactionState  | 25000    | invalid_transaction_state    |
//! | DependentObjects         | 2BP01    | dependent_objects_still_exist|
//! | UndefinedObject          | 42704    | undefined_object             |
//! | InsufficientPrivilege    | 42501    | insufficient_privilege       |
//!
//! The strict forms of ack/nack/extend raise `QC001` (lease lost). pgrx can only raise the codes
//! it knows, so that one is raised from SQL (`sql/api.sql`), not from here.

use courier_core::{CourierError, ErrorKind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

pub fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    match kind {
        ErrorKind::NullValue => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        ErrorKind::InvalidParameter => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::InvalidName => PgSqlErrorCode::ERRCODE_INVALID_NAME,
        ErrorKind::NameTooLong => PgSqlErrorCode::ERRCODE_NAME_TOO_LONG,
        ErrorKind::UndefinedQueue => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        ErrorKind::DuplicateQueue => PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
        ErrorKind::LimitExceeded => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        ErrorKind::InvalidTransactionState => PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
        ErrorKind::DependentObjects => PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
        ErrorKind::UndefinedObject => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        ErrorKind::InsufficientPrivilege => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
    }
}

/// Raises `err` as a PostgreSQL ERROR. Unwinds (running Rust destructors) to the pgrx boundary,
/// which aborts the transaction; nothing the call did so far survives.
#[track_caller]
pub fn raise(err: CourierError) -> ! {
    let CourierError { kind, message, detail, hint } = err;
    let mut report = ErrorReport::new(sqlstate(kind), message, "courier");
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

pub trait OrRaise<T> {
    #[track_caller]
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, CourierError> {
    #[track_caller]
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(e),
        }
    }
}

/// Unwraps a nullable argument or raises `22004` naming it.
#[track_caller]
pub fn arg<T>(value: Option<T>, name: &str) -> T {
    courier_core::error::required(value, name).or_raise()
}
