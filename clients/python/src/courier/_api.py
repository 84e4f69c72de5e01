"""courier's SQL API as typed functions (sync flavour; courier.aio has the same for asyncio).

Each function takes what it runs on first: a psycopg Connection, a SQLAlchemy Session or
Connection, or Django's connection. The call is part of that connection's transaction: an
autocommit connection commits it at once; inside the caller's transaction it commits or rolls back
with the caller's own writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from . import _sql
from ._conn import Executor, execute
from ._types import (
    JSON,
    CompletedMessage,
    DeadLetter,
    Duration,
    Enqueued,
    Maintained,
    Message,
    QueueGroup,
    QueueInfo,
    QueuePrivilege,
    QueueStats,
)


def create_queue(
    conn: Executor,
    queue: str,
    *,
    visibility_timeout: Duration | None = None,
    max_attempts: int | None = None,
    dead_letter_queue: str | None = None,
    retry_base: Duration | None = None,
    retry_max: Duration | None = None,
    retry_jitter: float | None = None,
    dedup_window: Duration | None = None,
    retention: Duration | None = None,
    notify: bool | None = None,
    group_on_dead: str | None = None,
    group_order: str | None = None,
    if_not_exists: bool = False,
) -> bool:
    """Creates a queue; False if it existed and ``if_not_exists`` (its settings stay)."""
    settings = dict(
        visibility_timeout=visibility_timeout, max_attempts=max_attempts,
        dead_letter_queue=dead_letter_queue, retry_base=retry_base, retry_max=retry_max,
        retry_jitter=retry_jitter, dedup_window=dedup_window, retention=retention, notify=notify,
        group_on_dead=group_on_dead, group_order=group_order,
    )  # fmt: skip
    return execute(conn, _sql.create_queue(queue, settings, if_not_exists))


def alter_queue(
    conn: Executor,
    queue: str,
    *,
    visibility_timeout: Duration | None = None,
    max_attempts: int | None = None,
    dead_letter_queue: str | None = None,
    retry_base: Duration | None = None,
    retry_max: Duration | None = None,
    retry_jitter: float | None = None,
    dedup_window: Duration | None = None,
    retention: Duration | None = None,
    notify: bool | None = None,
    group_on_dead: str | None = None,
    group_order: str | None = None,
) -> None:
    """Changes the settings given (None leaves one alone; ``dead_letter_queue=""`` removes it,
    ``retention=0`` stops keeping completed messages)."""
    settings = dict(
        visibility_timeout=visibility_timeout, max_attempts=max_attempts,
        dead_letter_queue=dead_letter_queue, retry_base=retry_base, retry_max=retry_max,
        retry_jitter=retry_jitter, dedup_window=dedup_window, retention=retention, notify=notify,
        group_on_dead=group_on_dead, group_order=group_order,
    )  # fmt: skip
    execute(conn, _sql.alter_queue(queue, settings))


def drop_queue(conn: Executor, queue: str, *, if_exists: bool = False) -> bool:
    return execute(conn, _sql.drop_queue(queue, if_exists))


def purge_queue(conn: Executor, queue: str) -> int:
    """Deletes every message of the queue; returns how many."""
    return execute(conn, _sql.purge_queue(queue))


def queues(conn: Executor) -> list[QueueInfo]:
    return execute(conn, _sql.queues())


def enqueue(
    conn: Executor,
    queue: str,
    payload: JSON,
    *,
    headers: dict[str, JSON] | None = None,
    delay: Duration | None = None,
    priority: int | None = None,
    not_before: datetime | None = None,
    dedup_key: str | None = None,
    group_key: str | None = None,
) -> int:
    """Enqueues ``payload`` (any JSON-serialisable value) and returns the message id (the
    original message's id if ``dedup_key`` was taken). Messages with one ``group_key`` are
    delivered in order, one lease at a time."""
    return execute(
        conn, _sql.enqueue(queue, payload, headers, delay, priority, not_before, dedup_key, group_key)
    )


def enqueue_unique(
    conn: Executor,
    queue: str,
    payload: JSON,
    dedup_key: str,
    *,
    headers: dict[str, JSON] | None = None,
    delay: Duration | None = None,
    priority: int | None = None,
    not_before: datetime | None = None,
    group_key: str | None = None,
) -> Enqueued:
    """``enqueue`` with a required dedup key, saying whether the key was already taken."""
    return execute(
        conn, _sql.enqueue_unique(queue, payload, dedup_key, headers, delay, priority, not_before, group_key)
    )


def enqueue_batch(
    conn: Executor,
    queue: str,
    payloads: Iterable[JSON],
    *,
    headers: Sequence[dict[str, JSON] | None] | None = None,
    delay: Duration | None = None,
    priority: int | None = None,
    not_before: datetime | None = None,
    dedup_keys: Sequence[str | None] | None = None,
    group_keys: Sequence[str | None] | None = None,
) -> list[Enqueued]:
    """Enqueues 1 to 1000 messages; one result per payload, in order."""
    stmt = _sql.enqueue_batch(queue, payloads, headers, delay, priority, not_before, dedup_keys, group_keys)
    return execute(conn, stmt)


def lease(
    conn: Executor,
    queue: str,
    *,
    batch_size: int | None = None,
    visibility_timeout: Duration | None = None,
    wait: Duration | None = None,
    group_batch: int | None = None,
) -> list[Message]:
    """Leases up to ``batch_size`` ready messages; with ``wait``, sleeps in the server until one
    is ready or the wait is over; ``group_batch`` messages of one group at most. The lease holds
    only when its transaction commits."""
    return execute(conn, _sql.lease(queue, batch_size, visibility_timeout, wait, group_batch))


def ack(conn: Executor, receipt: uuid.UUID | str, *, strict: bool = False) -> bool:
    """True if the receipt held its lease and the message is done; False if not — or, with
    ``strict``, raises LeaseLost."""
    return execute(conn, _sql.ack(receipt, strict))


def ack_batch(conn: Executor, receipts: Iterable[uuid.UUID | str], *, strict: bool = False) -> int:
    return execute(conn, _sql.ack_batch(receipts, strict))


def nack(
    conn: Executor,
    receipt: uuid.UUID | str,
    *,
    retry_in: Duration | None = None,
    error: str | None = None,
    dead: bool = False,
    strict: bool = False,
) -> bool:
    """Gives the message back: ready again after ``retry_in`` (the queue's backoff if None),
    dead-lettered if ``dead`` or this was its last attempt."""
    return execute(conn, _sql.nack(receipt, retry_in, error, dead, strict))


def nack_batch(
    conn: Executor,
    receipts: Iterable[uuid.UUID | str],
    *,
    retry_in: Duration | None = None,
    error: str | None = None,
    dead: bool = False,
    strict: bool = False,
) -> int:
    return execute(conn, _sql.nack_batch(receipts, retry_in, error, dead, strict))


def extend(
    conn: Executor, receipt: uuid.UUID | str, visibility_timeout: Duration, *, strict: bool = False
) -> bool:
    """The lease now expires ``visibility_timeout`` from now; False (or LeaseLost) if it was lost."""
    return execute(conn, _sql.extend(receipt, visibility_timeout, strict))


def redrive(
    conn: Executor, queue: str, *, message_ids: Sequence[int] | None = None, max_messages: int | None = None
) -> int:
    """Puts dead letters of ``queue`` back to work; returns how many moved."""
    return execute(conn, _sql.redrive(queue, message_ids, max_messages))


def dead_letters(conn: Executor, queue: str | None = None) -> list[DeadLetter]:
    return execute(conn, _sql.dead_letters(queue))


def completed_messages(conn: Executor, queue: str | None = None) -> list[CompletedMessage]:
    return execute(conn, _sql.completed_messages(queue))


def stats(conn: Executor, queue: str) -> QueueStats:
    return execute(conn, _sql.stats(queue))


def queue_stats(conn: Executor) -> list[QueueStats]:
    return execute(conn, _sql.queue_stats())


def stats_reset(conn: Executor, queue: str | None = None) -> bool:
    return execute(conn, _sql.stats_reset(queue))


def maintain(conn: Executor, *, max_rows: int | None = None) -> Maintained:
    return execute(conn, _sql.maintain(max_rows))


def grant(conn: Executor, queue: str, privilege: str, role: str) -> None:
    """privilege: enqueue, consume, manage or all; role: a role name or public."""
    execute(conn, _sql.grant(queue, privilege, role))


def revoke(conn: Executor, queue: str, privilege: str, role: str) -> None:
    execute(conn, _sql.revoke(queue, privilege, role))


def has_queue_privilege(conn: Executor, queue: str, privilege: str) -> bool:
    return execute(conn, _sql.has_queue_privilege(queue, privilege))


def queue_groups(conn: Executor, queue: str | None = None) -> list[QueueGroup]:
    """Message groups and their heads (``courier.queue_groups``)."""
    return execute(conn, _sql.queue_groups(queue))


def queue_privileges(conn: Executor) -> list[QueuePrivilege]:
    return execute(conn, _sql.queue_privileges())


def version(conn: Executor) -> str:
    """The courier library's version in the server."""
    return execute(conn, _sql.version())
