//! Every statement this crate sends. Arguments are bound, never spliced; each parameter is sent
//! with the type courier declares for it.

use std::borrow::Cow;

use tokio_postgres::types::{ToSql, Type};

use crate::executor::Statement;

const fn fixed(sql: &'static str, types: &'static [Type]) -> Statement {
    Statement { sql: Cow::Borrowed(sql), types: Cow::Borrowed(types) }
}

/// The columns of a leased message, in the order `Message::from_row` reads them.
macro_rules! lease_columns {
    () => {
        "id, receipt, payload, headers, attempt, enqueued_at, lease_expires_at, priority, last_error, group_key"
    };
}

pub(crate) const LEASE: Statement = fixed(
    concat!(
        "SELECT ",
        lease_columns!(),
        " FROM courier.lease($1, batch_size => $2, visibility_timeout => $3, wait => $4, group_batch => $5)"
    ),
    &[Type::TEXT, Type::INT4, Type::INTERVAL, Type::INTERVAL, Type::INT4],
);

pub(crate) const ACK: Statement = fixed("SELECT courier.ack($1)", &[Type::UUID]);
pub(crate) const ACK_STRICT: Statement = fixed("SELECT courier.ack($1, strict => true)", &[Type::UUID]);
pub(crate) const ACK_BATCH: Statement = fixed("SELECT courier.ack_batch($1)", &[Type::UUID_ARRAY]);
pub(crate) const ACK_BATCH_STRICT: Statement =
    fixed("SELECT courier.ack_batch($1, strict => true)", &[Type::UUID_ARRAY]);

pub(crate) const NACK: Statement = fixed(
    "SELECT courier.nack($1, retry_in => $2, error => $3, dead => $4, strict => $5)",
    &[Type::UUID, Type::INTERVAL, Type::TEXT, Type::BOOL, Type::BOOL],
);
pub(crate) const NACK_BATCH: Statement = fixed(
    "SELECT courier.nack_batch($1, retry_in => $2, error => $3, dead => $4, strict => $5)",
    &[Type::UUID_ARRAY, Type::INTERVAL, Type::TEXT, Type::BOOL, Type::BOOL],
);

pub(crate) const EXTEND: Statement =
    fixed("SELECT courier.extend($1, $2, strict => $3)", &[Type::UUID, Type::INTERVAL, Type::BOOL]);
/// The worker's heartbeat for every message it holds, in one round trip.
pub(crate) const EXTEND_EACH: Statement = fixed(
    "SELECT r, courier.extend(r, $2) FROM unnest($1::uuid[]) AS r",
    &[Type::UUID_ARRAY, Type::INTERVAL],
);

pub(crate) const DROP_QUEUE: Statement =
    fixed("SELECT courier.drop_queue($1, if_exists => $2)", &[Type::TEXT, Type::BOOL]);
pub(crate) const PURGE_QUEUE: Statement = fixed("SELECT courier.purge_queue($1)", &[Type::TEXT]);
pub(crate) const QUEUES: Statement = fixed(
    "SELECT queue, visibility_timeout, max_attempts, dead_letter_queue, retry_base, retry_max, \
            retry_jitter, dedup_window, retention, notify, created_at, owner::text, group_on_dead, \
            group_order \
     FROM courier.queues WHERE $1::text IS NULL OR queue = $1 ORDER BY queue",
    &[Type::TEXT],
);

macro_rules! stats_columns {
    () => {
        "queue, ready, delayed, in_flight, dead, oldest_ready_age, oldest_lease_age, \
         enqueued_total, deduplicated_total, leased_total, expired_total, acked_total, \
         nacked_total, dead_lettered_total, counters_since, counts_capped, groups, groups_held, \
         groups_blocked"
    };
}
pub(crate) const STATS: Statement =
    fixed(concat!("SELECT ", stats_columns!(), " FROM courier.stats($1)"), &[Type::TEXT]);
pub(crate) const ALL_STATS: Statement =
    fixed(concat!("SELECT ", stats_columns!(), " FROM courier.queue_stats ORDER BY queue"), &[]);
pub(crate) const STATS_RESET: Statement = fixed("SELECT courier.stats_reset($1)", &[Type::TEXT]);

