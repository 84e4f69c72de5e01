"""Typed rows of courier's functions and views."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta
from typing import Any, NewType, TypeVar

# A receipt is a uuid.UUID at run time; the NewType keeps it apart from other UUIDs (and from
# message ids) for a type checker.
Receipt = NewType("Receipt", uuid.UUID)

# A JSON document as psycopg's json loader returns it.
JSON = Any

# A duration: a timedelta, or seconds.
Duration = timedelta | float | int


def to_timedelta(value: Duration) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise TypeError("a duration is a timedelta or a number of seconds, not a bool")
    return timedelta(seconds=value)


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A leased message (a row of ``courier.lease``)."""

    id: int
    receipt: Receipt
    payload: JSON
    headers: dict[str, JSON] | None
    attempt: int
    enqueued_at: datetime
    lease_expires_at: datetime
    priority: int
    last_error: str | None
    # Set by servers whose lease returns message groups; None otherwise.
    group_key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Enqueued:
    """One row of ``enqueue_unique`` / ``enqueue_batch``."""

    id: int
    duplicate: bool


@dataclasses.dataclass(frozen=True, slots=True)
class QueueInfo:
    """A row of ``courier.queues``."""

    queue: str
    visibility_timeout: timedelta
    max_attempts: int
    dead_letter_queue: str | None
    retry_base: timedelta
    retry_max: timedelta
    retry_jitter: float
    dedup_window: timedelta
    retention: timedelta | None
    notify: bool
    created_at: datetime
    owner: str
    # Message groups (servers from 0.2.0 on; None from older ones).
    group_on_dead: str | None = None
    group_order: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A row of ``courier.dead_letters``."""

    queue: str
    id: int
    origin_queue: str | None
    attempts: int
    last_error: str | None
    enqueued_at: datetime
    dead_at: datetime
    headers: dict[str, JSON] | None
    payload: JSON
    group_key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CompletedMessage:
    """A row of ``courier.completed_messages``."""

    queue: str
    id: int
    attempt: int
    priority: int
    enqueued_at: datetime
    completed_at: datetime
    headers: dict[str, JSON] | None
    payload: JSON


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    """A row of ``courier.stats`` / ``courier.queue_stats``. Counters are None when courier is
    not preloaded."""

    queue: str
    ready: int
    delayed: int
    in_flight: int
    dead: int
    oldest_ready_age: timedelta | None
    oldest_lease_age: timedelta | None
    enqueued_total: int | None
    deduplicated_total: int | None
    leased_total: int | None
    expired_total: int | None
    acked_total: int | None
    nacked_total: int | None
    dead_lettered_total: int | None
    counters_since: datetime | None
    counts_capped: bool
    # Message groups: how many, how many held by a lease, how many blocked by a dead head.
    groups: int | None = None
    groups_held: int | None = None
    groups_blocked: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class QueueGroup:
    """A row of ``courier.queue_groups``: a message group and its head."""

    queue: str
    group_key: str
    ready: int
    in_flight: int
    blocked: bool
    head_message_id: int | None
    head_available_at: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class Maintained:
    """What ``courier.maintain`` reclaimed."""

    expired_keys: int
    expired_completed: int


@dataclasses.dataclass(frozen=True, slots=True)
class QueuePrivilege:
    """A row of ``courier.queue_privileges``."""

    queue: str
    grantee: str
    privilege: str


T = TypeVar("T")


def from_row(cls: type[T], row: dict[str, Any]) -> T:
    """Builds a row type from a dict row, ignoring columns the type does not know (a newer
    server may return more) and leaving defaulted fields it lacks (an older one fewer)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in row.items() if k in names})
