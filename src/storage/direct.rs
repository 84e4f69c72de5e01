//! Enqueue without the executor: new message rows are written the way COPY writes them
//! (`table_multi_insert`: one WAL record per heap page rather than one per row, then
//! `ExecInsertIndexTuples` for every index a new message can enter, and `ExecConstraints`),
//! instead of through an SPI plan for `INSERT`.
//!
//! Why: a single-message enqueue spent more CPU starting and ending the executor for a one-row
//! `INSERT ... VALUES` (plan-cache revalidation, ModifyTable and Result node set-up, projection)
//! than on the heap and index inserts themselves, and a batch paid for `unnest`, a sort and a
//! projection per row (bench/results/design/notes.md has the figures).
//!
//! The statement path stays the reference and the fallback: this path declines (returns `None`)
//! whenever the table is not exactly what it knows how to fill. Every column it does not set must
//! be one a plain INSERT would also leave NULL (nullable, no default, not generated), each column
//! it sets must have the type it expects, and the table must have no triggers, no rules, no row
//! security and not be partitioned. An upgrade that changes the table in any of those ways falls
//! back to the statements instead of writing rows they would not have written.

use std::cell::RefCell;
use std::rc::Rc;

use pgrx::IntoDatum;
use pgrx::pg_sys;

use super::messages::Placement;
use crate::datum::Jsonb;
use crate::relcache;
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
    // Set for a message of a group only (0.2.0 on); an ungrouped one leaves them NULL.
    GroupKey,
    GroupSeq,
    GroupReadyAt,
}

/// The columns a grouped message sets besides [`COLUMNS`]; the grouped path needs all of them.
const GROUP_COLUMNS: [(&str, Column, pg_sys::Oid); 3] = [
    ("group_key", Column::GroupKey, pg_sys::TEXTOID),
    ("group_seq", Column::GroupSeq, pg_sys::INT8OID),
    ("group_ready_at", Column::GroupReadyAt, pg_sys::TIMESTAMPTZOID),
];

impl Column {
    fn grouped_only(self) -> bool {
        matches!(self, Column::GroupKey | Column::GroupSeq | Column::GroupReadyAt)
    }
}

/// The visible_at of a message in a group's sequence, '9999-12-31 00:00:00+00' (storage/groups.rs's
/// parked!), in microseconds since 2000-01-01.
const PARKED: pg_sys::TimestampTz = 252_455_529_600_000_000;

/// A grouped message's place in its group.
#[derive(Clone, Copy)]
pub struct InGroup<'a> {
    pub key: &'a str,
    pub seq: i64,
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

/// What this path knows about courier.message, derived from the table's definition once per
/// catalog epoch (relcache::message_epoch) rather than on every call: reading every attribute's
/// name, opening every index to look at its predicate and building its IndexInfo cost a
/// single-message enqueue more than some of its index work.
struct Table {
    /// Where each attribute's value comes from (`None`: NULL).
    layout: Box<[Option<Column>]>,
    /// The indexes a new message enters, in the order RelationGetIndexList gives them. A partial
    /// index whose predicate requires `IS NOT NULL` of a column this path always leaves NULL
    /// (courier's dead-letter index, `WHERE dead_at IS NOT NULL`) is not among them: no new
    /// message can enter it, so it is neither opened nor locked nor has its predicate compiled.
    indexes: Box<[pg_sys::Oid]>,
    /// The same for a message that joins a group behind others (not its head, which the group
    /// statements write): `None` when the table lacks a group column.
    grouped_indexes: Option<Box<[pg_sys::Oid]>>,
    /// Whether writing a row runs code someone could have added (see [`may_run_added_code`]).
    runs_added_code: bool,
    /// Whether a row needs ExecConstraints: a CHECK constraint, or a NOT NULL constraint on the
    /// one column this path may leave NULL (headers). The others it always fills.
    check_constraints: bool,
}

thread_local! {
    /// courier.message as last derived (None: not a table this path can fill) and the epoch.
    static TABLE: RefCell<Option<(u64, Option<Rc<Table>>)>> = const { RefCell::new(None) };
}

