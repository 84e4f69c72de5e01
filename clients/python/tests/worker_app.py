"""A worker process for the fault tests: python worker_app.py DSN QUEUE OPTIONS_JSON.

The handler does what each payload says, on the attempt it names: {"n": 1, "sleep": {"1": 30}}
sleeps 30 s on attempt 1 only; "fail": {"1": "error" | "retry" | "poison"}. It logs each start
(own connection, autocommit) and commits its work as a row of `results`: in exactly-once mode
inside the message's transaction, otherwise after the work.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any

import psycopg

import courier

dsn, queue, options_json = sys.argv[1:4]
options: dict[str, Any] = json.loads(options_json)
exactly_once = bool(options.pop("exactly_once", False))
local = threading.local()


def log_conn() -> psycopg.Connection[Any]:
    conn = getattr(local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = local.conn = psycopg.connect(dsn, autocommit=True, application_name="test-log")
    return conn


def record(job: courier.Job, event: str) -> None:
    log_conn().execute(
        "INSERT INTO handler_log (queue, message_id, attempt, event, pid, last_error)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        [queue, job.id, job.attempt, event, os.getpid(), job.message.last_error],
    )


def handler(job: courier.Job) -> None:
    record(job, "start")
    p = job.payload
    attempt = str(job.attempt)
    if exactly_once:
        assert job.tx is not None
        courier_tx: psycopg.Connection[Any] = job.tx
        courier_tx.execute(
            "INSERT INTO results (queue, message_id, attempt, n, by_whom) VALUES (%s, %s, %s, %s, %s)",
            [queue, job.id, job.attempt, p["n"], f"worker {os.getpid()}"],
        )
    time.sleep(p.get("sleep", {}).get(attempt, 0))
    fail = p.get("fail", {}).get(attempt)
    if fail == "error":
        raise RuntimeError(f"boom {p['n']}")
    if fail == "retry":
        raise courier.RetryIn(0.1, "try later")
    if fail == "poison":
        raise courier.Poison("bad payload")
    if not exactly_once:
        log_conn().execute(
            "INSERT INTO results (queue, message_id, attempt, n, by_whom) VALUES (%s, %s, %s, %s, %s)",
            [queue, job.id, job.attempt, p["n"], f"worker {os.getpid()}"],
        )
    record(job, "done")


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
worker = courier.Worker(dsn, queue, handler, exactly_once=exactly_once, **options)
print("worker starting", flush=True)
stats = worker.run()
print("worker stopped:", stats, flush=True)
