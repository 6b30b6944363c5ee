"""The one settings object of chunkq.

Every tunable lives here, typed, with its unit in its name. Values come from
environment variables prefixed ``CHUNKQ_`` (``CHUNKQ_REDIS_URL``,
``CHUNKQ_STATE_TTL_S`` ...) and are read once per process by :func:`get_settings`.
The Celery configuration is derived from this object in ``worker/celery_config.py``;
nothing else reads the environment.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


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

    @model_validator(mode="after")
    def _visibility_covers_limits(self) -> Settings:
        if self.visibility_timeout_s <= self.hard_time_limit_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must exceed the hard "
                f"time limit ({self.hard_time_limit_s} s), or running work is redelivered"
            )
        return self


@functools.cache
def get_settings() -> Settings:
    """Return the process's settings, read from the environment on first call.

    Raises:
        pydantic.ValidationError: a ``CHUNKQ_*`` variable has an invalid value.
    """
    return Settings()
