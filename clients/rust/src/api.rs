//! One typed function per courier SQL function. Each takes the connection or transaction to run
//! on first, so producing and consuming can be part of the caller's own transaction.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::error::Result;
use crate::executor::{Executor, Statement};
use crate::sql::{self, Call};
use crate::types::{
    CompletedMessage, DeadLetter, Enqueued, GroupInfo, GroupOnDead, GroupOrder, Interval, JsonbArg,
    Maintained, Message, Privilege, QueueInfo, QueueStats, Receipt, message_from_row,
};

async fn rows(db: &impl Executor, s: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
    Ok(db.query_statement(s, params).await?)
}

async fn one<T>(db: &impl Executor, s: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let rows = rows(db, s, params).await?;
    let row = rows.first().expect("a scalar courier call returns one row");
    Ok(row.try_get(0)?)
}

// ------------------------------------------------------------------------------------------
// Queues

/// Settings of a queue: `None` leaves a setting at courier's default (for
/// [`create_queue`]) or unchanged (for [`alter_queue`]). See the README's `create_queue`
/// for each setting's meaning and range.
#[derive(Clone, Debug, Default)]
pub struct QueueSettings {
    pub visibility_timeout: Option<Duration>,
    /// Deliveries before a message is dead-lettered; `0` = unlimited.
    pub max_attempts: Option<i32>,
    /// For `alter_queue`, `Some("")` removes the dead-letter queue.
    pub dead_letter_queue: Option<String>,
    pub retry_base: Option<Duration>,
    pub retry_max: Option<Duration>,
    pub retry_jitter: Option<f64>,
    pub dedup_window: Option<Duration>,
    /// For `alter_queue`, `Some(Duration::ZERO)` stops keeping completed messages.
    pub retention: Option<Duration>,
    pub notify: Option<bool>,
    pub group_on_dead: Option<GroupOnDead>,
    pub group_order: Option<GroupOrder>,
}

impl QueueSettings {
    pub fn visibility_timeout(mut self, v: Duration) -> Self {
        self.visibility_timeout = Some(v);
        self
    }
    pub fn max_attempts(mut self, v: i32) -> Self {
        self.max_attempts = Some(v);
        self
    }
    pub fn dead_letter_queue(mut self, v: impl Into<String>) -> Self {
        self.dead_letter_queue = Some(v.into());
        self
    }
    pub fn retry_base(mut self, v: Duration) -> Self {
        self.retry_base = Some(v);
        self
    }
    pub fn retry_max(mut self, v: Duration) -> Self {
        self.retry_max = Some(v);
        self
    }
    pub fn retry_jitter(mut self, v: f64) -> Self {
        self.retry_jitter = Some(v);
        self
    }
    pub fn dedup_window(mut self, v: Duration) -> Self {
        self.dedup_window = Some(v);
        self
    }
    pub fn retention(mut self, v: Duration) -> Self {
        self.retention = Some(v);
        self
    }
    pub fn notify(mut self, v: bool) -> Self {
        self.notify = Some(v);
        self
    }
    pub fn group_on_dead(mut self, v: GroupOnDead) -> Self {
        self.group_on_dead = Some(v);
        self
    }
    pub fn group_order(mut self, v: GroupOrder) -> Self {
        self.group_order = Some(v);
        self
    }
}

struct SettingArgs {
    visibility_timeout: Option<Interval>,
    retry_base: Option<Interval>,
    retry_max: Option<Interval>,
    dedup_window: Option<Interval>,
    retention: Option<Interval>,
    group_on_dead: Option<&'static str>,
    group_order: Option<&'static str>,
}

impl SettingArgs {
    fn new(s: &QueueSettings) -> Self {
        SettingArgs {
            visibility_timeout: s.visibility_timeout.map(Interval),
            retry_base: s.retry_base.map(Interval),
            retry_max: s.retry_max.map(Interval),
            dedup_window: s.dedup_window.map(Interval),
            retention: s.retention.map(Interval),
            group_on_dead: s.group_on_dead.map(GroupOnDead::as_str),
            group_order: s.group_order.map(GroupOrder::as_str),
        }
    }

