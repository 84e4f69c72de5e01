//! Administering queues: create_queue, alter_queue, drop_queue and purge_queue.
//!
//! drop_queue takes its queue's name lock exclusively (queues.rs), so it waits for enqueues in
//! flight and deletes their messages too; create and alter hold the dead-letter queue's name lock
//! shared, so the queue they point at cannot be dropped under them. Every change sends the
//! invalidation that makes other backends re-read the queue catalog when it commits.

use courier_core::access::Privilege;
use courier_core::groups::{OnDead, Order};
use courier_core::name::validate_queue_name;
use courier_core::policy::QueueSettings;
use courier_core::retry::RetryPolicy;
use courier_core::{CourierError, ErrorKind};
use pgrx::prelude::*;

use crate::access;
use crate::args::{self, queue_name, window};
use crate::call::{self, Call};
use crate::effects;
use crate::errors::{OrRaise, arg, raise};
use crate::groups;
use crate::identity;
use crate::pg;
use crate::queues::{NameLock, invalidate_queue_cache, lock_name, resolve};
use crate::storage::{GroupChange, GroupSettings, QueueRef};

/// Resolves a dead-letter queue setting for `queue` (None when creating): it must exist, differ
/// from the queue and not lead back to it. Locks its name so it cannot be dropped meanwhile.
fn dead_letter_target(store: &Call, name: &str, for_queue: &str, queue: Option<&QueueRef>) -> i32 {
    validate_queue_name(name, "dead_letter_queue").or_raise();
    if for_queue == name {
        raise(CourierError::invalid(format!("queue \"{name}\" cannot be its own dead-letter queue")));
    }
    lock_name(name, NameLock::Shared);
    let target = store.lookup_queue(name, pg::uses_transaction_snapshot()).unwrap_or_else(|| {
        raise(CourierError::new(
            ErrorKind::UndefinedQueue,
            format!("dead_letter_queue \"{name}\" does not exist"),
        ))
    });
    // Dead letters are enqueued into the target on the caller's behalf later, by whoever nacks.
    access::require(store, &target, Privilege::Enqueue);
    if let Some(q) = queue
        && store.dead_letter_cycle(q.id, target.id)
    {
        raise(CourierError::invalid(format!(
            "dead_letter_queue \"{name}\" would form a cycle: its dead letters already end up in \"{}\"",
            q.name
        )));
    }
    target.id
}

/// Creates a queue. Returns true if it was created, false if it already existed and
/// `if_not_exists` was given (the existing queue's settings are left as they are).
///
/// The argument defaults are QueueSettings::default() spelled in SQL (pgrx takes them as
/// literals); lib.rs's create_queue_defaults_are_the_rust_defaults checks the two agree.
#[allow(clippy::too_many_arguments)]
#[pg_extern(name = "create_queue")]
#[search_path(pg_catalog, courier, pg_temp)]
fn create_queue_v2(
    queue: Option<&str>,
    visibility_timeout: default!(Option<Interval>, "'30 seconds'"),
    max_attempts: default!(Option<i32>, 25),
    dead_letter_queue: default!(Option<&str>, "NULL"),
    retry_base: default!(Option<Interval>, "'1 second'"),
    retry_max: default!(Option<Interval>, "'15 minutes'"),
    retry_jitter: default!(Option<f64>, 0.2),
    dedup_window: default!(Option<Interval>, "'1 day'"),
    retention: default!(Option<Interval>, "NULL"),
    notify: default!(Option<bool>, false),
    if_not_exists: default!(Option<bool>, false),
    group_on_dead: default!(Option<&str>, "'skip'"),
    group_order: default!(Option<&str>, "'oldest'"),
) -> bool {
    let groups = GroupSettings {
        on_dead: OnDead::parse(arg(group_on_dead, "group_on_dead"), "group_on_dead").or_raise(),
        order: Order::parse(arg(group_order, "group_order"), "group_order").or_raise(),
    };
    let settings = Settings {
        visibility_timeout,
        max_attempts,
        retry_base,
        retry_max,
        retry_jitter,
        dedup_window,
        retention,
    };
    create(queue, settings, dead_letter_queue, notify, if_not_exists, groups)
}

