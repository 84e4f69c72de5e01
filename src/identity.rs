//! Whose identity courier's statements run under.
//!
//! The API functions are not SECURITY DEFINER: they run as their caller, so they know who is
//! asking (access.rs checks the caller's queue privileges). Only courier's own statements run as
//! the owner of courier's tables, switched to here ([`as_table_owner`], used by call.rs) and back
//! as soon as the call's storage work is done. The caller never gets rights on the tables, and
//! the owner's rights are used for nothing but courier's own prepared statements.

use std::cell::Cell;

use pgrx::pg_sys;

use crate::relcache;
use crate::xact;

thread_local! {
    /// The caller of the outermost courier function on the stack, while storage runs as owner.
    static CALLER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    /// Owner of courier.queue (so of every courier table), with the queue epoch it was read in:
    /// ALTER TABLE ... OWNER invalidates courier.queue (relcache.rs).
    static TABLE_OWNER: Cell<Option<(u64, pg_sys::Oid)>> = const { Cell::new(None) };
}

/// How this module reacts to transaction ends (the order among subscribers is in lib.rs).
pub const HOOKS: xact::Hooks =
    xact::Hooks { abort: after_abort, subxact_abort: |_| after_abort(), ..xact::Hooks::NONE };

/// An abort has already restored the user id (AbortTransaction, AbortSubTransaction); forget the
/// caller too, in case an error skipped AsOwner's drop.
fn after_abort() {
    CALLER.set(None);
}

/// The owner of courier's tables: the role that created the extension (or was given it since).
pub fn table_owner() -> pg_sys::Oid {
    let epoch = relcache::queue_epoch();
    if let Some((at, owner)) = TABLE_OWNER.get()
        && at == epoch
    {
        return owner;
    }
    // SAFETY: opens our own catalog table's relcache entry without a lock (we only read its
    // owner, which the relcache keeps current) and closes it again.
    let owner = unsafe {
        let rel = pg_sys::RelationIdGetRelation(relcache::queue_relid());
        if rel.is_null() {
            pgrx::error!("courier: courier.queue is missing");
        }
        let owner = (*(*rel).rd_rel).relowner;
        pg_sys::RelationClose(rel);
        owner
    };
    TABLE_OWNER.set(Some((epoch, owner)));
    owner
}

/// While alive, the backend runs as the owner of courier's tables. Dropping it restores the
/// caller's identity; an error restores it too (transaction and subtransaction abort reset the
/// user id), and so does unwinding.
pub struct AsOwner {
    saved: Option<(pg_sys::Oid, i32)>,
    caller: pg_sys::Oid,
}

impl AsOwner {
    pub fn caller(&self) -> pg_sys::Oid {
        self.caller
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        if let Some((user, context)) = self.saved {
            // SAFETY: restores what as_table_owner saved.
            unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
            CALLER.set(None);
        }
    }
}

/// Switches to the table owner, remembering who called (nested calls keep the outer caller).
pub fn as_table_owner() -> AsOwner {
    if let Some(caller) = CALLER.get() {
        return AsOwner { saved: None, caller };
    }
    xact::ensure_registered();
    let owner = table_owner();
    let mut user = pg_sys::Oid::INVALID;
    let mut context = 0;
    // SAFETY: the same save-and-switch fmgr_security_definer does for a SECURITY DEFINER call.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    CALLER.set(Some(user));
    AsOwner { saved: Some((user, context)), caller: user }
}

/// A role's name.
pub fn role_name(role: pg_sys::Oid) -> String {
    // SAFETY: GetUserNameFromId with noerr = false raises for a role that does not exist, and
    // returns a palloc'd C string otherwise; we copy it before anything can free it.
    unsafe {
        let name = pg_sys::GetUserNameFromId(role, false);
        std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}
