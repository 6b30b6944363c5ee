"""Leases of running operations: an epoch for fencing, a heartbeat for liveness.

Every attempt that starts *takes* the operation's lease: the epoch goes up by one and
the attempt's worker becomes the holder. From then on, only writes that carry the
current epoch count: a checkpoint or a sink commit from an older epoch (a worker that
was presumed dead and woke up late, a duplicate delivery) is refused, so it cannot
overwrite newer work.

While it works, the holder *beats*: its deadline in ``{prefix}:running`` (a sorted set
of operation id to the Unix time in milliseconds its heartbeat expires) moves forward.
A holder that died stops beating; once its deadline passes, the reaper
(:mod:`recovery.reaper`) sends the operation again from its checkpoint, well before
the broker's visibility timeout would.

Keys: ``{prefix}:op:{id}:lease`` (hash: ``epoch``, ``holder``), ``{prefix}:running``.
Times come from the Redis server's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from recovery.errors import RecoveryError
from recovery.keys import KeyBuilder

_NOW_MS = """
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

_TAKE_LUA = (
    _NOW_MS
    + """
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'holder', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), ARGV[4])
return epoch
"""
)

_BEAT_LUA = (
    _NOW_MS
    + """
if tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), ARGV[3])
return 1
"""
)

_RELEASE_LUA = """
if tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

_EXPIRED_LUA = (
    _NOW_MS
    + """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[2]))
for _, operation in ipairs(expired) do
  redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[1]), operation)
end
return expired
"""
)


class StaleEpochError(RecoveryError):
    """A write came from an attempt whose lease another attempt has taken since.

    A control-flow signal, not a failure: the attempt that gets it stops quietly,
    leaving the operation to the newer attempt.

    Attributes:
        operation_id: the operation.
        epoch: the writer's epoch.
    """

    def __init__(self, *, operation_id: str, epoch: int) -> None:
        self.operation_id = operation_id
        self.epoch = epoch
        super().__init__(f"operation {operation_id!r}: epoch {epoch} was superseded")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.operation_id, self.epoch))


def _rebuild(operation_id: str, epoch: int) -> StaleEpochError:
    return StaleEpochError(operation_id=operation_id, epoch=epoch)


@dataclass(frozen=True, slots=True)
class Lease:
    """An attempt's hold on its operation."""

    operation_id: str
    epoch: int


class LeaseStore:
    """Takes, renews, checks and releases operation leases."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        keys: KeyBuilder,
        heartbeat_timeout_s: float,
        ttl_s: int,
    ) -> None:
        """``heartbeat_timeout_s``: how long a lease lives without a beat."""
        self._client = client
        self._keys = keys
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._ttl_s = ttl_s
        self._take = client.register_script(_TAKE_LUA)
        self._beat = client.register_script(_BEAT_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._expired = client.register_script(_EXPIRED_LUA)

    @property
    def running_key(self) -> str:
        """The sorted set of running operations by heartbeat deadline (ms)."""
        return self._keys.running

    def lease_key(self, operation_id: str) -> str:
        """The hash holding the operation's epoch and holder."""
        return self._keys.operation(operation_id).lease

    def take(self, operation_id: str, *, holder: str) -> Lease:
        """Take the operation's lease for a starting attempt; older epochs are fenced."""
        self._keys.operation(operation_id)  # checks the id
        epoch = self._take(
            keys=[self.lease_key(operation_id), self.running_key],
            args=[holder, self._timeout_ms, self._ttl_s, operation_id],
        )
        return Lease(operation_id=operation_id, epoch=int(cast(int, epoch)))

    def beat(self, lease: Lease, *, extra_s: float = 0.0) -> bool:
        """Push the heartbeat deadline forward; ``False`` once the lease was taken over.

        ``extra_s`` (seconds) adds to the usual timeout, for a retry that waits its
        backoff before it starts.
        """
        renewed = self._beat(
            keys=[self.lease_key(lease.operation_id), self.running_key],
            args=[
                lease.epoch,
                self._timeout_ms + int(extra_s * 1000),
                lease.operation_id,
            ],
        )
        return bool(renewed)

    def current_epoch(self, operation_id: str) -> int:
        """Return the operation's current epoch (0 before any attempt)."""
        raw = cast(
            bytes | None, self._client.hget(self.lease_key(operation_id), "epoch")
        )
        return int(raw or 0)

    def check(self, lease: Lease) -> None:
        """Return quietly while ``lease`` is current.

        Raises:
            StaleEpochError: another attempt took the operation since.
        """
        if self.current_epoch(lease.operation_id) != lease.epoch:
            raise StaleEpochError(operation_id=lease.operation_id, epoch=lease.epoch)

    def release(self, lease: Lease) -> None:
        """Stop watching the operation's heartbeat (when this lease is still current)."""
        self._release(
            keys=[self.lease_key(lease.operation_id), self.running_key],
            args=[lease.epoch, lease.operation_id],
        )

    def claim_expired(self, *, limit: int = 100) -> list[str]:
        """Return operations whose heartbeat expired, giving each a fresh deadline.

        The fresh deadline keeps a second reaper from claiming the same operation
        before the resent attempt takes its lease.
        """
        raw = self._expired(keys=[self.running_key], args=[self._timeout_ms, limit])
        return [item.decode() for item in cast(list[bytes], raw)]

    @property
    def _timeout_ms(self) -> int:
        return int(self.heartbeat_timeout_s * 1000)
