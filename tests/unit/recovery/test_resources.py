"""Unit tests for recovery.resources: cgroup CPU quotas, pool counts, snapshots."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis

from recovery.pressure import MemoryReading, read_memory
from recovery.resources import (
    ResourceMonitor,
    ResourceSnapshot,
    ResourceType,
    exhausted,
    pool_connections,
    read_cpu_quota,
    usable_cpu_count,
)

GIB = 2**30


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text + "\n", encoding="ascii")
    return directory


def _snapshot(**changes: object) -> ResourceSnapshot:
    base = ResourceSnapshot(
        memory_percent=50.0,
        memory_used_bytes=2 * GIB,
        memory_limit_bytes=4 * GIB,
        memory_source="cgroup_v2",
        cpu_percent=10.0,
        cpu_count=2,
        connections_in_use=3,
        connections_limit=10,
        taken_at_s=1_700_000_000.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class _FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


# ResourceType


def test_resource_type_values_are_lowercase_names() -> None:
    """Every resource type's value is its lowercase name."""
    assert [t.value for t in ResourceType] == [
        "memory",
        "cpu",
        "connections",
        "disk",
        "files",
    ]


# read_cpu_quota


def test_v2_quota_is_quota_over_period(tmp_path: Path) -> None:
    """cgroup v2: cpu.max "150000 100000" is 1.5 CPUs."""
    _write(tmp_path, {"cgroup.controllers": "cpu memory", "cpu.max": "150000 100000"})

    assert read_cpu_quota(tmp_path) == 1.5


def test_v2_max_means_unlimited(tmp_path: Path) -> None:
    """cgroup v2: cpu.max "max 100000" is no quota."""
    _write(tmp_path, {"cgroup.controllers": "cpu memory", "cpu.max": "max 100000"})

    assert read_cpu_quota(tmp_path) is None


def test_v2_tightest_of_cgroup_and_ancestors(tmp_path: Path) -> None:
    """cgroup v2: the smallest quota on the path to the process's cgroup wins."""
    _write(tmp_path, {"cgroup.controllers": "cpu memory"})
    _write(tmp_path / "kubepods", {"cpu.max": "100000 100000"})
    _write(tmp_path / "kubepods" / "pod", {"cpu.max": "max 100000"})

    quota = read_cpu_quota(tmp_path, self_cgroup="0::/kubepods/pod\n")

    assert quota == 1.0


def test_v2_garbled_cpu_max_counts_as_absent(tmp_path: Path) -> None:
    """cgroup v2: an unparsable cpu.max is no quota rather than an error."""
    _write(tmp_path, {"cgroup.controllers": "cpu", "cpu.max": "lots 100000"})

    assert read_cpu_quota(tmp_path) is None


def test_v1_quota_is_quota_over_period(tmp_path: Path) -> None:
    """cgroup v1: cfs_quota_us 250000 over cfs_period_us 100000 is 2.5 CPUs."""
    _write(
        tmp_path / "cpu,cpuacct",
        {"cpu.cfs_quota_us": "250000", "cpu.cfs_period_us": "100000"},
    )

    assert read_cpu_quota(tmp_path) == 2.5


