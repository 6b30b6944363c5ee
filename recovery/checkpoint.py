"""Checkpoints of an operation's progress in Redis, written after every batch.

An operation processes a fixed *plan* of item ids in batches. After each batch,
:meth:`CheckpointStore.record_batch` records which items finished, which failed and
why, and adds the batch's counters to the operation's totals, in one round trip: a
Lua script runs it atomically on the server. The script only counts an item the first
time it is marked done, so recording the same batch twice (a retried call whose
first reply was lost, a batch redone after a crash) leaves the totals right.

Every key is given the state TTL on every write, so an abandoned operation's traces
expire by themselves. Item ids and counter names are opaque here: this module knows
nothing about what an item is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from recovery.keys import KeyBuilder
from recovery.lease import Lease, StaleEpochError

ITEMS_DONE = "items_done"
ITEMS_FAILED = "items_failed"

_RECORD_BATCH_LUA = """
local done_key, failed_key, totals_key, checkpoint_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local lease_key, fingerprints_key = KEYS[5], KEYS[6]
local ttl_s = tonumber(ARGV[1])
local batch = cjson.decode(ARGV[2])
if batch.epoch then
  local current = tonumber(redis.call('HGET', lease_key, 'epoch') or '0')
  if current ~= batch.epoch then
    return redis.error_reply('STALE_EPOCH current ' .. current)
  end
end
for _, item in ipairs(batch.fingerprints) do
  redis.call('HSET', fingerprints_key, item[1], item[2])
end
if #batch.fingerprints > 0 then
  redis.call('EXPIRE', fingerprints_key, tonumber(ARGV[3]))
end
for _, item in ipairs(batch.done) do
  if redis.call('SADD', done_key, item[1]) == 1 then
    redis.call('HINCRBY', totals_key, 'items_done', 1)
    for name, amount in pairs(item[2]) do
      redis.call('HINCRBY', totals_key, name, amount)
    end
  end
end
for _, item in ipairs(batch.failed) do
  if redis.call('HSETNX', failed_key, item[1], item[2]) == 1 then
    redis.call('HINCRBY', totals_key, 'items_failed', 1)
  end
end
for name, value in pairs(batch.checkpoint) do
  redis.call('HSET', checkpoint_key, name, value)
end
redis.call('HINCRBY', checkpoint_key, 'batches', 1)
for _, key in ipairs({done_key, failed_key, totals_key, checkpoint_key}) do
  if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, ttl_s) end
end
return redis.call('HGETALL', totals_key)
"""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What an operation has finished so far."""

    done: frozenset[str] = frozenset()
    failed: Mapping[str, str] = field(default_factory=dict)
    totals: Mapping[str, int] = field(default_factory=dict)
    batch_size: int | None = None
    attempt: int | None = None
    batches: int = 0
    updated_at_s: float | None = None
    """Unix time of the last checkpoint, in seconds."""

    @property
    def finished(self) -> frozenset[str]:
        """Items that need no more work: done or failed for good."""
        return self.done | frozenset(self.failed)


