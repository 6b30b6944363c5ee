"""The one settings object of chunkq.

Every tunable lives here, typed, with its unit in its name. Values come from
environment variables prefixed ``CHUNKQ_`` (``CHUNKQ_REDIS_URL``,
``CHUNKQ_STATE_TTL_S`` ...) and are read once per process by :func:`get_settings`.
The Celery configuration is derived from this object in ``worker/celery_config.py``;
nothing else reads the environment.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recovery.classify import ErrorType
from recovery.policy import Action, ErrorRule

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class CleanupStrategy(StrEnum):
    """What to do with an operation's work when its attempts run out."""

    SAVE_PARTIAL = "save_partial"
    """Keep what finished; mark the rest failed. The operation ends ``partial``."""
    ROLLBACK = "rollback"
    """Remove everything the operation wrote; it ends ``failed``."""
    DISCARD = "discard"
    """Roll back and remove the operation's Redis traces too (not its dead letter)."""


class RetryRule(BaseModel):
    """One row of the retry table: how an error type is handled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retry: bool
    max_attempts: int = Field(ge=1, description="Attempts in all, the first included.")
    backoff_base_s: float = Field(ge=0, description="Backoff ceiling after attempt 1.")
    backoff_cap_s: float = Field(ge=0, description="Highest backoff ceiling.")
    action: Action


def _rule(attempts: int, base_s: float, cap_s: float, action: Action) -> RetryRule:
    return RetryRule(
        retry=True,
        max_attempts=attempts,
        backoff_base_s=base_s,
        backoff_cap_s=cap_s,
        action=action,
    )


def _no_retry(action: Action) -> RetryRule:
    return RetryRule(
        retry=False, max_attempts=1, backoff_base_s=0, backoff_cap_s=0, action=action
    )


DEFAULT_RETRY_RULES: dict[ErrorType, RetryRule] = {
    ErrorType.MEMORY: _rule(4, 5.0, 60.0, Action.REDUCE_BATCH),
    ErrorType.TIMEOUT: _rule(3, 10.0, 120.0, Action.RETRY),
    ErrorType.TRANSIENT_CONNECTION: _rule(6, 1.0, 30.0, Action.RETRY),
    ErrorType.RESOURCE_EXHAUSTION: _rule(5, 15.0, 300.0, Action.ROUTE_GATED),
    ErrorType.STRATEGY: _rule(3, 0.5, 5.0, Action.FALL_BACK),
    ErrorType.INVALID_INPUT: _no_retry(Action.FAIL),
    ErrorType.PARTIAL_FAILURE: _no_retry(Action.SAVE_PARTIAL),
    ErrorType.WORKER_LOST: _rule(3, 5.0, 60.0, Action.RETRY),
    ErrorType.UNKNOWN: _rule(2, 2.0, 30.0, Action.RETRY),
}
"""chunkq's retry table. ``CHUNKQ_RETRY_RULES`` (JSON) overrides rows or fields of
rows, for example ``{"transient_connection": {"max_attempts": 10}}``."""


class Settings(BaseSettings):
    """chunkq's configuration; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="CHUNKQ_", frozen=True, extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis for broker, results and state. Unset: "
        f"{DEFAULT_REDIS_URL}; `chunkq run` then starts a private server if none answers.",
    )
    queue: str = Field(default="chunking", description="Queue of chunking jobs.")
    gated_queue: str = Field(
        default="chunking.gated",
        description="Queue for work admitted under a resource gate.",
    )
    key_prefix: str = Field(default="chunkq", description="Prefix of every Redis key.")

    soft_time_limit_s: float = Field(
        default=450.0, gt=0, description="Soft time limit of the first attempt."
    )
    time_limit_factor: float = Field(
        default=1.5, ge=1.0, description="Growth of both limits on each timeout retry."
    )
    hard_time_limit_grace_s: float = Field(
        default=30.0, gt=0, description="Hard limit minus soft limit, on every attempt."
    )
    visibility_timeout_s: int = Field(
        default=3600,
        gt=0,
        description="Seconds before an unacknowledged message is delivered again; applied "
        "to the broker and the result backend alike.",
    )

    batch_size_default: int = Field(
        default=32, gt=0, description="Documents per batch under low memory pressure."
    )
    batch_thresholds: tuple[tuple[float, int], ...] = Field(
        default=((90.0, 4), (80.0, 8), (70.0, 16)),
        description="Pairs (memory percent over, documents per batch), highest first.",
    )

    retry_rules: dict[ErrorType, RetryRule] = Field(
        default_factory=lambda: dict(DEFAULT_RETRY_RULES),
        description="The retry table (JSON): rows or fields given override the defaults.",
    )
    fallback_chain: tuple[str, ...] = Field(
        default=("tokens", "markdown", "recursive", "characters"),
        description="Strategies from the most elaborate to the simplest; a strategy that "
        "fails on a document falls back to the next one.",
    )
    cleanup_strategy: CleanupStrategy = Field(
        default=CleanupStrategy.SAVE_PARTIAL,
        description="What happens to written work when attempts run out.",
    )
    error_history_limit: int = Field(
        default=100, gt=0, description="Error records kept per operation."
    )
    dead_letter_ttl_s: int = Field(
        default=7 * 24 * 3600, gt=0, description="Lifetime of dead-letter records."
    )
    imports: tuple[str, ...] = Field(
        default=(),
        description="Modules a worker imports at start-up, for example ones that "
        "register chunking strategies.",
    )

    gate_permits: dict[str, int] = Field(
        default_factory=dict,
        description='Permits per gated resource (JSON), e.g. {"connections": 4}.',
    )
    gate_default_permits: int = Field(
        default=1, gt=0, description="Permits of a gated resource not named above."
    )
    gate_permit_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="Lifetime of a permit its holder stops renewing.",
    )
    gate_wait_ttl_s: float = Field(
        default=3600.0, gt=0, description="Lifetime of a waiting entry not asked about."
    )
    gate_poll_s: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between admission requests while waiting.",
    )

    heartbeat_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A running operation whose worker has not beaten for this long is "
        "sent again from its checkpoint by a reaper.",
    )
    reaper_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between two passes of a worker's reaper.",
    )
    fingerprint_ttl_s: int = Field(
        default=30 * 24 * 3600,
        gt=0,
        description="Lifetime of document and work fingerprints, for skipping unchanged work.",
    )

    state_ttl_s: int = Field(
        default=24 * 3600,
        gt=0,
        description="Lifetime of checkpoints and state records.",
    )
    output_dir: Path = Field(
        default=Path("chunkq-output"), description="Default folder of the chunk sink."
    )
    sink_fsync: bool = Field(
        default=True,
        description="Flush each chunk file to disk before it replaces the old one; off "
        "trades safety on power loss for about twice the write speed.",
    )
    worker_concurrency: int = Field(
        default=2,
        gt=0,
        description="Worker processes started by `chunkq run`/`worker`.",
    )

    @property
    def effective_redis_url(self) -> str:
        """The Redis URL in force: the configured one or the default address."""
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def hard_time_limit_s(self) -> float:
        """Hard time limit of the first attempt, in seconds."""
        return self.soft_time_limit_s + self.hard_time_limit_grace_s

    @field_validator("batch_thresholds")
    @classmethod
    def _thresholds_descend(
        cls, value: tuple[tuple[float, int], ...]
    ) -> tuple[tuple[float, int], ...]:
        percents = [percent for percent, _ in value]
        if percents != sorted(percents, reverse=True) or len(set(percents)) != len(
            percents
        ):
            raise ValueError(f"batch_thresholds must be strictly descending: {value}")
        if any(size <= 0 or not 0 < percent < 100 for percent, size in value):
            raise ValueError(
                f"batch_thresholds need 0 < percent < 100, size > 0: {value}"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError(f"{value!r} is not a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("gate_permits")
    @classmethod
    def _permits_positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {name: count for name, count in value.items() if count < 1}
        if bad:
            raise ValueError(f"every resource needs at least 1 permit: {bad}")
        return value

    @field_validator("output_dir", mode="before")
    @classmethod
    def _output_named(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("an empty output folder; give '.' for the working folder")
        return value

    @field_validator("retry_rules", mode="before")
    @classmethod
    def _merge_rules(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {
            str(error_type): rule.model_dump()
            for error_type, rule in DEFAULT_RETRY_RULES.items()
        }
        for error_type, fields in value.items():
            name = str(ErrorType(error_type))
            given = (
                fields.model_dump() if isinstance(fields, RetryRule) else dict(fields)
            )
            merged[name] = {**merged[name], **given}
        return merged

    @property
    def largest_hard_time_limit_s(self) -> float:
        """The hard limit of the last attempt a run of timeouts can reach, in seconds."""
        attempts = self.retry_rules[ErrorType.TIMEOUT].max_attempts
        soft_s = self.soft_time_limit_s * self.time_limit_factor ** (attempts - 1)
        return soft_s + self.hard_time_limit_grace_s

    @model_validator(mode="after")
    def _batch_sizes_consistent(self) -> Settings:
        largest_size = max((size for _, size in self.batch_thresholds), default=0)
        if self.batch_size_default < largest_size:
            raise ValueError(
                f"batch_size_default ({self.batch_size_default}) is below a batch size in "
                f"batch_thresholds ({self.batch_thresholds}); pressure would grow batches"
            )
        return self

    @model_validator(mode="after")
    def _visibility_covers_limits(self) -> Settings:
        longest_s = self.largest_hard_time_limit_s
        if self.visibility_timeout_s <= longest_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must exceed the "
                f"largest hard time limit an attempt can get ({longest_s:g} s), or "
                "running work is delivered again"
            )
        for error_type, rule in self.retry_rules.items():
            try:
                ErrorRule(**rule.model_dump())
            except ValueError as error:
                raise ValueError(f"retry_rules.{error_type}: {error}") from None
            if rule.backoff_cap_s >= self.visibility_timeout_s:
                raise ValueError(
                    f"retry_rules.{error_type}.backoff_cap_s ({rule.backoff_cap_s:g}) must be "
                    f"below visibility_timeout_s ({self.visibility_timeout_s}), or a waiting "
                    "retry is delivered again before its time"
                )
        return self


@functools.cache
def get_settings() -> Settings:
    """Return the process's settings, read from the environment on first call.

    Raises:
        pydantic.ValidationError: a ``CHUNKQ_*`` variable has an invalid value.
    """
    return Settings()
