"""Helpers of the integration tests: real worker subprocesses on the tests' queues."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

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