    fn add<'a>(&'a self, s: &'a QueueSettings, call: Call<'a>) -> Call<'a> {
        call.named("visibility_timeout", &self.visibility_timeout, Type::INTERVAL)
            .named("max_attempts", &s.max_attempts, Type::INT4)
            .named("dead_letter_queue", &s.dead_letter_queue, Type::TEXT)
            .named("retry_base", &self.retry_base, Type::INTERVAL)
            .named("retry_max", &self.retry_max, Type::INTERVAL)
            .named("retry_jitter", &s.retry_jitter, Type::FLOAT8)
            .named("dedup_window", &self.dedup_window, Type::INTERVAL)
            .named("retention", &self.retention, Type::INTERVAL)
            .named("notify", &s.notify, Type::BOOL)
            .named("group_on_dead", &self.group_on_dead, Type::TEXT)
            .named("group_order", &self.group_order, Type::TEXT)
    }
}

async fn create(
    db: &impl Executor,
    queue: &str,
    settings: &QueueSettings,
    if_not_exists: bool,
) -> Result<bool> {
    let args = SettingArgs::new(settings);
    let ine = if_not_exists.then_some(true);
    let call = Call::new("SELECT courier.create_queue(").arg(&queue, Type::TEXT);
    let (s, params) = args.add(settings, call).named("if_not_exists", &ine, Type::BOOL).finish(")");
    one(db, &s, &params).await
}

/// `courier.create_queue`: creates a queue; [`Error::AlreadyExists`] if it exists.
pub async fn create_queue(db: &impl Executor, queue: &str, settings: &QueueSettings) -> Result<()> {
    create(db, queue, settings, false).await.map(|_| ())
}

/// `courier.create_queue(..., if_not_exists => true)`: `false` (and nothing changed) if the
/// queue exists.
pub async fn create_queue_if_not_exists(
    db: &impl Executor,
    queue: &str,
    settings: &QueueSettings,
) -> Result<bool> {
    create(db, queue, settings, true).await
}

/// `courier.alter_queue`: changes the settings that are `Some`.
pub async fn alter_queue(db: &impl Executor, queue: &str, settings: &QueueSettings) -> Result<()> {
    let args = SettingArgs::new(settings);
    let call = Call::new("SELECT courier.alter_queue(").arg(&queue, Type::TEXT);
    let (s, params) = args.add(settings, call).finish(")");
    rows(db, &s, &params).await.map(|_| ())
}

/// `courier.drop_queue`: drops a queue with its messages; [`Error::NotFound`] if there is none.
pub async fn drop_queue(db: &impl Executor, queue: &str) -> Result<()> {
    one::<bool>(db, &sql::DROP_QUEUE, &[&queue, &false]).await.map(|_| ())
}

/// `courier.drop_queue(..., if_exists => true)`: whether there was a queue to drop.
pub async fn drop_queue_if_exists(db: &impl Executor, queue: &str) -> Result<bool> {
    one(db, &sql::DROP_QUEUE, &[&queue, &true]).await
}

/// `courier.purge_queue`: deletes every message of the queue; how many.
pub async fn purge_queue(db: &impl Executor, queue: &str) -> Result<i64> {
    one(db, &sql::PURGE_QUEUE, &[&queue]).await
}

fn queue_info(r: &Row) -> Result<QueueInfo> {
    let iv = |i: usize| -> Result<Duration> { Ok(r.try_get::<_, Interval>(i)?.0) };
    Ok(QueueInfo {
        queue: r.try_get(0)?,
        visibility_timeout: iv(1)?,
        max_attempts: r.try_get(2)?,
        dead_letter_queue: r.try_get(3)?,
        retry_base: iv(4)?,
        retry_max: iv(5)?,
        retry_jitter: r.try_get(6)?,
        dedup_window: iv(7)?,
        retention: r.try_get::<_, Option<Interval>>(8)?.map(|i| i.0),
        notify: r.try_get(9)?,
        created_at: r.try_get(10)?,
        owner: r.try_get(11)?,
        group_on_dead: r.try_get(12)?,
        group_order: r.try_get(13)?,
    })
}

/// `courier.queues`: every queue (needs SELECT on the view).
pub async fn queues(db: &impl Executor) -> Result<Vec<QueueInfo>> {
    rows(db, &sql::QUEUES, &[&None::<&str>]).await?.iter().map(queue_info).collect()
}

/// One queue's row of `courier.queues`, if it exists.
pub async fn queue(db: &impl Executor, queue: &str) -> Result<Option<QueueInfo>> {
    rows(db, &sql::QUEUES, &[&Some(queue)]).await?.first().map(queue_info).transpose()
}

// ------------------------------------------------------------------------------------------
// Producing