/// What this path knows about the table, or `None` if it cannot fill the table the way the
/// INSERT statement would.
///
/// # Safety
/// `rel` is courier.message, open and locked (so pending invalidations have been processed).
unsafe fn table(rel: pg_sys::Relation) -> Option<Rc<Table>> {
    // SAFETY: `rel` is an open relation (the caller's promise), so its relcache fields are valid.
    let form = unsafe { &*(*rel).rd_rel };
    // trigdesc and rd_rules, not relhastriggers and relhasrules: the flags stay set after the
    // last trigger or rule is dropped (until a vacuum, for triggers; for good, for rules).
    // Plain field reads, so checked on every call.
    // SAFETY: fields of the same open relation.
    let (rules, triggers) = unsafe { ((*rel).rd_rules, (*rel).trigdesc) };
    if form.relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char
        || form.relrowsecurity
        || form.relispartition
        || !rules.is_null()
        || !triggers.is_null()
    {
        return None;
    }
    let epoch = relcache::message_epoch();
    if let Some((at, cached)) = TABLE.with_borrow(|t| t.clone())
        && at == epoch
    {
        return cached;
    }
    // SAFETY: as above; derive only reads the relation and opens its indexes.
    let derived = unsafe { derive(rel) }.map(Rc::new);
    TABLE.with_borrow_mut(|t| *t = Some((epoch, derived.clone())));
    derived
}

/// # Safety
/// As for [`table`].
unsafe fn derive(rel: pg_sys::Relation) -> Option<Table> {
    // SAFETY: `rel` is open and locked (the caller's promise): its descriptor, constraints and
    // index list are valid, and opening its indexes with the lock an INSERT takes is what an
    // INSERT would do.
    unsafe {
        let layout = columns(rel)?;
        let desc = pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att);
        let headers_not_null =
            layout.iter().zip(desc.iter()).any(|(c, att)| *c == Some(Column::Headers) && att.attnotnull);
        let constr = (*(*rel).rd_att).constr;
        let has_check = !constr.is_null() && (*constr).num_check > 0;

        let grouped = GROUP_COLUMNS.iter().all(|(_, c, _)| layout.contains(&Some(*c)));
        let mut indexes = Vec::new();
        let mut grouped_indexes = Vec::new();
        let mut runs_added_code = has_check;
        let list = pg_sys::RelationGetIndexList(rel);
        for oid in pgrx::PgList::<pg_sys::Oid>::from_pg(list).iter_oid() {
            // The lock an INSERT takes on every index; kept to the end of the transaction.
            let index = pg_sys::index_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let info = pg_sys::BuildIndexInfo(index);
            runs_added_code |= may_run_added_code(index, info);
            if !never_entered(info, &layout, |c| !c.grouped_only()) {
                indexes.push(oid);
            }
            if !never_entered(info, &layout, |_| true) {
                grouped_indexes.push(oid);
            }
            pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        pg_sys::list_free(list);
        Some(Table {
            layout: layout.into(),
            indexes: indexes.into(),
            grouped_indexes: grouped.then(|| grouped_indexes.into()),
            runs_added_code,
            check_constraints: has_check || headers_not_null,
        })
    }
}

