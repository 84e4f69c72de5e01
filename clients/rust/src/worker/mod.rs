//! The worker: leases messages from one queue and runs a handler for each, with a timeout, a
//! heartbeat, retries, graceful shutdown and reconnection.

mod handler;
mod metrics;
mod slot;

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use handler::{BoxFuture, FailureKind, Handler, HandlerError, Job, Transaction, TxHandler};
pub use metrics::{Metrics, MetricsSnapshot};

use crate::error::{Error, Result};
use crate::types::Privilege;
use handler::{ErasedHandler, ErasedTxHandler};

/// The longest lease courier grants (`visibility_timeout`, at most 12 hours).
const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// Configuration of a [`Worker`], checked when it is built.
#[derive(Clone, Debug)]
struct Config {
    queue: String,
    concurrency: usize,
    batch_size: i32,
    group_batch: i32,
    visibility_timeout: Duration,
    wait: Duration,
    handler_timeout: Duration,
    heartbeat: bool,
    grace_period: Duration,
    handle_signals: bool,
    reconnect_min: Duration,
    reconnect_max: Duration,
    io_timeout: Duration,
}

/// Builds a [`Worker`]: `Worker::builder(pool, "emails").concurrency(8).build(handler)`.
///
/// Defaults: concurrency 4, batch size 1, visibility timeout 30 s, long-poll wait 10 s,
/// handler timeout 20 s, heartbeat on, grace period 20 s, SIGTERM/SIGINT handled.
pub struct WorkerBuilder<T> {
    pool: Pool,
    config: Config,
    shutdown: Option<CancellationToken>,
    _payload: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + Send + 'static> WorkerBuilder<T> {
    /// How many handlers run at once. Each runs on its own connection (a waiting lease holds
    /// one), so the pool needs `concurrency + 1` connections: one more for heartbeats and for
    /// cancelling waiting leases at shutdown.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }

    /// How many messages each of the `concurrency` loops leases at a time (1 to 1000). Their
    /// handlers run one after another and the successful ones are acked together; a worker
    /// holds at most `concurrency × batch_size` leases.
    pub fn batch_size(mut self, n: i32) -> Self {
        self.config.batch_size = n;
        self
    }

    /// At most this many consecutive messages of one message group in a lease (`group_batch`,
    /// default 1). A group's messages in a batch run in order, one after another; after one
    /// that does not succeed, the rest of its group in that batch is left alone (its nack
    /// gives them back too), so the group's order holds.
    pub fn group_batch(mut self, n: i32) -> Self {
        self.config.group_batch = n;
        self
    }

