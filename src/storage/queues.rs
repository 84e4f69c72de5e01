//! The queue catalog: looking queues up, creating, changing and deleting them, and their grants.

use std::ops::RangeInclusive;

use courier_core::access::Privilege;
use courier_core::groups::{OnDead, Order};
use courier_core::policy::QueueSettings;
use courier_core::retry::RetryPolicy;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;

use super::{Only, Required, Rows, Statement, Store, columns, concat_args, interval_arg, opt_interval_arg};

/// A queue's dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterQueue {
    pub id: i32,
    pub name: String,
}

/// What the data path needs to know about a queue.
#[derive(Clone, Debug)]
pub struct QueueRef {
    pub id: i32,
    pub name: String,
    pub settings: QueueSettings,
    pub dead_letter_queue: Option<DeadLetterQueue>,
    /// Whether making messages ready here sends a NOTIFY.
    pub notify: bool,
    /// Lowest to highest priority ever enqueued here.
    pub priorities: RangeInclusive<i16>,
    /// The owning role's name.
    pub owner: String,
    /// Privileges granted on the queue: (privilege, role name or "public").
    pub grants: Vec<(Privilege, String)>,
    /// What a dead letter does to its group, and which eligible group is served first.
    pub group_on_dead: OnDead,
    pub group_order: Order,
    /// A message with a group key was enqueued here (leases look for groups).
    pub grouped: bool,
}

impl QueueRef {
    /// The queue's only priority, when it has only ever used one.
    pub fn single_priority(&self) -> Option<i16> {
        (self.priorities.start() == self.priorities.end()).then_some(*self.priorities.start())
    }
}

// The group columns, and what 0.1.0's schema (without them) stands for them.
macro_rules! queue_select {
    () => {
        queue_select!("q.group_on_dead, q.group_order, q.grouped")
    };
    (legacy) => {
        queue_select!("'skip', 'oldest', false")
    };
    ($groups:literal) => {
        concat!(
            "SELECT q.queue_id, q.name, q.visibility_timeout, q.max_attempts, q.retry_base, q.retry_max, \
             q.retry_jitter, q.dedup_window, q.retention, d.queue_id, d.name, q.notify, \
             q.min_priority, q.max_priority, q.owner::pg_catalog.text, \
             ARRAY(SELECT g.privilege || ':' || g.grantee FROM courier.queue_grant g WHERE g.queue_id = q.queue_id), ",
            $groups,
            " FROM courier.queue q LEFT JOIN courier.queue d ON d.queue_id = q.dead_letter_queue_id \
             WHERE"
        )
    };
}

columns!(QueueColumn {
    QueueId,
    Name,
    VisibilityTimeout,
    MaxAttempts,
    RetryBase,
    RetryMax,
    RetryJitter,
    DedupWindow,
    Retention,
    DeadLetterQueueId,
    DeadLetterQueueName,
    Notify,
    MinPriority,
    MaxPriority,
    Owner,
    Grants,
    GroupOnDead,
    GroupOrder,
    Grouped,
});

static LOOKUP_QUEUE: Statement =
    Statement { sql: concat!(queue_select!(), " q.name = $1"), args: &[pg_sys::TEXTOID] };

static LOOKUP_QUEUE_BY_ID: Statement =
    Statement { sql: concat!(queue_select!(), " q.queue_id = $1"), args: &[pg_sys::INT4OID] };

// Used at REPEATABLE READ and above, where the transaction snapshot may predate a drop that has
// since committed: the row lock makes such a race fail with a serialization error instead.
static LOOKUP_QUEUE_KEY_SHARE: Statement =
    Statement { sql: concat!(queue_select!(), " q.name = $1 FOR KEY SHARE OF q"), args: &[pg_sys::TEXTOID] };

/// The settings columns, in the order INSERT_QUEUE and UPDATE_QUEUE take them after their first.
const SETTINGS_ARGS: [pg_sys::Oid; 11] = [
    pg_sys::INTERVALOID,
    pg_sys::INT4OID,
    pg_sys::INT4OID,
    pg_sys::INTERVALOID,
    pg_sys::INTERVALOID,
    pg_sys::FLOAT8OID,
    pg_sys::INTERVALOID,
    pg_sys::INTERVALOID,
    pg_sys::BOOLOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
];

