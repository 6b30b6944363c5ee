"""Admission to the resource-gated queue: a Redis semaphore per resource, in order.

Work that ran out of a resource (connections, disk, memory, CPU, file descriptors) is
sent to the gated Celery queue. Before it runs there, it must hold one of the
resource's *permits* (``CHUNKQ_GATE_PERMITS``). Per resource, Redis keeps:

``{prefix}:gate:{resource}:holders``
    sorted set: operation id to the Unix time in milliseconds its permit expires. A
    holder renews its permit while it works; a holder that died stops renewing, and
    its permit is reclaimed once expired.
``{prefix}:gate:{resource}:waiting``
    sorted set: operation id to the Unix time in milliseconds it started waiting. The
    order is the admission order; an entry older than the wait TTL is dropped.
``{prefix}:gate:{resource}:durations``
    list: how long recent admitted operations held their permit, in seconds, newest
    first, capped. The estimated wait comes from it, not from a constant.

Admission is one Lua call: expired permits and stale waiting entries are removed;
an operation is admitted when its rank among the waiting is below the number of free
permits. Entries leave on admission, release, cancellation and cleanup. Times come
from the Redis server's clock, so workers whose clocks differ agree on expiries.
"""

from __future__ import annotations

import errno
import math
import statistics
from dataclasses import dataclass
from typing import Any, cast

import redis

from recovery.classify import ResourceExhaustedError
from recovery.keepalive import KeepAlive
from recovery.keys import KeyBuilder

DURATIONS_KEPT = 50

GATE_HEADER = "chunkq_gate"
"""Message header naming the resource a message must be admitted under."""

_ERRNO_RESOURCES = {
    errno.ENOSPC: "disk",
    errno.EDQUOT: "disk",
    errno.EMFILE: "files",
    errno.ENFILE: "files",
    errno.ENOMEM: "memory",
}


def resource_of(error: BaseException) -> str:
    """Return the resource an exhaustion error ran out of, as a gate name.

    ``ResourceExhaustedError`` names it; an ``OSError`` tells by its errno (``disk``,
    ``files``, ``memory``); Redis and connection-pool errors are ``connections``;
    anything else is ``other``.
    """
    if isinstance(error, ResourceExhaustedError):
        return error.resource
    if isinstance(error, OSError) and error.errno in _ERRNO_RESOURCES:
        return _ERRNO_RESOURCES[error.errno]
    if (
        isinstance(error, redis.RedisError)
        or "connection" in type(error).__name__.lower()
    ):
        return "connections"
    return "other"


_TRY_ADMIT_LUA = """
local holders, waiting = KEYS[1], KEYS[2]
local operation = ARGV[1]
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local permits = tonumber(ARGV[2])
local permit_ttl_ms = tonumber(ARGV[3])
local wait_ttl_ms = tonumber(ARGV[4])
local key_ttl_s = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now_ms)
redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now_ms - wait_ttl_ms)
if redis.call('ZSCORE', holders, operation) then
  redis.call('ZADD', holders, now_ms + permit_ttl_ms, operation)
  return {1, 0, redis.call('ZCARD', holders), redis.call('ZCARD', waiting)}
end
redis.call('ZADD', waiting, 'NX', now_ms, operation)
redis.call('EXPIRE', waiting, key_ttl_s)
local rank = redis.call('ZRANK', waiting, operation)
local free = permits - redis.call('ZCARD', holders)
if rank < free then
  redis.call('ZREM', waiting, operation)
  redis.call('ZADD', holders, now_ms + permit_ttl_ms, operation)
  redis.call('EXPIRE', holders, key_ttl_s)
  return {1, 0, redis.call('ZCARD', holders), redis.call('ZCARD', waiting)}
end
return {0, rank + 1, redis.call('ZCARD', holders), redis.call('ZCARD', waiting)}
"""