    /// The lease the worker asks for (`lease(..., visibility_timeout => ...)`), and what each
    /// heartbeat extends it to.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.config.visibility_timeout = d;
        self
    }

    /// How long a lease waits inside the server for a message when the queue is empty (the
    /// long poll; at most the server's `courier.max_wait`, 30 s by default).
    pub fn wait(mut self, d: Duration) -> Self {
        self.config.wait = d;
        self
    }

    /// The hard limit on one handler run: a handler still running then is cancelled and its
    /// message nacked with `error => 'timeout after ...'`. Without heartbeats it must be below
    /// the visibility timeout; with them (the default), it may be longer, since the heartbeat
    /// keeps the lease, and a handler is also cancelled the moment its lease can no longer be
    /// confirmed.
    pub fn handler_timeout(mut self, d: Duration) -> Self {
        self.config.handler_timeout = d;
        self
    }

    /// Whether to extend leases while handlers run (every third of the visibility timeout).
    pub fn heartbeat(mut self, on: bool) -> Self {
        self.config.heartbeat = on;
        self
    }

    /// How long running handlers may go on after a shutdown begins, before they are cancelled
    /// and their messages given back with `retry_in => 0`.
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.config.grace_period = d;
        self
    }

    /// Whether the worker shuts down gracefully on SIGTERM or SIGINT, and at once on a second
    /// one (default true). Turn it off when the application handles signals itself and calls
    /// [`ShutdownHandle`] or cancels [`WorkerBuilder::shutdown_on`]'s token.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.config.handle_signals = on;
        self
    }

    /// A token whose cancellation starts a graceful shutdown.
    pub fn shutdown_on(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// First and longest pause between attempts to reconnect (default 100 ms and 10 s,
    /// doubling, with jitter).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.reconnect_min = min;
        self.config.reconnect_max = max;
        self
    }

    fn check(&self) -> Result<()> {
        let c = &self.config;
        let bad = |m: String| Err(Error::Config(m));
        if c.queue.is_empty() {
            return bad("the queue name must not be empty".into());
        }
        if c.concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        if !(1..=1000).contains(&c.batch_size) {
            return bad(format!("batch_size must be between 1 and 1000, not {}", c.batch_size));
        }
        if !(1..=c.batch_size).contains(&c.group_batch) {
            return bad(format!(
                "group_batch must be between 1 and batch_size ({}), not {}",
                c.batch_size, c.group_batch
            ));
        }
        if c.visibility_timeout.is_zero() || c.visibility_timeout > MAX_VISIBILITY_TIMEOUT {
            return bad(format!(
                "visibility_timeout must be more than 0 and at most 12 hours, not {:?}",
                c.visibility_timeout
            ));
        }
        if c.visibility_timeout < Duration::from_millis(30) {
            return bad(format!(
                "visibility_timeout of {:?} leaves no time for a heartbeat round trip",
                c.visibility_timeout
            ));
        }
        if c.handler_timeout.is_zero() {
            return bad("handler_timeout must be more than 0".into());
        }
        if !c.heartbeat && c.handler_timeout >= c.visibility_timeout {
            return bad(format!(
                "handler_timeout ({:?}) must be below visibility_timeout ({:?}) without heartbeats: \
                 a handler would still run when its message is leased to someone else",
                c.handler_timeout, c.visibility_timeout
            ));
        }
        if c.reconnect_min.is_zero() || c.reconnect_max < c.reconnect_min {
            return bad("reconnect backoff must be more than 0, its maximum at least its minimum".into());
        }
        let size = self.pool.status().max_size;
        if size < c.concurrency + 1 {
            return bad(format!(
                "the pool has {size} connections; concurrency {} needs {}",
                c.concurrency,
                c.concurrency + 1
            ));
        }
        Ok(())
    }

    fn finish(self, mode: Mode<T>) -> Result<Worker<T>> {
        self.check()?;
        Ok(Worker {
            shared: Arc::new(Shared {
                pool: self.pool,
                config: self.config,
                mode,
                metrics: Arc::new(Metrics::default()),
                stop: CancellationToken::new(),
                grace_over: CancellationToken::new(),
                immediate: CancellationToken::new(),
                waiting: Mutex::new(Vec::new()),
            }),
            shutdown: self.shutdown,
        })
    }

    /// An at-least-once worker: `handler` runs for each message, which is acked when it
    /// returns `Ok`.
    pub fn build(self, handler: impl Handler<T>) -> Result<Worker<T>> {
        self.finish(Mode::Plain(Arc::new(handler)))
    }

    /// An exactly-once worker: `handler` runs in a transaction in which the worker then acks
    /// the message (strictly) and commits; a lost lease rolls the handler's writes back.
    ///
    /// The handler is a closure `|tx, job| Box::pin(async move { ... })` (see
    /// [`WorkerBuilder::build_exactly_once_with`] for a type implementing [`TxHandler`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use courier_client::Worker;
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pg: tokio_postgres::Config = std::env::var("COURIER_TEST_URL")?.parse()?;
    /// # let pool = deadpool_postgres::Pool::builder(deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls)).max_size(3).build()?;
    /// # let c = pool.get().await?;
    /// # courier_client::drop_queue_if_exists(&c, "doc.ledger").await?;
    /// # courier_client::create_queue(&c, "doc.ledger", &Default::default()).await?;
    /// # c.batch_execute("DROP TABLE IF EXISTS doc_ledger; CREATE TABLE doc_ledger (payment int8 PRIMARY KEY, cents int8)").await?;
    /// # courier_client::enqueue(&c, "doc.ledger", &serde_json::json!({"payment": 7, "cents": 1250}), &Default::default()).await?;
    /// # drop(c);
    /// #[derive(serde::Deserialize)]
    /// struct Payment { payment: i64, cents: i64 }
    ///
    /// let worker = Worker::<Payment>::builder(pool.clone(), "doc.ledger")
    ///     .concurrency(2)
    ///     .build_exactly_once(|tx, job| Box::pin(async move {
    ///         let p = job.payload();
    ///         // Committed together with the ack, or rolled back with it.
    ///         tx.execute("INSERT INTO doc_ledger VALUES ($1, $2)", &[&p.payment, &p.cents]).await?;
    ///         Ok(())
    ///     }))?;
    /// # let metrics = worker.metrics();
    /// # let stop = worker.shutdown_handle();
    /// # let running = tokio::spawn(worker.run());
    /// # while metrics.snapshot().processed < 1 { tokio::time::sleep(Duration::from_millis(10)).await; }
    /// # stop.shutdown();
    /// # running.await??;
    /// # let n: i64 = pool.get().await?.query_one("SELECT count(*) FROM doc_ledger", &[]).await?.get(0);
    /// # assert_eq!(n, 1);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
    /// ```
    pub fn build_exactly_once<F>(self, handler: F) -> Result<Worker<T>>
    where
        F: for<'a> Fn(&'a Transaction<'a>, Job<T>) -> BoxFuture<'a, Result<(), HandlerError>>
            + Send
            + Sync
            + 'static,
    {
        self.finish(Mode::Tx(Arc::new(handler)))
    }

    /// [`WorkerBuilder::build_exactly_once`] with a handler type of your own.
    pub fn build_exactly_once_with(self, handler: impl TxHandler<T>) -> Result<Worker<T>> {
        self.finish(Mode::Tx(Arc::new(handler)))
    }
}

