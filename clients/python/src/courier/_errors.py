"""courier's SQLSTATEs as exception classes, and the errors a worker's handler raises."""

from __future__ import annotations

from datetime import timedelta

import psycopg


class CourierError(Exception):
    """An error courier raised in the database; ``sqlstate`` says which (README "Errors").

    The driver's exception is kept as ``__cause__``. The transaction it happened in is aborted,
    as after any SQL error: roll it back (or let the ``with`` block of your framework do it).
    """

    sqlstate: str = ""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if sqlstate is not None:
            self.sqlstate = sqlstate


class LeaseLost(CourierError):
    """QC001: a strict ack, nack or extend with a receipt that no longer holds its lease."""

    sqlstate = "QC001"


class InvalidArgument(CourierError):
    """22023: a batch size, timeout, delay, priority, setting, array shape, receipt or dedup key
    out of range or malformed."""

    sqlstate = "22023"


class NullArgument(InvalidArgument):
    """22004: an argument (or array element) is NULL where a value is required."""

    sqlstate = "22004"


class InvalidReceipt(InvalidArgument):
    """22P02: a receipt that is not a UUID at all."""

    sqlstate = "22P02"


class InvalidQueueName(InvalidArgument):
    """42602: a queue name that is empty or has a character outside the rule."""

    sqlstate = "42602"


class QueueNameTooLong(InvalidQueueName):
    """42622: a queue name over 63 bytes."""

    sqlstate = "42622"


class QueueNotFound(CourierError):
    """42704: the queue (or dead-letter queue, or the role given to ``grant``) does not exist."""

    sqlstate = "42704"


class QueueExists(CourierError):
    """42710: the queue already exists."""

    sqlstate = "42710"


class PayloadTooLarge(CourierError):
    """54000: payload or headers larger than ``courier.max_payload_size``."""

    sqlstate = "54000"


class WrongIsolationLevel(CourierError):
    """25000: ``drop_queue``, or a lease with a ``wait``, at REPEATABLE READ or SERIALIZABLE."""

    sqlstate = "25000"


class QueueInUse(CourierError):
    """2BP01: dropping a queue that is another queue's dead-letter queue."""

    sqlstate = "2BP01"


class SerializationFailure(CourierError):
    """40001: an enqueue at REPEATABLE READ racing a ``drop_queue`` of its queue; retry it."""

    sqlstate = "40001"


class PermissionDenied(CourierError):
    """42501: no USAGE, no EXECUTE, or no privilege on the queue."""

    sqlstate = "42501"


_BY_SQLSTATE: dict[str, type[CourierError]] = {
    cls.sqlstate: cls
    for cls in (
        LeaseLost,
        InvalidArgument,
        NullArgument,
        InvalidReceipt,
        InvalidQueueName,
        QueueNameTooLong,
        QueueNotFound,
        QueueExists,
        PayloadTooLarge,
        WrongIsolationLevel,
        QueueInUse,
        SerializationFailure,
        PermissionDenied,
    )
}


def translate(err: psycopg.Error) -> CourierError | None:
    """The courier exception for a driver error with one of courier's SQLSTATEs, else None."""
    sqlstate = err.sqlstate
    cls = _BY_SQLSTATE.get(sqlstate) if sqlstate else None
    if cls is None:
        return None
    message = err.diag.message_primary or str(err)
    return cls(message, sqlstate)


class HandlerError(Exception):
    """Base of the exceptions a worker's handler raises to say how its message should end."""


class RetryIn(HandlerError):
    """Give the message back, to be delivered again after ``delay`` (instead of the queue's
    backoff). The attempt still counts towards ``max_attempts``."""

    def __init__(self, delay: timedelta | float, message: str = "") -> None:
        super().__init__(message or f"retry in {delay}")
        self.delay = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)
        self.message = message


class Poison(HandlerError):
    """The message can never succeed: dead-letter it now, with this error text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
