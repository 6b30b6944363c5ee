"""The recovery layer with real workers: retries, limits, batch sizes, dead letters."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from recovery.correlation import CorrelationIdFilter, correlation_scope
from recovery.handler import ResumeResult
from tasks.chunking import chunk_documents
from tasks.models import ChunkRequest
from tasks.sinks import JsonlFolderSink
from tests.integration.faults import calls_key
from tests.integration.support import final_result, start_worker, wait_for
from worker.local import WorkerProcess
from worker.runtime import stores

pytestmark = pytest.mark.integration

JOB_TIMEOUT_S = 120
FAST_RULES = {
    "transient_connection": {
        "backoff_base_s": 0.3,
        "backoff_cap_s": 0.3,
        "max_attempts": 3,
    },
    "timeout": {"backoff_base_s": 0.1, "backoff_cap_s": 0.1},
    "memory": {"backoff_base_s": 0.1, "backoff_cap_s": 0.1},
    "worker_lost": {"backoff_base_s": 0.1, "backoff_cap_s": 0.1},
    "unknown": {"backoff_base_s": 0.1, "backoff_cap_s": 0.1},
    "resource_exhaustion": {"backoff_base_s": 0.1, "backoff_cap_s": 0.1},
}


def _queue(name: str) -> str:
    return f"{os.environ['CHUNKQ_QUEUE']}.{name}.{uuid.uuid4().hex[:6]}"


@pytest.fixture
def fast_worker(tmp_path: Path) -> Iterator[tuple[WorkerProcess, str]]:
    """A worker with quick backoffs and batches of 4, on a queue of its own."""
    queue = _queue("fast")
    worker = start_worker(tmp_path, name="fast", queue=queue, env=_env())
    yield worker, queue
    worker.stop()


def _env(**extra: str) -> dict[str, str]:
    return {
        "CHUNKQ_RETRY_RULES": json.dumps(FAST_RULES),
        "CHUNKQ_BATCH_SIZE_DEFAULT": "4",
        "CHUNKQ_BATCH_THRESHOLDS": "[]",
        "CHUNKQ_FALLBACK_CHAIN": '["faulty", "recursive", "characters"]',
        **extra,
    }


def _documents(root: Path, texts: dict[str, str]) -> None:
    for document_id, text in texts.items():
        path = root / document_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _plain(count: int, tag: str) -> dict[str, str]:
    return {
        f"doc-{i:02d}.txt": f"{tag} document {i}. " + "words " * 80
        for i in range(count)
    }


def _request(tmp_path: Path, operation_id: str, **fields: Any) -> ChunkRequest:
    return ChunkRequest(
        operation_id=operation_id,
        collection_id="c",
        source_root=tmp_path / "src",
        output_dir=tmp_path / "out",
        strategy="faulty",
        chunk_size=200,
        overlap=20,
        **fields,
    )


def _resume(operation_id: str) -> ResumeResult:
    return stores().errors.resume_operation(operation_id)


def _attempts(redis_client: redis.Redis, operation_id: str) -> list[dict[str, Any]]:
    raw = redis_client.hgetall(stores().keys.operation(operation_id).attempts)
    return [json.loads(raw[key]) for key in sorted(raw, key=int)]


def _calls(redis_client: redis.Redis, text: str) -> int:
    return int(redis_client.get(calls_key(text)) or 0)


def test_transient_failure_is_retried_after_the_decided_countdown(
    tmp_path: Path,
    fast_worker: tuple[WorkerProcess, str],
    operation_id: str,
    redis_client: redis.Redis,
) -> None:
    """A connection error is retried once, no sooner than the countdown it was given."""
    _, queue = fast_worker
    texts = {"a.txt": "#!fault connection 1\n" + "text " * 100, **_plain(3, "t")}
    _documents(tmp_path / "src", texts)

    result = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),), queue=queue
    )
    summary = result.get(timeout=JOB_TIMEOUT_S)

    assert summary["status"] == "completed"
    resumed = _resume(operation_id)
    assert resumed.attempts == 2
    assert resumed.outcomes == {1: "retry", 2: "completed"}
    [error] = resumed.errors
    assert error.error_type == "transient_connection"
    assert error.action == "retry"
    assert 0 <= error.backoff_s <= 0.3
    second_start_s = _attempts(redis_client, operation_id)[1]["at_s"]
    assert second_start_s >= error.at_s + error.backoff_s - 0.05


def test_timeout_is_retried_with_larger_limits_that_the_worker_enforces(
    tmp_path: Path, operation_id: str, redis_client: redis.Redis
) -> None:
    """A 3 s document times out under a 2 s soft limit and passes under the grown 4 s."""
    queue = _queue("limits")
    worker = start_worker(
        tmp_path,
        name="limits",
        queue=queue,
        env=_env(CHUNKQ_HARD_TIME_LIMIT_GRACE_S="2", CHUNKQ_TIME_LIMIT_FACTOR="2"),
    )
    _documents(tmp_path / "src", {"slow.txt": "#!fault slow 3\n" + "text " * 50})
    try:
        # The publisher sets the first attempt's limits, as Celery does.
        result = chunk_documents.apply_async(
            (_request(tmp_path, operation_id),),
            queue=queue,
            soft_time_limit=2,
            time_limit=4,
        )
        summary = result.get(timeout=JOB_TIMEOUT_S)
    finally:
        worker.stop()

    assert summary["status"] == "completed"
    attempts = _attempts(redis_client, operation_id)
    assert [(a["soft_limit_s"], a["hard_limit_s"]) for a in attempts] == [
        (2, 4),
        (4, 6),
    ]
    [error] = _resume(operation_id).errors
    assert error.error_type == "timeout"
    assert "soft limit 4 s and hard limit 6 s" in error.reason


def test_hard_time_limit_is_retried_with_larger_limits(
    tmp_path: Path,
    fast_worker: tuple[WorkerProcess, str],
    operation_id: str,
    redis_client: redis.Redis,
) -> None:
    """An attempt killed by its hard limit is sent again with both limits grown."""
    _, queue = fast_worker
    texts = {"hang.txt": "#!fault hang 1\n" + "text " * 50, **_plain(2, "h")}
    _documents(tmp_path / "src", texts)

    result = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),),
        queue=queue,
        soft_time_limit=1,
        time_limit=2,
    )
    summary = final_result(result)

    assert summary["status"] == "completed"
    attempts = _attempts(redis_client, operation_id)
    assert [(a["soft_limit_s"], a["hard_limit_s"]) for a in attempts] == [
        (1, 2),
        (1.5, 31.5),
    ]
    resumed = _resume(operation_id)
    assert resumed.outcomes == {1: "retry", 2: "completed"}
    [error] = resumed.errors
    assert error.error_type == "timeout"
    assert error.exception_type.endswith("TimeLimitExceeded")


def test_memory_error_retries_with_a_smaller_batch_from_the_checkpoint(
    tmp_path: Path,
    fast_worker: tuple[WorkerProcess, str],
    operation_id: str,
    redis_client: redis.Redis,
) -> None:
    """Two batches of 4 finish, the third hits MemoryError; the retry resumes in 2s."""
    _, queue = fast_worker
    texts = _plain(12, "m")
    texts["doc-08.txt"] = "#!fault memory 1\n" + "text " * 60
    _documents(tmp_path / "src", texts)

    result = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),), queue=queue
    )
    summary = result.get(timeout=JOB_TIMEOUT_S)

    assert summary["status"] == "completed"
    assert summary["documents_done"] == 12
    resumed = _resume(operation_id)
    assert resumed.attempts == 2
    assert resumed.errors[0].error_type == "memory"
    assert resumed.checkpoint.batch_size == 2
    calls = {doc: _calls(redis_client, text) for doc, text in sorted(texts.items())}
    assert calls == {doc: 2 if doc == "doc-08.txt" else 1 for doc in texts}
    assert not list((tmp_path / "out").rglob("*.tmp"))  # the failed batch left nothing


def test_strategy_failure_falls_back_and_chunks_say_why(
    tmp_path: Path, fast_worker: tuple[WorkerProcess, str], operation_id: str
) -> None:
    """A document the strategy cannot cut is chunked by the next one in the chain."""
    _, queue = fast_worker
    texts = {
        "broken.txt": "#!fault broken\n" + "Some sentence here. " * 40,
        **_plain(2, "s"),
    }
    _documents(tmp_path / "src", texts)

    result = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),), queue=queue
    )
    summary = result.get(timeout=JOB_TIMEOUT_S)

    assert summary["status"] == "completed"
    sink = JsonlFolderSink(output_dir=tmp_path / "out")
    broken = sink.read("c", "broken.txt")
    assert {chunk["strategy"] for chunk in broken} == {"recursive"}
    assert all("faulty failed" in str(chunk["fallback_reason"]) for chunk in broken)
    assert {chunk["strategy"] for chunk in sink.read("c", "doc-00.txt")} == {"faulty"}
    assert _resume(operation_id).attempts == 1


def test_invalid_input_is_not_retried(
    tmp_path: Path, fast_worker: tuple[WorkerProcess, str], operation_id: str
) -> None:
    """A missing source folder fails on the first attempt, with a dead letter."""
    _, queue = fast_worker

    result = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),), queue=queue
    )
    with pytest.raises(Exception, match="does not exist"):
        result.get(timeout=JOB_TIMEOUT_S)

    resumed = _resume(operation_id)
    assert resumed.attempts == 1
    assert resumed.outcomes == {1: "fail"}
    assert [e.error_type for e in resumed.errors] == ["invalid_input"]
    assert stores().client.exists(stores().keys.dead_letter(operation_id))


def test_undecodable_document_fails_alone_without_retry(
    tmp_path: Path, fast_worker: tuple[WorkerProcess, str], operation_id: str
) -> None:
    """An invalid document is recorded as failed once; the job is not retried for it."""
    _, queue = fast_worker
    _documents(tmp_path / "src", _plain(3, "u"))
    (tmp_path / "src" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))

    result = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),), queue=queue
    )
    summary = result.get(timeout=JOB_TIMEOUT_S)

    assert summary["status"] == "partial"
    assert set(summary["failures"]) == {"latin1.txt"}
    assert _resume(operation_id).attempts == 1


def test_exhausted_attempts_without_results_fail_with_a_dead_letter(
    tmp_path: Path, fast_worker: tuple[WorkerProcess, str], operation_id: str
) -> None:
    """Three connection errors in a row end the operation failed and dead-lettered."""
    _, queue = fast_worker
    _documents(tmp_path / "src", {"a.txt": "#!fault connection 99\n" + "x " * 50})

    with correlation_scope("exhaust-" + operation_id[-8:]) as correlation_id:
        result = chunk_documents.apply_async(
            (_request(tmp_path, operation_id),), queue=queue
        )
    with pytest.raises(Exception, match="injected connection reset"):
        result.get(timeout=JOB_TIMEOUT_S)

    resumed = _resume(operation_id)
    assert resumed.attempts == 3
    assert resumed.state["status"] == "failed"
    letter = json.loads(stores().client.get(stores().keys.dead_letter(operation_id)))
    assert letter["correlation_id"] == correlation_id
    assert letter["request"]["request"]["operation_id"] == operation_id
    assert [e["attempt"] for e in letter["errors"]] == [1, 2, 3]
    assert letter["errors"][-1]["action"] == "fail"


def test_exhausted_attempts_with_results_save_partial(
    tmp_path: Path, fast_worker: tuple[WorkerProcess, str], operation_id: str
) -> None:
    """With batches already written, running out of attempts keeps them: partial."""
    _, queue = fast_worker
    texts = _plain(8, "p")
    texts["z-last.txt"] = "#!fault connection 99\n" + "x " * 50
    _documents(tmp_path / "src", texts)

    result = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),), queue=queue
    )
    summary = result.get(timeout=JOB_TIMEOUT_S)

    assert summary["status"] == "partial"
    assert summary["documents_done"] == 8
    assert "not processed" in summary["failures"]["z-last.txt"]
    assert "transient_connection" in summary["error"]
    assert stores().client.exists(stores().keys.dead_letter(operation_id))


def test_rollback_removes_what_the_operation_wrote(
    tmp_path: Path, fast_worker: tuple[WorkerProcess, str], operation_id: str
) -> None:
    """With cleanup=rollback, exhausted attempts remove every chunk file written."""
    _exhaust_after_eight_documents(tmp_path, fast_worker[1], operation_id, "rollback")

    assert not list((tmp_path / "out").rglob("*.jsonl"))
    assert _resume(operation_id).state["status"] == "failed"


def test_resource_exhaustion_is_routed_to_the_gated_queue(
    tmp_path: Path, operation_id: str, redis_client: redis.Redis
) -> None:
    """A full disk sends the next attempt to the gated queue, where it completes."""
    queue = _queue("gate")
    gated = f"{queue}.gated"
    worker = WorkerProcess(
        env={**os.environ, **_env(CHUNKQ_QUEUE=queue, CHUNKQ_GATED_QUEUE=gated)},
        queues=[queue, gated],
        concurrency=1,
        hostname=f"gate-{operation_id}@localhost",
        log_file=tmp_path / "gate.log",
    ).start()
    _documents(tmp_path / "src", {"a.txt": "#!fault disk 1\n" + "d " * 50})
    try:
        from worker.app import app  # noqa: PLC0415

        worker.wait_ready(app)
        result = chunk_documents.apply_async(
            (_request(tmp_path, operation_id),), queue=queue
        )
        summary = result.get(timeout=JOB_TIMEOUT_S)
    finally:
        worker.stop()

    assert summary["status"] == "completed"
    assert [a["queue"] for a in _attempts(redis_client, operation_id)] == [queue, gated]
    [error] = _resume(operation_id).errors
    assert (error.error_type, error.action) == ("resource_exhaustion", "route_gated")


def test_retries_on_two_workers_keep_one_count(
    tmp_path: Path, operation_id: str, redis_client: redis.Redis
) -> None:
    """Attempts started on one worker and finished on another are numbered 1, 2, 3."""
    queue = _queue("pair")
    env = _env(
        CHUNKQ_RETRY_RULES=json.dumps(
            {"transient_connection": {"backoff_base_s": 1.0, "backoff_cap_s": 1.0}}
        )
    )
    _documents(tmp_path / "src", {"a.txt": "#!fault connection 2\n" + "y " * 50})
    first = start_worker(tmp_path, name="first", queue=queue, env=env)
    try:
        result = chunk_documents.apply_async(
            (_request(tmp_path, operation_id),), queue=queue
        )
        wait_for(lambda: _resume(operation_id).outcomes.get(1) == "retry")
    finally:
        first.stop()
    second = start_worker(tmp_path, name="second", queue=queue, env=env)
    try:
        summary = result.get(timeout=JOB_TIMEOUT_S)
    finally:
        second.stop()

    assert summary["status"] == "completed"
    resumed = _resume(operation_id)
    assert resumed.attempts == 3
    assert resumed.outcomes == {1: "retry", 2: "retry", 3: "completed"}
    workers = [attempt["worker"] for attempt in _attempts(redis_client, operation_id)]
    assert workers[0] == first.hostname
    assert workers[-1] == second.hostname


def test_one_correlation_id_from_caller_to_worker_logs_retry_and_records(
    tmp_path: Path,
    fast_worker: tuple[WorkerProcess, str],
    operation_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The caller's id is in its own log, every worker log line, the retry and records."""
    worker, queue = fast_worker
    _documents(tmp_path / "src", {"a.txt": "#!fault connection 1\n" + "z " * 50})
    caller_log = logging.getLogger("tests.caller")
    caplog.handler.addFilter(CorrelationIdFilter())
    caplog.set_level(logging.INFO, logger="tests.caller")

    with correlation_scope("req-" + operation_id[-10:]) as correlation_id:
        caller_log.info("caller.submitting")
        result = chunk_documents.apply_async(
            (_request(tmp_path, operation_id),), queue=queue
        )
    result.get(timeout=JOB_TIMEOUT_S)

    [submitting] = [r for r in caplog.records if r.getMessage() == "caller.submitting"]
    assert submitting.correlation_id == correlation_id
    resumed = _resume(operation_id)
    assert resumed.state["correlation_id"] == correlation_id
    assert [e.correlation_id for e in resumed.errors] == [correlation_id]
    mine = [
        line for line in _log_lines(worker) if f"operation_id={operation_id}" in line
    ]
    started = [line for line in mine if "operation.started" in line]
    assert [("attempt=1" in line, "attempt=2" in line) for line in started] == [
        (True, False),
        (False, True),
    ]
    assert any("task.retry_scheduled" in line for line in mine)
    assert all(f"correlation_id={correlation_id}" in line for line in mine)