/// Options of [`enqueue`] and [`enqueue_unique`]; `None` leaves courier's default.
#[derive(Clone, Debug, Default)]
pub struct EnqueueOptions {
    /// A JSON object kept with the message.
    pub headers: Option<serde_json::Value>,
    /// Not leasable before this much time has passed (0 to 365 days).
    pub delay: Option<Duration>,
    /// Not leasable before this time (not together with `delay`).
    pub not_before: Option<SystemTime>,
    /// -32768 to 32767; higher is leased first.
    pub priority: Option<i32>,
    /// For [`enqueue`]: the dedup key (ignored by [`enqueue_unique`], which takes it as an
    /// argument).
    pub dedup_key: Option<String>,
    /// The message group: messages of one group are delivered in order (of their enqueues'
    /// commits), to one holder at a time.
    pub group_key: Option<String>,
}

impl EnqueueOptions {
    pub fn headers(mut self, v: serde_json::Value) -> Self {
        self.headers = Some(v);
        self
    }
    pub fn delay(mut self, v: Duration) -> Self {
        self.delay = Some(v);
        self
    }
    pub fn not_before(mut self, v: SystemTime) -> Self {
        self.not_before = Some(v);
        self
    }
    pub fn priority(mut self, v: i32) -> Self {
        self.priority = Some(v);
        self
    }
    pub fn dedup_key(mut self, v: impl Into<String>) -> Self {
        self.dedup_key = Some(v.into());
        self
    }
    pub fn group_key(mut self, v: impl Into<String>) -> Self {
        self.group_key = Some(v.into());
        self
    }
}

/// `courier.enqueue`: adds a message in `db`'s transaction and returns its id (with a taken
/// `dedup_key`: the original message's id).
///
/// ```
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// # let (mut client, conn) = tokio_postgres::connect(&std::env::var("COURIER_TEST_URL")?, tokio_postgres::NoTls).await?;
/// # tokio::spawn(conn);
/// # courier_client::create_queue_if_not_exists(&client, "doc.emails", &Default::default()).await?;
/// # client.batch_execute("CREATE TABLE IF NOT EXISTS doc_orders (id int8 PRIMARY KEY, total numeric)").await?;
/// use courier_client::{EnqueueOptions, enqueue};
/// use serde_json::json;
///
/// let tx = client.transaction().await?;
/// tx.execute("INSERT INTO doc_orders VALUES (42, 99.50) ON CONFLICT DO NOTHING", &[]).await?;
/// let id = enqueue(&tx, "doc.emails", &json!({"order": 42}),
///                  &EnqueueOptions::default().priority(10)).await?;
/// tx.commit().await?; // the order and its email exist together, or neither does
/// # assert!(id > 0);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
/// ```
pub async fn enqueue<T: Serialize + ?Sized>(
    db: &impl Executor,
    queue: &str,
    payload: &T,
    options: &EnqueueOptions,
) -> Result<i64> {
    let payload = JsonbArg::new(payload)?;
    let headers = options.headers.as_ref().map(JsonbArg::new).transpose()?;
    let delay = options.delay.map(Interval);
    let (s, params) = Call::new("SELECT courier.enqueue(")
        .arg(&queue, Type::TEXT)
        .arg(&payload, Type::JSONB)
        .named("headers", &headers, Type::JSONB)
        .named("delay", &delay, Type::INTERVAL)
        .named("priority", &options.priority, Type::INT4)
        .named("not_before", &options.not_before, Type::TIMESTAMPTZ)
        .named("dedup_key", &options.dedup_key, Type::TEXT)
        .named("group_key", &options.group_key, Type::TEXT)
        .finish(")");
    one(db, &s, &params).await
}

/// `courier.enqueue_unique`: an enqueue with a required dedup key that says whether the key
/// was already taken.
pub async fn enqueue_unique<T: Serialize + ?Sized>(
    db: &impl Executor,
    queue: &str,
    payload: &T,
    dedup_key: &str,
    options: &EnqueueOptions,
) -> Result<Enqueued> {
    let payload = JsonbArg::new(payload)?;
    let headers = options.headers.as_ref().map(JsonbArg::new).transpose()?;
    let delay = options.delay.map(Interval);
    let (s, params) = Call::new("SELECT id, duplicate FROM courier.enqueue_unique(")
        .arg(&queue, Type::TEXT)
        .arg(&payload, Type::JSONB)
        .arg(&dedup_key, Type::TEXT)
        .named("headers", &headers, Type::JSONB)
        .named("delay", &delay, Type::INTERVAL)
        .named("priority", &options.priority, Type::INT4)
        .named("not_before", &options.not_before, Type::TIMESTAMPTZ)
        .named("group_key", &options.group_key, Type::TEXT)
        .finish(")");
    let rows = rows(db, &s, &params).await?;
    let r = rows.first().expect("enqueue_unique returns one row");
    Ok(Enqueued { id: r.try_get(0)?, duplicate: r.try_get(1)? })
}