pub(crate) enum Mode<T> {
    Plain(Arc<dyn ErasedHandler<T>>),
    Tx(Arc<dyn ErasedTxHandler<T>>),
}

pub(crate) struct Shared<T> {
    pool: Pool,
    config: Config,
    mode: Mode<T>,
    metrics: Arc<Metrics>,
    /// Graceful shutdown began: lease nothing more.
    stop: CancellationToken,
    /// The grace period is over: cancel running handlers.
    grace_over: CancellationToken,
    /// Stop now, like a crash: nothing more is sent.
    immediate: CancellationToken,
    /// Backend pid of each loop's connection while it waits in a lease, to cancel the wait at
    /// shutdown.
    waiting: Mutex<Vec<Option<i32>>>,
}

/// Starts a graceful or an immediate shutdown of a running worker.
#[derive(Clone)]
pub struct ShutdownHandle {
    stop: CancellationToken,
    immediate: CancellationToken,
}

impl ShutdownHandle {
    /// Graceful: lease nothing more, let running handlers finish within the grace period,
    /// give the rest back with `retry_in => 0`.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Immediate: stop at once, as if the process had crashed; leases held run out.
    pub fn shutdown_now(&self) {
        self.stop.cancel();
        self.immediate.cancel();
    }
}

/// A worker for one queue. Build it with [`Worker::builder`], run it with [`Worker::run`].
///
/// ```
/// use std::time::Duration;
/// use courier_client::{HandlerError, Job, Worker};
/// use courier_client::CancellationToken;
///
/// #[derive(serde::Deserialize)]
/// struct Email { to: String }
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// # let url = std::env::var("COURIER_TEST_URL")?;
/// let pg: tokio_postgres::Config = url.parse()?;
/// let pool = deadpool_postgres::Pool::builder(deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls))
///     .max_size(9)
///     .build()?;
/// # let c = pool.get().await?;
/// # courier_client::drop_queue_if_exists(&c, "doc.worker").await?;
/// # courier_client::create_queue(&c, "doc.worker", &Default::default()).await?;
/// # let mails = [serde_json::json!({"to": "ada@example.com"}), serde_json::json!({"to": ""})];
/// # courier_client::enqueue_batch(&c, "doc.worker", &mails, &Default::default()).await?;
/// # drop(c);
/// let stop = CancellationToken::new();
/// let worker = Worker::<Email>::builder(pool, "doc.worker")
///     .concurrency(8)
///     .visibility_timeout(Duration::from_secs(60))
///     .handler_timeout(Duration::from_secs(30))
///     .shutdown_on(stop.clone()) // besides SIGTERM and SIGINT
///     .build(|job: Job<Email>| async move {
///         if job.payload().to.is_empty() {
///             return Err(HandlerError::poison("no recipient")); // dead-lettered now
///         }
///         // send it...
///         Ok(()) // acked
///     })?;
/// let metrics = worker.metrics();
/// let running = tokio::spawn(worker.run());
/// # while metrics.snapshot().processed + metrics.snapshot().failed < 2 {
/// #     tokio::time::sleep(Duration::from_millis(10)).await;
/// # }
/// stop.cancel(); // graceful: running handlers finish, the rest are given back
/// running.await??;
/// let m = metrics.snapshot();
/// assert_eq!((m.processed, m.failed), (1, 1));
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
/// ```
pub struct Worker<T> {
    shared: Arc<Shared<T>>,
    shutdown: Option<CancellationToken>,
}

