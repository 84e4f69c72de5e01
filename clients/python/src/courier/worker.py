"""A worker: leases messages of one queue and runs a handler for each, in threads.

The contract (the same as the Rust worker's):

- A handler runs at most ``handler_timeout``. One that overruns is abandoned: its ``Job.cancelled``
  is set, its connection's statement is cancelled (exactly-once mode), and the message is nacked
  with ``error => 'timeout after …'`` (the attempt counts). A Python thread cannot be killed, so
  the slot stays busy until the handler returns; whatever it returns then is ignored.
- Without a heartbeat, ``handler_timeout`` must be below ``visibility_timeout``, so a handler is
  known to have failed before anyone else can lease its message. With the heartbeat (default)
  the lease is extended by ``visibility_timeout`` every ``heartbeat_interval`` while the handler
  runs, and the handler may run longer than one visibility timeout; if an extend finds the lease
  lost (a stall let it expire and another consumer took the message), the handler is abandoned
  as on a timeout, and nothing is acked.
- A handler that returns acks its message. One that raises nacks it with the error text (the
  queue's backoff applies); ``RetryIn`` nacks with its delay, ``Poison`` dead-letters at once.
- Exactly-once mode: the handler runs inside a transaction (``Job.tx``) and the worker acks
  strictly in that same transaction, so the handler's writes and the ack commit together; a lease
  lost meanwhile raises ``LeaseLost`` at the ack and rolls both back.
- SIGTERM/SIGINT (or ``stop()``): stop leasing at once (a waiting lease is cancelled), let running
  handlers finish for up to ``grace_period``, then nack the rest with ``retry_in => 0`` so they are
  delivered again at once. A second signal (``stop(force=True)``) returns at once without
  nacking: those leases expire as after a crash.
- A lost connection or a server restart: the worker reconnects with exponential backoff and
  carries on; an ack or nack whose connection died is retried (a second ack of a message returns
  false, so nothing is acked twice).

Connections: one for the waiting lease (it holds a server connection for the whole wait: size a
pool for it), one for heartbeats and timeouts, one per concurrent handler.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue as queue_mod
import random
import signal
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from . import _api
from ._conn import Executor, resolve
from ._errors import CourierError, LeaseLost, Poison, QueueNotFound, RetryIn
from ._types import Duration, Message, Receipt, to_timedelta

log = logging.getLogger("courier.worker")

T = TypeVar("T")

Handler = Callable[["Job"], object]
TransactionFactory = Callable[[], AbstractContextManager[Executor]]

_MAX_VISIBILITY = timedelta(hours=12)
_MAX_WAIT = timedelta(hours=1)


class _State(enum.Enum):
    RUNNING = "running"
    SETTLING = "settling"  # the handler is done; its slot acks or nacks
    ABANDONED = "abandoned"  # timed out, lease lost or shut down; the watchdog settled it


class Job:
    """A leased message being handled."""

    def __init__(self, message: Message, deadline: float) -> None:
        self.message = message
        self.cancelled = threading.Event()
        """Set when the handler should give up: it timed out, lost its lease, or the worker is
        shutting down past its grace period. Long handlers should check it."""
        self.tx: Executor | None = None
        """Exactly-once mode: what the handler writes through (a psycopg Connection, or what the
        ``transaction`` factory yielded); the worker's strict ack joins its transaction."""
        self.deadline = deadline
        self._state = _State.RUNNING
        self._lock = threading.Lock()
        self._raw: psycopg.Connection[Any] | None = None
        self._cancel_done = threading.Event()
        self._next_extend = 0.0

    @property
    def id(self) -> int:
        return self.message.id

    @property
    def payload(self) -> Any:
        return self.message.payload

    @property
    def attempt(self) -> int:
        return self.message.attempt

    @property
    def receipt(self) -> Receipt:
        return self.message.receipt

    def remaining(self) -> float:
        """Seconds until the handler's deadline."""
        return max(0.0, self.deadline - time.monotonic())

    def _claim(self, frm: _State, to: _State) -> bool:
        with self._lock:
            if self._state is not frm:
                return False
            self._state = to
            return True


