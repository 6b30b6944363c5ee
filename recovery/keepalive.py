"""A daemon thread that renews something at a fixed interval until stopped.

Permits of the gated queue and heartbeats of running operations are both kept alive
this way: renewed every third of their lifetime while their holder lives, and left to
expire when it dies. A renewal that fails on a Redis error is tried again at the next
interval; expiry is the fallback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis


class KeepAlive:
    """Calls ``renew`` every ``interval_s`` seconds from a daemon thread."""

    def __init__(
        self, *, renew: Callable[[], object], interval_s: float, name: str
    ) -> None:
        self._renew = renew
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> KeepAlive:
        """Start renewing and return self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self._renew()
            except redis.RedisError:
                continue

    def stop(self) -> None:
        """Stop renewing (what was renewed is released by its owner)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