def test_child_tasks_carry_the_correlation_id(
    fast_worker: tuple[WorkerProcess, str],
) -> None:
    """A task sent by a task runs under the sender's correlation id."""
    from tests.integration.faults import report_correlation, send_child  # noqa: PLC0415

    _, queue = fast_worker
    with correlation_scope("parent-corr-1"):
        parent = send_child.apply_async(queue=queue).get(timeout=JOB_TIMEOUT_S)
    child = report_correlation.AsyncResult(parent["child_id"]).get(
        timeout=JOB_TIMEOUT_S
    )

    assert parent["parent_correlation_id"] == "parent-corr-1"
    assert child == "parent-corr-1"


def _log_lines(worker: WorkerProcess) -> list[str]:
    log_file = worker.log_file
    assert log_file is not None
    return log_file.read_text(errors="replace").splitlines()


def test_a_killed_attempt_is_noticed_and_the_job_resumes(
    tmp_path: Path, fast_worker: tuple[WorkerProcess, str], operation_id: str
) -> None:
    """A pool process killed mid-document: the next delivery records it and finishes."""
    _, queue = fast_worker
    texts = _plain(8, "k")
    texts["doc-05.txt"] = "#!fault die 1\n" + "text " * 60
    _documents(tmp_path / "src", texts)

    result = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),), queue=queue
    )
    summary = final_result(result)

    assert summary["status"] == "completed"
    assert summary["documents_done"] == 8
    resumed = _resume(operation_id)
    assert resumed.outcomes == {1: "lost", 2: "completed"}
    assert [e.error_type for e in resumed.errors] == ["worker_lost"]
    assert resumed.checkpoint.batches == 2