@dataclass
class WorkerStats:
    """Counters since the worker started."""

    acked: int = 0
    failed: int = 0
    retried: int = 0
    poisoned: int = 0
    timed_out: int = 0
    lease_lost: int = 0
    nacked_at_shutdown: int = 0
    reconnects: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


class _Conn:
    """A connection that reconnects, with backoff, after it is lost."""

    def __init__(self, worker: Worker, name: str) -> None:
        self._worker = worker
        self._name = name
        self._conn: psycopg.Connection[Any] | None = None

    def get(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._conn = self._worker._connect(self._name)
        return self._conn

    @property
    def current(self) -> psycopg.Connection[Any] | None:
        return self._conn

    def lost(self, err: BaseException) -> None:
        log.warning("courier worker: %s connection lost (%s); reconnecting", self._name, err)
        self._worker.stats.add("reconnects")
        self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def call(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Runs ``fn`` (one autocommit statement), again on a new connection if this one dies,
        until it succeeds or the worker is forced to stop."""
        while True:
            try:
                return fn(self.get())
            except psycopg.OperationalError as err:
                if self._worker._stop_now.is_set():
                    raise
                self.lost(err)


class _Stop(Exception):
    """The worker was forced to stop while waiting to reconnect."""


class Worker:
    """Runs ``handler(job)`` for each message of ``queue``; see the module's docstring for the
    contract. ``run()`` blocks until the worker is stopped."""

    def __init__(
        self,
        conninfo: str,
        queue: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        batch_size: int | None = None,
        group_batch: int | None = None,
        visibility_timeout: Duration = 30,
        handler_timeout: Duration | None = None,
        heartbeat: bool = True,
        heartbeat_interval: Duration | None = None,
        wait: Duration = 10,
        exactly_once: bool = False,
        transaction: TransactionFactory | None = None,
        grace_period: Duration = 10,
        reconnect_backoff: tuple[float, float] = (0.1, 10.0),
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not queue:
            raise ValueError("queue must not be empty")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.batch_size = concurrency if batch_size is None else batch_size
        if not 1 <= self.batch_size <= 1000:
            raise ValueError(f"batch_size must be between 1 and 1000, not {self.batch_size}")
        vt = to_timedelta(visibility_timeout)
        if not timedelta(0) < vt <= _MAX_VISIBILITY:
            raise ValueError(f"visibility_timeout must be more than 0 and at most 12 hours, not {vt}")
        ht = vt * 0.8 if handler_timeout is None else to_timedelta(handler_timeout)
        if ht <= timedelta(0):
            raise ValueError(f"handler_timeout must be more than 0, not {ht}")
        if not heartbeat and ht >= vt:
            raise ValueError(
                f"handler_timeout ({ht}) must be below visibility_timeout ({vt}) without a heartbeat: "
                "the message could be leased again while the handler still runs"
            )
        hb = vt / 3 if heartbeat_interval is None else to_timedelta(heartbeat_interval)
        if heartbeat and not timedelta(0) < hb < vt:
            raise ValueError(
                f"heartbeat_interval ({hb}) must be more than 0 and below visibility_timeout ({vt})"
            )
        wt = to_timedelta(wait)
        if not timedelta(0) <= wt <= _MAX_WAIT:
            raise ValueError(f"wait must be between 0 and 1 hour, not {wt}")
        if transaction is not None and not exactly_once:
            raise ValueError("transaction is only used in exactly_once mode")
        lo, hi = reconnect_backoff
        if not 0 < lo <= hi:
            raise ValueError("reconnect_backoff must be (min, max) with 0 < min <= max")

        self.group_batch = group_batch
        self.conninfo = conninfo
        self.queue = queue
        self.handler = handler
        self.concurrency = concurrency
        self.visibility_timeout = vt
        self.handler_timeout = ht
        self.heartbeat = heartbeat
        self.heartbeat_interval = hb
        self.wait = wt
        self.exactly_once = exactly_once
        self.transaction = transaction
        self.grace_period = to_timedelta(grace_period)
        self.reconnect_backoff = (lo, hi)
        self.connect_kwargs = dict(connect_kwargs or {})
        self.stats = WorkerStats()

        self._stopping = threading.Event()
        self._stop_now = threading.Event()
        self._jobs: set[Job] = set()
        self._jobs_changed = threading.Condition()
        self._queue: queue_mod.SimpleQueue[Job | None] = queue_mod.SimpleQueue()
        self._done = threading.Event()
        self._lease_conn = _Conn(self, "lease")
        self._control = _Conn(self, "control")

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self, force: bool = False) -> None:
        """Asks ``run()`` to stop: gracefully the first time, at once with ``force`` or the
        second time. Safe from any thread and from a signal handler."""
        if force or self._stopping.is_set():
            self._stop_now.set()
        self._stopping.set()
        with contextlib.suppress(RuntimeError):
            self._notify_jobs()
        conn = self._lease_conn.current
        if conn is not None:
            # Ends a waiting lease at once (the server rolls the lease back). Sent from a thread:
            # a signal handler should not block on a network round trip.
            threading.Thread(target=_cancel_quietly, args=(conn,), daemon=True).start()

    def run(self, *, install_signal_handlers: bool = True) -> WorkerStats:
        """Leases and handles messages until stopped; returns the counters."""
        previous: dict[signal.Signals, Any] = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            self._check_queue()
            threading.Thread(target=self._watchdog, name="courier-watchdog", daemon=True).start()
            for i in range(self.concurrency):
                threading.Thread(target=self._slot, name=f"courier-handler-{i}", daemon=True).start()
            self._lease_loop()
            if not self._stop_now.is_set():
                self._drain()
                for _ in range(self.concurrency):
                    self._queue.put(None)
            return self.stats
        except _Stop:
            return self.stats
        finally:
            self._done.set()
            for signum, old in previous.items():
                signal.signal(signum, old)
            if not self._stop_now.is_set():
                self._lease_conn.close()
                self._control.close()

    def _on_signal(self, signum: int, _frame: types.FrameType | None) -> None:
        first = not self._stopping.is_set()
        log.warning(
            "courier worker: %s, %s",
            signal.Signals(signum).name,
            "finishing running handlers" if first else "stopping at once",
        )
        self.stop()

    def _check_queue(self) -> None:
        # A queue that does not exist is an error at start, not an endless loop of failed leases.
        try:
            allowed = self._control.call(lambda c: _api.has_queue_privilege(c, self.queue, "consume"))
        except QueueNotFound:
            raise QueueNotFound(f'queue "{self.queue}" does not exist', "42704") from None
        if not allowed:
            raise CourierError(f'no consume privilege on queue "{self.queue}"', "42501")

    def _connect(self, name: str) -> psycopg.Connection[Any]:
        delay, cap = self.reconnect_backoff
        while True:
            if self._stop_now.is_set():
                raise _Stop
            try:
                kwargs = {"application_name": f"courier-worker {name}", **self.connect_kwargs}
                return psycopg.connect(self.conninfo, autocommit=True, **kwargs)
            except psycopg.OperationalError as err:
                sleep = random.uniform(delay / 2, delay)
                log.warning("courier worker: cannot connect (%s); retrying in %.2f s", err, sleep)
                self._stop_now.wait(sleep)
                delay = min(cap, delay * 2)

    # -- leasing -----------------------------------------------------------------------------------

    def _notify_jobs(self) -> None:
        with self._jobs_changed:
            self._jobs_changed.notify_all()

    def _lease_loop(self) -> None:
        while not self._stopping.is_set():
            with self._jobs_changed:
                free = self.concurrency - len(self._jobs)
                if free <= 0:
                    self._jobs_changed.wait(0.5)
                    continue
            n = min(self.batch_size, free)
            try:
                conn = self._lease_conn.get()
                if self._stopping.is_set():
                    break
                messages = _api.lease(
                    conn,
                    self.queue,
                    batch_size=n,
                    visibility_timeout=self.visibility_timeout,
                    wait=self.wait,
                    group_batch=self.group_batch,
                )
            except pg_errors.QueryCanceled:
                continue  # our own cancel at shutdown; the loop condition ends it
            except psycopg.OperationalError as err:
                if self._stopping.is_set():
                    break
                self._lease_conn.lost(err)
                continue
            for message in messages:
                self._start(message)

    def _start(self, message: Message) -> None:
        job = Job(message, time.monotonic() + self.handler_timeout.total_seconds())
        job._next_extend = time.monotonic() + self.heartbeat_interval.total_seconds()
        with self._jobs_changed:
            self._jobs.add(job)
        self._queue.put(job)

    def _finish(self, job: Job) -> None:
        with self._jobs_changed:
            self._jobs.discard(job)
            self._jobs_changed.notify_all()

    # -- handling ----------------------------------------------------------------------------------

    def _slot(self) -> None:
        """A handler thread, with its own connection; never more jobs in flight than slots."""
        slot = _Conn(self, "handler")
        while True:
            job = self._queue.get()
            if job is None:
                break
            try:
                if self.exactly_once:
                    self._run_exactly_once(job, slot)
                else:
                    self._run_plain(job, slot)
            except _Stop:
                return
            except Exception:
                log.exception("courier worker: settling message %d failed", job.id)
            finally:
                if job._state is _State.ABANDONED:
                    # The cancel the watchdog sent must not reach this connection's next job.
                    job._cancel_done.wait(10)
                self._finish(job)
        slot.close()

    def _run_plain(self, job: Job, slot: _Conn) -> None:
        try:
            self.handler(job)
        except Exception as err:
            if job._claim(_State.RUNNING, _State.SETTLING):
                self._settle_failure(slot, job, err)
            return
        if job._claim(_State.RUNNING, _State.SETTLING):
            if slot.call(lambda c: _api.ack(c, job.receipt)):
                self.stats.add("acked")
            else:
                # The lease ran out and someone else took the message before the ack.
                log.warning("courier worker: message %d: lease lost before the ack", job.id)
                self.stats.add("lease_lost")

    def _run_exactly_once(self, job: Job, slot: _Conn) -> None:
        try:
            with self._begin(slot) as tx:
                job.tx = tx
                job._raw = resolve(tx)
                self.handler(job)
                if not job._claim(_State.RUNNING, _State.SETTLING):
                    raise _Abandoned
                _api.ack(tx, job.receipt, strict=True)
            self.stats.add("acked")
        except _Abandoned:
            log.info("courier worker: message %d abandoned; its transaction rolled back", job.id)
        except LeaseLost:
            log.warning("courier worker: message %d: lease lost, its writes rolled back", job.id)
            self.stats.add("lease_lost")
        except Exception as err:
            current = slot.current
            if isinstance(err, psycopg.OperationalError) and current is not None and current.broken:
                slot.lost(err)
            if job._claim(_State.RUNNING, _State.SETTLING):
                self._settle_failure(slot, job, err)
            elif job._state is _State.SETTLING:
                # The strict ack or the commit failed: the transaction rolled back, or (connection
                # lost during COMMIT) its outcome is unknown. A nack then returns false if it did
                # commit, so nacking is safe either way.
                self._settle_failure(slot, job, err)
        finally:
            job.tx = None

    @contextlib.contextmanager
    def _begin(self, slot: _Conn) -> Iterator[Executor]:
        if self.transaction is not None:
            with self.transaction() as tx:
                yield tx
        else:
            with contextlib.ExitStack() as stack:
                while True:
                    conn = slot.get()
                    try:
                        # A connection lost while idle is found here, before the handler runs.
                        stack.enter_context(conn.transaction())
                        break
                    except psycopg.OperationalError as err:
                        slot.lost(err)
                yield conn

    def _settle_failure(self, slot: _Conn, job: Job, err: BaseException) -> None:
        if isinstance(err, Poison):
            slot.call(lambda c: _api.nack(c, job.receipt, dead=True, error=err.message))
            self.stats.add("poisoned")
        elif isinstance(err, RetryIn):
            slot.call(lambda c: _api.nack(c, job.receipt, retry_in=err.delay, error=err.message or None))
            self.stats.add("retried")
        else:
            text = f"{type(err).__name__}: {err}".strip()
            log.warning("courier worker: message %d failed: %s", job.id, text)
            slot.call(lambda c: _api.nack(c, job.receipt, error=text))
            self.stats.add("failed")

    # -- heartbeat, timeouts, shutdown -------------------------------------------------------------

    def _abandon(self, job: Job, why: str, counter: str, **nack: Any) -> None:
        """Takes the job from its handler: the handler's transaction (exactly-once) is cancelled
        and the message nacked. Nothing if the handler had already finished."""
        if not job._claim(_State.RUNNING, _State.ABANDONED):
            return
        job.cancelled.set()
        try:
            if job._raw is not None:
                _cancel_quietly(job._raw)
        finally:
            job._cancel_done.set()
        if nack and not self._control.call(lambda c: _api.nack(c, job.receipt, **nack)):
            # Someone else holds the message already (this worker stalled past its lease).
            why, counter = "lost its lease", "lease_lost"
        log.warning("courier worker: message %d %s", job.id, why)
        self.stats.add(counter)

    def _watchdog(self) -> None:
        tick = min(0.1, self.heartbeat_interval.total_seconds() / 4)
        timeout_text = f"timeout after {_seconds(self.handler_timeout)}"
        while not self._stop_now.is_set() and not self._done.is_set():
            time.sleep(tick)
            with self._jobs_changed:
                jobs = list(self._jobs)
            now = time.monotonic()
            for job in jobs:
                if job._state is not _State.RUNNING:
                    continue
                try:
                    if now >= job.deadline:
                        self._abandon(job, f"timed out ({timeout_text})", "timed_out", error=timeout_text)
                    elif self.heartbeat and now >= job._next_extend:
                        job._next_extend = now + self.heartbeat_interval.total_seconds()
                        if not self._extend(job):
                            self._abandon(job, "lost its lease (heartbeat)", "lease_lost")
                except _Stop:
                    return
                except Exception:
                    log.exception("courier worker: heartbeat for message %d failed", job.id)

    def _extend(self, job: Job) -> bool:
        return self._control.call(lambda c: _api.extend(c, job.receipt, self.visibility_timeout))

    def _drain(self) -> None:
        """After the first signal: wait for running handlers, then give back what is left."""
        deadline = time.monotonic() + self.grace_period.total_seconds()
        with self._jobs_changed:
            while self._jobs and time.monotonic() < deadline and not self._stop_now.is_set():
                self._jobs_changed.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            left = [j for j in self._jobs if j._state is _State.RUNNING]
        if self._stop_now.is_set():
            return
        for job in left:
            self._abandon(
                job,
                "given back at shutdown",
                "nacked_at_shutdown",
                retry_in=timedelta(0),
                error="worker shut down",
            )
        # Settlements in flight (an ack being sent) end before run() returns.
        with self._jobs_changed:
            while any(j._state is _State.SETTLING for j in self._jobs) and not self._stop_now.is_set():
                self._jobs_changed.wait(0.1)


class _Abandoned(Exception):
    pass


def _cancel_quietly(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(Exception):
        conn.cancel_safe(timeout=5.0)


def _seconds(d: timedelta) -> str:
    s = d.total_seconds()
    return f"{s:g} s"
