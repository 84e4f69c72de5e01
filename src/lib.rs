//! courier: durable, at-least-once message queues inside PostgreSQL.
//!
//! This file only wires modules together. The SQL API is defined by the `#[pg_extern]` functions
//! in the modules below plus `sql/api.sql`; the tables by `sql/schema.sql`; everything that does
//! not need PostgreSQL lives in the `courier-core` crate.

mod access;
mod ack;
mod admin;
mod announce;
mod args;
mod call;
mod datum;
mod diagnostics;
mod dlq;
mod durability;
mod effects;
mod enqueue;
mod errors;
mod events;
mod floor;
mod grants;
mod groups;
mod identity;
mod lease;
mod pg;
mod planguard;
mod queues;
mod redrive;
mod relcache;
mod search_path;
mod settings;
mod shmem;
mod srf;
mod standby;
mod stats;
mod storage;
mod sweep;
mod vacuum;
mod wait;
mod xact;

#[cfg(feature = "pg13")]
compile_error!("courier supports PostgreSQL 14 and later");

pgrx::pg_module_magic!();

pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!("../sql/api.sql", name = "api", finalize);

/// Who reacts to the end of a transaction, in this order (xact.rs calls them):
///
/// 1. durability: restores `synchronous_commit` right after the commit record it applied to, before
///    anything else runs in the backend.
/// 2. announce: withdraws this transaction's announcement of a write into a ready range; at
///    commit the transaction has already left the proc array, so a floor learned from now on sees
///    its rows in its snapshot instead.
/// 3. identity: after an abort, forgets the caller an unwound call did not get to restore.
/// 4. wait: releases a wake slot claimed by a wait that an error cut short.
/// 5. events: writes the committed transaction's event lines to the server log.
/// 6. effects: publishes the committed counters, forgets the ready floors of queues whose leases
///    were shortened, and wakes waiting consumers. Last, because it is the one that makes other
///    backends act: by then this backend holds no announcement or claim of its own, and a waiter
///    it wakes finds the floors already invalidated (effects.rs orders those two within itself).
///
/// None of them reads another's state, and none may raise (an ERROR there becomes a PANIC).
static XACT_HOOKS: [xact::Hooks; 6] =
    [durability::HOOKS, announce::HOOKS, identity::HOOKS, wait::HOOKS, events::HOOKS, effects::HOOKS];