class CheckpointStore:
    """Reads and writes checkpoints and plans of operations in Redis."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        keys: KeyBuilder,
        ttl_s: int,
        fingerprint_ttl_s: int = 30 * 24 * 3600,
    ) -> None:
        self._client = client
        self._keys = keys
        self._ttl_s = ttl_s
        self._fingerprint_ttl_s = fingerprint_ttl_s
        self._record_batch = client.register_script(_RECORD_BATCH_LUA)

    def fix_plan(self, operation_id: str, items: Sequence[str]) -> list[str]:
        """Store ``items`` as the operation's plan unless one exists; return the plan.

        The first call wins, so every attempt of an operation works on the same list
        even if the source changed in between. One round trip when the plan is new.
        """
        keys = self._keys.operation(operation_id)
        payload = json.dumps(list(items))
        if self._client.set(keys.plan, payload, nx=True, ex=self._ttl_s):
            return list(items)
        return self.plan(operation_id) or []

    def plan(self, operation_id: str) -> list[str] | None:
        """Return the operation's plan, or ``None`` when none was fixed."""
        raw = self._client.get(self._keys.operation(operation_id).plan)
        return None if raw is None else cast(list[str], json.loads(raw))

    def record_batch(
        self,
        operation_id: str,
        *,
        done: Mapping[str, Mapping[str, int]],
        failed: Mapping[str, str],
        batch_size: int,
        attempt: int,
        fence: Lease | None = None,
        fingerprints: Mapping[str, str] | None = None,
        fingerprint_scope: str = "",
    ) -> dict[str, int]:
        """Record one finished batch and return the operation's totals after it.

        Args:
            done: item id to its counters (for example chunks and bytes written).
            failed: item id to the reason it failed.
            batch_size: documents per batch in force, for the record.
            attempt: the attempt that processed the batch, numbered from 1.
            fence: the writer's lease; the batch is refused unless it is current.
            fingerprints: item id to the fingerprint of what was done to it, kept
                per ``fingerprint_scope`` so a later operation can skip unchanged items.

        Raises:
            recovery.lease.StaleEpochError: ``fence`` was superseded; nothing recorded.
        """
        keys = self._keys.operation(operation_id)
        batch: dict[str, Any] = {
            "done": [[item, dict(counters) or {}] for item, counters in done.items()],
            "failed": [[item, reason] for item, reason in failed.items()],
            "checkpoint": {
                "batch_size": batch_size,
                "attempt": attempt,
                "updated_at_s": f"{time.time():.3f}",
            },
            "fingerprints": [
                [item, value] for item, value in (fingerprints or {}).items()
            ],
        }
        if fence is not None:
            batch["epoch"] = fence.epoch
        # cjson turns an empty Lua table into {} and an empty Python list into [];
        # the script iterates with ipairs, which accepts both.
        try:
            reply = self._record_batch(
                keys=[
                    keys.done,
                    keys.failed,
                    keys.totals,
                    keys.checkpoint,
                    keys.lease,
                    self._keys.item_fingerprints(fingerprint_scope),
                ],
                args=[self._ttl_s, json.dumps(batch), self._fingerprint_ttl_s],
            )
        except redis.ResponseError as error:
            if "STALE_EPOCH" in str(error) and fence is not None:
                raise StaleEpochError(
                    operation_id=operation_id, epoch=fence.epoch
                ) from None
            raise
        return _pairs_to_ints(cast(list[Any], reply))

    def forget_failures(self, operation_id: str) -> None:
        """Clear the items recorded as failed, so the next attempt tries them again."""
        keys = self._keys.operation(operation_id)
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(keys.failed)
        pipe.hdel(keys.totals, ITEMS_FAILED)
        pipe.execute()

    def fingerprints(self, scope: str, items: list[str]) -> dict[str, str]:
        """Return the stored fingerprints of ``items`` in ``scope`` (missing ones left out)."""
        if not items:
            return {}
        raw = cast(
            list[bytes | None],
            self._client.hmget(self._keys.item_fingerprints(scope), items),
        )
        return {
            item: value.decode()
            for item, value in zip(items, raw, strict=True)
            if value
        }

    def load(self, operation_id: str) -> Checkpoint:
        """Return the operation's checkpoint (empty when nothing was recorded)."""
        keys = self._keys.operation(operation_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.smembers(keys.done)
        pipe.hgetall(keys.failed)
        pipe.hgetall(keys.totals)
        pipe.hgetall(keys.checkpoint)
        return checkpoint_from_replies(*pipe.execute())

    def ttl_s(self, operation_id: str) -> dict[str, int]:
        """Return each existing key's remaining lifetime in seconds, by key name."""
        keys = self._keys.operation(operation_id)
        pipe = self._client.pipeline(transaction=False)
        names = keys.all()
        for name in names:
            pipe.ttl(name)
        return {
            name: ttl
            for name, ttl in zip(names, pipe.execute(), strict=True)
            if ttl >= 0
        }


def checkpoint_from_replies(
    done: Any, failed: Any, totals: Any, meta: Any
) -> Checkpoint:
    """Build a :class:`Checkpoint` from the replies of SMEMBERS done, HGETALL failed,
    HGETALL totals and HGETALL checkpoint."""
    return Checkpoint(
        done=frozenset(_text(item) for item in done),
        failed={_text(k): _text(v) for k, v in failed.items()},
        totals={_text(k): int(v) for k, v in totals.items()},
        batch_size=_optional_int(meta.get(b"batch_size")),
        attempt=_optional_int(meta.get(b"attempt")),
        batches=_optional_int(meta.get(b"batches")) or 0,
        updated_at_s=_optional_float(meta.get(b"updated_at_s")),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _optional_int(value: bytes | None) -> int | None:
    return None if value is None else int(value)


def _optional_float(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _pairs_to_ints(flat: list[Any]) -> dict[str, int]:
    return {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
