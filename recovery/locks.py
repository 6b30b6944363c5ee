"""Locks per resource type, with timeouts: Redis locks for workers, asyncio in-process.

:class:`ResourceLocks` hands out redis-py locks named ``{prefix}:lock:{resource}``.
Each holds a random owner token; only the holder can release or extend it (a Lua
check on the server), and it expires after ``timeout_s`` if its holder dies.
:class:`AsyncResourceLocks` is the async face's counterpart for coroutines of one
process: an ``asyncio.Lock`` per resource type, acquired within a timeout.

Both raise :class:`LockTimeoutError` when the lock is not had in time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import redis
from redis.lock import Lock

from recovery.errors import RecoveryError
from recovery.keys import KeyBuilder


class LockTimeoutError(RecoveryError):
    """A resource lock was not acquired in time.

    Attributes:
        resource: the resource type of the lock.
        waited_s: how long the caller waited, in seconds.
    """

    def __init__(self, *, resource: str, waited_s: float) -> None:
        self.resource = resource
        self.waited_s = waited_s
        super().__init__(f"lock on {resource!r} not acquired within {waited_s:g} s")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.resource, self.waited_s))


def _rebuild(resource: str, waited_s: float) -> LockTimeoutError:
    return LockTimeoutError(resource=resource, waited_s=waited_s)


class ResourceLocks:
    """Distributed locks per resource type, for worker processes."""

    def __init__(
        self, *, client: redis.Redis, keys: KeyBuilder, timeout_s: float
    ) -> None:
        """``timeout_s`` is how long a lock lives when its holder does not release it."""
        self._client = client
        self._keys = keys
        self._timeout_s = timeout_s

    def lock(self, resource: str, *, timeout_s: float | None = None) -> Lock:
        """Return the (not yet acquired) lock of ``resource``."""
        return Lock(
            self._client,
            f"{self._keys.prefix}:lock:{resource}",
            timeout=timeout_s or self._timeout_s,
            thread_local=False,
        )

    @contextlib.contextmanager
    def held(
        self, resource: str, *, wait_s: float = 5.0, timeout_s: float | None = None
    ) -> Iterator[Lock]:
        """Hold the lock of ``resource`` for a ``with`` block.

        Raises:
            LockTimeoutError: not acquired within ``wait_s`` seconds.
        """
        lock = self.lock(resource, timeout_s=timeout_s)
        if not lock.acquire(blocking=True, blocking_timeout=wait_s):
            raise LockTimeoutError(resource=resource, waited_s=wait_s)
        try:
            yield lock
        finally:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()  # expired meanwhile: someone else may hold it now


class AsyncResourceLocks:
    """``asyncio.Lock`` per resource type, for the coroutines of one process."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def held(self, resource: str, *, wait_s: float = 5.0) -> AsyncIterator[None]:
        """Hold the lock of ``resource`` for an ``async with`` block.

        Raises:
            LockTimeoutError: not acquired within ``wait_s`` seconds.
        """
        lock = self._locks.setdefault(resource, asyncio.Lock())
        try:
            async with asyncio.timeout(wait_s):
                await lock.acquire()
        except TimeoutError:
            raise LockTimeoutError(resource=resource, waited_s=wait_s) from None
        try:
            yield
        finally:
            lock.release()
