//! The one place courier hooks into transaction ends.
//!
//! PostgreSQL calls registered transaction and subtransaction callbacks at commit, abort and
//! prepare. Several parts of courier keep state that must end with the transaction (counters and
//! wakeups to publish at commit, an announcement to withdraw, a saved setting to restore, a
//! claimed wake slot to release). Each of them describes its reactions as a [`Hooks`] value; the
//! extension's root installs the list of them, in the order they must run, once ([`install`]),
//! and this module registers PostgreSQL's callbacks once per backend and calls the hooks in that
//! order. It imports nothing from the crate, so a subscriber depends on it and never the reverse.
//!
//! Hooks run inside PostgreSQL's commit and abort processing, where an ERROR would be promoted to
//! a PANIC: they must not raise.

use std::cell::Cell;
use std::sync::OnceLock;

use pgrx::pg_sys;

/// How one subscriber reacts to the end of a transaction or subtransaction.
pub struct Hooks {
    /// Before the commit record is written (XACT_EVENT_PRE_COMMIT).
    pub pre_commit: fn(),
    /// After the commit is durable and visible to others (the transaction has left the proc
    /// array).
    pub commit: fn(),
    /// The transaction ended without committing here: it aborted, or it was prepared (a prepared
    /// transaction may commit later, in another backend, so nothing of ours is published).
    pub abort: fn(),
    /// A subtransaction (savepoint) with this id rolled back.
    pub subxact_abort: fn(pg_sys::SubTransactionId),
    /// A subtransaction committed into its parent: (its id, the parent's id).
    pub subxact_commit: fn(pg_sys::SubTransactionId, pg_sys::SubTransactionId),
}

fn nothing() {}
fn nothing_sub(_: pg_sys::SubTransactionId) {}
fn nothing_sub_commit(_: pg_sys::SubTransactionId, _: pg_sys::SubTransactionId) {}

impl Hooks {
    /// No reactions; subscribers fill in the events they care about.
    pub const NONE: Hooks = Hooks {
        pre_commit: nothing,
        commit: nothing,
        abort: nothing,
        subxact_abort: nothing_sub,
        subxact_commit: nothing_sub_commit,
    };
}

static HOOKS: OnceLock<&'static [Hooks]> = OnceLock::new();

/// PostgreSQL's InvalidSubTransactionId.
const NO_SUBXACT: pg_sys::SubTransactionId = 0;

thread_local! {
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// The subtransaction courier itself has open ([`Subtransaction`]), if any.
    static OWN: Cell<pg_sys::SubTransactionId> = const { Cell::new(NO_SUBXACT) };
    /// How many of courier's own subtransactions this transaction committed (they keep their ids
    /// until it ends).
    static KEPT: Cell<u32> = const { Cell::new(0) };
}

/// At most this many of courier's own subtransactions are committed into one transaction
/// ([`Subtransaction::may_keep`]). A backend lists the ids of its committed subtransactions in
/// shared memory only up to 64 (PGPROC_MAX_CACHED_SUBXIDS); past that, every snapshot in the
/// cluster is marked overflowed and visibility checks read pg_subtrans while the transaction
/// lasts. Half is left to the application's own savepoints.
const MAX_KEPT: u32 = 32;

/// Sets the subscribers and their order; called once, from `_PG_init`.
pub fn install(hooks: &'static [Hooks]) {
    // A second load of the library in one process is impossible; ignoring it is harmless.
    let _ = HOOKS.set(hooks);
}

/// Makes sure PostgreSQL calls us at the end of this backend's transactions. Subscribers call it
/// before they first keep state that a transaction end must clear: registering lazily keeps
/// backends that never use courier free of the callbacks.
pub fn ensure_registered() {
    if REGISTERED.get() {
        return;
    }
    // SAFETY: registers process-lifetime callbacks, once per backend.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
    REGISTERED.set(true);
}