#[pgrx::pg_guard]
#[allow(non_snake_case)]
pub extern "C-unwind" fn _PG_init() {
    settings::init();
    xact::install(&XACT_HOOKS);
    planguard::init();
    // Shared memory exists only when preloaded; without it courier runs with counters off.
    // SAFETY: reading a postmaster global during library load.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        shmem::init();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn enqueue_lease_ack_round_trip() {
        Spi::run("SELECT courier.create_queue('unit')").unwrap();
        let id = Spi::get_one::<i64>("SELECT courier.enqueue('unit', '{\"n\": 1}')").unwrap().unwrap();
        let (leased, attempt) =
            Spi::get_two::<i64, i32>("SELECT id, attempt FROM courier.lease('unit')").unwrap();
        assert_eq!(leased, Some(id));
        assert_eq!(attempt, Some(1));
    }

    #[pg_test]
    fn receipt_decodes_to_the_leased_message() {
        Spi::run("SELECT courier.create_queue('unit_receipt')").unwrap();
        Spi::run("SELECT courier.enqueue('unit_receipt', '1')").unwrap();
        let (id, receipt) =
            Spi::get_two::<i64, pgrx::Uuid>("SELECT id, receipt FROM courier.lease('unit_receipt')").unwrap();
        let bytes: &[u8; 16] = &receipt.unwrap();
        let decoded = courier_core::receipt::Receipt::from_bytes(bytes).unwrap();
        assert_eq!(Some(decoded.message_id), id);
        let token = Spi::get_one_with_args::<i64>(
            "SELECT lease_token FROM courier.message WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(token, Some(decoded.token as i64));
    }

    #[pg_test]
    fn strict_failure_leaves_a_report_that_is_consumed_once() {
        Spi::run("SELECT courier.create_queue('unit_strict')").unwrap();
        Spi::run("SELECT courier.enqueue('unit_strict', '1')").unwrap();
        let receipt =
            Spi::get_one::<pgrx::Uuid>("SELECT receipt FROM courier.lease('unit_strict')").unwrap().unwrap();
        Spi::run_with_args("SELECT courier.ack($1)", &[receipt.into()]).unwrap();
        // The internal function reports strict failure as NULL and leaves the reason behind.
        let outcome =
            Spi::get_one_with_args::<bool>("SELECT courier._ack($1, true)", &[receipt.into()]).unwrap();
        assert_eq!(outcome, None);
        let report = Spi::get_one::<Vec<String>>("SELECT courier._lease_lost_report()").unwrap().unwrap();
        assert_eq!(report[0], "receipt does not hold a lease");
        assert!(report[1].contains(&receipt.to_string()), "{}", report[1]);
        let again = Spi::get_one::<Vec<String>>("SELECT courier._lease_lost_report()").unwrap().unwrap();
        assert!(!again[1].contains(&receipt.to_string()));
    }

    #[pg_test]
    fn lease_returns_rows_in_ready_order() {
        Spi::run("SELECT courier.create_queue('unit_order')").unwrap();
        Spi::run("SELECT courier.enqueue_batch('unit_order', ARRAY['1','2','3','4']::jsonb[])").unwrap();
        // Message 2 is nacked after the others were enqueued, so it becomes ready last.
        Spi::run("SELECT courier.nack(receipt, retry_in => '0') FROM courier.lease('unit_order', 2) WHERE payload = '2'")
            .unwrap();
        let order = Spi::get_one::<Vec<String>>(
            "SELECT array_agg(payload::text) FROM courier.lease('unit_order', 10)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(order, vec!["3", "4", "2"]);
    }

    /// create_queue's SQL argument defaults (admin.rs) and QueueSettings::default() describe
    /// the same queue: what a queue created with no settings stores is the Rust default.
    #[pg_test]
    fn create_queue_defaults_are_the_rust_defaults() {
        Spi::run("SELECT courier.create_queue('unit_defaults')").unwrap();
        let q = crate::storage::with(|s| s.lookup_queue("unit_defaults", false)).unwrap();
        assert_eq!(q.settings, courier_core::policy::QueueSettings::default());
        assert!(!q.notify);
        assert!(q.dead_letter_queue.is_none());
        assert_eq!(q.priorities, 0..=0);
    }

    /// A grouped lease that may take several messages of a group locks its candidates in a
    /// subtransaction (storage/lease.rs); those it commits keep their ids until the transaction
    /// ends, listed in the backend's PGPROC only up to 64. A hundred leases in one transaction
    /// must not overflow that list (xact.rs's MAX_KEPT): with every subtransaction kept, this
    /// test fails. (`group_batch => 2` takes that path; each group holds one message.)
    #[pg_test]
    fn grouped_leases_keep_few_subtransactions() {
        Spi::run("SELECT courier.create_queue('unit_subxacts')").unwrap();
        Spi::run(
            "SELECT courier.enqueue_batch('unit_subxacts', array_fill('{}'::jsonb, ARRAY[100]), \
             group_keys => (SELECT array_agg('k' || i) FROM generate_series(1, 100) i))",
        )
        .unwrap();
        let leased = Spi::get_one::<i64>(
            "SELECT count(*) FROM generate_series(1, 100) i, \
             LATERAL courier.lease('unit_subxacts', 1 + 0 * i, group_batch => 2)",
        )
        .unwrap();
        assert_eq!(leased, Some(100));
        // SAFETY: MyProc is this backend's own PGPROC, valid for the backend's life.
        let (count, overflowed) =
            unsafe { ((*pg_sys::MyProc).subxidStatus.count, (*pg_sys::MyProc).subxidStatus.overflowed) };
        assert!(!overflowed, "the backend's subtransaction id cache overflowed");
        assert!(count > 0 && count <= 32, "{count} subtransaction ids kept");
    }

    /// A lease of one message per group from a level with no ungrouped message ready locks only
    /// the heads it takes (PICK_HEADS), so it opens no subtransaction at all; leases that mix in
    /// ungrouped messages still weigh them (the same queue, second half).
    #[pg_test]
    fn heads_only_leases_open_no_subtransaction() {
        Spi::run("SELECT courier.create_queue('unit_heads')").unwrap();
        Spi::run(
            "SELECT courier.enqueue_batch('unit_heads', array_fill('{}'::jsonb, ARRAY[50]), \
             group_keys => (SELECT array_agg('k' || i) FROM generate_series(1, 50) i))",
        )
        .unwrap();
        let leased = Spi::get_one::<i64>(
            "SELECT count(*) FROM generate_series(1, 50) i, LATERAL courier.lease('unit_heads', 1 + 0 * i)",
        )
        .unwrap();
        assert_eq!(leased, Some(50));
        // SAFETY: MyProc is this backend's own PGPROC, valid for the backend's life.
        let count = unsafe { (*pg_sys::MyProc).subxidStatus.count };
        assert_eq!(count, 0, "heads-only leases assigned subtransaction ids");
        Spi::run(
            "SELECT courier.enqueue_batch('unit_heads', array_fill('{}'::jsonb, ARRAY[4]), \
             group_keys => ARRAY['a', NULL, 'b', NULL])",
        )
        .unwrap();
        let kinds = Spi::get_one::<String>(
            "SELECT string_agg(coalesce(group_key, '-'), ',' ORDER BY i) \
             FROM generate_series(1, 4) i, LATERAL courier.lease('unit_heads', 1 + 0 * i)",
        )
        .unwrap();
        assert_eq!(kinds.as_deref(), Some("a,-,b,-"), "serving order across grouped and ungrouped");
    }

    #[pg_test(error = "batch_size must be between 1 and 1000, not 0")]
    fn bad_batch_size_is_an_error() {
        Spi::run("SELECT courier.create_queue('unit_bad')").unwrap();
        Spi::run("SELECT courier.lease('unit_bad', 0)").unwrap();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
