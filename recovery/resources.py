"""What this process has left of memory, CPU and Redis connections, read cheaply.

:class:`ResourceMonitor` takes a :class:`ResourceSnapshot`; :func:`exhausted` decides,
purely from a snapshot and thresholds, which resource (if any) has run out. The
recovery layer uses the answer to hold work back or shrink it; this module knows
nothing about what the work is.

Where each figure comes from:

* memory: :func:`recovery.pressure.read_memory`, read fresh on every snapshot (the
  cgroup's limit and use when one applies, else the host's);
* CPU use: ``psutil.cpu_percent(interval=None)``, system-wide in percent (0-100) over
  the time since the previous call. In a container that is the host's CPU use, not
  the container's. psutil keeps the previous sample per thread, so the first call in
  a thread measures nothing and returns a meaningless 0.0, and calls a few
  milliseconds apart return only 0.0 or 100.0 (the kernel counts CPU time in 10 ms
  ticks). The monitor therefore primes the sample on construction (and in every new
  thread that takes a snapshot), and asks psutil again only when at least
  ``cpu_window_min_s`` seconds have passed in that thread; in between, a snapshot
  repeats the last figure. Until the first window has passed the figure is 0.0.
  Other code that calls ``psutil.cpu_percent(interval=None)`` in the same thread
  restarts the window;
* CPU count: the CPUs this process may use: the cgroup CPU quota rounded up when one
  applies (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``,
  the tightest of the process's cgroup and its ancestors), never more than the CPUs
  in the process's affinity mask (else ``os.cpu_count()``). The quota is read once,
  when the monitor is built; a quota changed later is not seen;
* connections: the redis-py connection pool handed to the monitor, counted in this
  process only (other processes' pools are not seen).

Missing, unreadable or garbled cgroup files count as "no limit"; nothing here raises
for them.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Sized
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from recovery.pressure import (
    DEFAULT_CGROUP_ROOT,
    DEFAULT_SELF_CGROUP,
    cgroup_candidates,
    own_cgroup_path,
    read_cgroup_text,
    read_memory,
)

if TYPE_CHECKING:
    import redis

__all__ = [
    "CPU_WINDOW_MIN_S",
    "ResourceMonitor",
    "ResourceSnapshot",
    "ResourceType",
    "exhausted",
    "pool_connections",
    "read_cpu_quota",
    "usable_cpu_count",
]

CPU_WINDOW_MIN_S = 0.1
"""Shortest window in seconds over which CPU use is measured (psutil's advice)."""


class ResourceType(StrEnum):
    """A resource the process can run out of."""

    MEMORY = "memory"
    CPU = "cpu"
    CONNECTIONS = "connections"
    DISK = "disk"
    FILES = "files"


@dataclass(frozen=True, slots=True)
class ResourceSnapshot:
    """One reading of the process's resources.

    Attributes:
        memory_percent: memory in use as a percent of the limit; may pass 100 for a
            moment under a cgroup limit.
        memory_used_bytes: memory in use in bytes, reclaimable page cache excluded.
        memory_limit_bytes: memory available in all in bytes (cgroup limit or RAM).
        memory_source: ``"cgroup_v2"``, ``"cgroup_v1"`` or ``"host"``.
        cpu_percent: system-wide CPU use in percent (0-100) over the last window of
            at least ``cpu_window_min_s`` seconds; 0.0 until one has passed.
        cpu_count: CPUs this process may use, at least 1.
        connections_in_use: connections of the monitored Redis pool checked out now;
            0 without a pool.
        connections_limit: the pool's ``max_connections``, or ``None`` without a pool.
        taken_at_s: when the reading was taken, in seconds since the epoch.
    """

    memory_percent: float
    memory_used_bytes: int
    memory_limit_bytes: int
    memory_source: str
    cpu_percent: float
    cpu_count: int
    connections_in_use: int
    connections_limit: int | None
    taken_at_s: float

    def usage(self, resource: ResourceType) -> tuple[float, float | None]:
        """Return (usage, limit) of ``resource`` in its own unit.

        Memory is in bytes, CPU in percent with a limit of 100.0, connections in
        connections; a limit of ``None`` means none is known.

        Raises:
            ValueError: for ``DISK`` and ``FILES``, which a snapshot does not measure,
                or for a value that is not a :class:`ResourceType`.
        """
        resource = ResourceType(resource)
        if resource is ResourceType.MEMORY:
            return float(self.memory_used_bytes), float(self.memory_limit_bytes)
        if resource is ResourceType.CPU:
            return self.cpu_percent, 100.0
        if resource is ResourceType.CONNECTIONS:
            limit = self.connections_limit
            limit_float = None if limit is None else float(limit)
            return float(self.connections_in_use), limit_float
        raise ValueError(f"a resource snapshot does not measure {resource}")

    def as_dict(self) -> dict[str, float | int | str | None]:
        """Return the fields by name, ready for ``json.dumps``."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def read_cpu_quota(root: Path, *, self_cgroup: str = "") -> float | None:
    """Read the cgroup CPU quota of the process's cgroup under ``root``, in CPUs.

    cgroup v2 is recognised, as in :mod:`recovery.pressure`, by ``cgroup.controllers``
    or ``cpu.max`` at ``root``; its ``cpu.max`` holds ``"quota period"`` in
    microseconds, or ``"max ..."`` for no limit. cgroup v1 keeps ``cpu.cfs_quota_us``
    (``-1`` for no limit) and ``cpu.cfs_period_us`` under ``root/cpu`` or
    ``root/cpu,cpuacct``. The tightest quota of the cgroup and its ancestors wins.

    Args:
        root: where the cgroup file system is mounted, normally ``/sys/fs/cgroup``.
        self_cgroup: the text of ``/proc/self/cgroup``; empty means the top of the
            hierarchy under ``root``.

    Returns:
        quota divided by period, for example 1.5 for 150 ms of CPU time per 100 ms;
        ``None`` when no quota applies or none can be read. Never raises for missing
        or garbled files.
    """
    if (root / "cgroup.controllers").is_file() or (root / "cpu.max").is_file():
        own = own_cgroup_path(self_cgroup, "") or "/"
        return _tightest(_v2_quota(d) for d in cgroup_candidates(root, own))
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        v1_root = root / name
        if (v1_root / "cpu.cfs_quota_us").is_file():
            own = own_cgroup_path(self_cgroup, "cpu") or "/"
            return _tightest(_v1_quota(d) for d in cgroup_candidates(v1_root, own))
    return None


def usable_cpu_count(
    cpu_quota: float | None, *, available_cpus: int | None = None
) -> int:
    """Return how many CPUs the process may use, at least 1.

    Args:
        cpu_quota: the cgroup CPU quota in CPUs (see :func:`read_cpu_quota`), or
            ``None`` for none; a fractional quota is rounded up, since 1.5 CPUs of
            time keeps two busy workers going part of the time.
        available_cpus: CPUs the process may be scheduled on; ``None`` reads the
            affinity mask, else ``os.cpu_count()``.
    """
    if available_cpus is None:
        available_cpus = _affinity_cpu_count()
    available_cpus = max(1, available_cpus)
    if cpu_quota is None:
        return available_cpus
    return max(1, min(available_cpus, math.ceil(cpu_quota)))


def pool_connections(pool: redis.ConnectionPool | None) -> tuple[int, int | None]:
    """Return (connections in use, ``max_connections``) of a redis-py pool.

    redis-py has no public count of checked-out connections, so this reads the
    pool's private bookkeeping, most exact first: ``_get_in_use_connections()``
    (redis-py 6 and later; right for ``ConnectionPool`` and ``BlockingConnectionPool``
    alike, and taken under the pool's lock), then the ``_in_use_connections`` set of a
    ``ConnectionPool`` (redis-py 5), then a ``BlockingConnectionPool``'s created
    connections minus the idle ones in its queue. A pool whose layout matches none of
    these reports 0 in use. A pool inherited across ``fork()`` reports 0: redis-py
    discards the parent's connections on its first use in the child.

    Args:
        pool: the pool, or ``None`` for (0, ``None``).

    Returns:
        connections in use, and the limit, or ``None`` when the pool states none.
        Reads no socket and never raises for an unknown pool layout.
    """
    if pool is None:
        return 0, None
    limit = getattr(pool, "max_connections", None)
    limit = limit if isinstance(limit, int) and limit > 0 else None
    if getattr(pool, "pid", None) != os.getpid():
        return 0, limit
    return _in_use(pool), limit


class ResourceMonitor:
    """Takes :class:`ResourceSnapshot` readings of this process's resources.

    Building a monitor reads the cgroup CPU quota and primes psutil's CPU sample; a
    snapshot then reads memory afresh, CPU use at most once per ``cpu_window_min_s``
    per thread, and the pool's counters. Safe to share between threads.

    Args:
        pool: the redis-py connection pool whose connections to count, if any.
        cgroup_root: where the cgroup file system is mounted.
        cpu_window_min_s: shortest window in seconds over which CPU use is measured;
            0 asks psutil on every snapshot, however noisy the result.

    Raises:
        ValueError: when ``cpu_window_min_s`` is negative or not a number.
    """

    def __init__(
        self,
        *,
        pool: redis.ConnectionPool | None = None,
        cgroup_root: Path = DEFAULT_CGROUP_ROOT,
        cpu_window_min_s: float = CPU_WINDOW_MIN_S,
    ) -> None:
        if not (math.isfinite(cpu_window_min_s) and cpu_window_min_s >= 0.0):
            raise ValueError(f"cpu_window_min_s must be >= 0, got {cpu_window_min_s}")
        self._pool = pool
        self._cgroup_root = cgroup_root
        self._cpu_window_min_s = cpu_window_min_s
        self_cgroup = read_cgroup_text(DEFAULT_SELF_CGROUP) or ""
        self._cpu_quota = read_cpu_quota(cgroup_root, self_cgroup=self_cgroup)
        self._cpu_percent = 0.0
        self._cpu_sampled_at_s: dict[int, float] = {}
        self._cpu_percent_now()

    @property
    def cpu_quota(self) -> float | None:
        """The cgroup CPU quota in CPUs read at construction, or ``None`` for none."""
        return self._cpu_quota

    def snapshot(self) -> ResourceSnapshot:
        """Read memory, CPU and connections now.

        Raises nothing for missing cgroup files or an unknown pool layout; psutil
        errors pass through.
        """
        memory = read_memory(cgroup_root=self._cgroup_root)
        in_use, limit = pool_connections(self._pool)
        return ResourceSnapshot(
            memory_percent=memory.percent,
            memory_used_bytes=memory.used_bytes,
            memory_limit_bytes=memory.limit_bytes,
            memory_source=memory.source,
            cpu_percent=self._cpu_percent_now(),
            cpu_count=usable_cpu_count(self._cpu_quota),
            connections_in_use=in_use,
            connections_limit=limit,
            taken_at_s=time.time(),
        )

    def _cpu_percent_now(self) -> float:
        """Return CPU use in percent, asking psutil only once a window has passed."""
        thread_id = threading.get_ident()
        now_s = time.monotonic()
        sampled_at_s = self._cpu_sampled_at_s.get(thread_id)
        if sampled_at_s is not None and now_s - sampled_at_s < self._cpu_window_min_s:
            return self._cpu_percent

        percent = float(psutil.cpu_percent(interval=None))
        self._cpu_sampled_at_s[thread_id] = now_s
        if sampled_at_s is not None:
            self._cpu_percent = percent
        return self._cpu_percent


def exhausted(
    snapshot: ResourceSnapshot,
    *,
    memory_percent_max: float = 95.0,
    cpu_percent_max: float = 95.0,
    connections_free_min: int = 1,
) -> ResourceType | None:
    """Return the first resource that has run out: memory, then connections, then CPU.

    A resource has run out when its reading reaches its threshold:

    * memory: ``snapshot.memory_percent >= memory_percent_max``, a percent of the
      memory limit;
    * connections: fewer than ``connections_free_min`` connections (a count) left
      below the pool's limit; never without a known limit;
    * CPU: ``snapshot.cpu_percent >= cpu_percent_max``, a percent (0-100) of all the
      host's CPU time.

    Returns:
        the resource, or ``None`` when none has run out.

    Raises:
        ValueError: when a percent threshold is not in (0, 100] or
            ``connections_free_min`` is negative.
    """
    for name, percent in (
        ("memory_percent_max", memory_percent_max),
        ("cpu_percent_max", cpu_percent_max),
    ):
        if not 0.0 < percent <= 100.0:
            raise ValueError(f"{name} must be in (0, 100], got {percent}")
    if connections_free_min < 0:
        raise ValueError(
            f"connections_free_min must be >= 0, got {connections_free_min}"
        )

    if snapshot.memory_percent >= memory_percent_max:
        return ResourceType.MEMORY
    limit = snapshot.connections_limit
    if limit is not None and limit - snapshot.connections_in_use < connections_free_min:
        return ResourceType.CONNECTIONS
    if snapshot.cpu_percent >= cpu_percent_max:
        return ResourceType.CPU
    return None


def _tightest(quotas: Iterable[float | None]) -> float | None:
    """Return the smallest of the quotas in CPUs, ``None`` entries skipped."""
    found = [quota for quota in quotas if quota is not None]
    return min(found) if found else None


def _v2_quota(directory: Path) -> float | None:
    """Parse ``cpu.max`` ("quota period" in µs, or "max ...") into CPUs."""
    parts = (read_cgroup_text(directory / "cpu.max") or "").split()
    if not parts or parts[0] == "max":
        return None
    period = parts[1] if len(parts) > 1 else "100000"
    return _quota(parts[0], period)


def _v1_quota(directory: Path) -> float | None:
    """Parse ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us`` into CPUs."""
    quota = read_cgroup_text(directory / "cpu.cfs_quota_us")
    period = read_cgroup_text(directory / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _quota(quota, period)


def _quota(quota_text: str, period_text: str) -> float | None:
    """Return quota / period in CPUs; ``None`` for "no limit" (-1) or garbage."""
    try:
        quota_us, period_us = int(quota_text), int(period_text)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def _affinity_cpu_count() -> int:
    """Return the CPUs in this process's affinity mask, else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _in_use(pool: object) -> int:
    """Count a pool's checked-out connections from its private bookkeeping."""
    getter = getattr(pool, "_get_in_use_connections", None)
    if callable(getter):
        connections = getter()
        if isinstance(connections, Sized):
            return len(connections)
    in_use = getattr(pool, "_in_use_connections", None)
    if isinstance(in_use, Sized):
        return len(in_use)
    created = getattr(pool, "_connections", None)
    queue = getattr(getattr(pool, "pool", None), "queue", None)
    if isinstance(created, Sized) and queue is not None:
        idle = sum(1 for connection in queue if connection is not None)
        return max(0, len(created) - idle)
    return 0
