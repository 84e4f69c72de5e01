//! Where a courier call runs: a connection or a transaction, from tokio-postgres or from a
//! deadpool-postgres pool.

use std::borrow::Cow;
use std::future::Future;

use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

/// One of courier's statements with the types of its parameters, which are sent with it: an
/// `integer` argument must be an `i32` and an `interval` the binary interval this crate encodes.
#[derive(Debug)]
pub struct Statement {
    pub(crate) sql: Cow<'static, str>,
    pub(crate) types: Cow<'static, [Type]>,
}

/// A connection or transaction a courier call can run on.
///
/// Every function of this crate takes `&impl Executor`, so it runs on the caller's own
/// transaction when given one: an enqueue commits or rolls back with the caller's writes.
/// Implemented for tokio-postgres's [`Client`](tokio_postgres::Client) and
/// [`Transaction`](tokio_postgres::Transaction), where statements are sent with their types in
/// one round trip and nothing is prepared (so it also works behind a transaction-pooling
/// PgBouncer), and for deadpool-postgres's clients and transactions, where each statement is
/// prepared once per connection and kept in the pool's statement cache.
pub trait Executor: Send + Sync {
    /// Runs `statement` with `params` and returns its rows.
    fn query_statement(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send;
}

fn typed<'a>(s: &Statement, params: &[&'a (dyn ToSql + Sync)]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    debug_assert_eq!(s.types.len(), params.len(), "{}", s.sql);
    params.iter().copied().zip(s.types.iter().cloned()).collect()
}

impl Executor for tokio_postgres::Client {
    async fn query_statement(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.query_typed(&statement.sql, &typed(statement, params)).await
    }
}

impl Executor for tokio_postgres::Transaction<'_> {
    async fn query_statement(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.query_typed(&statement.sql, &typed(statement, params)).await
    }
}

/// A prepared statement whose result columns changed since it was prepared (an extension
/// update while the connection lived): prepare it again.
fn is_stale_plan(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| db.code().code() == "0A000" && db.message().contains("cached plan"))
}

impl Executor for deadpool_postgres::ClientWrapper {
    async fn query_statement(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let prepared = self.prepare_typed_cached(&statement.sql, &statement.types).await?;
        match self.query(&prepared, params).await {
            Err(e) if is_stale_plan(&e) => {
                self.statement_cache.remove(&statement.sql, &statement.types);
                let prepared = self.prepare_typed_cached(&statement.sql, &statement.types).await?;
                self.query(&prepared, params).await
            }
            r => r,
        }
    }
}

impl Executor for deadpool_postgres::Client {
    async fn query_statement(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let wrapper: &deadpool_postgres::ClientWrapper = self;
        wrapper.query_statement(statement, params).await
    }
}

impl Executor for deadpool_postgres::Transaction<'_> {
    async fn query_statement(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let prepared = self.prepare_typed_cached(&statement.sql, &statement.types).await?;
        self.query(&prepared, params).await
    }
}
