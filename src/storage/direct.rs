//! Enqueue without the executor: new message rows are written the way COPY writes them
//! (`table_multi_insert`: one WAL record per heap page rather than one per row, then
//! `ExecInsertIndexTuples` for every index, partial ones included, and `ExecConstraints`),
//! instead of through an SPI plan for `INSERT`.
//!
//! Why: a single-message enqueue spent more CPU starting and ending the executor for a one-row
//! `INSERT ... VALUES` (plan-cache revalidation, ModifyTable and Result node set-up, projection)
//! than on the heap and index inserts themselves, and a batch paid for `unnest`, a sort and a
//! projection per row. Measured on one client with `synchronous_commit = off`: a batch of 100
//! took 0.52-0.62 ms instead of 0.62-0.85 ms; see bench/results for the throughput.
//!
//! The statement path stays the reference and the fallback: this path declines (returns `None`)
//! whenever the table is not exactly what it knows how to fill. Every column it does not set must
//! be one a plain INSERT would also leave NULL (nullable, no default, not generated), each column
//! it sets must have the type it expects, and the table must have no triggers, no rules, no row
//! security and not be partitioned. An upgrade that changes the table in any of those ways falls
//! back to the statements instead of writing rows they would not have written.

// On PostgreSQL 13 only the fallback is compiled in.
#![cfg_attr(feature = "pg13", allow(dead_code))]

use pgrx::pg_sys;
use pgrx::IntoDatum;

use super::Placement;
use crate::catalog;
use crate::datum::Jsonb;
use crate::search_path;

/// The columns an enqueue sets; every other column is left NULL.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Id,
    VisibleAt,
    EnqueuedAt,
    QueueId,
    Attempt,
    Priority,
    Headers,
    Payload,
}

const COLUMNS: [(&str, Column, pg_sys::Oid); 8] = [
    ("id", Column::Id, pg_sys::INT8OID),
    ("visible_at", Column::VisibleAt, pg_sys::TIMESTAMPTZOID),
    ("enqueued_at", Column::EnqueuedAt, pg_sys::TIMESTAMPTZOID),
    ("queue_id", Column::QueueId, pg_sys::INT4OID),
    ("attempt", Column::Attempt, pg_sys::INT4OID),
    ("priority", Column::Priority, pg_sys::INT2OID),
    ("headers", Column::Headers, pg_sys::JSONBOID),
    ("payload", Column::Payload, pg_sys::JSONBOID),
];

/// One new message.
#[derive(Clone, Copy)]
pub struct NewMessage {
    pub headers: Option<Jsonb>,
    pub payload: Jsonb,
}

/// Where each attribute's value comes from (`None`: NULL), or `None` if this path cannot fill
/// the table the way the INSERT statement would.
///
/// # Safety
/// `rel` is an open relation.
unsafe fn layout(rel: pg_sys::Relation) -> Option<Vec<Option<Column>>> {
    let form = &*(*rel).rd_rel;
    // trigdesc and rd_rules, not relhastriggers and relhasrules: the flags stay set after the
    // last trigger or rule is dropped (until a vacuum, for triggers; for good, for rules).
    if form.relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char
        || form.relrowsecurity
        || form.relispartition
        || !(*rel).rd_rules.is_null()
        || !(*rel).trigdesc.is_null()
    {
        return None;
    }
    // PgTupleDesc knows where each version keeps the attributes (PostgreSQL 18 moved them).
    let desc = pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att);
    let mut out = Vec::with_capacity(desc.len());
    let mut seen = 0usize;
    for att in desc.iter() {
        if att.attisdropped {
            out.push(None);
            continue;
        }
        let name = pg_sys::name_data_to_str(&att.attname);
        match COLUMNS.iter().find(|(n, _, _)| *n == name) {
            Some(&(_, column, typoid)) => {
                if att.atttypid != typoid || att.attgenerated != 0 {
                    return None;
                }
                seen += 1;
                out.push(Some(column));
            }
            None => {
                if att.attnotnull || att.atthasdef || att.attgenerated != 0 {
                    return None;
                }
                out.push(None);
            }
        }
    }
    (seen == COLUMNS.len()).then_some(out)
}

/// Whether writing a row runs code that someone could have added to the table and that could
/// look names up: a CHECK constraint, or an index with expressions, with a predicate other than
/// `column IS [NOT] NULL` tests, or with an access method or operator class that is not built in.
/// courier's own table has none of these (its one partial index is `WHERE dead_at IS NOT NULL`).
///
/// # Safety
/// `rel` is open and `rri` is its result relation with its indexes open.
unsafe fn may_run_added_code(rel: pg_sys::Relation, rri: *mut pg_sys::ResultRelInfo) -> bool {
    let builtin = |oid: pg_sys::Oid| u32::from(oid) < pg_sys::FirstNormalObjectId;
    let constr = (*(*rel).rd_att).constr;
    if !constr.is_null() && (*constr).num_check > 0 {
        return true;
    }
    for i in 0..(*rri).ri_NumIndices as usize {
        let index = *(*rri).ri_IndexRelationDescs.add(i);
        let info = *(*rri).ri_IndexRelationInfo.add(i);
        if !(*info).ii_Expressions.is_null() || !builtin((*(*index).rd_rel).relam) {
            return true;
        }
        let keys = (*(*index).rd_index).indnkeyatts as usize;
        if (0..keys).any(|k| !builtin(*(*index).rd_opfamily.add(k))) {
            return true;
        }
        let predicate = pgrx::PgList::<pg_sys::Node>::from_pg((*info).ii_Predicate);
        let plain_null_test = |node: *mut pg_sys::Node| {
            pgrx::is_a(node, pg_sys::NodeTag::T_NullTest)
                && pgrx::is_a((*node.cast::<pg_sys::NullTest>()).arg.cast(), pg_sys::NodeTag::T_Var)
        };
        if !predicate.iter_ptr().all(plain_null_test) {
            return true;
        }
    }
    false
}

