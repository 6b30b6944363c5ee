"""The state record of an operation: its status and who asked for it.

One Redis hash per operation holds the status (:class:`Status`), the correlation id,
the task id, the request as JSON, and timestamps in Unix seconds. Every write renews
the state TTL. Field values are strings; this module knows nothing about chunking.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, cast

import redis

from recovery.keys import KeyBuilder


class Status(StrEnum):
    """Where an operation stands."""

    PENDING = "pending"
    WAITING = "waiting"
    """Waiting for a permit of a gated resource."""
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    """Finished, but some items failed; the others are written."""
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """Whether the operation will not run again by itself."""
        return self in {Status.COMPLETED, Status.PARTIAL, Status.FAILED}


class StateStore:
    """Reads and writes operation state records."""

    def __init__(self, *, client: redis.Redis, keys: KeyBuilder, ttl_s: int) -> None:
        self._client = client
        self._keys = keys
        self._ttl_s = ttl_s

    def update(self, operation_id: str, **fields: str | int | float) -> None:
        """Set fields of the operation's state, stamp ``updated_at_s``, renew the TTL.

        One round trip. ``created_at_s`` is set on the first write only.
        """
        key = self._keys.operation(operation_id).state
        now_s = f"{time.time():.3f}"
        values: dict[str | bytes | bytearray | memoryview[int] | int | float, Any] = {
            name: str(value) for name, value in fields.items()
        }
        values["updated_at_s"] = now_s
        pipe = self._client.pipeline(transaction=True)
        pipe.hsetnx(key, "created_at_s", now_s)
        pipe.hset(key, mapping=values)
        pipe.expire(key, self._ttl_s)
        pipe.execute()

    def get(self, operation_id: str) -> dict[str, str]:
        """Return the operation's state fields (empty when unknown or expired)."""
        raw = cast(
            dict[bytes, bytes],
            self._client.hgetall(self._keys.operation(operation_id).state),
        )
        return {key.decode(): value.decode() for key, value in raw.items()}
