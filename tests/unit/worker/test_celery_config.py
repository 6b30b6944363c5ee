"""Unit tests for worker.celery_config: the Celery mapping derived from settings."""

from __future__ import annotations

import os
from typing import Any

import pytest

from config.settings import DEFAULT_REDIS_URL, Settings
from worker.celery_config import CHUNK_TASK_NAME, celery_config

REDIS_URL = "redis://:secret@cache.example:6380/3"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every CHUNKQ_* variable so the outer environment cannot leak in."""
    for name in list(os.environ):
        if name.startswith("CHUNKQ_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config() -> dict[str, Any]:
    """The Celery mapping for settings with a Redis URL and custom limits."""
    settings = Settings(
        redis_url=REDIS_URL,
        visibility_timeout_s=7200,
        soft_time_limit_s=100.0,
        hard_time_limit_grace_s=20.0,
        state_ttl_s=1234,
        queue="docs",
    )
    return celery_config(settings)


def test_json_only_and_pickle_refused(config: dict[str, Any]) -> None:
    """Only JSON is accepted and produced; pickle is refused."""
    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]
    assert config["task_serializer"] == "json"
    assert config["result_serializer"] == "json"
    assert config["event_serializer"] == "json"
    assert "pickle" not in config["accept_content"]


def test_late_ack_reject_on_loss_and_prefetch_one(config: dict[str, Any]) -> None:
    """Messages are acked late, rejected on worker loss, prefetched one at a time."""
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1


def test_events_and_started_state(config: dict[str, Any]) -> None:
    """Task events are sent and the started state is tracked."""
    assert config["worker_send_task_events"] is True
    assert config["task_send_sent_event"] is True
    assert config["task_track_started"] is True


def test_one_visibility_timeout_for_broker_and_backend(config: dict[str, Any]) -> None:
    """Broker and result backend share the configured visibility timeout."""
    assert config["broker_transport_options"] == {"visibility_timeout": 7200}
    assert config["result_backend_transport_options"] == {"visibility_timeout": 7200}


def test_broker_and_backend_url_from_settings(config: dict[str, Any]) -> None:
    """Broker and result backend both use the configured Redis URL."""
    assert config["broker_url"] == REDIS_URL
    assert config["result_backend"] == REDIS_URL


def test_default_url_when_unset() -> None:
    """Without a configured URL both point at the default Redis address."""
    config = celery_config(Settings())

    assert config["broker_url"] == DEFAULT_REDIS_URL
    assert config["result_backend"] == DEFAULT_REDIS_URL


def test_time_limits_queue_and_expiry_from_settings(config: dict[str, Any]) -> None:
    """Time limits, queue routing and result expiry come from the settings."""
    assert config["task_soft_time_limit"] == 100.0
    assert config["task_time_limit"] == 120.0
    assert config["task_default_queue"] == "docs"
    assert config["task_routes"] == {CHUNK_TASK_NAME: {"queue": "docs"}}
    assert config["result_expires"] == 1234


def test_visibility_timeout_exceeds_hard_limit(config: dict[str, Any]) -> None:
    """The visibility timeout is above the first attempt's hard time limit."""
    assert (
        config["broker_transport_options"]["visibility_timeout"]
        > config["task_time_limit"]
    )