/// 0.1.0's create_queue (its SQL declaration binds this symbol until the extension is updated).
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn create_queue(
    queue: Option<&str>,
    visibility_timeout: Option<Interval>,
    max_attempts: Option<i32>,
    dead_letter_queue: Option<&str>,
    retry_base: Option<Interval>,
    retry_max: Option<Interval>,
    retry_jitter: Option<f64>,
    dedup_window: Option<Interval>,
    retention: Option<Interval>,
    notify: Option<bool>,
    if_not_exists: Option<bool>,
) -> bool {
    let settings = Settings {
        visibility_timeout,
        max_attempts,
        retry_base,
        retry_max,
        retry_jitter,
        dedup_window,
        retention,
    };
    create(queue, settings, dead_letter_queue, notify, if_not_exists, GroupSettings::default())
}

/// create_queue's settings arguments.
struct Settings {
    visibility_timeout: Option<Interval>,
    max_attempts: Option<i32>,
    retry_base: Option<Interval>,
    retry_max: Option<Interval>,
    retry_jitter: Option<f64>,
    dedup_window: Option<Interval>,
    retention: Option<Interval>,
}

fn create(
    queue: Option<&str>,
    a: Settings,
    dead_letter_queue: Option<&str>,
    notify: Option<bool>,
    if_not_exists: Option<bool>,
    groups: GroupSettings,
) -> bool {
    let name = queue_name(queue, "queue");
    let settings = QueueSettings {
        visibility_timeout_usecs: args::visibility_timeout(
            arg(a.visibility_timeout, "visibility_timeout"),
            "visibility_timeout",
        ),
        max_attempts: args::max_attempts(arg(a.max_attempts, "max_attempts")),
        retry: RetryPolicy {
            base_usecs: window(arg(a.retry_base, "retry_base"), "retry_base"),
            max_usecs: window(arg(a.retry_max, "retry_max"), "retry_max"),
            jitter: arg(a.retry_jitter, "retry_jitter"),
        },
        dedup_window_usecs: window(arg(a.dedup_window, "dedup_window"), "dedup_window"),
        retention_usecs: a.retention.and_then(args::retention),
    };
    settings.validate().or_raise();
    let notify = arg(notify, "notify");
    let if_not_exists = arg(if_not_exists, "if_not_exists");
    call::with(|store| {
        let dlq = dead_letter_queue.map(|d| dead_letter_target(store, d, name, None));
        match store.insert_queue(name, &settings, dlq, notify, groups, &identity::role_name(store.caller)) {
            Some(_) => {
                invalidate_queue_cache();
                true
            }
            None if if_not_exists => {
                pgrx::notice!("queue \"{name}\" already exists, skipping");
                false
            }
            None => raise(CourierError::duplicate_queue(name)),
        }
    })
}