// name, the settings, owner.
static INSERT_QUEUE_ARGS: [pg_sys::Oid; 13] =
    concat_args(concat_args::<1, 11, 12>([pg_sys::TEXTOID], SETTINGS_ARGS), [pg_sys::TEXTOID]);
// queue id, the settings.
static UPDATE_QUEUE_ARGS: [pg_sys::Oid; 12] = concat_args([pg_sys::INT4OID], SETTINGS_ARGS);

static INSERT_QUEUE: Statement = Statement {
    sql: "INSERT INTO courier.queue (name, visibility_timeout, max_attempts, dead_letter_queue_id, retry_base, \
          retry_max, retry_jitter, dedup_window, retention, notify, group_on_dead, group_order, owner) \
          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
          ON CONFLICT (name) DO NOTHING RETURNING queue_id",
    args: &INSERT_QUEUE_ARGS,
};

static UPDATE_QUEUE: Statement = Statement {
    sql: "UPDATE courier.queue SET visibility_timeout = $2, max_attempts = $3, dead_letter_queue_id = $4, \
          retry_base = $5, retry_max = $6, retry_jitter = $7, dedup_window = $8, retention = $9, notify = $10, \
          group_on_dead = $11, group_order = $12 \
          WHERE queue_id = $1",
    args: &UPDATE_QUEUE_ARGS,
};

// The first message with a group key in a queue (once per queue).
static MARK_GROUPED: Statement = Statement {
    sql: "UPDATE courier.queue SET grouped = true WHERE queue_id = $1 AND NOT grouped",
    args: &[pg_sys::INT4OID],
};

// Groups whose dead letters a purge or drop of this queue deletes: they may be blocked by them.
static GROUPS_OF_DEAD_LETTERS: Statement = Statement {
    sql: "SELECT DISTINCT m.origin_queue_id, m.group_key FROM courier.message m \
          WHERE m.queue_id = $1 AND m.dead_at IS NOT NULL AND m.origin_queue_id IS NOT NULL \
            AND m.group_key IS NOT NULL \
          ORDER BY 1, 2",
    args: &[pg_sys::INT4OID],
};

columns!(OriginGroupColumn { OriginQueueId, GroupKey });