impl<T: DeserializeOwned + Send + 'static> Worker<T> {
    /// A builder for a worker on `queue`, taking its connections from `pool` (which needs at
    /// least `concurrency + 1` connections; give the worker a pool of its own).
    pub fn builder(pool: Pool, queue: impl Into<String>) -> WorkerBuilder<T> {
        WorkerBuilder {
            pool,
            config: Config {
                queue: queue.into(),
                concurrency: 4,
                batch_size: 1,
                group_batch: 1,
                visibility_timeout: Duration::from_secs(30),
                wait: Duration::from_secs(10),
                handler_timeout: Duration::from_secs(20),
                heartbeat: true,
                grace_period: Duration::from_secs(20),
                handle_signals: true,
                reconnect_min: Duration::from_millis(100),
                reconnect_max: Duration::from_secs(10),
                io_timeout: Duration::from_secs(30),
            },
            shutdown: None,
            _payload: PhantomData,
        }
    }

    /// The worker's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// A handle to shut the worker down from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { stop: self.shared.stop.clone(), immediate: self.shared.immediate.clone() }
    }

    /// Runs until shut down (a signal, the token, the handle), then returns; or returns the
    /// error that stopped it: at start, a queue that does not exist or that this role may not
    /// consume from; later, a lease the server refuses for a reason other than a lost
    /// connection (the queue was dropped, the privilege revoked, a `wait` above
    /// `courier.max_wait`). Lost connections are reopened, with backoff, for as long as it runs.
    pub async fn run(self) -> Result<()> {
        let shared = self.shared;
        let c = &shared.config;
        tracing::info!(queue = %c.queue, concurrency = c.concurrency, batch_size = c.batch_size,
                       exactly_once = matches!(shared.mode, Mode::Tx(_)), "courier worker starting");
        shared.check_queue().await?;
        *shared.waiting.lock().expect("not poisoned") = vec![None; c.concurrency];

        let mut control = JoinSet::new();
        if c.handle_signals {
            control.spawn(signals(shared.stop.clone(), shared.immediate.clone()));
        }
        if let Some(token) = self.shutdown {
            let stop = shared.stop.clone();
            control.spawn(async move {
                token.cancelled().await;
                stop.cancel();
            });
        }
        {
            let shared = shared.clone();
            control.spawn(async move { shared.on_stop().await });
        }

        let mut slots = JoinSet::new();
        for n in 0..c.concurrency {
            let shared = shared.clone();
            slots.spawn(async move { slot::run(shared, n).await });
        }
        let mut result = Ok(());
        loop {
            tokio::select! {
                joined = slots.join_next() => match joined {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        tracing::error!(queue = %c.queue, error = %e, "courier worker stopping");
                        if result.is_ok() {
                            result = Err(e);
                        }
                        shared.stop.cancel();
                    }
                    Some(Err(e)) => {
                        // A slot task cannot panic through the handler (panics are caught);
                        // anything else is a bug worth stopping for.
                        if result.is_ok() {
                            result = Err(Error::Config(format!("worker loop failed: {e}")));
                        }
                        shared.stop.cancel();
                    }
                },
                _ = shared.immediate.cancelled() => {
                    tracing::warn!(queue = %c.queue, "courier worker stopping immediately; leases held will expire");
                    slots.abort_all();
                    while slots.join_next().await.is_some() {}
                    break;
                }
            }
        }
        control.abort_all();
        tracing::info!(queue = %c.queue, metrics = ?shared.metrics.snapshot(), "courier worker stopped");
        result
    }
}

impl<T> Shared<T> {
    /// The queue exists and this role may consume from it. A server that is not up yet is
    /// waited for, with backoff.
    async fn check_queue(&self) -> Result<()> {
        let mut backoff = slot::Backoff::new(self.config.reconnect_min, self.config.reconnect_max, 0);
        loop {
            let attempt = async {
                let conn = self.pool.get().await?;
                crate::api::has_queue_privilege(&conn, &self.config.queue, Privilege::Consume).await
            };
            match attempt.await {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    return Err(Error::Config(format!(
                        "this role may not consume from queue \"{}\"",
                        self.config.queue
                    )));
                }
                Err(e) if e.is_connection_error() => {
                    tracing::warn!(error = %e, "courier worker cannot connect yet; retrying");
                    tokio::select! {
                        _ = backoff.sleep() => {}
                        _ = self.stop.cancelled() => return Ok(()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// When a graceful shutdown begins: cancel the waiting leases, start the grace period.
    async fn on_stop(&self) {
        self.stop.cancelled().await;
        tracing::info!(queue = %self.config.queue, grace = ?self.config.grace_period,
                       "courier worker shutting down gracefully");
        let pids: Vec<i32> = self.waiting.lock().expect("not poisoned").iter().flatten().copied().collect();
        if !pids.is_empty() {
            let cancel = async {
                let conn = self.pool.get().await?;
                for pid in pids {
                    conn.execute("SELECT pg_cancel_backend($1)", &[&pid]).await?;
                }
                Ok::<_, Error>(())
            };
            match tokio::time::timeout(self.config.io_timeout, cancel).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "could not cancel waiting leases"),
                Err(_) => tracing::debug!("cancelling waiting leases timed out"),
            }
        }
        tokio::time::sleep(self.config.grace_period).await;
        tracing::warn!(queue = %self.config.queue, "grace period over: cancelling running handlers");
        self.grace_over.cancel();
    }
}

async fn signals(stop: CancellationToken, immediate: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
        _ = stop.cancelled() => {}
    }
    stop.cancel();
    tokio::select! {
        _ = term.recv() => tracing::warn!("second SIGTERM: stopping now"),
        _ = int.recv() => tracing::warn!("second SIGINT: stopping now"),
    }
    immediate.cancel();
}