/// Changes a queue's settings. Arguments left NULL keep their current value;
/// `dead_letter_queue => ''` removes the dead-letter queue, `retention => '0'` stops keeping
/// completed messages, `max_attempts => 0` means unlimited.
#[allow(clippy::too_many_arguments)]
#[pg_extern(name = "alter_queue")]
#[search_path(pg_catalog, courier, pg_temp)]
fn alter_queue_v2(
    queue: Option<&str>,
    visibility_timeout: default!(Option<Interval>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    dead_letter_queue: default!(Option<&str>, "NULL"),
    retry_base: default!(Option<Interval>, "NULL"),
    retry_max: default!(Option<Interval>, "NULL"),
    retry_jitter: default!(Option<f64>, "NULL"),
    dedup_window: default!(Option<Interval>, "NULL"),
    retention: default!(Option<Interval>, "NULL"),
    notify: default!(Option<bool>, "NULL"),
    group_on_dead: default!(Option<&str>, "NULL"),
    group_order: default!(Option<&str>, "NULL"),
) {
    let on_dead = group_on_dead.map(|v| OnDead::parse(v, "group_on_dead").or_raise());
    let order = group_order.map(|v| Order::parse(v, "group_order").or_raise());
    let settings = Settings {
        visibility_timeout,
        max_attempts,
        retry_base,
        retry_max,
        retry_jitter,
        dedup_window,
        retention,
    };
    alter(queue, settings, dead_letter_queue, notify, on_dead, order)
}

/// 0.1.0's alter_queue (see create_queue).
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn alter_queue(
    queue: Option<&str>,
    visibility_timeout: Option<Interval>,
    max_attempts: Option<i32>,
    dead_letter_queue: Option<&str>,
    retry_base: Option<Interval>,
    retry_max: Option<Interval>,
    retry_jitter: Option<f64>,
    dedup_window: Option<Interval>,
    retention: Option<Interval>,
    notify: Option<bool>,
) {
    let settings = Settings {
        visibility_timeout,
        max_attempts,
        retry_base,
        retry_max,
        retry_jitter,
        dedup_window,
        retention,
    };
    alter(queue, settings, dead_letter_queue, notify, None, None)
}

fn alter(
    queue: Option<&str>,
    a: Settings,
    dead_letter_queue: Option<&str>,
    notify: Option<bool>,
    on_dead: Option<OnDead>,
    order: Option<Order>,
) {
    let name = queue_name(queue, "queue");
    call::with(|store| {
        let current =
            store.lookup_queue(name, false).unwrap_or_else(|| raise(CourierError::undefined_queue(name)));
        access::require(store, &current, Privilege::Manage);
        let mut s = current.settings.clone();
        if let Some(v) = a.visibility_timeout {
            s.visibility_timeout_usecs = args::visibility_timeout(v, "visibility_timeout");
        }
        if let Some(v) = a.max_attempts {
            s.max_attempts = args::max_attempts(v);
        }
        if let Some(v) = a.retry_base {
            s.retry.base_usecs = window(v, "retry_base");
        }
        if let Some(v) = a.retry_max {
            s.retry.max_usecs = window(v, "retry_max");
        }
        if let Some(v) = a.retry_jitter {
            s.retry.jitter = v;
        }
        if let Some(v) = a.dedup_window {
            s.dedup_window_usecs = window(v, "dedup_window");
        }
        if let Some(v) = a.retention {
            s.retention_usecs = args::retention(v);
        }
        s.validate().or_raise();
        let dlq = match dead_letter_queue {
            None => current.dead_letter_queue.as_ref().map(|d| d.id),
            Some("") => None,
            Some(d) => Some(dead_letter_target(store, d, name, Some(&current))),
        };
        let groups = GroupSettings {
            on_dead: on_dead.unwrap_or(current.group_on_dead),
            order: order.unwrap_or(current.group_order),
        };
        store.update_queue(current.id, &s, dlq, notify.unwrap_or(current.notify), groups);
        invalidate_queue_cache();
    })
}

/// Drops a queue and every message in it. Returns true if it was dropped, false if it did not
/// exist and `if_exists` was given.
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn drop_queue(queue: Option<&str>, if_exists: default!(Option<bool>, false)) -> bool {
    let name = queue_name(queue, "queue");
    let if_exists = arg(if_exists, "if_exists");
    if pg::uses_transaction_snapshot() {
        // Under a transaction snapshot the delete below could miss messages that enqueues
        // committed after the snapshot was taken, leaving them behind without a queue.
        raise(
            CourierError::new(
                ErrorKind::InvalidTransactionState,
                "drop_queue cannot run at REPEATABLE READ or SERIALIZABLE isolation",
            )
            .with_hint("Run it in a READ COMMITTED transaction."),
        );
    }
    lock_name(name, NameLock::Exclusive);
    call::with(|store| match store.lookup_queue(name, false) {
        Some(q) => {
            access::require_owner(store, &q);
            if let Some(user) = store.dead_letter_user(q.id) {
                raise(
                    CourierError::new(
                        ErrorKind::DependentObjects,
                        format!("queue \"{name}\" is the dead-letter queue of \"{user}\""),
                    )
                    .with_hint(format!(
                        "Run courier.alter_queue('{user}', dead_letter_queue => '') first, or drop \"{user}\"."
                    )),
                );
            }
            let (removed, origins) = store.delete_queue(q.id);
            crate::events::dropped(store, &q.name, removed);
            unblock(store, origins);
            effects::forget(q.id);
            invalidate_queue_cache();
            true
        }
        None if if_exists => {
            pgrx::notice!("queue \"{name}\" does not exist, skipping");
            false
        }
        None => raise(CourierError::undefined_queue(name)),
    })
}

/// Deletes every message of a queue (ready, delayed, leased and dead alike) and returns how
/// many. Dedup keys and completed messages are kept.
#[pg_extern]
#[search_path(pg_catalog, courier, pg_temp)]
fn purge_queue(queue: Option<&str>) -> i64 {
    let name = queue_name(queue, "queue");
    call::with(|store| {
        let q = resolve(store, name);
        access::require(store, &q, Privilege::Manage);
        let (removed, origins) = store.purge_queue(q.id);
        crate::events::purged(store, &q.name, removed);
        unblock(store, origins);
        removed as i64
    })
}

/// The groups of other queues whose dead letters a purge or drop deleted: they may have been
/// blocked by them.
fn unblock(store: &Call, origins: Vec<(i32, String)>) {
    groups::apply(
        store,
        origins.into_iter().map(|(queue, key)| GroupChange::BlockerGone { queue, key }).collect(),
    );
}
