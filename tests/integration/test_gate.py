"""The resource-gated queue with real Redis and real workers: admission, order, expiry."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis

from recovery.gate import AdmissionGate
from recovery.keys import KeyBuilder
from recovery.locks import AsyncResourceLocks, LockTimeoutError, ResourceLocks
from tasks.chunking import chunk_documents
from tasks.models import ChunkRequest
from tests.integration.support import start_worker, wait_for
from worker.local import WorkerProcess
from worker.runtime import stores

pytestmark = pytest.mark.integration

JOB_TIMEOUT_S = 120
FAST = {"resource_exhaustion": {"backoff_base_s": 0.05, "backoff_cap_s": 0.05}}


def _gate(
    redis_client: redis.Redis, *, permits: int = 1, ttl_s: float = 60.0
) -> AdmissionGate:
    return AdmissionGate(
        client=redis_client,
        keys=KeyBuilder(prefix=os.environ.get("CHUNKQ_KEY_PREFIX", "chunkq")),
        permits={"disk": permits},
        permit_ttl_s=ttl_s,
        wait_ttl_s=600,
    )


def _gated_worker(tmp_path: Path, name: str, **env: str) -> tuple[WorkerProcess, str]:
    queue = f"{os.environ['CHUNKQ_QUEUE']}.{name}.{uuid.uuid4().hex[:6]}"
    worker = start_worker(
        tmp_path,
        name=name,
        queue=queue,
        env={
            "CHUNKQ_GATED_QUEUE": queue,  # one queue, so one worker serves both
            "CHUNKQ_RETRY_RULES": json.dumps(FAST),
            "CHUNKQ_GATE_POLL_S": "0.2",
            **env,
        },
        concurrency=3,
    )
    return worker, queue


def _job(tmp_path: Path, name: str, *texts: str) -> ChunkRequest:
    root = tmp_path / name
    root.mkdir()
    for index, text in enumerate(texts):
        # The fault counters are per text: each job's texts are made its own.
        (root / f"{index}.txt").write_text(f"{text}\n{root}")
    return ChunkRequest(
        operation_id=f"gate-{name}-{uuid.uuid4().hex[:8]}",
        source_root=root,
        output_dir=tmp_path / "out",
        strategy="faulty",
        chunk_size=100,
        overlap=0,
    )


def _waiting(gate: AdmissionGate) -> list[str]:
    return [waiter.operation_id for waiter in gate.status("disk").waiting]


def test_exhausted_job_waits_in_the_gated_queue_and_completes_when_admitted(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """With the only permit taken, a job that ran out of disk waits, then completes."""
    gate = _gate(redis_client)
    blocker = f"blocker-{uuid.uuid4().hex[:6]}"
    assert gate.try_admit(blocker, "disk").admitted
    worker, queue = _gated_worker(tmp_path, "admit")
    request = _job(tmp_path, "a", f"#!fault disk 1\n{uuid.uuid4()} " + "w " * 80)
    try:
        result = chunk_documents.apply_async((request,), queue=queue)
        wait_for(lambda: request.operation_id in _waiting(gate))
        state = wait_for(
            lambda: (
                (s := stores().states.get(request.operation_id)).get("status")
                == "waiting"
                and s
            )
        )
        assert state["gate_resource"] == "disk"
        assert state["gate_position"] == "1"

        gate.release(blocker, "disk", held_s=1.5)
        summary = result.get(timeout=JOB_TIMEOUT_S)
    finally:
        worker.stop()

    assert summary["status"] == "completed"
    status = gate.status("disk")
    assert request.operation_id not in _waiting(gate)
    assert request.operation_id not in [h.operation_id for h in status.holders]


def test_positions_shrink_as_earlier_work_finishes(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Three jobs in line behind a held permit move up one place at a time."""
    gate = _gate(redis_client)
    blocker = f"blocker-{uuid.uuid4().hex[:6]}"
    assert gate.try_admit(blocker, "disk").admitted
    worker, queue = _gated_worker(tmp_path, "order")
    requests = [
        _job(
            tmp_path,
            name,
            "#!fault disk 1\n" + "w " * 80,
            "#!fault slow 0.5\n" + "s " * 40,
        )
        for name in ("first", "second", "third")
    ]
    try:
        results = []
        for request in requests:
            results.append(chunk_documents.apply_async((request,), queue=queue))
            wait_for(lambda r=request: r.operation_id in _waiting(gate))
        last = requests[-1].operation_id
        positions = [_waiting(gate).index(last) + 1]
        gate.release(blocker, "disk", held_s=0.5)
        deadline_s = time.monotonic() + JOB_TIMEOUT_S
        while last in _waiting(gate) and time.monotonic() < deadline_s:
            positions.append(
                _waiting(gate).index(last) + 1 if last in _waiting(gate) else 0
            )
            time.sleep(0.05)
        summaries = [result.get(timeout=JOB_TIMEOUT_S) for result in results]
    finally:
        worker.stop()

    assert all(summary["status"] == "completed" for summary in summaries)
    assert positions[0] == 3
    assert positions == sorted(positions, reverse=True)
    assert {3, 2, 1} <= set(positions)
    assert len(gate.durations_s("disk")) >= 3