/// The next message id, from courier.message_id_seq (as the INSERT statement's nextval would).
fn next_id(seq: pg_sys::Oid) -> i64 {
    // SAFETY: nextval_oid takes the sequence's OID and checks the current role's rights on it.
    unsafe { pgrx::direct_function_call::<i64>(|fcinfo| pg_sys::nextval_oid(fcinfo), &[seq.into_datum()]) }
        .unwrap_or_else(|| pgrx::error!("courier: nextval returned NULL"))
}

/// Inserts the messages in order with ids from the message sequence; returns their ids, or
/// `None` (having written nothing) if the table is not one this path can fill.
#[cfg(not(feature = "pg13"))]
pub fn insert(at: Placement, messages: &[NewMessage], search_path: &search_path::Pin) -> Option<Vec<i64>> {
    // SAFETY: the table is opened with the lock an INSERT takes (kept to the end of the
    // transaction, as the executor does); every executor object is created here, in the executor
    // state's memory, used on this relation only and released before returning (an error on the
    // way releases them with the transaction).
    unsafe {
        let (relid, seq) = catalog::message_relids()?;
        let rel = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let Some(layout) = layout(rel) else {
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return None;
        };

        let estate = pg_sys::CreateExecutorState();
        let old = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
        let cid = pg_sys::GetCurrentCommandId(true);
        (*estate).es_output_cid = cid;
        let rri =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()).cast::<pg_sys::ResultRelInfo>();
        // Range-table index 0: no range table, so no permission checks beyond the ones already
        // made (the caller's queue privileges; this runs as the tables' owner).
        pg_sys::InitResultRelInfo(rri, rel, 0, std::ptr::null_mut(), 0);
        pg_sys::ExecOpenIndices(rri, false);
        if may_run_added_code(rel, rri) {
            search_path.ensure();
        }

        let fixed = |column: Column| -> Option<pg_sys::Datum> {
            match column {
                Column::VisibleAt => Some(pg_sys::Datum::from(at.visible_at)),
                Column::EnqueuedAt => Some(pg_sys::Datum::from(at.now)),
                Column::QueueId => at.queue_id.into_datum(),
                Column::Attempt => 0i32.into_datum(),
                Column::Priority => at.priority.into_datum(),
                Column::Id | Column::Headers | Column::Payload => None,
            }
        };
        let check_constraints = !(*(*rel).rd_att).constr.is_null();
        let mut ids = Vec::with_capacity(messages.len());
        let mut slots = Vec::with_capacity(messages.len());
        for message in messages {
            let id = next_id(seq);
            let slot = pg_sys::MakeSingleTupleTableSlot((*rel).rd_att, &pg_sys::TTSOpsVirtual);
            slots.push(slot);
            let values = (*slot).tts_values;
            let nulls = (*slot).tts_isnull;
            for (i, column) in layout.iter().enumerate() {
                let value = match column {
                    None => None,
                    Some(Column::Id) => id.into_datum(),
                    Some(Column::Headers) => message.headers.and_then(IntoDatum::into_datum),
                    Some(Column::Payload) => message.payload.into_datum(),
                    Some(c) => fixed(*c),
                };
                *values.add(i) = value.unwrap_or(pg_sys::Datum::from(0));
                *nulls.add(i) = value.is_none();
            }
            pg_sys::ExecStoreVirtualTuple(slot);
            if check_constraints {
                pg_sys::ExecConstraints(rri, slot, estate);
            }
            ids.push(id);
        }
        // One WAL record per heap page instead of one per row, as COPY does; then the index
        // entries, each pointing at the TID the heap insert put in its slot.
        pg_sys::table_multi_insert(rel, slots.as_mut_ptr(), slots.len() as i32, cid, 0, std::ptr::null_mut());
        for &slot in &slots {
            insert_index_entries(rri, slot, estate);
            // Partial-index predicates are evaluated in the per-tuple context.
            let econtext = (*estate).es_per_tuple_exprcontext;
            if !econtext.is_null() {
                pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
            }
        }
        pg_sys::MemoryContextSwitchTo(old);

        for slot in slots {
            pg_sys::ExecDropSingleTupleTableSlot(slot);
        }
        pg_sys::ExecCloseIndices(rri);
        pg_sys::FreeExecutorState(estate);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        Some(ids)
    }
}

/// ExecInsertIndexTuples for a plain insert (no conflict handling); PostgreSQL 16 added the
/// last argument.
///
/// # Safety
/// `slot` holds a tuple just inserted into `rri`'s relation, whose indexes are open.
#[cfg(not(feature = "pg13"))]
unsafe fn insert_index_entries(
    rri: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
) {
    pg_sys::ExecInsertIndexTuples(
        rri,
        slot,
        estate,
        false,
        false,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
        false,
    );
}

/// PostgreSQL 13's executor finds the result relation in the EState (ExecInsertIndexTuples takes
/// no ResultRelInfo there); the statements do the work.
#[cfg(feature = "pg13")]
pub fn insert(_at: Placement, _messages: &[NewMessage], _search_path: &search_path::Pin) -> Option<Vec<i64>> {
    None
}
