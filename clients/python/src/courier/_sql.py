"""The statement of each courier function, shared by the sync and asyncio flavours.

Every argument is a bound parameter with an explicit cast, so the server resolves the function
whatever type the driver would have sent (an ``integer`` argument rejects a ``bigint``). Only
arguments the caller gave are named in the call, so the server's defaults apply to the rest. The
argument names come from this file, never from input.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from psycopg.types.json import Jsonb

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
    from_row,
    to_timedelta,
)

T = TypeVar("T")
Row = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Stmt(Generic[T]):
    sql: str
    params: list[Any]
    shape: Callable[[list[Row]], T]


# (name, cast, value): name None for a positional argument; a named argument whose value is None
# is left out.
Arg = tuple[str | None, str, Any]


def _args(args: Sequence[Arg]) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for name, cast, value in args:
        if name is None:
            parts.append(f"%s::{cast}")
        elif value is None:
            continue
        else:
            parts.append(f"{name} => %s::{cast}")
        params.append(value)
    return ", ".join(parts), params


def _scalar(fn: str, args: Sequence[Arg], shape: Callable[[Any], T]) -> Stmt[T]:
    text, params = _args(args)
    return Stmt(f"SELECT courier.{fn}({text}) AS result", params, lambda rows: shape(rows[0]["result"]))


def _table(fn: str, args: Sequence[Arg], shape: Callable[[list[Row]], T]) -> Stmt[T]:
    text, params = _args(args)
    return Stmt(f"SELECT * FROM courier.{fn}({text})", params, shape)


def _view(view: str, where: str | None, params: list[Any], cls: type[T]) -> Stmt[list[T]]:
    sql = f"SELECT * FROM courier.{view}"
    if where:
        sql += f" WHERE {where}"
    return Stmt(sql, params, lambda rows: [from_row(cls, r) for r in rows])


def _dur(value: Duration | None) -> Any:
    return None if value is None else to_timedelta(value)


def _json(value: JSON) -> Jsonb:
    return value if isinstance(value, Jsonb) else Jsonb(value)


def _opt_json(value: JSON | None) -> Jsonb | None:
    return None if value is None else _json(value)


def _receipt(value: uuid.UUID | str) -> uuid.UUID | str:
    # A string goes to the server as it is: one that is no UUID raises InvalidReceipt (22P02) there.
    return value


QUEUE_SETTINGS = (
    ("visibility_timeout", "interval"),
    ("max_attempts", "integer"),
    ("dead_letter_queue", "text"),
    ("retry_base", "interval"),
    ("retry_max", "interval"),
    ("retry_jitter", "float8"),
    ("dedup_window", "interval"),
    ("retention", "interval"),
    ("notify", "boolean"),
    ("group_on_dead", "text"),
    ("group_order", "text"),
)


def _settings(settings: dict[str, Any]) -> list[Arg]:
    unknown = set(settings) - {name for name, _ in QUEUE_SETTINGS}
    if unknown:
        raise TypeError(f"unknown queue setting(s): {', '.join(sorted(unknown))}")
    out: list[Arg] = []
    for name, cast in QUEUE_SETTINGS:
        value = settings.get(name)
        out.append((name, cast, _dur(value) if cast == "interval" else value))
    return out


def create_queue(queue: str, settings: dict[str, Any], if_not_exists: bool) -> Stmt[bool]:
    args = [(None, "text", queue), *_settings(settings), ("if_not_exists", "boolean", if_not_exists or None)]
    return _scalar("create_queue", args, bool)


def alter_queue(queue: str, settings: dict[str, Any]) -> Stmt[None]:
    return _scalar("alter_queue", [(None, "text", queue), *_settings(settings)], lambda _v: None)


def drop_queue(queue: str, if_exists: bool) -> Stmt[bool]:
    return _scalar("drop_queue", [(None, "text", queue), ("if_exists", "boolean", if_exists or None)], bool)


def purge_queue(queue: str) -> Stmt[int]:
    return _scalar("purge_queue", [(None, "text", queue)], int)


def queues() -> Stmt[list[QueueInfo]]:
    return _view("queues", None, [], QueueInfo)


def _enqueue_options(
    headers: JSON | None,
    delay: Duration | None,
    priority: int | None,
    not_before: datetime | None,
    group_key: str | None,
) -> list[Arg]:
    return [
        ("headers", "jsonb", _opt_json(headers)),
        ("delay", "interval", _dur(delay)),
        ("priority", "integer", priority),
        ("not_before", "timestamptz", not_before),
        ("group_key", "text", group_key),
    ]


def enqueue(
    queue: str,
    payload: JSON,
    headers: JSON | None,
    delay: Duration | None,
    priority: int | None,
    not_before: datetime | None,
    dedup_key: str | None,
    group_key: str | None,
) -> Stmt[int]:
    args = [
        (None, "text", queue),
        (None, "jsonb", _json(payload)),
        *_enqueue_options(headers, delay, priority, not_before, group_key),
        ("dedup_key", "text", dedup_key),
    ]
    return _scalar("enqueue", args, int)


def enqueue_unique(
    queue: str,
    payload: JSON,
    dedup_key: str,
    headers: JSON | None,
    delay: Duration | None,
    priority: int | None,
    not_before: datetime | None,
    group_key: str | None,
) -> Stmt[Enqueued]:
    args = [
        (None, "text", queue),
        (None, "jsonb", _json(payload)),
        (None, "text", dedup_key),
        *_enqueue_options(headers, delay, priority, not_before, group_key),
    ]
    return _table("enqueue_unique", args, lambda rows: from_row(Enqueued, rows[0]))


def enqueue_batch(
    queue: str,
    payloads: Iterable[JSON],
    headers: Sequence[JSON | None] | None,
    delay: Duration | None,
    priority: int | None,
    not_before: datetime | None,
    dedup_keys: Sequence[str | None] | None,
    group_keys: Sequence[str | None] | None,
) -> Stmt[list[Enqueued]]:
    args = [
        (None, "text", queue),
        (None, "jsonb[]", [_json(p) for p in payloads]),
        ("headers", "jsonb[]", None if headers is None else [_opt_json(h) for h in headers]),
        ("delay", "interval", _dur(delay)),
        ("priority", "integer", priority),
        ("not_before", "timestamptz", not_before),
        ("dedup_keys", "text[]", None if dedup_keys is None else list(dedup_keys)),
        ("group_keys", "text[]", None if group_keys is None else list(group_keys)),
    ]
    return _table("enqueue_batch", args, lambda rows: [from_row(Enqueued, r) for r in rows])


def lease(
    queue: str,
    batch_size: int | None,
    visibility_timeout: Duration | None,
    wait: Duration | None,
    group_batch: int | None,
) -> Stmt[list[Message]]:
    args = [
        (None, "text", queue),
        ("batch_size", "integer", batch_size),
        ("visibility_timeout", "interval", _dur(visibility_timeout)),
        ("wait", "interval", _dur(wait)),
        ("group_batch", "integer", group_batch),
    ]
    return _table("lease", args, lambda rows: [from_row(Message, r) for r in rows])


def ack(receipt: uuid.UUID | str, strict: bool) -> Stmt[bool]:
    return _scalar("ack", [(None, "uuid", _receipt(receipt)), ("strict", "boolean", strict or None)], bool)


def ack_batch(receipts: Iterable[uuid.UUID | str], strict: bool) -> Stmt[int]:
    args = [(None, "uuid[]", [_receipt(r) for r in receipts]), ("strict", "boolean", strict or None)]
    return _scalar("ack_batch", args, int)


def _nack_args(retry_in: Duration | None, error: str | None, dead: bool, strict: bool) -> list[Arg]:
    return [
        ("retry_in", "interval", _dur(retry_in)),
        ("error", "text", error),
        ("dead", "boolean", dead or None),
        ("strict", "boolean", strict or None),
    ]


def nack(
    receipt: uuid.UUID | str, retry_in: Duration | None, error: str | None, dead: bool, strict: bool
) -> Stmt[bool]:
    args = [(None, "uuid", _receipt(receipt)), *_nack_args(retry_in, error, dead, strict)]
    return _scalar("nack", args, bool)


def nack_batch(
    receipts: Iterable[uuid.UUID | str],
    retry_in: Duration | None,
    error: str | None,
    dead: bool,
    strict: bool,
) -> Stmt[int]:
    args = [(None, "uuid[]", [_receipt(r) for r in receipts]), *_nack_args(retry_in, error, dead, strict)]
    return _scalar("nack_batch", args, int)


def extend(receipt: uuid.UUID | str, visibility_timeout: Duration, strict: bool) -> Stmt[bool]:
    args = [
        (None, "uuid", _receipt(receipt)),
        (None, "interval", to_timedelta(visibility_timeout)),
        ("strict", "boolean", strict or None),
    ]
    return _scalar("extend", args, bool)


def redrive(queue: str, message_ids: Sequence[int] | None, max_messages: int | None) -> Stmt[int]:
    args = [
        (None, "text", queue),
        ("message_ids", "bigint[]", None if message_ids is None else list(message_ids)),
        ("max_messages", "integer", max_messages),
    ]
    return _scalar("redrive", args, int)


def dead_letters(queue: str | None) -> Stmt[list[DeadLetter]]:
    if queue is None:
        return _view("dead_letters", None, [], DeadLetter)
    return _view("dead_letters", "queue = %s::text ORDER BY id", [queue], DeadLetter)


def completed_messages(queue: str | None) -> Stmt[list[CompletedMessage]]:
    if queue is None:
        return _view("completed_messages", None, [], CompletedMessage)
    return _view("completed_messages", "queue = %s::text ORDER BY id", [queue], CompletedMessage)


def stats(queue: str) -> Stmt[QueueStats]:
    return _table("stats", [(None, "text", queue)], lambda rows: from_row(QueueStats, rows[0]))


def queue_stats() -> Stmt[list[QueueStats]]:
    return _view("queue_stats", None, [], QueueStats)


def stats_reset(queue: str | None) -> Stmt[bool]:
    return _scalar("stats_reset", [] if queue is None else [(None, "text", queue)], bool)


def maintain(max_rows: int | None) -> Stmt[Maintained]:
    args: list[Arg] = [("max_rows", "integer", max_rows)]
    return _table("maintain", args, lambda rows: from_row(Maintained, rows[0]))


def grant(queue: str, privilege: str, role: str) -> Stmt[None]:
    args: list[Arg] = [(None, "text", queue), (None, "text", privilege), (None, "text", role)]
    return _scalar("grant", args, lambda _v: None)


def revoke(queue: str, privilege: str, role: str) -> Stmt[None]:
    args: list[Arg] = [(None, "text", queue), (None, "text", privilege), (None, "text", role)]
    return _scalar("revoke", args, lambda _v: None)


def has_queue_privilege(queue: str, privilege: str) -> Stmt[bool]:
    return _scalar("has_queue_privilege", [(None, "text", queue), (None, "text", privilege)], bool)


def queue_groups(queue: str | None) -> Stmt[list[QueueGroup]]:
    if queue is None:
        return _view("queue_groups", None, [], QueueGroup)
    return _view("queue_groups", "queue = %s::text ORDER BY group_key", [queue], QueueGroup)


def queue_privileges() -> Stmt[list[QueuePrivilege]]:
    return _view("queue_privileges", None, [], QueuePrivilege)


def version() -> Stmt[str]:
    return _scalar("version", [], str)