/// Options of [`enqueue_batch`]; `headers` and `dedup_keys` have one element per payload.
#[derive(Clone, Debug, Default)]
pub struct BatchOptions {
    pub headers: Option<Vec<Option<serde_json::Value>>>,
    pub delay: Option<Duration>,
    pub not_before: Option<SystemTime>,
    pub priority: Option<i32>,
    pub dedup_keys: Option<Vec<Option<String>>>,
    /// One group key per payload (`None`: ungrouped); a group's messages are numbered in input
    /// order.
    pub group_keys: Option<Vec<Option<String>>>,
}

/// `courier.enqueue_batch`: 1 to 1000 messages in one call; one result per payload, in order.
pub async fn enqueue_batch<T: Serialize>(
    db: &impl Executor,
    queue: &str,
    payloads: &[T],
    options: &BatchOptions,
) -> Result<Vec<Enqueued>> {
    let payloads = payloads.iter().map(JsonbArg::new).collect::<Result<Vec<_>, _>>()?;
    let headers = match &options.headers {
        None => None,
        Some(h) => {
            Some(h.iter().map(|v| v.as_ref().map(JsonbArg::new).transpose()).collect::<Result<Vec<_>, _>>()?)
        }
    };
    let delay = options.delay.map(Interval);
    let (s, params) = Call::new("SELECT id, duplicate FROM courier.enqueue_batch(")
        .arg(&queue, Type::TEXT)
        .arg(&payloads, Type::JSONB_ARRAY)
        .named("headers", &headers, Type::JSONB_ARRAY)
        .named("delay", &delay, Type::INTERVAL)
        .named("priority", &options.priority, Type::INT4)
        .named("not_before", &options.not_before, Type::TIMESTAMPTZ)
        .named("dedup_keys", &options.dedup_keys, Type::TEXT_ARRAY)
        .named("group_keys", &options.group_keys, Type::TEXT_ARRAY)
        .finish(")");
    rows(db, &s, &params)
        .await?
        .iter()
        .map(|r| Ok(Enqueued { id: r.try_get(0)?, duplicate: r.try_get(1)? }))
        .collect()
}

// ------------------------------------------------------------------------------------------
// Consuming

/// Options of [`lease`].
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    /// 1 to 1000 messages.
    pub batch_size: i32,
    /// How long the lease hides the messages; `None`: the queue's visibility timeout.
    pub visibility_timeout: Option<Duration>,
    /// How long to wait for a message when none is ready (a long poll inside the server; at most
    /// `courier.max_wait`). Zero returns at once.
    pub wait: Duration,
    /// At most this many consecutive messages of one message group (1 to 1000).
    pub group_batch: i32,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions { batch_size: 1, visibility_timeout: None, wait: Duration::ZERO, group_batch: 1 }
    }
}

impl LeaseOptions {
    pub fn batch_size(mut self, v: i32) -> Self {
        self.batch_size = v;
        self
    }
    pub fn visibility_timeout(mut self, v: Duration) -> Self {
        self.visibility_timeout = Some(v);
        self
    }
    pub fn wait(mut self, v: Duration) -> Self {
        self.wait = v;
        self
    }
    pub fn group_batch(mut self, v: i32) -> Self {
        self.group_batch = v;
        self
    }
}