fn each(f: impl Fn(&Hooks)) {
    for hooks in HOOKS.get().copied().unwrap_or_default() {
        f(hooks);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT
    ) {
        OWN.set(NO_SUBXACT);
        KEPT.set(0);
    }
    match event {
        XACT_EVENT_PRE_COMMIT => each(|h| (h.pre_commit)()),
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => each(|h| (h.commit)()),
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => each(|h| (h.abort)()),
        _ => {}
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    // Nothing of the subscribers' happens inside courier's own subtransactions (only statements
    // run there), so their ends are not theirs to see: wait.rs would give up a wake claim made
    // outside it, identity.rs would undo a switch made outside it.
    if my_subid == OWN.get() {
        return;
    }
    match event {
        SUBXACT_EVENT_ABORT_SUB => each(|h| (h.subxact_abort)(my_subid)),
        SUBXACT_EVENT_COMMIT_SUB => each(|h| (h.subxact_commit)(my_subid, parent_subid)),
        _ => {}
    }
}

/// A subtransaction courier opens around statements whose row locks it may want to give back:
/// rolling it back releases every lock taken inside it and nothing else (PostgreSQL cannot
/// release one row lock before the transaction ends). storage/groups.rs's lease locks more
/// candidates than it may take, and a lease whose transaction stays open must not keep the rest
/// from other consumers.
///
/// Only statements run inside it: no GUC is set, no SPI connection opened, no subscriber's state
/// changed there (their hooks do not see its end). An ERROR inside it must roll it back before it
/// goes on ([`Subtransaction::run`] does), as PL/pgSQL's exception blocks do: an internal
/// subtransaction left open by an error would leave the session's transaction in a state only
/// ROLLBACK ends.
pub struct Subtransaction {
    context: pg_sys::MemoryContext,
    owner: pg_sys::ResourceOwner,
}

/// How [`Subtransaction::run`] ends the subtransaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Commit it into the transaction: its locks are held until the transaction ends.
    Keep,
    /// Roll it back: its locks are released now.
    Undo,
}

impl Subtransaction {
    /// Whether a subtransaction may still end with [`End::Keep`] in this transaction (see
    /// [`MAX_KEPT`]); one that may not must be rolled back.
    pub fn may_keep() -> bool {
        KEPT.get() < MAX_KEPT
    }

    /// Runs `f` in a new subtransaction and ends it as `f` says; an error inside rolls it back
    /// before it propagates. `f` may say [`End::Keep`] only if [`Self::may_keep`] said so.
    pub fn run<T>(f: impl FnOnce() -> (T, End)) -> T {
        ensure_registered();
        let sub = Subtransaction::begin();
        let (value, end) = pg_sys::PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
            .catch_others(|e| {
                sub.end(End::Undo);
                e.rethrow()
            })
            .catch_rust_panic(|e| {
                sub.end(End::Undo);
                e.rethrow()
            })
            .execute();
        sub.end(end);
        value
    }

    fn begin() -> Subtransaction {
        // SAFETY: called inside a transaction (courier's functions run in one); as PL/pgSQL does,
        // allocation goes on in the caller's memory context, and both it and the resource owner
        // are restored when the subtransaction ends.
        unsafe {
            let context = pg_sys::CurrentMemoryContext;
            let owner = pg_sys::CurrentResourceOwner;
            pg_sys::BeginInternalSubTransaction(std::ptr::null());
            pg_sys::MemoryContextSwitchTo(context);
            OWN.set(pg_sys::GetCurrentSubTransactionId());
            Subtransaction { context, owner }
        }
    }

    fn end(&self, end: End) {
        // SAFETY: the current subtransaction is the one begin() opened: only statements ran
        // inside it, and a statement's executor leaves no subtransaction of its own open.
        unsafe {
            match end {
                End::Keep => {
                    debug_assert!(Self::may_keep(), "too many subtransactions kept");
                    KEPT.set(KEPT.get() + 1);
                    pg_sys::ReleaseCurrentSubTransaction()
                }
                End::Undo => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
            }
            OWN.set(NO_SUBXACT);
            pg_sys::MemoryContextSwitchTo(self.context);
            pg_sys::CurrentResourceOwner = self.owner;
        }
    }
}