_RENEW_LUA = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local clock = redis.call('TIME')
  local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  redis.call('ZADD', KEYS[1], 'XX', now_ms + tonumber(ARGV[2]), ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to a request for a permit."""

    admitted: bool
    position: int
    """1 for the next in line; 0 when admitted."""
    holders: int
    waiting: int
    estimated_wait_s: float | None
    """From recent measured durations; ``None`` until one was measured."""


@dataclass(frozen=True, slots=True)
class Holder:
    """An operation holding a permit."""

    operation_id: str
    expires_in_s: float


@dataclass(frozen=True, slots=True)
class Waiter:
    """An operation waiting for a permit."""

    operation_id: str
    position: int
    waited_s: float
    estimated_wait_s: float | None


@dataclass(frozen=True, slots=True)
class GateStatus:
    """Who holds and who waits for one resource's permits."""

    resource: str
    permits: int
    holders: tuple[Holder, ...]
    waiting: tuple[Waiter, ...]
    mean_duration_s: float | None


def estimate_wait_s(
    position: int, *, permits: int, durations_s: list[float]
) -> float | None:
    """Return the expected wait in seconds of the ``position``-th in line.

    Each permit frees after the mean recent duration, so the ``position``-th waiter
    is admitted after ``ceil(position / permits)`` rounds. ``None`` when no duration
    was measured yet, or for position 0 (admitted).
    """
    if position <= 0 or not durations_s:
        return None if position > 0 else 0.0
    rounds = math.ceil(position / max(permits, 1))
    return rounds * statistics.fmean(durations_s)


def gate_key_names(keys: KeyBuilder, resource: str) -> tuple[str, str, str]:
    """Return the holders, waiting and durations keys of ``resource``."""
    base = f"{keys.prefix}:gate:{resource}"
    return f"{base}:holders", f"{base}:waiting", f"{base}:durations"


class AdmissionGate:
    """Permits, waiting order and measured durations of the gated resources."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        keys: KeyBuilder,
        permits: dict[str, int],
        default_permits: int = 1,
        permit_ttl_s: float,
        wait_ttl_s: float,
    ) -> None:
        """``permits`` maps a resource to its number of permits (others get the default).

        ``permit_ttl_s`` is how long a permit lasts without renewal; ``wait_ttl_s`` how
        long a waiting entry lasts without its owner asking again.
        """
        self._client = client
        self._keys = keys
        self._permits = dict(permits)
        self._default_permits = default_permits
        self.permit_ttl_s = permit_ttl_s
        self._wait_ttl_s = wait_ttl_s
        self._try_admit = client.register_script(_TRY_ADMIT_LUA)
        self._renew = client.register_script(_RENEW_LUA)

    def permits_of(self, resource: str) -> int:
        """Return the number of permits of ``resource``."""
        return self._permits.get(resource, self._default_permits)

    def _names(self, resource: str) -> tuple[str, str, str]:
        return gate_key_names(self._keys, resource)

    def try_admit(self, operation_id: str, resource: str) -> Admission:
        """Take a permit of ``resource`` for the operation, or join (keep) its place.

        An operation that holds a permit already gets it renewed.
        """
        holders, waiting, _ = self._names(resource)
        permits = self.permits_of(resource)
        admitted, position, holding, queued = cast(
            list[int],
            self._try_admit(
                keys=[holders, waiting],
                args=[
                    operation_id,
                    permits,
                    int(self.permit_ttl_s * 1000),
                    int(self._wait_ttl_s * 1000),
                    int(max(self._wait_ttl_s, self.permit_ttl_s) * 4),
                ],
            ),
        )
        return Admission(
            admitted=bool(admitted),
            position=int(position),
            holders=int(holding),
            waiting=int(queued),
            estimated_wait_s=estimate_wait_s(
                int(position), permits=permits, durations_s=self.durations_s(resource)
            ),
        )

    def renew(self, operation_id: str, resource: str) -> bool:
        """Extend the operation's permit by the permit TTL; ``False`` if it has none."""
        holders, _, _ = self._names(resource)
        ttl_ms = int(self.permit_ttl_s * 1000)
        return bool(self._renew(keys=[holders], args=[operation_id, ttl_ms]))

    def release(
        self, operation_id: str, resource: str, *, held_s: float | None
    ) -> None:
        """Give the permit back; ``held_s`` (seconds) joins the measured durations."""
        holders, waiting, durations = self._names(resource)
        pipe = self._client.pipeline(transaction=True)
        pipe.zrem(holders, operation_id)
        pipe.zrem(waiting, operation_id)
        if held_s is not None:
            pipe.lpush(durations, f"{held_s:.3f}")
            pipe.ltrim(durations, 0, DURATIONS_KEPT - 1)
        pipe.execute()

    def cancel(self, operation_id: str, resource: str | None = None) -> None:
        """Remove the operation from the waiting line and the holders (all resources)."""
        resources = [resource] if resource else self.resources()
        pipe = self._client.pipeline(transaction=True)
        for name in resources:
            holders, waiting, _ = self._names(name)
            pipe.zrem(holders, operation_id)
            pipe.zrem(waiting, operation_id)
        pipe.execute()

    def durations_s(self, resource: str) -> list[float]:
        """Return recent permit durations in seconds, newest first."""
        _, _, durations = self._names(resource)
        raw = cast(list[bytes], self._client.lrange(durations, 0, -1))
        return [float(item) for item in raw]

    def resources(self) -> list[str]:
        """Return the resources that have holders or waiters now."""
        pattern = f"{self._keys.prefix}:gate:*"
        names = set()
        for key in self._client.scan_iter(match=pattern, count=100):
            parts = key.decode().split(":")
            if len(parts) >= 4 and parts[-1] in {"holders", "waiting"}:
                names.add(parts[-2])
        return sorted(names)

    def status(self, resource: str) -> GateStatus:
        """Return the holders and the waiting line of ``resource``, in order."""
        holders_key, waiting_key, _ = self._names(resource)
        seconds, microseconds = self._client.time()
        now_ms = seconds * 1000 + microseconds // 1000
        pipe = self._client.pipeline(transaction=True)
        pipe.zremrangebyscore(holders_key, "-inf", now_ms)
        pipe.zremrangebyscore(
            waiting_key, "-inf", now_ms - int(self._wait_ttl_s * 1000)
        )
        pipe.zrange(holders_key, 0, -1, withscores=True)
        pipe.zrange(waiting_key, 0, -1, withscores=True)
        _, _, holders, waiting = pipe.execute()
        permits = self.permits_of(resource)
        durations = self.durations_s(resource)
        return GateStatus(
            resource=resource,
            permits=permits,
            holders=tuple(
                Holder(_text(op), round((score - now_ms) / 1000, 3))
                for op, score in holders
            ),
            waiting=tuple(
                Waiter(
                    operation_id=_text(op),
                    position=index + 1,
                    waited_s=round((now_ms - score) / 1000, 3),
                    estimated_wait_s=estimate_wait_s(
                        index + 1, permits=permits, durations_s=durations
                    ),
                )
                for index, (op, score) in enumerate(waiting)
            ),
            mean_duration_s=statistics.fmean(durations) if durations else None,
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def keep_permit(gate: AdmissionGate, operation_id: str, resource: str) -> KeepAlive:
    """Start renewing the operation's permit every third of the permit TTL."""
    return KeepAlive(
        renew=lambda: gate.renew(operation_id, resource),
        interval_s=gate.permit_ttl_s / 3,
        name=f"permit-{resource}",
    ).start()