def test_a_killed_holders_permit_is_reclaimed_after_its_expiry(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """SIGKILL the worker holding the only permit: the permit frees within its TTL."""
    gate = _gate(redis_client, ttl_s=2.0)
    worker, queue = _gated_worker(tmp_path, "kill", CHUNKQ_GATE_PERMIT_TTL_S="2")
    request = _job(
        tmp_path, "k", "#!fault disk 1\n" + "w " * 80, "#!fault slow 60\n" + "s "
    )
    try:
        chunk_documents.apply_async((request,), queue=queue)
        wait_for(
            lambda: (
                request.operation_id
                in [h.operation_id for h in gate.status("disk").holders]
            )
        )
        worker.signal(signal.SIGKILL)
        blocked = gate.try_admit("after-kill", "disk")
        reclaimed = wait_for(
            lambda: (
                request.operation_id
                not in [h.operation_id for h in gate.status("disk").holders]
            ),
            timeout_s=20,
        )
    finally:
        worker.stop()

    assert not blocked.admitted
    assert reclaimed
    assert gate.try_admit("after-kill", "disk").admitted
    gate.release("after-kill", "disk", held_s=None)


def test_cancelled_and_finished_entries_leave_the_queue(
    redis_client: redis.Redis,
) -> None:
    """cancel() removes a waiter and a holder; release() removes the holder."""
    gate = _gate(redis_client)
    holder, waiter = f"h-{uuid.uuid4().hex[:6]}", f"w-{uuid.uuid4().hex[:6]}"
    assert gate.try_admit(holder, "disk").admitted
    assert gate.try_admit(waiter, "disk").position == 1

    gate.cancel(waiter)
    assert waiter not in _waiting(gate)
    gate.release(holder, "disk", held_s=None)
    status = gate.status("disk")

    assert holder not in [h.operation_id for h in status.holders]
    assert not status.holders


def test_the_wait_estimate_follows_recorded_durations(
    redis_client: redis.Redis,
) -> None:
    """Positions 1 and 2 behind one permit wait one and two mean durations."""
    gate = AdmissionGate(
        client=redis_client,
        keys=KeyBuilder(prefix=f"est-{uuid.uuid4().hex[:6]}"),
        permits={"disk": 1},
        permit_ttl_s=60,
        wait_ttl_s=600,
    )
    assert gate.try_admit("a", "disk").estimated_wait_s == 0.0
    assert gate.try_admit("b", "disk").estimated_wait_s is None  # nothing measured yet
    for held_s in (4.0, 6.0):
        gate.release("x", "disk", held_s=held_s)

    second = gate.try_admit("b", "disk")
    third = gate.try_admit("c", "disk")

    assert (second.position, second.estimated_wait_s) == (1, 5.0)
    assert (third.position, third.estimated_wait_s) == (2, 10.0)
    gate.release("z", "disk", held_s=20.0)
    assert gate.try_admit("c", "disk").estimated_wait_s == 20.0


def test_handle_resource_exhaustion_routes_connections_with_a_place(
    redis_client: redis.Redis, operation_id: str
) -> None:
    """Connections: gated queue, position and wait; memory: smaller batch; CPU: simpler."""
    handler = stores().errors

    gated = handler.handle_resource_exhaustion(operation_id, "connections", 50, 50)
    memory = handler.handle_resource_exhaustion(
        operation_id, "memory", 97, 100, current_batch_size=32
    )
    cpu = handler.handle_resource_exhaustion(
        operation_id, "cpu", 99, 100, current_strategy="markdown"
    )

    assert (gated.action, gated.queue, gated.position) == (
        "route_gated",
        os.environ["CHUNKQ_GATED_QUEUE"],
        1,
    )
    assert (memory.action, memory.next_batch_size, memory.streaming) == (
        "reduce_batch",
        1,
        True,
    )
    assert (cpu.action, cpu.next_strategy) == ("fall_back", "recursive")
    stores().gate.cancel(operation_id)


def _hold_lock(url: str, name: str) -> None:
    locks = ResourceLocks(
        client=redis.Redis.from_url(url), keys=KeyBuilder(prefix=name), timeout_s=2
    )
    with locks.held("connections"):
        time.sleep(60)


def test_resource_locks_exclude_expire_and_only_the_holder_releases(
    redis_url: str,
) -> None:
    """A second holder times out; a killed holder's lock expires; a stranger cannot release."""
    prefix = f"locks-{uuid.uuid4().hex[:6]}"
    locks = ResourceLocks(
        client=redis.Redis.from_url(redis_url),
        keys=KeyBuilder(prefix=prefix),
        timeout_s=2,
    )
    holder = multiprocessing.get_context("spawn").Process(
        target=_hold_lock, args=(redis_url, prefix)
    )
    holder.start()
    wait_for(lambda: locks.lock("connections").locked())

    with pytest.raises(LockTimeoutError), locks.held("connections", wait_s=0.3):
        pass
    stranger = locks.lock("connections")
    with pytest.raises(redis.exceptions.LockError):
        stranger.release()
    os.kill(holder.pid or 0, signal.SIGKILL)
    holder.join()

    with locks.held("connections", wait_s=10) as lock:
        assert lock.owned()


def test_async_locks_time_out() -> None:
    """The async face's lock refuses a second holder after the wait."""

    async def scenario() -> bool:
        locks = AsyncResourceLocks()
        async with locks.held("cpu"):
            try:
                async with locks.held("cpu", wait_s=0.05):
                    return False
            except LockTimeoutError:
                return True

    assert asyncio.run(scenario())
