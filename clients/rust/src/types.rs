//! The values courier's functions take and return.

use std::error::Error as StdError;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

/// The receipt of one lease of one message: what `ack`, `nack` and `extend` take.
///
/// A receipt is valid only while the lease that produced it holds (see the README's "Receipts
/// fence leases"); it is a different type from a message id so that the two cannot be mixed up:
///
/// ```compile_fail
/// # async fn f(db: &tokio_postgres::Client) -> Result<(), courier_client::Error> {
/// let id: i64 = 42;
/// courier_client::ack(db, id).await?; // an id is not a receipt
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Receipt(Uuid);

impl Receipt {
    /// Wraps a receipt read elsewhere (for example from a receipt kept in your own table).
    pub fn from_uuid(uuid: Uuid) -> Self {
        Receipt(uuid)
    }

    /// The receipt as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Receipt({})", self.0)
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Receipt {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Receipt(s.parse()?))
    }
}

impl ToSql for Receipt {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.0.to_sql(ty, out)
    }
    fn accepts(ty: &Type) -> bool {
        <Uuid as ToSql>::accepts(ty)
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Receipt {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Uuid::from_sql(ty, raw).map(Receipt)
    }
    fn accepts(ty: &Type) -> bool {
        <Uuid as FromSql>::accepts(ty)
    }
}

/// A PostgreSQL `interval` of a whole number of microseconds, sent in binary: tokio-postgres has
/// no interval type of its own. Reading converts months to 30 days, as courier compares intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interval(pub Duration);

impl ToSql for Interval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let micros = i64::try_from(self.0.as_micros()).map_err(|_| "interval out of range")?;
        out.extend_from_slice(&micros.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes()); // days
        out.extend_from_slice(&0i32.to_be_bytes()); // months
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let raw: [u8; 16] = raw.try_into().map_err(|_| "interval is not 16 bytes")?;
        let micros = i64::from_be_bytes(raw[0..8].try_into().expect("8 bytes"));
        let days = i32::from_be_bytes(raw[8..12].try_into().expect("4 bytes"));
        let months = i32::from_be_bytes(raw[12..16].try_into().expect("4 bytes"));
        let total = micros as i128 + (days as i128 + months as i128 * 30) * 86_400_000_000;
        // A negative interval (none of courier's are) reads as zero.
        Ok(Interval(Duration::from_micros(total.clamp(0, u64::MAX as i128) as u64)))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// A payload serialized up front, sent as `jsonb` (a version byte, then the JSON text), so that a
/// payload that does not serialize is an [`Error::Json`](crate::Error::Json) before anything is
/// sent.
pub(crate) struct JsonbArg(Vec<u8>);

impl JsonbArg {
    pub(crate) fn new<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        let mut buf = vec![1u8];
        serde_json::to_writer(&mut buf, value)?;
        Ok(JsonbArg(buf))
    }
}

impl fmt::Debug for JsonbArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0[1..]))
    }
}

impl ToSql for JsonbArg {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&self.0);
        } else {
            out.extend_from_slice(&self.0[1..]);
        }
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }
    to_sql_checked!();
}

/// A leased message: one row of `courier.lease`.
#[derive(Clone, Debug)]
pub struct Message<T = serde_json::Value> {
    /// The message id (unique, never reused; says nothing about enqueue order across sessions).
    pub id: i64,
    /// The receipt of this lease, for `ack`, `nack` and `extend`.
    pub receipt: Receipt,
    /// The payload.
    pub payload: T,
    /// The headers given at enqueue, if any (a JSON object).
    pub headers: Option<serde_json::Value>,
    /// Deliveries of this message so far, this one included (1 on the first).
    pub attempt: i32,
    /// When the message was enqueued.
    pub enqueued_at: SystemTime,
    /// When this lease ends unless it is extended (server clock).
    pub lease_expires_at: SystemTime,
    /// The message's priority.
    pub priority: i16,
    /// What the previous attempt's `nack` reported.
    pub last_error: Option<String>,
    /// The message group it belongs to, if any: a group's messages are delivered in order, to
    /// one holder at a time.
    pub group_key: Option<String>,
}

impl Message<serde_json::Value> {
    /// The payload deserialized as `T`.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.payload)
    }

    /// The message with its payload deserialized as `T`; if it does not deserialize, the
    /// message comes back with the error, so that its receipt can still be nacked.
    // The error hands the whole message back, on a path taken once per bad payload.
    #[allow(clippy::result_large_err)]
    pub fn decode<T: DeserializeOwned>(self) -> Result<Message<T>, (Self, serde_json::Error)> {
        match T::deserialize(&self.payload) {
            Ok(payload) => Ok(self.with_payload(payload)),
            Err(e) => Err((self, e)),
        }
    }
}

impl<T> Message<T> {
    pub(crate) fn with_payload<U>(self, payload: U) -> Message<U> {
        Message {
            id: self.id,
            receipt: self.receipt,
            payload,
            headers: self.headers,
            attempt: self.attempt,
            enqueued_at: self.enqueued_at,
            lease_expires_at: self.lease_expires_at,
            priority: self.priority,
            last_error: self.last_error,
            group_key: self.group_key,
        }
    }
}

/// A row of `sql::LEASE`.
pub(crate) fn message_from_row(row: &Row) -> Result<Message, tokio_postgres::Error> {
    Ok(Message {
        id: row.try_get(0)?,
        receipt: row.try_get(1)?,
        payload: row.try_get(2)?,
        headers: row.try_get(3)?,
        attempt: row.try_get(4)?,
        enqueued_at: row.try_get(5)?,
        lease_expires_at: row.try_get(6)?,
        priority: row.try_get(7)?,
        last_error: row.try_get(8)?,
        group_key: row.try_get(9)?,
    })
}