def test_v1_minus_one_means_unlimited(tmp_path: Path) -> None:
    """cgroup v1: cfs_quota_us -1 is no quota."""
    _write(tmp_path / "cpu", {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"})

    assert read_cpu_quota(tmp_path) is None


def test_v1_follows_own_cpu_cgroup(tmp_path: Path) -> None:
    """cgroup v1: the cpu line of /proc/self/cgroup picks the directory to read."""
    cpu_root = _write(
        tmp_path / "cpu", {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}
    )
    _write(
        cpu_root / "docker" / "abc",
        {"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"},
    )

    quota = read_cpu_quota(
        tmp_path, self_cgroup="4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n"
    )

    assert quota == 0.5


def test_missing_cgroup_tree_is_no_quota(tmp_path: Path) -> None:
    """No cgroup files at all: no quota."""
    assert read_cpu_quota(tmp_path) is None


# usable_cpu_count


@pytest.mark.parametrize(
    ("quota", "available", "expected"),
    [
        (None, 8, 8),
        (1.5, 8, 2),
        (0.5, 8, 1),
        (2.0, 8, 2),
        (16.0, 4, 4),
        (None, 0, 1),
    ],
)
def test_usable_cpu_count(quota: float | None, available: int, expected: int) -> None:
    """A quota is rounded up, capped by the available CPUs, and never below 1."""
    assert usable_cpu_count(quota, available_cpus=available) == expected


def test_usable_cpu_count_defaults_to_affinity() -> None:
    """Without a quota the count is the CPUs of the affinity mask."""
    assert usable_cpu_count(None) == len(os.sched_getaffinity(0))


# pool_connections


def test_no_pool_reports_zero_and_no_limit() -> None:
    """Without a pool there are no connections and no limit."""
    assert pool_connections(None) == (0, None)


def test_fresh_pool_reports_zero_in_use_and_its_limit() -> None:
    """A new ConnectionPool (never connected) has 0 in use and its max_connections."""
    pool = redis.ConnectionPool(host="127.0.0.1", max_connections=7)

    assert pool_connections(pool) == (0, 7)


def test_fresh_blocking_pool_reports_zero_in_use_and_its_limit() -> None:
    """A new BlockingConnectionPool has 0 in use and its max_connections."""
    pool = redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
        host="127.0.0.1", max_connections=5
    )

    assert pool_connections(pool) == (0, 5)


def test_pool_from_another_process_reports_zero_in_use() -> None:
    """A pool inherited across fork (another pid) counts nothing in use."""

    class _Inherited:
        max_connections = 4
        pid = os.getpid() + 1
        _in_use_connections = frozenset({object(), object()})

    assert pool_connections(_Inherited()) == (0, 4)  # type: ignore[arg-type]


def test_pool_counted_from_in_use_set_without_getter() -> None:
    """A redis-py 5 style pool is counted from its _in_use_connections set."""

    class _Legacy:
        max_connections = 4
        pid = os.getpid()
        _in_use_connections = frozenset({object(), object()})

    assert pool_connections(_Legacy()) == (2, 4)  # type: ignore[arg-type]


def test_unknown_pool_layout_reports_zero_in_use() -> None:
    """A pool with none of the known attributes counts 0 in use, without raising."""

    class _Unknown:
        max_connections = 3
        pid = os.getpid()

    assert pool_connections(_Unknown()) == (0, 3)  # type: ignore[arg-type]


# ResourceSnapshot


def test_usage_per_resource() -> None:
    """usage() gives memory in bytes, CPU in percent of 100, connections as counts."""
    snapshot = _snapshot()

    assert snapshot.usage(ResourceType.MEMORY) == (2.0 * GIB, 4.0 * GIB)
    assert snapshot.usage(ResourceType.CPU) == (10.0, 100.0)
    assert snapshot.usage(ResourceType.CONNECTIONS) == (3.0, 10.0)


def test_usage_connections_without_limit() -> None:
    """Without a pool limit the connections limit is None."""
    snapshot = _snapshot(connections_in_use=0, connections_limit=None)

    assert snapshot.usage(ResourceType.CONNECTIONS) == (0.0, None)


@pytest.mark.parametrize("resource", [ResourceType.DISK, ResourceType.FILES])
def test_usage_of_unmeasured_resource_raises(resource: ResourceType) -> None:
    """Disk and files are not in a snapshot; asking for them is a ValueError."""
    with pytest.raises(ValueError, match=str(resource)):
        _snapshot().usage(resource)


def test_usage_accepts_string_values() -> None:
    """usage() takes the enum's string value as well as the member."""
    assert _snapshot().usage("cpu") == (10.0, 100.0)  # type: ignore[arg-type]


def test_as_dict_is_json_ready() -> None:
    """as_dict() holds every field and survives a JSON round trip."""
    snapshot = _snapshot()

    data = snapshot.as_dict()

    assert set(data) == {field.name for field in dataclasses.fields(snapshot)}
    assert json.loads(json.dumps(data)) == data
    assert ResourceSnapshot(**data) == snapshot  # type: ignore[arg-type]


def test_snapshot_is_frozen() -> None:
    """A snapshot cannot be changed after it is taken."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        _snapshot().cpu_percent = 1.0  # type: ignore[misc]


# exhausted


def test_nothing_exhausted() -> None:
    """Readings below every threshold: nothing has run out."""
    assert exhausted(_snapshot()) is None


@pytest.mark.parametrize(
    ("memory_percent", "expected"),
    [(94.9, None), (95.0, ResourceType.MEMORY), (101.0, ResourceType.MEMORY)],
)
def test_memory_boundary(memory_percent: float, expected: ResourceType | None) -> None:
    """Memory runs out when its percent reaches memory_percent_max."""
    assert exhausted(_snapshot(memory_percent=memory_percent)) is expected


@pytest.mark.parametrize(
    ("cpu_percent", "expected"),
    [(94.9, None), (95.0, ResourceType.CPU), (100.0, ResourceType.CPU)],
)
def test_cpu_boundary(cpu_percent: float, expected: ResourceType | None) -> None:
    """CPU runs out when its percent reaches cpu_percent_max."""
    assert exhausted(_snapshot(cpu_percent=cpu_percent)) is expected


@pytest.mark.parametrize(
    ("in_use", "free_min", "expected"),
    [
        (9, 1, None),
        (10, 1, ResourceType.CONNECTIONS),
        (8, 2, None),
        (9, 2, ResourceType.CONNECTIONS),
        (10, 0, None),
    ],
)
def test_connections_boundary(
    in_use: int, free_min: int, expected: ResourceType | None
) -> None:
    """Connections run out when fewer than connections_free_min are left."""
    snapshot = _snapshot(connections_in_use=in_use, connections_limit=10)

    assert exhausted(snapshot, connections_free_min=free_min) is expected


def test_connections_without_limit_never_exhausted() -> None:
    """Without a known pool limit, connections never count as run out."""
    snapshot = _snapshot(connections_in_use=10_000, connections_limit=None)

    assert exhausted(snapshot) is None


def test_order_is_memory_then_connections_then_cpu() -> None:
    """With everything exhausted memory is named first, then connections, then CPU."""
    full = _snapshot(memory_percent=99.0, cpu_percent=99.0, connections_in_use=10)

    assert exhausted(full) is ResourceType.MEMORY
    assert exhausted(dataclasses.replace(full, memory_percent=1.0)) is (
        ResourceType.CONNECTIONS
    )
    assert exhausted(
        dataclasses.replace(full, memory_percent=1.0, connections_in_use=0)
    ) is (ResourceType.CPU)


def test_custom_thresholds() -> None:
    """Thresholds passed in replace the defaults."""
    snapshot = _snapshot(memory_percent=80.0)

    assert exhausted(snapshot, memory_percent_max=80.0) is ResourceType.MEMORY
    assert exhausted(snapshot, memory_percent_max=80.1) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_percent_max": 0.0},
        {"memory_percent_max": 100.5},
        {"cpu_percent_max": -1.0},
        {"cpu_percent_max": float("nan")},
        {"connections_free_min": -1},
    ],
)
def test_bad_thresholds_raise(kwargs: dict[str, float]) -> None:
    """A percent threshold outside (0, 100] or a negative free minimum is refused."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        exhausted(_snapshot(), **kwargs)  # type: ignore[arg-type]


# ResourceMonitor


def test_snapshot_fields_are_sane() -> None:
    """A real snapshot has plausible memory, CPU, connection and time figures."""
    pool = redis.ConnectionPool(host="127.0.0.1", max_connections=9)
    monitor = ResourceMonitor(pool=pool)

    snapshot = monitor.snapshot()

    assert 0 < snapshot.memory_used_bytes <= snapshot.memory_limit_bytes * 2
    assert snapshot.memory_limit_bytes > 0
    assert snapshot.memory_percent >= 0.0
    assert snapshot.memory_source in {"cgroup_v1", "cgroup_v2", "host"}
    assert 0.0 <= snapshot.cpu_percent <= 100.0
    assert 1 <= snapshot.cpu_count <= (os.cpu_count() or 1)
    assert (snapshot.connections_in_use, snapshot.connections_limit) == (0, 9)
    assert abs(snapshot.taken_at_s - time.time()) < 60.0


def test_snapshot_without_pool() -> None:
    """Without a pool a snapshot counts no connections and no limit."""
    snapshot = ResourceMonitor().snapshot()

    assert (snapshot.connections_in_use, snapshot.connections_limit) == (0, None)


def test_monitor_reads_cpu_quota_from_cgroup_root(tmp_path: Path) -> None:
    """The CPU quota under cgroup_root caps the snapshot's cpu_count."""
    _write(tmp_path, {"cgroup.controllers": "cpu", "cpu.max": "100000 100000"})
    monitor = ResourceMonitor(cgroup_root=tmp_path)

    assert monitor.cpu_quota == 1.0
    assert monitor.snapshot().cpu_count == 1


def test_quota_is_read_once_at_construction(tmp_path: Path) -> None:
    """A quota written after the monitor is built is not seen."""
    _write(tmp_path, {"cgroup.controllers": "cpu", "cpu.max": "max 100000"})
    monitor = ResourceMonitor(cgroup_root=tmp_path)
    (tmp_path / "cpu.max").write_text("100000 100000\n", encoding="ascii")

    assert monitor.cpu_quota is None


def test_memory_is_read_fresh_each_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every snapshot reads memory again."""
    monitor = ResourceMonitor()
    calls: list[Path] = []
    real = read_memory

    def counting(*, cgroup_root: Path) -> MemoryReading:
        calls.append(cgroup_root)
        return real(cgroup_root=cgroup_root)

    monkeypatch.setattr("recovery.resources.read_memory", counting)
    monitor.snapshot()
    monitor.snapshot()

    assert len(calls) == 2


def test_cpu_is_primed_and_measured_once_per_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Construction primes psutil; snapshots inside the window repeat the figure."""
    clock = _FakeClock()
    readings = iter([0.0, 42.0, 7.0])
    calls: list[None] = []

    def fake_cpu_percent(interval: float | None = None) -> float:
        assert interval is None
        calls.append(None)
        return next(readings)

    monkeypatch.setattr(time, "monotonic", clock)
    monkeypatch.setattr(psutil, "cpu_percent", fake_cpu_percent)

    monitor = ResourceMonitor(cpu_window_min_s=0.125)
    assert len(calls) == 1
    assert monitor.snapshot().cpu_percent == 0.0

    clock.now_s += 0.125
    assert monitor.snapshot().cpu_percent == 42.0
    clock.now_s += 0.0625
    assert monitor.snapshot().cpu_percent == 42.0
    clock.now_s += 0.0625
    assert monitor.snapshot().cpu_percent == 7.0
    assert len(calls) == 3


def test_cpu_first_call_in_new_thread_only_primes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A snapshot in a new thread primes psutil there and repeats the last figure."""
    clock = _FakeClock()
    readings = iter([0.0, 42.0, 0.0])
    monkeypatch.setattr(time, "monotonic", clock)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: next(readings))
    monitor = ResourceMonitor()
    clock.now_s += 1.0
    assert monitor.snapshot().cpu_percent == 42.0

    seen: list[float] = []
    thread = threading.Thread(
        target=lambda: seen.append(monitor.snapshot().cpu_percent)
    )
    thread.start()
    thread.join()

    assert seen == [42.0]


def test_zero_window_asks_psutil_every_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With cpu_window_min_s=0 every snapshot takes a new CPU figure."""
    readings = iter([0.0, 1.0, 2.0, 3.0])
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: next(readings))
    monitor = ResourceMonitor(cpu_window_min_s=0.0)

    assert [monitor.snapshot().cpu_percent for _ in range(3)] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("window_s", [-0.1, float("nan"), float("inf")])
def test_bad_cpu_window_raises(window_s: float) -> None:
    """A negative or non-finite CPU window is refused."""
    with pytest.raises(ValueError, match="cpu_window_min_s"):
        ResourceMonitor(cpu_window_min_s=window_s)


def test_monitor_constructor_is_keyword_only() -> None:
    """The monitor takes keyword arguments only."""
    with pytest.raises(TypeError):
        ResourceMonitor(None)  # type: ignore[call-arg]
