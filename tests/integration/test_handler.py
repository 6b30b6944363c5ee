"""The error handler's two faces against a real Redis: same decisions, same records."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from config.policy import retry_policy
from config.settings import Settings
from recovery.checkpoint import CheckpointStore
from recovery.handler import (
    AsyncChunkingErrorHandler,
    ChunkingErrorHandler,
    ErrorContext,
    sanitize_message,
)
from recovery.keys import KeyBuilder
from recovery.policy import Action

pytestmark = pytest.mark.integration

KEYS = KeyBuilder(prefix="chunkq-handler-test")
POLICY = retry_policy(Settings())


def _sync(client: redis.Redis, history_limit: int = 100) -> ChunkingErrorHandler:
    return ChunkingErrorHandler(
        client=client,
        keys=KEYS,
        policy=POLICY,
        ttl_s=600,
        history_limit=history_limit,
        dead_letter_ttl_s=600,
    )


def test_sync_face_decides_records_and_resumes(
    redis_client: redis.Redis, operation_id: str
) -> None:
    """A connection error: retry after a backoff; the record and checkpoint come back."""
    handler = _sync(redis_client)
    CheckpointStore(client=redis_client, keys=KEYS, ttl_s=600).record_batch(
        operation_id, done={"a": {"chunks": 3}}, failed={}, batch_size=8, attempt=1
    )

    result = handler.handle_with_correlation(
        operation_id,
        "corr-1",
        ConnectionError("reset by peer"),
        {"attempt": 1, "batch_size": 8},
    )
    resumed = handler.resume_operation(operation_id)

    assert result.recovery_action is Action.RETRY
    assert 0 <= result.retry_after <= 1.0
    assert resumed.checkpoint.done == ["a"]
    assert resumed.checkpoint.totals["chunks"] == 3
    [record] = resumed.errors
    assert (record.correlation_id, record.error_type, record.attempt) == (
        "corr-1",
        "transient_connection",
        1,
    )


def test_async_face_gives_the_same_answers(redis_url: str, operation_id: str) -> None:
    """The redis.asyncio face decides the same way and reads the same records back."""

    async def scenario() -> tuple[Action, int, int]:
        client = redis.asyncio.Redis.from_url(redis_url)
        handler = AsyncChunkingErrorHandler(
            client=client, keys=KEYS, policy=POLICY, ttl_s=600, dead_letter_ttl_s=600
        )
        first = await handler.begin_attempt(operation_id, correlation_id="c")
        result = await handler.handle_with_correlation(
            operation_id, "c", MemoryError(), ErrorContext(attempt=1, batch_size=32)
        )
        await handler.finish_attempt(operation_id, first.attempt, "retry")
        second = await handler.begin_attempt(operation_id, correlation_id="c")
        resumed = await handler.resume_operation(operation_id)
        await client.aclose()
        assert result.next_batch_size is not None
        return result.recovery_action, second.attempt, len(resumed.errors)

    action, attempt, errors = asyncio.run(scenario())

    assert (action, attempt, errors) == (Action.REDUCE_BATCH, 2, 1)


def test_error_history_is_capped(redis_client: redis.Redis, operation_id: str) -> None:
    """After 105 errors the newest 100 are kept."""
    handler = _sync(redis_client)
    for attempt in range(1, 106):
        handler.handle_with_correlation(
            operation_id, "c", ValueError(f"failure {attempt}"), {"attempt": attempt}
        )

    history = handler.error_history(operation_id)

    assert len(history) == 100
    assert history[0].message == "failure 6"
    assert history[-1].message == "failure 105"


def test_a_start_without_an_outcome_is_reported_lost(
    redis_client: redis.Redis, operation_id: str
) -> None:
    """An attempt that began and never finished is marked lost when the next begins."""
    handler = _sync(redis_client)

    first = handler.begin_attempt(operation_id, correlation_id="c")
    second = handler.begin_attempt(operation_id, correlation_id="c")
    handler.finish_attempt(operation_id, second.attempt, "completed")
    third = handler.begin_attempt(operation_id, correlation_id="c")

    assert (first.attempt, first.previous_lost) == (1, False)
    assert (second.attempt, second.previous_lost) == (2, True)
    assert (third.attempt, third.previous_lost) == (3, False)
    assert handler.resume_operation(operation_id).outcomes == {
        1: "lost",
        2: "completed",
    }


def test_messages_are_sanitised() -> None:
    """Credentials in URLs are masked, white space folded, length capped."""
    noisy = "cannot reach redis://user:s3cret@cache:6379/0\n\n  now " + "x" * 600

    clean = sanitize_message(noisy)

    assert "s3cret" not in clean
    assert "redis://***@cache:6379/0 now" in clean
    assert len(clean) == 500
