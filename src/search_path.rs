//! The search path every name courier resolves is looked up in.
//!
//! Most API functions pin it in their definition (`SET search_path = pg_catalog, courier,
//! pg_temp`). PostgreSQL then saves and restores the GUC state around each call, and on
//! PostgreSQL 15 that is not cheap: parsing the setting, a walk over every GUC on the way out,
//! and a fresh lookup of the caller's own path by its next statement. For a single-message
//! enqueue, which otherwise resolves no name at all, that was a large share of its CPU
//! (bench/results/design/notes.md has the figures).
//!
//! So `enqueue` and `enqueue_batch` are declared without it and pin the same path themselves,
//! the same way (a GUC nest level, restored when the call ends and by the abort of an error),
//! but only at the first moment something could look a name up under the caller's path: before
//! the first storage statement (a queue or privilege not cached yet, a new priority, a dedup key,
//! the statement fallback), and before writing rows into a table that carries code someone could
//! have added (a CHECK constraint, an index with expressions, a predicate that is not a plain
//! `IS [NOT] NULL`, an access method or operator class that is not built in). The common path,
//! writing rows into courier's own table, runs none of that.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::pg_sys;

/// The path the API functions are declared with, byte for byte as PostgreSQL stores it.
const PINNED: &CStr = c"pg_catalog, courier, pg_temp";

/// Pins the search path for the rest of one courier call, the first time it is asked to.
#[derive(Default)]
pub struct Pin {
    /// The GUC nest level opened for it, if it was needed.
    level: Cell<Option<i32>>,
}

impl Pin {
    pub fn ensure(&self) {
        if self.level.get().is_some() {
            return;
        }
        // SAFETY: reading the search_path GUC's current string (never freed while we read it),
        // then the save-and-set fmgr_security_definer does for a function's SET clause.
        unsafe {
            let current = pg_sys::namespace_search_path;
            // Called from a function that pinned it already (or a caller that uses this path).
            if !current.is_null() && CStr::from_ptr(current) == PINNED {
                return;
            }
            let level = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                c"search_path".as_ptr(),
                PINNED.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            self.level.set(Some(level));
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some(level) = self.level.get() {
            // SAFETY: closes the nest level ensure() opened (and any a callee left open on an
            // error that is unwinding now; the abort that follows finds nothing above its own).
            unsafe { pg_sys::AtEOXact_GUC(true, level) };
        }
    }
}