/// Which column each attribute is, or `None` if an attribute this path does not set could not
/// be left NULL, or a column it sets has another type.
///
/// # Safety
/// `rel` is an open relation.
unsafe fn columns(rel: pg_sys::Relation) -> Option<Vec<Option<Column>>> {
    // PgTupleDesc knows where each version keeps the attributes (PostgreSQL 18 moved them).
    // SAFETY: the descriptor of an open relation (the caller's promise) outlives this call.
    let desc = unsafe { pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att) };
    let mut out = Vec::with_capacity(desc.len());
    let mut seen = 0usize;
    for att in desc.iter() {
        if att.attisdropped {
            out.push(None);
            continue;
        }
        let name = pg_sys::name_data_to_str(&att.attname);
        if let Some(&(_, column, typoid)) = GROUP_COLUMNS.iter().find(|(n, _, _)| *n == name) {
            // Left NULL by an ungrouped message, so it must be nullable without a default like
            // any other column this path does not always set; set only with its expected type.
            if att.attnotnull || att.atthasdef || att.attgenerated != 0 {
                return None;
            }
            out.push((att.atttypid == typoid).then_some(column));
            continue;
        }
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

/// The attribute a partial-index condition tests, and whether it tests `IS NOT NULL`, if it is a
/// plain `column IS [NOT] NULL` test.
///
/// # Safety
/// `node` is a node of an index predicate.
unsafe fn null_test(node: *mut pg_sys::Node) -> Option<(usize, bool)> {
    // SAFETY: `node` is a valid node (the caller's promise); its tag says which struct it is,
    // and a NullTest's argument is a node too.
    unsafe {
        if !pgrx::is_a(node, pg_sys::NodeTag::T_NullTest) {
            return None;
        }
        let test = &*node.cast::<pg_sys::NullTest>();
        if test.argisrow || !pgrx::is_a(test.arg.cast(), pg_sys::NodeTag::T_Var) {
            return None;
        }
        let attno = usize::try_from((*test.arg.cast::<pg_sys::Var>()).varattno).ok()?.checked_sub(1)?;
        Some((attno, test.nulltesttype == pg_sys::NullTestType::IS_NOT_NULL))
    }
}

/// Whether inserting into the index runs code that someone could have added and that could look
/// names up: expressions, a predicate other than `column IS [NOT] NULL` tests, or an access
/// method or operator class that is not built in. (A CHECK constraint on the table counts too;
/// the caller adds that.) courier's own indexes have none of these.
///
/// # Safety
/// `index` is open and `info` its IndexInfo.
unsafe fn may_run_added_code(index: pg_sys::Relation, info: *mut pg_sys::IndexInfo) -> bool {
    let builtin = |oid: pg_sys::Oid| u32::from(oid) < pg_sys::FirstNormalObjectId;
    // SAFETY: an open index and its IndexInfo (the caller's promise): the fields read are valid,
    // rd_opfamily has one entry per key column, and the predicate is a list of nodes.
    unsafe {
        if !(*info).ii_Expressions.is_null() || !builtin((*(*index).rd_rel).relam) {
            return true;
        }
        let keys = (*(*index).rd_index).indnkeyatts as usize;
        if (0..keys).any(|k| !builtin(*(*index).rd_opfamily.add(k))) {
            return true;
        }
        let predicate = pgrx::PgList::<pg_sys::Node>::from_pg((*info).ii_Predicate);
        let plain = predicate.iter_ptr().all(|node| null_test(node).is_some());
        !plain
    }
}

/// Whether no row this path writes (setting the columns `written` says) can satisfy the index's
/// predicate: one of its conditions (all of which must hold) requires `IS NOT NULL` of a column
/// such a row leaves NULL.
///
/// # Safety
/// `info` is an index's IndexInfo.
unsafe fn never_entered(
    info: *mut pg_sys::IndexInfo,
    layout: &[Option<Column>],
    written: impl Fn(Column) -> bool,
) -> bool {
    let left_null = |attno: usize| match layout.get(attno) {
        Some(None) => true,
        Some(Some(c)) => !written(*c),
        None => false,
    };
    // SAFETY: a valid IndexInfo (the caller's promise), whose predicate is a list of nodes.
    unsafe {
        let predicate = pgrx::PgList::<pg_sys::Node>::from_pg((*info).ii_Predicate);
        predicate.iter_ptr().any(|node| matches!(null_test(node), Some((attno, true)) if left_null(attno)))
    }
}

/// Opens the indexes a new message enters, with the lock an INSERT takes, into `rri`: what
/// ExecOpenIndices does, for those indexes only.
///
/// # Safety
/// `rri` is a result relation set up by InitResultRelInfo; the current memory context is the
/// executor state's.
unsafe fn open_indexes(rri: *mut pg_sys::ResultRelInfo, indexes: &[pg_sys::Oid]) {
    let n = indexes.len();
    // SAFETY: `rri` is valid (the caller's promise); the arrays are allocated with n entries in
    // the executor state's context and each entry is written before the count says it exists.
    unsafe {
        (*rri).ri_NumIndices = n as i32;
        if n == 0 {
            return;
        }
        let descs = pg_sys::palloc(n * std::mem::size_of::<pg_sys::Relation>()).cast::<pg_sys::Relation>();
        let infos = pg_sys::palloc(n * std::mem::size_of::<*mut pg_sys::IndexInfo>())
            .cast::<*mut pg_sys::IndexInfo>();
        for (i, &oid) in indexes.iter().enumerate() {
            let index = pg_sys::index_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            *descs.add(i) = index;
            *infos.add(i) = pg_sys::BuildIndexInfo(index);
        }
        (*rri).ri_IndexRelationDescs = descs;
        (*rri).ri_IndexRelationInfo = infos;
    }
}

/// Closes what [`open_indexes`] opened, as ExecCloseIndices does but keeping the locks to the end
/// of the transaction, as the table's is kept: releasing them and taking them again on the next
/// enqueue of the transaction cost two lock-table round trips per index for nothing.
///
/// # Safety
/// `rri`'s indexes were opened by [`open_indexes`] and rows were inserted through them.
unsafe fn close_indexes(rri: *mut pg_sys::ResultRelInfo) {
    // SAFETY: the arrays hold ri_NumIndices open indexes and their IndexInfos (the caller's
    // promise), each closed exactly once here.
    unsafe {
        for i in 0..(*rri).ri_NumIndices as usize {
            let index = *(*rri).ri_IndexRelationDescs.add(i);
            #[cfg(any(feature = "pg17", feature = "pg18"))]
            pg_sys::index_insert_cleanup(index, *(*rri).ri_IndexRelationInfo.add(i));
            pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

unsafe extern "C-unwind" {
    // commands/sequence.h; pgrx generates no binding for it.
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
}

/// The next message id, from courier.message_id_seq (as the INSERT statement's nextval would,
/// permission check included, without going through the SQL-callable function's call frame).
fn next_id(seq: pg_sys::Oid) -> i64 {
    // SAFETY: a PostgreSQL function that either returns a value or raises; the guard turns an
    // ERROR into a Rust panic like pgrx's own bindings do.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| nextval_internal(seq, true)) }
}

/// The executor objects one insert uses, all in the executor state's memory.
struct Writer {
    rel: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    rri: *mut pg_sys::ResultRelInfo,
    /// The memory context that was current before, restored by [`Writer::finish`].
    old_context: pg_sys::MemoryContext,
}

impl Writer {
    /// Sets up an executor state and a result relation for `rel` with the indexes a new message
    /// enters (one of `table`'s lists).
    ///
    /// # Safety
    /// `rel` is courier.message, open with RowExclusiveLock; the indexes are its.
    unsafe fn start(rel: pg_sys::Relation, indexes: &[pg_sys::Oid]) -> Writer {
        // SAFETY: creating executor objects as the executor does for an INSERT; the result
        // relation gets range-table index 0 (no range table, so no permission checks beyond the
        // ones already made: the caller's queue privileges; this runs as the tables' owner).
        unsafe {
            let estate = pg_sys::CreateExecutorState();
            let old_context = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
            (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            let rri =
                pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()).cast::<pg_sys::ResultRelInfo>();
            pg_sys::InitResultRelInfo(rri, rel, 0, std::ptr::null_mut(), 0);
            open_indexes(rri, indexes);
            Writer { rel, estate, rri, old_context }
        }
    }

    /// One slot per message, filled as `table.layout` says, checked if the table has
    /// constraints to check. Returns the slots and the ids they got.
    ///
    /// # Safety
    /// The writer was started for `table`'s relation.
    unsafe fn fill_slots(
        &self,
        table: &Table,
        seq: pg_sys::Oid,
        at: Placement,
        messages: &[NewMessage],
        group: Option<InGroup>,
    ) -> (Vec<*mut pg_sys::TupleTableSlot>, Vec<i64>) {
        // Allocated here, in the executor state's memory, for every row.
        let key = group.and_then(|g| g.key.into_datum());
        let fixed = |column: Column| -> Option<pg_sys::Datum> {
            match column {
                // Parked in its group's sequence; its own ready time is group_ready_at.
                Column::VisibleAt if group.is_some() => Some(pg_sys::Datum::from(PARKED)),
                Column::VisibleAt => Some(pg_sys::Datum::from(at.visible_at)),
                Column::EnqueuedAt => Some(pg_sys::Datum::from(at.now)),
                Column::QueueId => at.queue_id.into_datum(),
                Column::Attempt => 0i32.into_datum(),
                Column::Priority => at.priority.into_datum(),
                Column::GroupKey => key,
                Column::GroupSeq => group.map(|g| pg_sys::Datum::from(g.seq)),
                Column::GroupReadyAt => group.map(|_| pg_sys::Datum::from(at.visible_at)),
                Column::Id | Column::Headers | Column::Payload => None,
            }
        };
        // SAFETY: slots are made from the relation's descriptor (or a copy) and each is filled
        // with one value or NULL per attribute, as tts_values and tts_isnull have room for.
        unsafe {
            // A slot pins its descriptor, which for the relation's own means a resource-owner
            // entry per slot; a batch's slots share an unpinned copy instead.
            let desc = if messages.len() > 1 {
                pg_sys::CreateTupleDescCopy((*self.rel).rd_att)
            } else {
                (*self.rel).rd_att
            };
            let mut ids = Vec::with_capacity(messages.len());
            let mut slots = Vec::with_capacity(messages.len());
            for message in messages {
                let id = next_id(seq);
                let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsVirtual);
                slots.push(slot);
                let values = (*slot).tts_values;
                let nulls = (*slot).tts_isnull;
                for (i, column) in table.layout.iter().enumerate() {
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
                if table.check_constraints {
                    pg_sys::ExecConstraints(self.rri, slot, self.estate);
                }
                ids.push(id);
            }
            (slots, ids)
        }
    }

    /// Writes the rows, then their index entries.
    ///
    /// # Safety
    /// The slots were filled by [`Writer::fill_slots`] of this writer.
    unsafe fn write(&self, slots: &mut [*mut pg_sys::TupleTableSlot]) {
        // SAFETY: inserting filled virtual slots into the open relation with the executor state's
        // command id, then their index entries; each slot then holds its tuple's TID.
        unsafe {
            let cid = (*self.estate).es_output_cid;
            if let [slot] = slots[..] {
                // A single row: heap_insert's record is cheaper to build than a multi-insert one.
                pg_sys::table_tuple_insert(self.rel, slot, cid, 0, std::ptr::null_mut());
            } else {
                // One WAL record per heap page instead of one per row, as COPY does.
                pg_sys::table_multi_insert(
                    self.rel,
                    slots.as_mut_ptr(),
                    slots.len() as i32,
                    cid,
                    0,
                    std::ptr::null_mut(),
                );
            }
            for &slot in slots.iter() {
                insert_index_entries(self.rri, slot, self.estate);
                // Partial-index predicates are evaluated in the per-tuple context.
                let econtext = (*self.estate).es_per_tuple_exprcontext;
                if !econtext.is_null() {
                    pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
                }
            }
        }
    }

    /// Releases the slots and the executor objects, and closes the relation (keeping its lock).
    ///
    /// # Safety
    /// The slots are this writer's; nothing uses them or the writer afterwards.
    unsafe fn finish(self, slots: Vec<*mut pg_sys::TupleTableSlot>) {
        // SAFETY: everything released here was created by this writer, once.
        unsafe {
            pg_sys::MemoryContextSwitchTo(self.old_context);
            for slot in slots {
                pg_sys::ExecDropSingleTupleTableSlot(slot);
            }
            close_indexes(self.rri);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::table_close(self.rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

/// Inserts the messages in order with ids from the message sequence; returns their ids, or
/// `None` (having written nothing) if the table is not one this path can fill.
pub fn insert(at: Placement, messages: &[NewMessage], search_path: &search_path::Pin) -> Option<Vec<i64>> {
    let (relid, seq) = relcache::message_relids()?;
    // SAFETY: the table is opened with the lock an INSERT takes (kept to the end of the
    // transaction, as the executor does) and closed by finish, or here if this path declines; an
    // error on the way releases everything with the transaction.
    unsafe {
        let rel = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let Some(table) = table(rel) else {
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return None;
        };
        Some(write_rows(rel, &table, &table.indexes, seq, at, messages, None, search_path))
    }
}

/// Writes new messages into the open table through the given indexes and closes it (keeping its
/// lock); returns their ids.
///
/// # Safety
/// `rel` is courier.message, open with RowExclusiveLock; `table` was derived from it and
/// `indexes` is one of its lists (the grouped one when `group` is given).
#[allow(clippy::too_many_arguments)]
unsafe fn write_rows(
    rel: pg_sys::Relation,
    table: &Table,
    indexes: &[pg_sys::Oid],
    seq: pg_sys::Oid,
    at: Placement,
    messages: &[NewMessage],
    group: Option<InGroup>,
    search_path: &search_path::Pin,
) -> Vec<i64> {
    // SAFETY: the caller's promise is what Writer's functions need.
    unsafe {
        if table.runs_added_code {
            search_path.ensure();
        }
        let writer = Writer::start(rel, indexes);
        let (mut slots, ids) = writer.fill_slots(table, seq, at, messages, group);
        writer.write(&mut slots);
        writer.finish(slots);
        ids
    }
}

/// ExecInsertIndexTuples for a plain insert (no conflict handling); PostgreSQL 16 added the
/// last argument.
///
/// # Safety
/// `slot` holds a tuple just inserted into `rri`'s relation, whose indexes are open.
unsafe fn insert_index_entries(
    rri: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
) {
    // SAFETY: the caller's promise is ExecInsertIndexTuples' precondition.
    unsafe {
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
}

/// Enqueues one message behind the others of its group without the executor: the group's row
/// is locked (waiting for producers in flight, as the INSERT ... ON CONFLICT DO UPDATE of
/// storage/groups.rs's INSERT_GROUPED does) and its counter advanced, then the message is
/// written as [`insert`] writes one. Returns its id, or `None` having changed nothing, for the
/// statement to do it: the table is not one this path can fill, the group has no row (its first
/// message becomes its head, which the statement writes), or the row changed in a way only the
/// statement handles.
pub fn insert_grouped(
    at: Placement,
    message: NewMessage,
    key: &str,
    search_path: &search_path::Pin,
) -> Option<i64> {
    let (relid, seq) = relcache::message_relids()?;
    let group_relid = relcache::group_relid()?;
    // SAFETY: as in insert(); the group's table is opened and closed by advance_group.
    unsafe {
        let rel = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let table = table(rel);
        let Some((table, indexes)) = table.as_deref().and_then(|t| Some((t, t.grouped_indexes.as_deref()?)))
        else {
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return None;
        };
        let Some(group_seq) = advance_group(group_relid, at.queue_id, key) else {
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return None;
        };
        let group = InGroup { key, seq: group_seq };
        let ids = write_rows(rel, table, indexes, seq, at, &[message], Some(group), search_path);
        Some(ids[0])
    }
}

/// Locks a group's row in courier.message_group until this transaction ends and advances its
/// counter; returns the number the next message gets, or `None` if the group has no row (or its
/// row was deleted while this waited) and nothing was locked or changed.
///
/// The counter is advanced in place (heap_inplace_update, as a sequence is): no new row version,
/// so a busy group's row neither grows a HOT chain to prune nor dirties more of its page than its
/// eight bytes, and an enqueue that rolls back leaves the counter advanced. Numbers only have to
/// grow: a gap is harmless, and the lock, held to commit, keeps the group's producers taking
/// numbers in commit order. Every other writer of the row (the statements that create groups,
/// reserve a batch's numbers or mark a group blocked) locks it first and reads it after, so it
/// sees the counter as advanced. PostgreSQL 17 changed the in-place update's interface: there,
/// and wherever else it is not built, the statement does the work.
///
/// # Safety
/// Called inside a transaction, with an active snapshot (a function call's).
unsafe fn advance_group(group_relid: pg_sys::Oid, queue_id: i32, key: &str) -> Option<i64> {
    #[cfg(not(any(feature = "pg15", feature = "pg16")))]
    {
        let _ = (group_relid, queue_id, key);
        None
    }
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    // SAFETY: the table and its primary key are opened with the lock an UPDATE takes and closed
    // (keeping it) before returning; every scan, slot and tuple made here is released here; the
    // row is updated in place only while this transaction holds its tuple lock.
    unsafe {
        // What this statement's earlier writes did is visible to the scan below (a statement
        // boundary does this between SPI statements).
        pg_sys::CommandCounterIncrement();
        let rel = pg_sys::table_open(group_relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let result = lock_and_advance(rel, queue_id, key);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        if result.is_some() {
            pg_sys::CommandCounterIncrement();
        }
        result
    }
}

/// [`advance_group`]'s work on the open table.
///
/// # Safety
/// `rel` is courier.message_group, open with RowExclusiveLock.
#[cfg(any(feature = "pg15", feature = "pg16"))]
unsafe fn lock_and_advance(rel: pg_sys::Relation, queue_id: i32, key: &str) -> Option<i64> {
    // SAFETY: the caller's promise; see advance_group.
    unsafe {
        let desc = (*rel).rd_att;
        let counter = attribute(desc, "next_seq", pg_sys::INT8OID)?;
        let pkey = pg_sys::RelationGetPrimaryKeyIndex(rel);
        if pkey == pg_sys::InvalidOid {
            return None;
        }
        let index = pg_sys::index_open(pkey, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let key_datum = key.into_datum()?;
        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        let found = find_row(rel, index, queue_id, key_datum, slot);
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        let result = found.and_then(|tid| lock_row(rel, tid, slot)).and_then(|()| {
            let mut is_null = false;
            let next = pg_sys::slot_getattr(slot, counter, &mut is_null);
            if is_null {
                return None;
            }
            let next = next.value() as i64;
            let mut should_free = false;
            let tuple = pg_sys::ExecFetchSlotHeapTuple(slot, true, &mut should_free);
            let mut column = counter;
            let mut value = pg_sys::Datum::from(next + 1);
            let mut null = false;
            let advanced =
                pg_sys::heap_modify_tuple_by_cols(tuple, desc, 1, &mut column, &mut value, &mut null);
            // In place means the same length and header: a row written before a column was added
            // has a shorter one, and is left to the statement (which rewrites it).
            let same_shape = (*advanced).t_len == (*tuple).t_len
                && (*(*advanced).t_data).t_hoff == (*(*tuple).t_data).t_hoff;
            if same_shape {
                pg_sys::heap_inplace_update(rel, advanced);
            }
            pg_sys::heap_freetuple(advanced);
            if should_free {
                pg_sys::heap_freetuple(tuple);
            }
            same_shape.then_some(next)
        });
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        result
    }
}

/// The attribute number of a column of the given type, by name.
///
/// # Safety
/// `desc` is a valid tuple descriptor.
#[cfg(any(feature = "pg15", feature = "pg16"))]
unsafe fn attribute(desc: pg_sys::TupleDesc, name: &str, typoid: pg_sys::Oid) -> Option<i32> {
    // SAFETY: the caller's promise.
    let desc = unsafe { pgrx::PgTupleDesc::from_pg_unchecked(desc) };
    desc.iter()
        .position(|att| {
            !att.attisdropped && pg_sys::name_data_to_str(&att.attname) == name && att.atttypid == typoid
        })
        .map(|i| i as i32 + 1)
}

/// The row of (queue_id, key) by the primary key, as a dirty snapshot sees it: committed, or
/// being written by a transaction in progress, which is waited for (then the search starts over:
/// a rolled-back insert leaves no row). Its TID, or `None` if there is no such row.
///
/// # Safety
/// `rel` and `index` are open; `slot` is made for `rel`.
#[cfg(any(feature = "pg15", feature = "pg16"))]
unsafe fn find_row(
    rel: pg_sys::Relation,
    index: pg_sys::Relation,
    queue_id: i32,
    key: pg_sys::Datum,
    slot: *mut pg_sys::TupleTableSlot,
) -> Option<pg_sys::ItemPointerData> {
    // SAFETY: the caller's promise; scan keys are initialised in full before the scan uses them,
    // and the scan is ended before the snapshot it points to goes out of scope.
    unsafe {
        loop {
            let mut dirty: pg_sys::SnapshotData = std::mem::zeroed();
            dirty.snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
            let mut keys: [pg_sys::ScanKeyData; 2] = std::mem::zeroed();
            pg_sys::ScanKeyEntryInitialize(
                &mut keys[0],
                0,
                1,
                pg_sys::BTEqualStrategyNumber as u16,
                pg_sys::InvalidOid,
                pg_sys::InvalidOid,
                pg_sys::Oid::from(pg_sys::F_INT4EQ),
                pg_sys::Datum::from(queue_id),
            );
            pg_sys::ScanKeyEntryInitialize(
                &mut keys[1],
                0,
                2,
                pg_sys::BTEqualStrategyNumber as u16,
                pg_sys::InvalidOid,
                // The group key column's collation.
                pg_sys::C_COLLATION_OID,
                pg_sys::Oid::from(pg_sys::F_TEXTEQ),
                key,
            );
            let scan = pg_sys::index_beginscan(rel, index, &mut dirty, 2, 0);
            pg_sys::index_rescan(scan, keys.as_mut_ptr(), 2, std::ptr::null_mut(), 0);
            let found = pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot);
            let tid = (*slot).tts_tid;
            pg_sys::index_endscan(scan);
            if !found {
                return None;
            }
            // Inserted by a transaction still in progress: wait for it, and look again.
            if dirty.xmin != pg_sys::InvalidTransactionId {
                let mut waited_for = tid;
                pg_sys::XactLockTableWait(
                    dirty.xmin,
                    rel,
                    &mut waited_for,
                    pg_sys::XLTW_Oper::XLTW_InsertIndex,
                );
                continue;
            }
            return Some(tid);
        }
    }
}

/// Locks the newest version of the row at `tid` for this transaction (waiting for a writer in
/// flight, as UPDATE does) into `slot`; `None` if it was deleted, or anything else an UPDATE
/// would have to handle (the statement path does).
///
/// # Safety
/// `rel` is open; `slot` is made for it; there is an active snapshot.
#[cfg(any(feature = "pg15", feature = "pg16"))]
unsafe fn lock_row(
    rel: pg_sys::Relation,
    mut tid: pg_sys::ItemPointerData,
    slot: *mut pg_sys::TupleTableSlot,
) -> Option<()> {
    // SAFETY: the caller's promise; table_tuple_lock (an inline function in tableam.h) calls the
    // table access method's tuple_lock, which is what this does.
    unsafe {
        let mut failure: pg_sys::TM_FailureData = std::mem::zeroed();
        let lock = (*(*rel).rd_tableam).tuple_lock?;
        let result = lock(
            rel,
            &mut tid,
            pg_sys::GetActiveSnapshot(),
            slot,
            pg_sys::GetCurrentCommandId(false),
            pg_sys::LockTupleMode::LockTupleNoKeyExclusive,
            pg_sys::LockWaitPolicy::LockWaitBlock,
            pg_sys::TUPLE_LOCK_FLAG_FIND_LAST_VERSION as u8,
            &mut failure,
        );
        (result == pg_sys::TM_Result::TM_Ok).then_some(())
    }
}
