"""Fault injection for the integration tests: a strategy and tasks workers load.

Workers of the test session import this module (``CHUNKQ_IMPORTS``). It registers
the strategy ``faulty``, which chunks like ``characters`` but first obeys a directive
on a document's first line::

    #!fault connection 2      raise ConnectionError the first 2 times
    #!fault memory 1          raise MemoryError the first time
    #!fault slow 3            sleep 3 s every time
    #!fault broken            raise ValueError every time (a strategy failure)
    #!fault die 2             kill the worker process (SIGKILL) the first 2 times
    #!fault disk 1            raise OSError(ENOSPC) the first time (resource exhaustion)
    #!fault hang 1            the first time, ignore the soft time limit and hang 60 s,
                              so only the hard limit ends the attempt

Every call counts, per document text, in the tests' Redis (``chunkq-test:calls:*``),
so counts are shared by every worker process and tell how often a document was
chunked. It also defines two small tasks that report the correlation id they see.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import time

import redis

from recovery import correlation
from tasks.engine import register_strategy
from worker.app import app

CALLS_PREFIX = "chunkq-test:calls:"


def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["CHUNKQ_REDIS_URL"])


def calls_key(text: str) -> str:
    """Return the Redis key counting how often ``text`` was chunked."""
    return CALLS_PREFIX + hashlib.sha1(text.encode()).hexdigest()


def _faulty(text: str, chunk_size: int, overlap: int) -> list[tuple[int, int]]:
    calls = int(_client().incr(calls_key(text)))
    first_line = text.split("\n", 1)[0].split()
    if first_line[:1] == ["#!fault"]:
        kind = first_line[1]
        amount = float(first_line[2]) if len(first_line) > 2 else 0.0
        if kind == "connection" and calls <= amount:
            raise ConnectionError(f"injected connection reset (call {calls})")
        if kind == "memory" and calls <= amount:
            raise MemoryError("injected memory error")
        if kind == "slow":
            time.sleep(amount)
        if kind == "broken":
            raise ValueError("injected strategy failure")
        if kind == "disk" and calls <= amount:
            raise OSError(errno.ENOSPC, "injected: no space left on device")
        if kind == "hang" and calls <= amount:
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # Celery's soft limit signal
            time.sleep(60)
        if kind == "die" and calls <= amount:
            os.kill(os.getpid(), signal.SIGKILL)
    step = chunk_size - overlap
    spans = []
    start = 0
    while start < len(text):
        spans.append((start, min(start + chunk_size, len(text))))
        if start + chunk_size >= len(text):
            break
        start += step
    return spans


register_strategy("faulty", _faulty)


@app.task(name="tests.report_correlation")  # type: ignore[untyped-decorator]
def report_correlation() -> str | None:
    """Return the correlation id bound while this task runs."""
    return correlation.current_correlation_id()


@app.task(name="tests.send_child")  # type: ignore[untyped-decorator]
def send_child() -> dict[str, str | None]:
    """Send ``report_correlation`` and return its task id and this task's id."""
    child = report_correlation.delay()
    return {
        "child_id": child.id,
        "parent_correlation_id": correlation.current_correlation_id(),
    }