pub(crate) const DEAD_LETTERS: Statement = fixed(
    "SELECT queue, id, origin_queue, attempts, last_error, enqueued_at, dead_at, headers, payload, group_key \
     FROM courier.dead_letters WHERE $1::text IS NULL OR queue = $1 ORDER BY queue, id",
    &[Type::TEXT],
);
pub(crate) const COMPLETED: Statement = fixed(
    "SELECT queue, id, attempt, priority, enqueued_at, completed_at, headers, payload \
     FROM courier.completed_messages WHERE $1::text IS NULL OR queue = $1 ORDER BY queue, id",
    &[Type::TEXT],
);
pub(crate) const QUEUE_GROUPS: Statement = fixed(
    "SELECT queue, group_key, ready, in_flight, blocked, head_message_id, head_available_at, held_until \
     FROM courier.queue_groups WHERE $1::text IS NULL OR queue = $1 ORDER BY queue, group_key",
    &[Type::TEXT],
);
pub(crate) const MAINTAIN: Statement =
    fixed("SELECT expired_keys, expired_completed FROM courier.maintain($1)", &[Type::INT4]);
pub(crate) const GRANT: Statement =
    fixed("SELECT courier.grant($1, $2, $3)", &[Type::TEXT, Type::TEXT, Type::TEXT]);
pub(crate) const REVOKE: Statement =
    fixed("SELECT courier.revoke($1, $2, $3)", &[Type::TEXT, Type::TEXT, Type::TEXT]);
pub(crate) const HAS_PRIVILEGE: Statement =
    fixed("SELECT courier.has_queue_privilege($1, $2)", &[Type::TEXT, Type::TEXT]);
pub(crate) const VERSION: Statement = fixed("SELECT courier.version()", &[]);

/// A call of one courier function whose optional arguments are passed by name only when the
/// caller set them, so that the function's own defaults apply to the rest (courier refuses
/// NULL for most of them).
pub(crate) struct Call<'a> {
    sql: String,
    types: Vec<Type>,
    params: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Call<'a> {
    /// `select` is what comes before the function's arguments, e.g. `SELECT courier.enqueue(`.
    pub(crate) fn new(select: &str) -> Self {
        Call { sql: select.to_string(), types: Vec::new(), params: Vec::new() }
    }

    fn placeholder(&mut self, value: &'a (dyn ToSql + Sync), ty: Type) {
        if !self.params.is_empty() {
            self.sql.push_str(", ");
        }
        self.params.push(value);
        self.types.push(ty);
        self.sql.push('$');
        self.sql.push_str(&self.params.len().to_string());
    }

    pub(crate) fn arg(mut self, value: &'a (dyn ToSql + Sync), ty: Type) -> Self {
        self.placeholder(value, ty);
        self
    }

    pub(crate) fn named<T: ToSql + Sync>(mut self, name: &str, value: &'a Option<T>, ty: Type) -> Self {
        if let Some(v) = value {
            // Named notation after positional arguments: "..., name => $n".
            if !self.params.is_empty() {
                self.sql.push_str(", ");
            }
            self.sql.push_str(name);
            self.sql.push_str(" => $");
            self.params.push(v);
            self.types.push(ty);
            self.sql.push_str(&self.params.len().to_string());
        }
        self
    }

    /// The statement, closed with `tail` (e.g. `)`), and its parameters.
    pub(crate) fn finish(mut self, tail: &str) -> (Statement, Vec<&'a (dyn ToSql + Sync)>) {
        self.sql.push_str(tail);
        (Statement { sql: Cow::Owned(self.sql), types: Cow::Owned(self.types) }, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_passes_only_given_options_by_name() {
        let q = "emails";
        let p = 5i32;
        let none: Option<i32> = None;
        let some = Some(p);
        let (s, params) = Call::new("SELECT courier.enqueue(")
            .arg(&q, Type::TEXT)
            .named("delay", &none, Type::INTERVAL)
            .named("priority", &some, Type::INT4)
            .finish(")");
        assert_eq!(s.sql, "SELECT courier.enqueue($1, priority => $2)");
        assert_eq!(&*s.types, &[Type::TEXT, Type::INT4]);
        assert_eq!(params.len(), 2);
    }
}
