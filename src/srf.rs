//! Set-returning functions in materialize mode.
//!
//! pgrx's TableIterator returns one row per call (value-per-call mode). courier's functions are
//! declared with a pinned search_path, and PostgreSQL saves and restores the GUC state
//! around every call of such a function (fmgr_security_definer), which on PostgreSQL 15 walks
//! every GUC: a lease of 100 messages paid that 101 times. In materialize mode the function is
//! called once, fills a tuplestore with all its rows and hands it to the executor. The functions
//! that use this are declared in sql/api.sql, since pgrx only generates value-per-call SQL.

use pgrx::PgMemoryContexts;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The result set of one call, being filled.
pub struct Materialized {
    store: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    /// One row's values and null flags, reused for every row rather than allocated per row.
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl Materialized {
    /// Sets the call up to return a materialized set with the function's declared row type.
    ///
    /// # Safety
    /// `fcinfo` must be the FunctionCallInfo PostgreSQL passed to the calling function.
    pub unsafe fn begin(fcinfo: pg_sys::FunctionCallInfo) -> Materialized {
        // SAFETY: fcinfo is valid (caller); resultinfo is either NULL or a node.
        unsafe {
            let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
            let allowed = if rsinfo.is_null() || (*rsinfo).type_ != pg_sys::NodeTag::T_ReturnSetInfo {
                0
            } else {
                (*rsinfo).allowedModes
            };
            if allowed & (pg_sys::SetFunctionReturnMode::SFRM_Materialize as i32) == 0 {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "set-valued function called in context that cannot accept a set"
                );
            }
            let mut desc: pg_sys::TupleDesc = std::ptr::null_mut();
            if pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut desc)
                != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE
            {
                ereport!(ERROR, PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "return type must be a row type");
            }
            let random = allowed & (pg_sys::SetFunctionReturnMode::SFRM_Materialize_Random as i32) != 0;
            // The set outlives this call: it lives in the query's memory.
            let per_query = (*(*rsinfo).econtext).ecxt_per_query_memory;
            let (store, desc) = PgMemoryContexts::For(per_query).switch_to(|_| {
                let desc = pg_sys::CreateTupleDescCopy(desc);
                (pg_sys::tuplestore_begin_heap(random, false, pg_sys::work_mem), desc)
            });
            (*rsinfo).returnMode = pg_sys::SetFunctionReturnMode::SFRM_Materialize;
            (*rsinfo).setResult = store;
            (*rsinfo).setDesc = desc;
            let columns = (*desc).natts as usize;
            Materialized {
                store,
                desc,
                values: vec![pg_sys::Datum::from(0); columns],
                nulls: vec![false; columns],
            }
        }
    }

    /// Adds a row; `Option::None` is SQL NULL. The values are copied.
    pub fn push(&mut self, row: &[Option<pg_sys::Datum>]) {
        assert_eq!(row.len(), self.values.len(), "row width must match the declared row type");
        for (i, v) in row.iter().enumerate() {
            self.values[i] = v.unwrap_or(pg_sys::Datum::from(0));
            self.nulls[i] = v.is_none();
        }
        // SAFETY: store and desc were set up by begin; the arrays have one entry per column.
        unsafe {
            pg_sys::tuplestore_putvalues(
                self.store,
                self.desc,
                self.values.as_mut_ptr(),
                self.nulls.as_mut_ptr(),
            )
        };
    }
}