/// `courier.lease`: up to `batch_size` ready messages, hidden from every other lease until
/// their `lease_expires_at`. Payloads are JSON values; [`Message::payload_as`] or
/// [`Message::decode`] deserializes them.
///
/// ```
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// # let (client, conn) = tokio_postgres::connect(&std::env::var("COURIER_TEST_URL")?, tokio_postgres::NoTls).await?;
/// # tokio::spawn(conn);
/// # courier_client::create_queue_if_not_exists(&client, "doc.lease", &Default::default()).await?;
/// # courier_client::enqueue(&client, "doc.lease", &serde_json::json!({"to": "ada@example.com"}), &Default::default()).await?;
/// use std::time::Duration;
/// use courier_client::{LeaseOptions, NackOptions, ack, lease, nack};
///
/// #[derive(serde::Deserialize)]
/// struct Email { to: String }
///
/// let opts = LeaseOptions::default().batch_size(10).wait(Duration::from_secs(1));
/// for message in lease(&client, "doc.lease", &opts).await? {
///     match message.payload_as::<Email>() {
///         Ok(email) => {
///             println!("sending to {}", email.to);
///             assert!(ack(&client, message.receipt).await?);
///         }
///         Err(e) => {
///             nack(&client, message.receipt, &NackOptions::dead(e.to_string())).await?;
///         }
///     }
/// }
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
/// ```
pub async fn lease(db: &impl Executor, queue: &str, options: &LeaseOptions) -> Result<Vec<Message>> {
    let vt = options.visibility_timeout.map(Interval);
    let wait = Interval(options.wait);
    rows(db, &sql::LEASE, &[&queue, &options.batch_size, &vt, &wait, &options.group_batch])
        .await?
        .iter()
        .map(|r| Ok(message_from_row(r)?))
        .collect()
}

fn strict_ok(held: bool) -> Result<()> {
    // The strict forms raise QC001 rather than return false; a false here would mean the SQL
    // wrapper changed.
    debug_assert!(held);
    Ok(())
}

/// `courier.ack`: `true` if the receipt still held its lease (the message is done), `false`
/// if not (acked or nacked before, or leased again by someone else after this lease expired).
pub async fn ack(db: &impl Executor, receipt: Receipt) -> Result<bool> {
    one(db, &sql::ACK, &[&receipt]).await
}

/// `courier.ack(..., strict => true)`: [`Error::LeaseLost`] (and an aborted transaction)
/// unless the receipt holds its lease. For acking in the same transaction as the work.
pub async fn ack_strict(db: &impl Executor, receipt: Receipt) -> Result<()> {
    strict_ok(one(db, &sql::ACK_STRICT, &[&receipt]).await?)
}

/// `courier.ack_batch`: how many of the receipts held their lease (and are now acked).
pub async fn ack_batch(db: &impl Executor, receipts: &[Receipt]) -> Result<i32> {
    one(db, &sql::ACK_BATCH, &[&receipts]).await
}

/// `courier.ack_batch(..., strict => true)`: all or nothing; [`Error::LeaseLost`] unless every
/// receipt holds its lease.
pub async fn ack_batch_strict(db: &impl Executor, receipts: &[Receipt]) -> Result<i32> {
    one(db, &sql::ACK_BATCH_STRICT, &[&receipts]).await
}

/// How to give a message back with [`nack`].
#[derive(Clone, Debug, Default)]
pub struct NackOptions {
    /// Leasable again after this long (0 to 365 days); `None`: the queue's backoff.
    pub retry_in: Option<Duration>,
    /// Kept with the message (first 8 kB) and shown to the next consumer as `last_error`.
    pub error: Option<String>,
    /// Dead-letter it now (a poison message), whatever its attempts.
    pub dead: bool,
}

impl NackOptions {
    /// A failure: back after the queue's backoff, with this error.
    pub fn error(error: impl Into<String>) -> Self {
        NackOptions { error: Some(error.into()), ..Default::default() }
    }
    /// Back after `retry_in`.
    pub fn retry_in(retry_in: Duration) -> Self {
        NackOptions { retry_in: Some(retry_in), ..Default::default() }
    }
    /// Straight to the dead letters, with this error.
    pub fn dead(error: impl Into<String>) -> Self {
        NackOptions { dead: true, error: Some(error.into()), ..Default::default() }
    }
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

async fn nack_call<T>(
    db: &impl Executor,
    s: &Statement,
    receipts: &(dyn ToSql + Sync),
    o: &NackOptions,
    strict: bool,
) -> Result<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let retry_in = o.retry_in.map(Interval);
    one(db, s, &[receipts, &retry_in, &o.error, &o.dead, &strict]).await
}

/// `courier.nack`: gives the message back (or dead-letters it: `dead`, or its last attempt);
/// same return value as [`ack`].
pub async fn nack(db: &impl Executor, receipt: Receipt, options: &NackOptions) -> Result<bool> {
    nack_call(db, &sql::NACK, &receipt, options, false).await
}

