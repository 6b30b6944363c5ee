"""Memory pressure measured where the process really lives: its cgroup, else the host.

In a container the host's free memory says little; the limit that kills the process
is its cgroup's. :func:`read_memory` therefore looks, in order, at:

1. cgroup v2: the tightest ``memory.max`` (not ``"max"``) of the process's cgroup and
   its ancestors, with usage ``memory.current`` minus ``inactive_file`` from
   ``memory.stat`` (page cache the kernel can drop, as ``docker stats`` counts it);
2. cgroup v1: ``memory/memory.limit_in_bytes``, with usage ``memory.usage_in_bytes``
   minus ``total_inactive_file``;
3. the host, through ``psutil.virtual_memory()``.

A cgroup limit of ``2 ** 60`` bytes or more, or above the host's RAM, means
"unlimited" and is ignored. Reading is a handful of small file reads and is not
cached. Files that are missing, unreadable or garbled count as absent; nothing here
raises for them. The cgroup is found from ``/proc/self/cgroup``; when the path named
there is not visible (a v1 container that sees only its own hierarchy) the top of the
mounted hierarchy is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = [
    "DEFAULT_CGROUP_ROOT",
    "DEFAULT_SELF_CGROUP",
    "UNLIMITED_BYTES",
    "CgroupMemory",
    "MemoryReading",
    "memory_percent",
    "read_cgroup_memory",
    "read_memory",
]

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_SELF_CGROUP = Path("/proc/self/cgroup")
UNLIMITED_BYTES = 2**60
"""Limits at or above this many bytes are how cgroup v1 spells "no limit"."""


@dataclass(frozen=True, slots=True)
class CgroupMemory:
    """Memory use and limit of a cgroup.

    Attributes:
        version: the cgroup version, 1 or 2.
        used_bytes: bytes in use, reclaimable page cache excluded.
        limit_bytes: the memory limit in bytes, above 0.
    """

    version: int
    used_bytes: int
    limit_bytes: int


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """One measurement of memory pressure.

    Attributes:
        percent: ``used_bytes`` as a percent of ``limit_bytes``; may pass 100 for
            a moment under a cgroup limit.
        used_bytes: bytes in use.
        limit_bytes: bytes available in all, the cgroup limit or the host's RAM.
        source: ``"cgroup_v2"``, ``"cgroup_v1"`` or ``"host"``.
    """

    percent: float
    used_bytes: int
    limit_bytes: int
    source: str


def read_cgroup_memory(
    root: Path,
    *,
    self_cgroup: str = "",
    host_total_bytes: int | None = None,
) -> CgroupMemory | None:
    """Read the memory limit and use of the process's cgroup under ``root``.

    Args:
        root: where the cgroup file system is mounted, normally ``/sys/fs/cgroup``.
        self_cgroup: the text of ``/proc/self/cgroup``; empty means the top of the
            hierarchy under ``root``.
        host_total_bytes: the host's RAM in bytes; a limit above it counts as
            unlimited. ``None`` asks psutil.

    Returns:
        The reading, or ``None`` when no cgroup memory limit applies or none can be
        read. Never raises for missing or garbled files.
    """
    if host_total_bytes is None:
        host_total_bytes = psutil.virtual_memory().total
    if (root / "cgroup.controllers").is_file() or (root / "memory.max").is_file():
        return _read_v2(root, own_cgroup_path(self_cgroup, "") or "/", host_total_bytes)
    v1_root = root / "memory"
    if (v1_root / "memory.limit_in_bytes").is_file():
        return _read_v1(
            v1_root, own_cgroup_path(self_cgroup, "memory") or "/", host_total_bytes
        )
    return None


def read_memory(
    *,
    cgroup_root: Path = DEFAULT_CGROUP_ROOT,
    self_cgroup_file: Path = DEFAULT_SELF_CGROUP,
) -> MemoryReading:
    """Measure memory pressure: the cgroup's when a limit applies, else the host's.

    Raises nothing for missing cgroup files; psutil errors pass through.
    """
    host = psutil.virtual_memory()
    cgroup = read_cgroup_memory(
        cgroup_root,
        self_cgroup=read_cgroup_text(self_cgroup_file) or "",
        host_total_bytes=host.total,
    )
    if cgroup is None:
        return MemoryReading(
            percent=float(host.percent),
            used_bytes=host.total - host.available,
            limit_bytes=host.total,
            source="host",
        )
    return MemoryReading(
        percent=100.0 * cgroup.used_bytes / cgroup.limit_bytes,
        used_bytes=cgroup.used_bytes,
        limit_bytes=cgroup.limit_bytes,
        source=f"cgroup_v{cgroup.version}",
    )


def memory_percent() -> float:
    """Return the memory pressure of this process's cgroup or host, in percent."""
    return read_memory().percent


def own_cgroup_path(self_cgroup: str, controller: str) -> str | None:
    """Return the cgroup path for ``controller`` ("" for v2) in /proc/self/cgroup."""
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controller == "" and controllers == "":
            return path
        if controller and controller in controllers.split(","):
            return path
    return None


def cgroup_candidates(root: Path, own_path: str) -> list[Path]:
    """Return the process's cgroup directory and its ancestors up to ``root``."""
    parts = [part for part in own_path.split("/") if part]
    directory = root.joinpath(*parts)
    if ".." in parts or not directory.is_dir():
        return [root]
    chain = [directory]
    while chain[-1] != root and root in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def _read_v2(root: Path, own_path: str, host_total_bytes: int) -> CgroupMemory | None:
    best: tuple[int, Path] | None = None
    for directory in cgroup_candidates(root, own_path):
        limit = _limit(read_cgroup_text(directory / "memory.max"), host_total_bytes)
        if limit is not None and (best is None or limit < best[0]):
            best = (limit, directory)
    if best is None:
        return None
    limit, directory = best
    current = _read_int(directory / "memory.current")
    if current is None:
        return None
    inactive = _stat_value(directory / "memory.stat", ("inactive_file",))
    return CgroupMemory(
        version=2, used_bytes=max(0, current - inactive), limit_bytes=limit
    )


def _read_v1(root: Path, own_path: str, host_total_bytes: int) -> CgroupMemory | None:
    best: tuple[int, Path] | None = None
    for directory in cgroup_candidates(root, own_path):
        limit = _limit(
            read_cgroup_text(directory / "memory.limit_in_bytes"), host_total_bytes
        )
        if limit is not None and (best is None or limit < best[0]):
            best = (limit, directory)
    if best is None:
        return None
    limit, directory = best
    usage = _read_int(directory / "memory.usage_in_bytes")
    if usage is None:
        return None
    keys = ("total_inactive_file", "inactive_file")
    inactive = _stat_value(directory / "memory.stat", keys)
    return CgroupMemory(
        version=1, used_bytes=max(0, usage - inactive), limit_bytes=limit
    )


def _limit(text: str | None, host_total_bytes: int) -> int | None:
    """Parse a limit file; ``None`` for "max", garbage, or values meaning unlimited."""
    if text is None or text == "max":
        return None
    try:
        limit = int(text)
    except ValueError:
        return None
    if limit <= 0 or limit >= UNLIMITED_BYTES or limit > host_total_bytes:
        return None
    return limit


def _stat_value(path: Path, keys: tuple[str, ...]) -> int:
    """Return the first of ``keys`` found in a ``memory.stat`` file, else 0."""
    values: dict[str, int] = {}
    for line in (read_cgroup_text(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[name] = int(value)
    return next((values[key] for key in keys if key in values), 0)


def _read_int(path: Path) -> int | None:
    text = read_cgroup_text(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def read_cgroup_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
