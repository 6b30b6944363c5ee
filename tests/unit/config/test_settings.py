"""Unit tests for config.settings: defaults, environment variables, validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import DEFAULT_REDIS_URL, DEFAULT_RETRY_RULES, Settings
from recovery.classify import ErrorType


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every CHUNKQ_* variable so the outer environment cannot leak in."""
    for name in list(os.environ):
        if name.startswith("CHUNKQ_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    """Settings without environment variables have the documented defaults."""
    settings = Settings()

    assert settings.soft_time_limit_s == 450.0
    assert settings.time_limit_factor == 1.5
    assert settings.hard_time_limit_grace_s == 30.0
    assert settings.hard_time_limit_s == 480.0
    assert settings.batch_thresholds == ((90.0, 4), (80.0, 8), (70.0, 16))
    assert settings.batch_size_default == 32
    assert settings.state_ttl_s == 86400
    assert settings.visibility_timeout_s == 3600
    assert settings.queue == "chunking"
    assert settings.key_prefix == "chunkq"
    assert settings.sink_fsync is True


def test_unset_redis_url_falls_back_to_default_address() -> None:
    """With no Redis URL configured the effective URL is the default address."""
    settings = Settings()

    assert settings.redis_url is None
    assert settings.effective_redis_url == DEFAULT_REDIS_URL


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """CHUNKQ_* variables set the matching fields, converted to their types."""
    monkeypatch.setenv("CHUNKQ_REDIS_URL", "redis://cache.example:6380/2")
    monkeypatch.setenv("CHUNKQ_SOFT_TIME_LIMIT_S", "100.5")
    monkeypatch.setenv("CHUNKQ_TIME_LIMIT_FACTOR", "2")
    monkeypatch.setenv("CHUNKQ_BATCH_SIZE_DEFAULT", "64")
    monkeypatch.setenv("CHUNKQ_BATCH_THRESHOLDS", "[[95, 2], [85, 6]]")
    monkeypatch.setenv("CHUNKQ_STATE_TTL_S", "600")
    monkeypatch.setenv("CHUNKQ_OUTPUT_DIR", "/srv/chunks")
    monkeypatch.setenv("CHUNKQ_SINK_FSYNC", "false")
    monkeypatch.setenv("CHUNKQ_QUEUE", "docs")

    settings = Settings()

    assert settings.effective_redis_url == "redis://cache.example:6380/2"
    assert settings.soft_time_limit_s == 100.5
    assert settings.time_limit_factor == 2.0
    assert settings.batch_size_default == 64
    assert settings.batch_thresholds == ((95.0, 2), (85.0, 6))
    assert settings.state_ttl_s == 600
    assert settings.output_dir == Path("/srv/chunks")
    assert settings.sink_fsync is False
    assert settings.queue == "docs"


def test_invalid_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CHUNKQ_* variable that does not convert raises ValidationError."""
    monkeypatch.setenv("CHUNKQ_BATCH_SIZE_DEFAULT", "many")

    with pytest.raises(ValidationError, match="batch_size_default"):
        Settings()


def test_unknown_environment_variables_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CHUNKQ_* variable that is no setting does not stop start-up."""
    monkeypatch.setenv("CHUNKQ_NOT_A_SETTING", "1")

    assert Settings().queue == "chunking"


@pytest.mark.parametrize(
    "thresholds",
    [
        ((70.0, 16), (80.0, 8), (90.0, 4)),
        ((90.0, 4), (90.0, 8)),
        ((90.0, 0),),
        ((90.0, -1),),
        ((100.0, 4),),
        ((0.0, 4),),
    ],
)
def test_invalid_thresholds_are_refused(
    thresholds: tuple[tuple[float, int], ...],
) -> None:
    """Thresholds not strictly descending, or with bad percent or size, are refused."""
    with pytest.raises(ValidationError, match="batch_thresholds"):
        Settings(batch_thresholds=thresholds)


@pytest.mark.parametrize("visibility_timeout_s", [1042, 480, 100])
def test_visibility_timeout_must_exceed_largest_hard_limit(
    visibility_timeout_s: int,
) -> None:
    """A visibility timeout at or below the last timeout retry's hard limit is refused."""
    with pytest.raises(ValidationError, match="visibility_timeout_s"):
        Settings(visibility_timeout_s=visibility_timeout_s)


def test_visibility_timeout_just_above_largest_hard_limit_is_accepted() -> None:
    """Above 450 * 1.5**2 + 30 = 1042.5 s (three timeout attempts) is accepted."""
    assert Settings(visibility_timeout_s=1043).visibility_timeout_s == 1043


def test_largest_hard_limit_follows_the_timeout_rule() -> None:
    """With one timeout attempt allowed, the first hard limit is the largest."""
    settings = Settings(
        retry_rules={"timeout": {"max_attempts": 1}}, visibility_timeout_s=481
    )
    assert settings.largest_hard_time_limit_s == 480.0


def test_backoff_cap_must_stay_below_visibility_timeout() -> None:
    """A retry waiting longer than the visibility timeout would be delivered again early."""
    with pytest.raises(ValidationError, match="backoff_cap_s"):
        Settings(retry_rules={"unknown": {"backoff_cap_s": 3600}})


def test_retry_rules_override_merges_fields_with_defaults() -> None:
    """An override of one field keeps the other fields and rows of the default table."""
    settings = Settings(retry_rules={"transient_connection": {"max_attempts": 10}})

    assert settings.retry_rules[ErrorType.TRANSIENT_CONNECTION].max_attempts == 10
    assert settings.retry_rules[ErrorType.TRANSIENT_CONNECTION].backoff_cap_s == 30.0
    assert (
        settings.retry_rules[ErrorType.MEMORY] == DEFAULT_RETRY_RULES[ErrorType.MEMORY]
    )


def test_retry_rules_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CHUNKQ_RETRY_RULES is JSON, merged over the defaults."""
    monkeypatch.setenv("CHUNKQ_RETRY_RULES", '{"memory": {"max_attempts": 7}}')

    assert Settings().retry_rules[ErrorType.MEMORY].max_attempts == 7


def test_batch_default_below_a_threshold_size_is_refused() -> None:
    """A default batch smaller than a pressure batch would grow batches under pressure."""
    with pytest.raises(ValidationError, match="batch_size_default"):
        Settings(batch_size_default=4)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("soft_time_limit_s", 0),
        ("time_limit_factor", 0.5),
        ("hard_time_limit_grace_s", 0),
        ("batch_size_default", 0),
        ("state_ttl_s", 0),
        ("worker_concurrency", 0),
    ],
)
def test_out_of_range_values_are_refused(field: str, value: float) -> None:
    """Limits, sizes and lifetimes out of range raise ValidationError naming them."""
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_settings_are_frozen() -> None:
    """Settings cannot be changed once read."""
    settings = Settings()

    with pytest.raises(ValidationError):
        settings.queue = "other"  # type: ignore[misc]


def test_a_rule_whose_base_exceeds_its_cap_is_refused() -> None:
    """A retry rule that the policy could not use fails when the settings are read."""
    with pytest.raises(ValidationError, match=r"retry_rules\.memory"):
        Settings(retry_rules={"memory": {"backoff_cap_s": 1.0}})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("redis_url", "foo://x", "redis://"),
        ("gate_permits", {"disk": 0}, "at least 1 permit"),
        ("output_dir", "", "empty output folder"),
    ],
)
def test_unusable_values_are_refused_naming_the_problem(
    field: str, value: object, message: str
) -> None:
    """A wrong URL scheme, a resource with no permit, an empty output folder: refused."""
    with pytest.raises(ValidationError, match=message):
        Settings(**{field: value})
