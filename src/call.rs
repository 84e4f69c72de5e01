//! One courier API call's context: its storage connection, run as the owner of courier's tables,
//! and the role that called, whose privileges access.rs checks.

use std::ops::Deref;

use pgrx::pg_sys;

use crate::identity;
use crate::standby;
use crate::storage::{self, Store};

pub struct Call<'a> {
    store: &'a Store<'a>,
    /// The role that called the courier function (the outermost one, when they nest).
    pub caller: pg_sys::Oid,
}

/// A call is used mostly for its statements.
impl<'a> Deref for Call<'a> {
    type Target = Store<'a>;

    fn deref(&self) -> &Store<'a> {
        self.store
    }
}

/// Runs `f` as the owner of courier's tables with a storage connection, remembering the caller.
/// The identity is switched back when `f` returns, after the storage connection closed. Refused
/// on a standby (standby.rs): `f` may change a queue.
pub fn with<R>(f: impl FnOnce(&Call) -> R) -> R {
    standby::refuse_changes();
    reading(f)
}

/// `with` for a call that only reads (stats, privilege checks, plans): it runs on a standby too.
pub fn reading<R>(f: impl FnOnce(&Call) -> R) -> R {
    let identity = identity::as_table_owner();
    storage::with(|store| f(&Call { store, caller: identity.caller() }))
}

/// `reading` with every statement in the calling statement's snapshot (storage::in_snapshot), for
/// a read that must see one state throughout.
pub fn reading_in_snapshot<R>(f: impl FnOnce(&Call) -> R) -> R {
    let identity = identity::as_table_owner();
    storage::in_snapshot(|store| f(&Call { store, caller: identity.caller() }))
}
