"""Cost of a resource snapshot next to the readings it is made of, in one run.

Times, call by call and interleaved in rounds so that drift hits all alike:
``ResourceMonitor.snapshot()`` (as built, CPU asked at most every 0.1 s, and with
``cpu_window_min_s=0`` so psutil is asked on every call), ``recovery.pressure.
read_memory()`` alone, ``psutil.cpu_percent(interval=None)`` alone and
``psutil.virtual_memory()`` alone. Prints the median and 95th percentile in
microseconds and each median's ratio to ``psutil.virtual_memory()``'s. Not part of
the test suite; it asserts nothing, and the numbers depend on the machine.

    python bench/bench_monitor.py [--rounds 200] [--calls 50]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import psutil
import redis

from recovery.pressure import read_memory
from recovery.resources import ResourceMonitor


def _percentile(sorted_ns: list[int], fraction: float) -> float:
    """Return the ``fraction`` quantile (0-1) of sorted nanosecond timings."""
    index = min(len(sorted_ns) - 1, round(fraction * (len(sorted_ns) - 1)))
    return float(sorted_ns[index])


def _measure(
    candidates: dict[str, Callable[[], object]], *, rounds: int, calls: int
) -> dict[str, list[int]]:
    """Time each candidate `calls` times per round, in turn, for `rounds` rounds."""
    timings: dict[str, list[int]] = {name: [] for name in candidates}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, function in candidates.items():
            samples = timings[name]
            for _ in range(calls):
                start_ns = clock()
                function()
                samples.append(clock() - start_ns)
    return timings


def main() -> None:
    """Run the benchmark and print one line per candidate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()

    pool = redis.ConnectionPool(host="127.0.0.1", max_connections=16)
    monitor = ResourceMonitor(pool=pool)
    eager = ResourceMonitor(pool=pool, cpu_window_min_s=0.0)
    candidates: dict[str, Callable[[], object]] = {
        "ResourceMonitor.snapshot()": monitor.snapshot,
        "snapshot(), cpu_window_min_s=0": eager.snapshot,
        "pressure.read_memory()": read_memory,
        "psutil.cpu_percent(None)": lambda: psutil.cpu_percent(interval=None),
        "psutil.virtual_memory()": psutil.virtual_memory,
    }
    for function in candidates.values():
        function()

    timings = _measure(candidates, rounds=args.rounds, calls=args.calls)

    sample = monitor.snapshot()
    print(
        f"python {platform.python_version()}, psutil {psutil.__version__}, "
        f"redis-py {redis.__version__}; memory source {sample.memory_source}, "
        f"cpu_count {sample.cpu_count}, cgroup cpu quota {monitor.cpu_quota}"
    )
    print(f"{args.rounds} rounds x {args.calls} calls per candidate, interleaved")
    print(f"{'candidate':34} {'median us':>10} {'p95 us':>10} {'x vmem':>8}")
    medians_ns = {name: statistics.median(ns) for name, ns in timings.items()}
    baseline_ns = medians_ns["psutil.virtual_memory()"]
    for name, samples in timings.items():
        p95_ns = _percentile(sorted(samples), 0.95)
        print(
            f"{name:34} {medians_ns[name] / 1000:10.1f} {p95_ns / 1000:10.1f} "
            f"{medians_ns[name] / baseline_ns:8.2f}"
        )


if __name__ == "__main__":
    main()