/// The result of an enqueue that may find its dedup key taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The new message's id, or the id of the message that took the key first.
    pub id: i64,
    /// Whether the key was already taken (nothing was enqueued).
    pub duplicate: bool,
}

/// One row of `courier.queues`.
#[derive(Clone, Debug)]
pub struct QueueInfo {
    pub queue: String,
    pub visibility_timeout: Duration,
    pub max_attempts: i32,
    pub dead_letter_queue: Option<String>,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub retry_jitter: f64,
    pub dedup_window: Duration,
    pub retention: Option<Duration>,
    pub notify: bool,
    pub created_at: SystemTime,
    pub owner: String,
    /// `skip` or `block` (see [`GroupOnDead`]).
    pub group_on_dead: String,
    /// `oldest` or `fair` (see [`GroupOrder`]).
    pub group_order: String,
}

/// What a dead letter does to its message group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupOnDead {
    /// It leaves the group; the next message becomes the head.
    Skip,
    /// The group waits until the dead letter is redriven, acked or purged.
    Block,
}

/// Which ready group of one priority a lease serves first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupOrder {
    /// The group whose head became leasable first.
    Oldest,
    /// The group served least recently, so that one busy group cannot crowd out the others.
    Fair,
}

impl GroupOnDead {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GroupOnDead::Skip => "skip",
            GroupOnDead::Block => "block",
        }
    }
}

impl GroupOrder {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GroupOrder::Oldest => "oldest",
            GroupOrder::Fair => "fair",
        }
    }
}

/// One row of `courier.queue_groups`: a message group that holds messages.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    pub queue: String,
    pub group_key: String,
    /// Of the group's first 10,000 messages, how many are ready in themselves.
    pub ready: i64,
    pub in_flight: i64,
    /// Whether a dead letter blocks the group (`group_on_dead => 'block'`).
    pub blocked: bool,
    pub head_message_id: Option<i64>,
    /// When the head may be leased; `None` while blocked.
    pub head_available_at: Option<SystemTime>,
    pub held_until: Option<SystemTime>,
}

/// One row of `courier.stats` (see the README's "stats / queue_stats" for each field).
#[derive(Clone, Debug)]
pub struct QueueStats {
    pub queue: String,
    pub ready: i64,
    pub delayed: i64,
    pub in_flight: i64,
    pub dead: i64,
    pub oldest_ready_age: Option<Duration>,
    pub oldest_lease_age: Option<Duration>,
    /// The counters are `None` when courier is not preloaded.
    pub enqueued_total: Option<i64>,
    pub deduplicated_total: Option<i64>,
    pub leased_total: Option<i64>,
    pub expired_total: Option<i64>,
    pub acked_total: Option<i64>,
    pub nacked_total: Option<i64>,
    pub dead_lettered_total: Option<i64>,
    pub counters_since: Option<SystemTime>,
    pub counts_capped: bool,
    /// Message groups with messages, of them held by a lease, and blocked by a dead letter.
    pub groups: i64,
    pub groups_held: i64,
    pub groups_blocked: i64,
}

/// One row of `courier.dead_letters`.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub queue: String,
    pub id: i64,
    pub origin_queue: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub enqueued_at: SystemTime,
    pub dead_at: Option<SystemTime>,
    pub headers: Option<serde_json::Value>,
    pub payload: serde_json::Value,
    pub group_key: Option<String>,
}

/// One row of `courier.completed_messages`.
#[derive(Clone, Debug)]
pub struct CompletedMessage {
    pub queue: String,
    pub id: i64,
    pub attempt: i32,
    pub priority: i16,
    pub enqueued_at: SystemTime,
    pub completed_at: SystemTime,
    pub headers: Option<serde_json::Value>,
    pub payload: serde_json::Value,
}

/// What `courier.maintain` reclaimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Maintained {
    pub expired_keys: i64,
    pub expired_completed: i64,
}

/// A per-queue privilege (see the README's "Privileges").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    Enqueue,
    Consume,
    Manage,
    /// `all` (grant and revoke only).
    All,
}

impl Privilege {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Privilege::Enqueue => "enqueue",
            Privilege::Consume => "consume",
            Privilege::Manage => "manage",
            Privilege::All => "all",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_round_trip() {
        let mut buf = BytesMut::new();
        Interval(Duration::from_millis(1500)).to_sql(&Type::INTERVAL, &mut buf).unwrap();
        assert_eq!(buf.len(), 16);
        let back = Interval::from_sql(&Type::INTERVAL, &buf).unwrap();
        assert_eq!(back.0, Duration::from_millis(1500));
    }

    #[test]
    fn interval_reads_days_and_months() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&1_000_000i64.to_be_bytes());
        raw.extend_from_slice(&2i32.to_be_bytes());
        raw.extend_from_slice(&1i32.to_be_bytes());
        let v = Interval::from_sql(&Type::INTERVAL, &raw).unwrap();
        assert_eq!(v.0, Duration::from_secs(1 + 32 * 86_400));
    }

    #[test]
    fn receipt_parses_and_prints() {
        let s = "00000000-0000-8000-8c5e-1f0e9b3a7d21";
        let r: Receipt = s.parse().unwrap();
        assert_eq!(r.to_string(), s);
        assert!("42".parse::<Receipt>().is_err());
    }
}