/// `courier.nack(..., strict => true)`: [`Error::LeaseLost`] unless the receipt holds its lease.
pub async fn nack_strict(db: &impl Executor, receipt: Receipt, options: &NackOptions) -> Result<()> {
    strict_ok(nack_call(db, &sql::NACK, &receipt, options, true).await?)
}

/// `courier.nack_batch`: how many receipts held their lease.
pub async fn nack_batch(db: &impl Executor, receipts: &[Receipt], options: &NackOptions) -> Result<i32> {
    nack_call(db, &sql::NACK_BATCH, &receipts, options, false).await
}

/// `courier.nack_batch(..., strict => true)`: all or nothing.
pub async fn nack_batch_strict(
    db: &impl Executor,
    receipts: &[Receipt],
    options: &NackOptions,
) -> Result<i32> {
    nack_call(db, &sql::NACK_BATCH, &receipts, options, true).await
}

/// `courier.extend`: the lease now ends `visibility_timeout` (at most 12 hours) from now;
/// `false` if the receipt no longer holds its lease.
pub async fn extend(db: &impl Executor, receipt: Receipt, visibility_timeout: Duration) -> Result<bool> {
    one(db, &sql::EXTEND, &[&receipt, &Interval(visibility_timeout), &false]).await
}

/// `courier.extend(..., strict => true)`: [`Error::LeaseLost`] unless the receipt holds its
/// lease.
pub async fn extend_strict(db: &impl Executor, receipt: Receipt, visibility_timeout: Duration) -> Result<()> {
    strict_ok(one(db, &sql::EXTEND, &[&receipt, &Interval(visibility_timeout), &true]).await?)
}

/// Extends each of `receipts`; the receipts that no longer hold their lease.
pub(crate) async fn extend_each(
    db: &impl Executor,
    receipts: &[Receipt],
    visibility_timeout: Duration,
) -> Result<Vec<Receipt>> {
    let rows = rows(db, &sql::EXTEND_EACH, &[&receipts, &Interval(visibility_timeout)]).await?;
    let mut lost = Vec::new();
    for r in &rows {
        if !r.try_get::<_, bool>(1)? {
            lost.push(r.try_get(0)?);
        }
    }
    Ok(lost)
}

// ------------------------------------------------------------------------------------------
// Dead letters

/// Options of [`redrive`]; `None` leaves courier's default (every dead letter, up to 1000).
#[derive(Clone, Debug, Default)]
pub struct RedriveOptions {
    pub message_ids: Option<Vec<i64>>,
    pub max_messages: Option<i32>,
}

/// `courier.redrive`: puts dead letters of `queue` back to work; how many moved.
pub async fn redrive(db: &impl Executor, queue: &str, options: &RedriveOptions) -> Result<i64> {
    let (s, params) = Call::new("SELECT courier.redrive(")
        .arg(&queue, Type::TEXT)
        .named("message_ids", &options.message_ids, Type::INT8_ARRAY)
        .named("max_messages", &options.max_messages, Type::INT4)
        .finish(")");
    one(db, &s, &params).await
}

/// `courier.dead_letters`, of one queue or of all (needs SELECT on the view).
pub async fn dead_letters(db: &impl Executor, queue: Option<&str>) -> Result<Vec<DeadLetter>> {
    rows(db, &sql::DEAD_LETTERS, &[&queue])
        .await?
        .iter()
        .map(|r| {
            Ok(DeadLetter {
                queue: r.try_get(0)?,
                id: r.try_get(1)?,
                origin_queue: r.try_get(2)?,
                attempts: r.try_get(3)?,
                last_error: r.try_get(4)?,
                enqueued_at: r.try_get(5)?,
                dead_at: r.try_get(6)?,
                headers: r.try_get(7)?,
                payload: r.try_get(8)?,
                group_key: r.try_get(9)?,
            })
        })
        .collect()
}

/// `courier.queue_groups`: the message groups that hold messages, of one queue or of all (needs
/// SELECT on the view).
pub async fn queue_groups(db: &impl Executor, queue: Option<&str>) -> Result<Vec<GroupInfo>> {
    rows(db, &sql::QUEUE_GROUPS, &[&queue])
        .await?
        .iter()
        .map(|r| {
            Ok(GroupInfo {
                queue: r.try_get(0)?,
                group_key: r.try_get(1)?,
                ready: r.try_get(2)?,
                in_flight: r.try_get(3)?,
                blocked: r.try_get(4)?,
                head_message_id: r.try_get(5)?,
                head_available_at: r.try_get(6)?,
                held_until: r.try_get(7)?,
            })
        })
        .collect()
}