static DELETE_QUEUE_GROUPS: Statement =
    Statement { sql: "DELETE FROM courier.message_group WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

// Whether making $2 the dead-letter queue of $1 would close a cycle: $2's own dead-letter chain
// reaches $1.
static DEAD_LETTER_CHAIN: Statement = Statement {
    sql: "WITH RECURSIVE chain(id) AS ( \
              SELECT $1::pg_catalog.int4 \
              UNION \
              SELECT q.dead_letter_queue_id FROM courier.queue q JOIN chain ON q.queue_id = chain.id \
              WHERE q.dead_letter_queue_id IS NOT NULL) \
          SELECT pg_catalog.bool_or(chain.id = $2) FROM chain",
    args: &[pg_sys::INT4OID, pg_sys::INT4OID],
};

static DEAD_LETTER_USERS: Statement = Statement {
    sql: "SELECT q.name FROM courier.queue q WHERE q.dead_letter_queue_id = $1 ORDER BY q.name LIMIT 1",
    args: &[pg_sys::INT4OID],
};

// Records that a priority outside the queue's known range was used (rare: once per new extreme).
static WIDEN_PRIORITIES: Statement = Statement {
    sql: "UPDATE courier.queue SET min_priority = LEAST(min_priority, $2), max_priority = GREATEST(max_priority, $2) \
          WHERE queue_id = $1 AND ($2 < min_priority OR $2 > max_priority)",
    args: &[pg_sys::INT4OID, pg_sys::INT2OID],
};

static ANY_RETENTION: Statement =
    Statement { sql: "SELECT EXISTS (SELECT FROM courier.queue WHERE retention IS NOT NULL)", args: &[] };

static DELETE_QUEUE: Statement =
    Statement { sql: "DELETE FROM courier.queue WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_MESSAGES: Statement =
    Statement { sql: "DELETE FROM courier.message WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_KEYS: Statement =
    Statement { sql: "DELETE FROM courier.dedup WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_GRANTS: Statement =
    Statement { sql: "DELETE FROM courier.queue_grant WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static DELETE_QUEUE_COMPLETED: Statement =
    Statement { sql: "DELETE FROM courier.completed WHERE queue_id = $1", args: &[pg_sys::INT4OID] };

static GRANT: Statement = Statement {
    sql: "INSERT INTO courier.queue_grant (queue_id, grantee, privilege) \
          SELECT $1, $2, p FROM pg_catalog.unnest($3::pg_catalog.text[]) AS p \
          ON CONFLICT DO NOTHING RETURNING privilege",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::TEXTARRAYOID],
};

static REVOKE: Statement = Statement {
    sql: "DELETE FROM courier.queue_grant WHERE queue_id = $1 AND grantee = $2 AND privilege = ANY ($3) \
          RETURNING privilege",
    args: &[pg_sys::INT4OID, pg_sys::TEXTOID, pg_sys::TEXTARRAYOID],
};

/// A retry policy from its three columns of a result row.
pub(super) fn retry_policy(
    rows: &Rows,
    row: usize,
    base: impl super::Column,
    max: impl super::Column,
    jitter: impl super::Column,
) -> RetryPolicy {
    RetryPolicy {
        base_usecs: rows.interval_usecs(row, base).required("retry_base"),
        max_usecs: rows.interval_usecs(row, max).required("retry_max"),
        jitter: rows.get::<f64>(row, jitter).required("retry_jitter"),
    }
}

/// A dead-letter queue from its id and name columns (both NULL without one).
pub(super) fn dead_letter_queue(
    rows: &Rows,
    row: usize,
    id: impl super::Column,
    name: impl super::Column,
) -> Option<DeadLetterQueue> {
    rows.get::<i32>(row, id).zip(rows.get::<String>(row, name)).map(|(id, name)| DeadLetterQueue { id, name })
}

fn read_queue(rows: &Rows) -> QueueRef {
    use QueueColumn as C;
    QueueRef {
        id: rows.get::<i32>(0, C::QueueId).required("queue_id"),
        name: rows.get::<String>(0, C::Name).required("name"),
        settings: QueueSettings {
            visibility_timeout_usecs: rows
                .interval_usecs(0, C::VisibilityTimeout)
                .required("visibility_timeout"),
            max_attempts: rows.get::<i32>(0, C::MaxAttempts).required("max_attempts"),
            retry: retry_policy(rows, 0, C::RetryBase, C::RetryMax, C::RetryJitter),
            dedup_window_usecs: rows.interval_usecs(0, C::DedupWindow).required("dedup_window"),
            retention_usecs: rows.interval_usecs(0, C::Retention),
        },
        dead_letter_queue: dead_letter_queue(rows, 0, C::DeadLetterQueueId, C::DeadLetterQueueName),
        notify: rows.get::<bool>(0, C::Notify).required("notify"),
        priorities: rows.get::<i16>(0, C::MinPriority).required("min_priority")
            ..=rows.get::<i16>(0, C::MaxPriority).required("max_priority"),
        owner: rows.get::<String>(0, C::Owner).required("owner"),
        grants: rows
            .get::<Vec<String>>(0, C::Grants)
            .required("grants")
            .into_iter()
            .filter_map(|g| {
                let (privilege, grantee) = g.split_once(':')?;
                Some((Privilege::from_stored(privilege)?, grantee.to_string()))
            })
            .collect(),
        group_on_dead: OnDead::parse(
            &rows.get::<String>(0, C::GroupOnDead).required("group_on_dead"),
            "group_on_dead",
        )
        .unwrap_or_default(),
        group_order: Order::parse(
            &rows.get::<String>(0, C::GroupOrder).required("group_order"),
            "group_order",
        )
        .unwrap_or_default(),
        grouped: rows.get::<bool>(0, C::Grouped).required("grouped"),
    }
}

/// A queue's group settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupSettings {
    pub on_dead: OnDead,
    pub order: Order,
}

/// A queue's settings as the parameters INSERT_QUEUE and UPDATE_QUEUE take after their first.
fn settings_args(
    s: &QueueSettings,
    dead_letter_queue: Option<i32>,
    notify: bool,
    groups: GroupSettings,
) -> [DatumWithOid<'static>; 11] {
    [
        interval_arg(s.visibility_timeout_usecs),
        s.max_attempts.into(),
        dead_letter_queue.into(),
        interval_arg(s.retry.base_usecs),
        interval_arg(s.retry.max_usecs),
        s.retry.jitter.into(),
        interval_arg(s.dedup_window_usecs),
        opt_interval_arg(s.retention_usecs),
        notify.into(),
        groups.on_dead.as_str().into(),
        groups.order.as_str().into(),
    ]
}

impl Store<'_> {
    pub fn lookup_queue_by_id(&self, queue_id: i32) -> Option<QueueRef> {
        let rows = self.run(&LOOKUP_QUEUE_BY_ID, &[queue_id.into()]);
        (!rows.is_empty()).then(|| read_queue(&rows))
    }

    pub fn lookup_queue(&self, name: &str, key_share: bool) -> Option<QueueRef> {
        let stmt = if key_share { &LOOKUP_QUEUE_KEY_SHARE } else { &LOOKUP_QUEUE };
        let rows = self.run(stmt, &[name.into()]);
        (!rows.is_empty()).then(|| read_queue(&rows))
    }

    /// Inserts a queue; `None` if one with that name exists (committed or concurrently inserted
    /// and then committed: ON CONFLICT waits for the other inserter).
    pub fn insert_queue(
        &self,
        name: &str,
        s: &QueueSettings,
        dead_letter_queue: Option<i32>,
        notify: bool,
        groups: GroupSettings,
        owner: &str,
    ) -> Option<i32> {
        let mut args = vec![name.into()];
        args.extend(settings_args(s, dead_letter_queue, notify, groups));
        args.push(owner.into());
        let rows = self.run(&INSERT_QUEUE, &args);
        (!rows.is_empty()).then(|| rows.get::<i32>(0, Only).required("queue_id"))
    }

    pub fn update_queue(
        &self,
        queue_id: i32,
        s: &QueueSettings,
        dead_letter_queue: Option<i32>,
        notify: bool,
        groups: GroupSettings,
    ) {
        let mut args = vec![queue_id.into()];
        args.extend(settings_args(s, dead_letter_queue, notify, groups));
        self.run(&UPDATE_QUEUE, &args);
    }

    /// True if making `dead_letter_queue` the dead-letter queue of `queue_id` would form a cycle.
    pub fn dead_letter_cycle(&self, queue_id: i32, dead_letter_queue: i32) -> bool {
        let rows = self.run(&DEAD_LETTER_CHAIN, &[dead_letter_queue.into(), queue_id.into()]);
        rows.get::<bool>(0, Only).unwrap_or(false)
    }

    /// A queue that uses `queue_id` as its dead-letter queue, if any.
    pub fn dead_letter_user(&self, queue_id: i32) -> Option<String> {
        let rows = self.run(&DEAD_LETTER_USERS, &[queue_id.into()]);
        (!rows.is_empty()).then(|| rows.get::<String>(0, Only).required("name"))
    }

    /// Deletes a queue with its messages, dedup keys and completed messages; returns what
    /// purge_queue does.
    pub fn delete_queue(&self, queue_id: i32) -> (usize, Vec<(i32, String)>) {
        let removed = self.purge_queue(queue_id);
        self.run(&DELETE_QUEUE_KEYS, &[queue_id.into()]);
        self.run(&DELETE_QUEUE_COMPLETED, &[queue_id.into()]);
        self.run(&DELETE_QUEUE_GRANTS, &[queue_id.into()]);
        self.run(&DELETE_QUEUE, &[queue_id.into()]);
        removed
    }

    /// Grants privileges on a queue; returns how many were new.
    pub fn grant(&self, queue_id: i32, grantee: &str, privileges: &[Privilege]) -> usize {
        let names: Vec<&str> = privileges.iter().map(|p| p.as_str()).collect();
        self.run(&GRANT, &[queue_id.into(), grantee.into(), names.into()]).len()
    }

    /// Revokes privileges on a queue; returns how many there were.
    pub fn revoke(&self, queue_id: i32, grantee: &str, privileges: &[Privilege]) -> usize {
        let names: Vec<&str> = privileges.iter().map(|p| p.as_str()).collect();
        self.run(&REVOKE, &[queue_id.into(), grantee.into(), names.into()]).len()
    }

    /// Deletes every message of a queue and its groups; returns how many messages, and the
    /// groups of other queues whose dead letters it held (which may have blocked them).
    pub fn purge_queue(&self, queue_id: i32) -> (usize, Vec<(i32, String)>) {
        if self.schema() == super::Schema::V0_1 {
            return (self.run(&DELETE_QUEUE_MESSAGES, &[queue_id.into()]).len(), Vec::new());
        }
        let rows = self.run(&GROUPS_OF_DEAD_LETTERS, &[queue_id.into()]);
        let origins: Vec<(i32, String)> = (0..rows.len())
            .map(|i| {
                (
                    rows.get::<i32>(i, OriginGroupColumn::OriginQueueId).required("origin_queue_id"),
                    rows.get::<String>(i, OriginGroupColumn::GroupKey).required("group_key"),
                )
            })
            .collect();
        let removed = self.run(&DELETE_QUEUE_MESSAGES, &[queue_id.into()]).len();
        self.run(&DELETE_QUEUE_GROUPS, &[queue_id.into()]);
        (removed, origins)
    }

    /// Records that a message with a group key was enqueued into the queue; true if that is new.
    pub fn mark_grouped(&self, queue_id: i32) -> bool {
        !self.run(&MARK_GROUPED, &[queue_id.into()]).is_empty()
    }

    /// Widens the queue's recorded priority range to include `priority`; true if it changed.
    pub fn widen_priorities(&self, queue_id: i32, priority: i16) -> bool {
        !self.run(&WIDEN_PRIORITIES, &[queue_id.into(), priority.into()]).is_empty()
    }

    /// Whether any queue of this database keeps completed messages.
    pub fn any_retention(&self) -> bool {
        self.run(&ANY_RETENTION, &[]).get::<bool>(0, Only).unwrap_or(true)
    }
}

/// This file's statements by name, for `courier._explain` (bin/check-statements keeps it complete).
pub(super) static STATEMENTS: &[(&str, &Statement)] = &[
    ("LOOKUP_QUEUE", &LOOKUP_QUEUE),
    ("LOOKUP_QUEUE_BY_ID", &LOOKUP_QUEUE_BY_ID),
    ("LOOKUP_QUEUE_KEY_SHARE", &LOOKUP_QUEUE_KEY_SHARE),
    ("INSERT_QUEUE", &INSERT_QUEUE),
    ("UPDATE_QUEUE", &UPDATE_QUEUE),
    ("DEAD_LETTER_CHAIN", &DEAD_LETTER_CHAIN),
    ("DEAD_LETTER_USERS", &DEAD_LETTER_USERS),
    ("WIDEN_PRIORITIES", &WIDEN_PRIORITIES),
    ("ANY_RETENTION", &ANY_RETENTION),
    ("DELETE_QUEUE", &DELETE_QUEUE),
    ("DELETE_QUEUE_MESSAGES", &DELETE_QUEUE_MESSAGES),
    ("DELETE_QUEUE_KEYS", &DELETE_QUEUE_KEYS),
    ("DELETE_QUEUE_GRANTS", &DELETE_QUEUE_GRANTS),
    ("DELETE_QUEUE_COMPLETED", &DELETE_QUEUE_COMPLETED),
    ("GRANT", &GRANT),
    ("REVOKE", &REVOKE),
    ("MARK_GROUPED", &MARK_GROUPED),
    ("GROUPS_OF_DEAD_LETTERS", &GROUPS_OF_DEAD_LETTERS),
    ("DELETE_QUEUE_GROUPS", &DELETE_QUEUE_GROUPS),
];

/// Texts of this file's statements for 0.1.0's schema (see mod.rs's Schema), where they differ.
pub(super) static LEGACY: &[(&Statement, &str)] = &[
    (&LOOKUP_QUEUE, concat!(queue_select!(legacy), " q.name = $1")),
    (&LOOKUP_QUEUE_BY_ID, concat!(queue_select!(legacy), " q.queue_id = $1")),
    (&LOOKUP_QUEUE_KEY_SHARE, concat!(queue_select!(legacy), " q.name = $1 FOR KEY SHARE OF q")),
    (
        &INSERT_QUEUE,
        "INSERT INTO courier.queue (name, visibility_timeout, max_attempts, dead_letter_queue_id, retry_base, \
         retry_max, retry_jitter, dedup_window, retention, notify, owner) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $13) \
         ON CONFLICT (name) DO NOTHING RETURNING queue_id",
    ),
    (
        &UPDATE_QUEUE,
        "UPDATE courier.queue SET visibility_timeout = $2, max_attempts = $3, dead_letter_queue_id = $4, \
         retry_base = $5, retry_max = $6, retry_jitter = $7, dedup_window = $8, retention = $9, notify = $10 \
         WHERE queue_id = $1",
    ),
];
