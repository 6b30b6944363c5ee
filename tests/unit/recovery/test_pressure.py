"""Unit tests for recovery.pressure over fake cgroup trees built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from recovery.pressure import (
    UNLIMITED_BYTES,
    CgroupMemory,
    MemoryReading,
    memory_percent,
    read_cgroup_memory,
    read_memory,
)

GIB = 2**30
HOST_BYTES = 64 * GIB


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text + "\n", encoding="ascii")
    return directory


def _v2(directory: Path, *, limit: str, current: int, inactive: int) -> Path:
    return _write(
        directory,
        {
            "cgroup.controllers": "cpu memory pids",
            "memory.max": limit,
            "memory.current": str(current),
            "memory.stat": f"anon 1\nfile 4\ninactive_file {inactive}\nactive_file 9",
        },
    )


def _v1(root: Path, *, limit: int, usage: int, inactive: int) -> Path:
    return _write(
        root / "memory",
        {
            "memory.limit_in_bytes": str(limit),
            "memory.usage_in_bytes": str(usage),
            "memory.stat": f"cache 1\ninactive_file 7\ntotal_inactive_file {inactive}",
        },
    )


def test_v2_limit_subtracts_inactive_file(tmp_path: Path) -> None:
    """cgroup v2: usage is memory.current minus inactive_file, over memory.max."""
    _v2(tmp_path, limit=str(4 * GIB), current=3 * GIB, inactive=GIB)

    reading = read_cgroup_memory(tmp_path, host_total_bytes=HOST_BYTES)

    assert reading == CgroupMemory(version=2, used_bytes=2 * GIB, limit_bytes=4 * GIB)


def test_v2_unlimited_is_none(tmp_path: Path) -> None:
    """cgroup v2 with memory.max "max" has no limit to report."""
    _v2(tmp_path, limit="max", current=GIB, inactive=0)
    assert read_cgroup_memory(tmp_path, host_total_bytes=HOST_BYTES) is None


def test_v2_limit_above_host_ram_is_ignored(tmp_path: Path) -> None:
    """A v2 limit larger than the host's RAM does not bind and is ignored."""
    _v2(tmp_path, limit=str(2 * HOST_BYTES), current=GIB, inactive=0)
    assert read_cgroup_memory(tmp_path, host_total_bytes=HOST_BYTES) is None