/// `courier.completed_messages`, of one queue or of all (queues with a `retention`).
pub async fn completed_messages(db: &impl Executor, queue: Option<&str>) -> Result<Vec<CompletedMessage>> {
    rows(db, &sql::COMPLETED, &[&queue])
        .await?
        .iter()
        .map(|r| {
            Ok(CompletedMessage {
                queue: r.try_get(0)?,
                id: r.try_get(1)?,
                attempt: r.try_get(2)?,
                priority: r.try_get(3)?,
                enqueued_at: r.try_get(4)?,
                completed_at: r.try_get(5)?,
                headers: r.try_get(6)?,
                payload: r.try_get(7)?,
            })
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// Monitoring

fn queue_stats(r: &Row) -> Result<QueueStats> {
    let iv = |i: usize| -> Result<Option<Duration>> { Ok(r.try_get::<_, Option<Interval>>(i)?.map(|v| v.0)) };
    Ok(QueueStats {
        queue: r.try_get(0)?,
        ready: r.try_get(1)?,
        delayed: r.try_get(2)?,
        in_flight: r.try_get(3)?,
        dead: r.try_get(4)?,
        oldest_ready_age: iv(5)?,
        oldest_lease_age: iv(6)?,
        enqueued_total: r.try_get(7)?,
        deduplicated_total: r.try_get(8)?,
        leased_total: r.try_get(9)?,
        expired_total: r.try_get(10)?,
        acked_total: r.try_get(11)?,
        nacked_total: r.try_get(12)?,
        dead_lettered_total: r.try_get(13)?,
        counters_since: r.try_get(14)?,
        counts_capped: r.try_get(15)?,
        groups: r.try_get(16)?,
        groups_held: r.try_get(17)?,
        groups_blocked: r.try_get(18)?,
    })
}

/// `courier.stats`: one queue's gauges and counters.
pub async fn stats(db: &impl Executor, queue: &str) -> Result<QueueStats> {
    let rows = rows(db, &sql::STATS, &[&queue]).await?;
    queue_stats(rows.first().expect("stats returns one row"))
}

/// `courier.queue_stats`: every queue's.
pub async fn all_stats(db: &impl Executor) -> Result<Vec<QueueStats>> {
    rows(db, &sql::ALL_STATS, &[]).await?.iter().map(queue_stats).collect()
}

/// `courier.stats_reset`: zeroes the counters of one queue or of all; `false` when courier is
/// not preloaded.
pub async fn stats_reset(db: &impl Executor, queue: Option<&str>) -> Result<bool> {
    one(db, &sql::STATS_RESET, &[&queue]).await
}

/// `courier.maintain`: reclaims expired dedup keys and completed messages, up to `max_rows` of
/// each.
pub async fn maintain(db: &impl Executor, max_rows: i32) -> Result<Maintained> {
    let rows = rows(db, &sql::MAINTAIN, &[&max_rows]).await?;
    let r = rows.first().expect("maintain returns one row");
    Ok(Maintained { expired_keys: r.try_get(0)?, expired_completed: r.try_get(1)? })
}

/// `courier.version()`: the library's version.
pub async fn version(db: &impl Executor) -> Result<String> {
    one(db, &sql::VERSION, &[]).await
}

// ------------------------------------------------------------------------------------------
// Privileges

/// `courier.grant`: `role` (or `"public"`) may now do `privilege` on `queue`.
pub async fn grant(db: &impl Executor, queue: &str, privilege: Privilege, role: &str) -> Result<()> {
    rows(db, &sql::GRANT, &[&queue, &privilege.as_str(), &role]).await.map(|_| ())
}

/// `courier.revoke`.
pub async fn revoke(db: &impl Executor, queue: &str, privilege: Privilege, role: &str) -> Result<()> {
    rows(db, &sql::REVOKE, &[&queue, &privilege.as_str(), &role]).await.map(|_| ())
}

/// `courier.has_queue_privilege`: whether the calling role may do `privilege` on `queue`
/// ([`Error::NotFound`] if there is no such queue).
pub async fn has_queue_privilege(db: &impl Executor, queue: &str, privilege: Privilege) -> Result<bool> {
    one(db, &sql::HAS_PRIVILEGE, &[&queue, &privilege.as_str()]).await
}
