"""courier's SQL API for asyncio: the functions of the top-level module, awaitable.

Generated from _api.py by tools/gen_aio.py: edit that file and regenerate.

Each function takes what it runs on first: a psycopg AsyncConnection, or a SQLAlchemy
AsyncSession or AsyncConnection. The call is part of that connection's transaction: an
autocommit connection commits it at once; inside the caller's transaction it commits or rolls back
with the caller's own writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from . import _sql
from ._conn import AsyncExecutor, execute_async
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


async def create_queue(
    conn: AsyncExecutor,
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
    return await execute_async(conn, _sql.create_queue(queue, settings, if_not_exists))


async def alter_queue(
    conn: AsyncExecutor,
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
    await execute_async(conn, _sql.alter_queue(queue, settings))


async def drop_queue(conn: AsyncExecutor, queue: str, *, if_exists: bool = False) -> bool:
    return await execute_async(conn, _sql.drop_queue(queue, if_exists))


async def purge_queue(conn: AsyncExecutor, queue: str) -> int:
    """Deletes every message of the queue; returns how many."""
    return await execute_async(conn, _sql.purge_queue(queue))


async def queues(conn: AsyncExecutor) -> list[QueueInfo]:
    return await execute_async(conn, _sql.queues())


async def enqueue(
    conn: AsyncExecutor,
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
    return await execute_async(
        conn, _sql.enqueue(queue, payload, headers, delay, priority, not_before, dedup_key, group_key)
    )


async def enqueue_unique(
    conn: AsyncExecutor,
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
    return await execute_async(
        conn, _sql.enqueue_unique(queue, payload, dedup_key, headers, delay, priority, not_before, group_key)
    )


async def enqueue_batch(
    conn: AsyncExecutor,
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
    return await execute_async(conn, stmt)


async def lease(
    conn: AsyncExecutor,
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
    return await execute_async(conn, _sql.lease(queue, batch_size, visibility_timeout, wait, group_batch))


async def ack(conn: AsyncExecutor, receipt: uuid.UUID | str, *, strict: bool = False) -> bool:
    """True if the receipt held its lease and the message is done; False if not — or, with
    ``strict``, raises LeaseLost."""
    return await execute_async(conn, _sql.ack(receipt, strict))


async def ack_batch(conn: AsyncExecutor, receipts: Iterable[uuid.UUID | str], *, strict: bool = False) -> int:
    return await execute_async(conn, _sql.ack_batch(receipts, strict))


async def nack(
    conn: AsyncExecutor,
    receipt: uuid.UUID | str,
    *,
    retry_in: Duration | None = None,
    error: str | None = None,
    dead: bool = False,
    strict: bool = False,
) -> bool:
    """Gives the message back: ready again after ``retry_in`` (the queue's backoff if None),
    dead-lettered if ``dead`` or this was its last attempt."""
    return await execute_async(conn, _sql.nack(receipt, retry_in, error, dead, strict))


async def nack_batch(
    conn: AsyncExecutor,
    receipts: Iterable[uuid.UUID | str],
    *,
    retry_in: Duration | None = None,
    error: str | None = None,
    dead: bool = False,
    strict: bool = False,
) -> int:
    return await execute_async(conn, _sql.nack_batch(receipts, retry_in, error, dead, strict))


async def extend(
    conn: AsyncExecutor, receipt: uuid.UUID | str, visibility_timeout: Duration, *, strict: bool = False
) -> bool:
    """The lease now expires ``visibility_timeout`` from now; False (or LeaseLost) if it was lost."""
    return await execute_async(conn, _sql.extend(receipt, visibility_timeout, strict))


async def redrive(
    conn: AsyncExecutor,
    queue: str,
    *,
    message_ids: Sequence[int] | None = None,
    max_messages: int | None = None,
) -> int:
    """Puts dead letters of ``queue`` back to work; returns how many moved."""
    return await execute_async(conn, _sql.redrive(queue, message_ids, max_messages))


async def dead_letters(conn: AsyncExecutor, queue: str | None = None) -> list[DeadLetter]:
    return await execute_async(conn, _sql.dead_letters(queue))


async def completed_messages(conn: AsyncExecutor, queue: str | None = None) -> list[CompletedMessage]:
    return await execute_async(conn, _sql.completed_messages(queue))


async def stats(conn: AsyncExecutor, queue: str) -> QueueStats:
    return await execute_async(conn, _sql.stats(queue))


async def queue_stats(conn: AsyncExecutor) -> list[QueueStats]:
    return await execute_async(conn, _sql.queue_stats())


async def stats_reset(conn: AsyncExecutor, queue: str | None = None) -> bool:
    return await execute_async(conn, _sql.stats_reset(queue))


async def maintain(conn: AsyncExecutor, *, max_rows: int | None = None) -> Maintained:
    return await execute_async(conn, _sql.maintain(max_rows))


async def grant(conn: AsyncExecutor, queue: str, privilege: str, role: str) -> None:
    """privilege: enqueue, consume, manage or all; role: a role name or public."""
    await execute_async(conn, _sql.grant(queue, privilege, role))


async def revoke(conn: AsyncExecutor, queue: str, privilege: str, role: str) -> None:
    await execute_async(conn, _sql.revoke(queue, privilege, role))


async def has_queue_privilege(conn: AsyncExecutor, queue: str, privilege: str) -> bool:
    return await execute_async(conn, _sql.has_queue_privilege(queue, privilege))


async def queue_groups(conn: AsyncExecutor, queue: str | None = None) -> list[QueueGroup]:
    """Message groups and their heads (``courier.queue_groups``)."""
    return await execute_async(conn, _sql.queue_groups(queue))


async def queue_privileges(conn: AsyncExecutor) -> list[QueuePrivilege]:
    return await execute_async(conn, _sql.queue_privileges())


async def version(conn: AsyncExecutor) -> str:
    """The courier library's version in the server."""
    return await execute_async(conn, _sql.version())