def test_v2_nested_cgroup_uses_tightest_ancestor(tmp_path: Path) -> None:
    """The process's own cgroup is found and the tightest limit on its path is used."""
    _write(tmp_path, {"cgroup.controllers": "memory"})
    _v2(tmp_path / "jobs", limit=str(2 * GIB), current=GIB, inactive=0)
    _v2(tmp_path / "jobs" / "worker", limit="max", current=GIB // 2, inactive=0)

    reading = read_cgroup_memory(
        tmp_path, self_cgroup="0::/jobs/worker\n", host_total_bytes=HOST_BYTES
    )

    assert reading == CgroupMemory(version=2, used_bytes=GIB, limit_bytes=2 * GIB)


def test_v2_own_limit_tighter_than_parent(tmp_path: Path) -> None:
    """A limit on the process's own cgroup wins when it is the smaller one."""
    _write(tmp_path, {"cgroup.controllers": "memory"})
    _v2(tmp_path / "jobs", limit=str(8 * GIB), current=4 * GIB, inactive=0)
    _v2(tmp_path / "jobs" / "w", limit=str(GIB), current=GIB // 4, inactive=0)

    reading = read_cgroup_memory(
        tmp_path, self_cgroup="0::/jobs/w", host_total_bytes=HOST_BYTES
    )

    assert reading == CgroupMemory(version=2, used_bytes=GIB // 4, limit_bytes=GIB)


def test_v2_invisible_own_path_falls_back_to_root(tmp_path: Path) -> None:
    """When /proc/self/cgroup names a path not mounted here, the root is read."""
    _v2(tmp_path, limit=str(GIB), current=GIB // 2, inactive=0)

    reading = read_cgroup_memory(
        tmp_path, self_cgroup="0::/not/here", host_total_bytes=HOST_BYTES
    )

    assert reading is not None
    assert reading.limit_bytes == GIB


def test_path_escaping_root_is_not_followed(tmp_path: Path) -> None:
    """A '..' in the cgroup path does not lead outside the cgroup mount."""
    root = tmp_path / "cgroup"
    _v2(root, limit=str(GIB), current=GIB // 2, inactive=0)
    _v2(tmp_path / "outside", limit=str(GIB // 8), current=1, inactive=0)

    reading = read_cgroup_memory(
        root, self_cgroup="0::/../outside", host_total_bytes=HOST_BYTES
    )

    assert reading is not None
    assert reading.limit_bytes == GIB


def test_v1_limit_subtracts_total_inactive_file(tmp_path: Path) -> None:
    """cgroup v1: usage_in_bytes minus total_inactive_file, over limit_in_bytes."""
    _v1(tmp_path, limit=2 * GIB, usage=GIB, inactive=GIB // 2)

    reading = read_cgroup_memory(tmp_path, host_total_bytes=HOST_BYTES)

    assert reading == CgroupMemory(version=1, used_bytes=GIB // 2, limit_bytes=2 * GIB)


def test_v1_nested_path_from_proc_self_cgroup(tmp_path: Path) -> None:
    """cgroup v1: the memory line of /proc/self/cgroup selects the process's group."""
    _v1(tmp_path, limit=UNLIMITED_BYTES * 8, usage=5 * GIB, inactive=0)
    _write(
        tmp_path / "memory" / "api" / "job",
        {
            "memory.limit_in_bytes": str(GIB),
            "memory.usage_in_bytes": str(GIB // 2),
            "memory.stat": "total_inactive_file 0",
        },
    )
    self_cgroup = "5:cpu,cpuacct:/\n4:memory:/api/job\n0::/\n"

    reading = read_cgroup_memory(
        tmp_path, self_cgroup=self_cgroup, host_total_bytes=HOST_BYTES
    )

    assert reading == CgroupMemory(version=1, used_bytes=GIB // 2, limit_bytes=GIB)


@pytest.mark.parametrize(
    "limit", [UNLIMITED_BYTES, 9223372036854771712, 2 * HOST_BYTES]
)
def test_v1_unlimited_values_ignored(tmp_path: Path, limit: int) -> None:
    """cgroup v1 'unlimited' (>= 2**60 or above host RAM) counts as no limit."""
    _v1(tmp_path, limit=limit, usage=GIB, inactive=0)
    assert read_cgroup_memory(tmp_path, host_total_bytes=HOST_BYTES) is None


def test_v1_without_total_key_uses_inactive_file(tmp_path: Path) -> None:
    """cgroup v1 memory.stat without total_inactive_file falls back to inactive_file."""
    directory = _v1(tmp_path, limit=2 * GIB, usage=GIB, inactive=0)
    (directory / "memory.stat").write_text(f"inactive_file {GIB // 4}\n")

    reading = read_cgroup_memory(tmp_path, host_total_bytes=HOST_BYTES)

    assert reading is not None
    assert reading.used_bytes == GIB - GIB // 4


def test_missing_cgroup_is_none(tmp_path: Path) -> None:
    """No cgroup files at all: no cgroup reading."""
    assert read_cgroup_memory(tmp_path / "absent", host_total_bytes=HOST_BYTES) is None


def test_garbled_files_count_as_absent(tmp_path: Path) -> None:
    """Unparsable limit or usage files give None instead of raising."""
    _v2(tmp_path, limit="lots", current=1, inactive=0)
    assert read_cgroup_memory(tmp_path, host_total_bytes=HOST_BYTES) is None

    _v2(tmp_path, limit=str(GIB), current=1, inactive=0)
    (tmp_path / "memory.current").write_text("soon\n")
    assert read_cgroup_memory(tmp_path, host_total_bytes=HOST_BYTES) is None


def test_missing_stat_means_nothing_subtracted(tmp_path: Path) -> None:
    """Without memory.stat the whole of memory.current counts as used."""
    _v2(tmp_path, limit=str(GIB), current=GIB // 2, inactive=0)
    (tmp_path / "memory.stat").unlink()

    reading = read_cgroup_memory(tmp_path, host_total_bytes=HOST_BYTES)

    assert reading is not None
    assert reading.used_bytes == GIB // 2


def test_inactive_above_usage_clamps_to_zero(tmp_path: Path) -> None:
    """Used bytes never go negative when the stat counters run ahead."""
    _v2(tmp_path, limit=str(GIB), current=10, inactive=20)
    reading = read_cgroup_memory(tmp_path, host_total_bytes=HOST_BYTES)
    assert reading is not None
    assert reading.used_bytes == 0


def test_read_memory_reports_cgroup_percent(tmp_path: Path) -> None:
    """read_memory turns a cgroup reading into a percent with its source."""
    # Well under any real host's RAM, so the host-RAM sanity check keeps it.
    _v2(tmp_path / "cg", limit=str(64 * 2**20), current=48 * 2**20, inactive=16 * 2**20)
    self_file = _write(tmp_path, {"self": "0::/"}) / "self"

    reading = read_memory(cgroup_root=tmp_path / "cg", self_cgroup_file=self_file)

    assert reading == MemoryReading(
        percent=50.0,
        used_bytes=32 * 2**20,
        limit_bytes=64 * 2**20,
        source="cgroup_v2",
    )


def test_read_memory_falls_back_to_host(tmp_path: Path) -> None:
    """Without a cgroup limit read_memory reports the host through psutil."""
    reading = read_memory(
        cgroup_root=tmp_path / "none", self_cgroup_file=tmp_path / "missing"
    )

    assert reading.source == "host"
    assert reading.limit_bytes == psutil.virtual_memory().total
    assert 0.0 <= reading.percent <= 100.0
    assert 0 < reading.used_bytes <= reading.limit_bytes


def test_v1_read_memory_source(tmp_path: Path) -> None:
    """A v1 reading is labelled cgroup_v1."""
    _v1(tmp_path, limit=64 * 2**20, usage=16 * 2**20, inactive=0)

    reading = read_memory(cgroup_root=tmp_path, self_cgroup_file=tmp_path / "missing")

    assert reading.source == "cgroup_v1"
    assert reading.percent == 25.0


def test_memory_percent_on_this_machine() -> None:
    """The convenience function returns a plausible percent where the tests run."""
    assert 0.0 <= memory_percent() <= 150.0


def test_v2_parent_limit_tighter_than_own(tmp_path: Path) -> None:
    """A parent's smaller limit wins over a larger limit on the process's own cgroup."""
    _write(tmp_path, {"cgroup.controllers": "memory"})
    _v2(tmp_path / "jobs", limit=str(2 * GIB), current=GIB, inactive=0)
    _v2(tmp_path / "jobs" / "w", limit=str(8 * GIB), current=GIB // 4, inactive=0)

    reading = read_cgroup_memory(
        tmp_path, self_cgroup="0::/jobs/w", host_total_bytes=HOST_BYTES
    )

    assert reading == CgroupMemory(version=2, used_bytes=GIB, limit_bytes=2 * GIB)


def test_unlimited_marker_ignored_on_huge_host(tmp_path: Path) -> None:
    """A limit of 2**60 or more is unlimited even when the host reports more RAM."""
    _v1(tmp_path, limit=UNLIMITED_BYTES, usage=GIB, inactive=0)
    assert read_cgroup_memory(tmp_path, host_total_bytes=2**62) is None
