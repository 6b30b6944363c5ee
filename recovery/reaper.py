"""The reaper: sends again the operations whose worker stopped beating.

A running operation's heartbeat deadline lives in ``{prefix}:running`` (see
:mod:`recovery.lease`). Every worker runs a reaper thread; a pass takes the
``reaper`` resource lock without waiting, so one pass runs at a time across all
workers, claims the operations whose deadline passed, and hands each to ``resubmit``,
which sends it again from its checkpoint. The resent attempt takes the lease (its
epoch fences off the presumed-dead one) and notices that the attempt before it was
lost, which counts toward the ``worker_lost`` limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from recovery.keepalive import KeepAlive
from recovery.lease import LeaseStore
from recovery.locks import LockTimeoutError, ResourceLocks

logger = logging.getLogger(__name__)

REAPER_LOCK = "reaper"


class Reaper:
    """Finds operations with an expired heartbeat and sends them again."""

    def __init__(
        self,
        *,
        leases: LeaseStore,
        locks: ResourceLocks,
        resubmit: Callable[[str], bool],
        interval_s: float,
    ) -> None:
        """``resubmit(operation_id)`` sends it again; ``False`` when there is nothing to do."""
        self._leases = leases
        self._locks = locks
        self._resubmit = resubmit
        self._interval_s = interval_s
        self._keeper: KeepAlive | None = None

    def reap_once(self) -> list[str]:
        """Run one pass; return the operations sent again (empty when another reaps)."""
        try:
            with self._locks.held(
                REAPER_LOCK, wait_s=0, timeout_s=self._interval_s * 3
            ):
                claimed = self._leases.claim_expired()
                return [operation for operation in claimed if self._resend(operation)]
        except LockTimeoutError:
            return []

    def _resend(self, operation_id: str) -> bool:
        try:
            resent = self._resubmit(operation_id)
        except (redis.RedisError, ValueError):
            logger.exception(
                "reaper.resubmit_failed", extra={"operation_id": operation_id}
            )
            return False
        if resent:
            logger.info("reaper.resubmitted", extra={"operation_id": operation_id})
        return resent

    def start(self) -> Reaper:
        """Start reaping every ``interval_s`` seconds from a daemon thread."""
        self._keeper = KeepAlive(
            renew=self.reap_once, interval_s=self._interval_s, name="reaper"
        ).start()
        return self

    def stop(self) -> None:
        """Stop reaping."""
        if self._keeper is not None:
            self._keeper.stop()