def test_a_crash_loop_is_stopped_and_dead_lettered(
    tmp_path: Path, fast_worker: tuple[WorkerProcess, str], operation_id: str
) -> None:
    """A document that kills its worker every time stops after the worker_lost attempts."""
    _, queue = fast_worker
    _documents(tmp_path / "src", {"a.txt": "#!fault die 99\n" + "text " * 60})

    result = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),), queue=queue
    )
    with pytest.raises(Exception, match="worker was lost"):
        final_result(result)

    resumed = _resume(operation_id)
    assert resumed.attempts == 4
    assert resumed.outcomes == {1: "lost", 2: "lost", 3: "lost", 4: "fail"}
    assert resumed.state["status"] == "failed"
    assert stores().client.exists(stores().keys.dead_letter(operation_id))


def test_discard_removes_written_chunks_and_redis_traces(
    tmp_path: Path, fast_worker: tuple[WorkerProcess, str], operation_id: str
) -> None:
    """With cleanup=discard, files and operation keys go; the dead letter stays."""
    _exhaust_after_eight_documents(tmp_path, fast_worker[1], operation_id, "discard")

    assert not list((tmp_path / "out").rglob("*.jsonl"))
    keys = stores().keys
    assert not stores().client.exists(*keys.operation(operation_id).all())
    assert stores().client.exists(keys.dead_letter(operation_id))


def _exhaust_after_eight_documents(
    tmp_path: Path, queue: str, operation_id: str, cleanup: str
) -> None:
    """Write eight documents, then fail on a ninth until attempts run out."""
    texts = _plain(8, cleanup)
    texts["z-last.txt"] = f"#!fault connection 99\n{cleanup} " + "x " * 50
    _documents(tmp_path / "src", texts)

    request = _request(tmp_path, operation_id, cleanup=cleanup)
    with pytest.raises(Exception, match="injected"):
        chunk_documents.apply_async((request,), queue=queue).get(timeout=JOB_TIMEOUT_S)
