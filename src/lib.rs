//! courier: durable, at-least-once message queues inside PostgreSQL.
//!
//! This file only wires modules together. The SQL API is defined by the `#[pg_extern]` functions
//! in the modules below plus `sql/api.sql`; the tables by `sql/schema.sql`; everything that does
//! not need PostgreSQL lives in the `courier-core` crate.

mod ack;
mod catalog;
mod datum;
mod enqueue;
mod errors;
mod lease;
mod settings;
mod storage;

pgrx::pg_module_magic!();

pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!("../sql/api.sql", name = "api", finalize);

#[pgrx::pg_guard]
#[allow(non_snake_case)]
pub extern "C-unwind" fn _PG_init() {
    settings::init();
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
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
