"""Helpers of the integration tests: real worker subprocesses on the tests' queues."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.local import WorkerProcess

SESSION_QUEUE = f"chunkq-test-{os.getpid()}"
"""The queue of this test session; the conftest points ``CHUNKQ_QUEUE`` at it."""


def start_worker(
    tmp_path: Path,
    *,
    name: str,
    env: dict[str, str] | None = None,
    concurrency: int = 2,
    queue: str = SESSION_QUEUE,
) -> WorkerProcess:
    """Start a real worker subprocess on ``queue`` and wait until it answers.

    A test that needs a worker configured its own way gives it a queue of its own, so
    the session's shared worker does not take its jobs.
    """
    from worker.app import app  # noqa: PLC0415 - after pytest_configure set the env

    worker = WorkerProcess(
        env={
            "CHUNKQ_REDIS_URL": os.environ["CHUNKQ_REDIS_URL"],
            "CHUNKQ_QUEUE": queue,
            **(env or {}),
        },
        queues=[queue],
        concurrency=concurrency,
        hostname=f"{name}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}",
        log_file=tmp_path / f"{name}.log",
    ).start()
    try:
        worker.wait_ready(app)
    except BaseException:
        worker.stop()
        raise
    return worker


def wait_for(condition: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """Return the first truthy value of ``condition()``, polled every 50 ms.

    Raises:
        AssertionError: none within ``timeout_s`` seconds.
    """
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def final_result(result: Any, timeout_s: float = 180.0) -> Any:
    """Return the task's summary once its operation is final.

    A killed attempt may be reported as a failure before the operation's next attempt
    finishes, so the operation's state is awaited, not the first task result.
    """
    from worker.runtime import stores  # noqa: PLC0415 - after the conftest set the env

    wait_for(
        lambda: (
            stores().states.get(result.id).get("status")
            in {"completed", "partial", "failed"}
        ),
        timeout_s=timeout_s,
    )
    return result.get(timeout=timeout_s)
