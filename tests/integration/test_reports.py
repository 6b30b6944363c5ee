"""Error reports, pattern analysis, cleanup and dead letters, against real workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.correlation import correlation_scope
from tasks.chunking import chunk_documents
from tasks.cleanup import cleanup_operation
from tasks.models import ChunkRequest
from tests.integration.support import final_result, start_worker
from worker.runtime import stores

pytestmark = pytest.mark.integration

FAST = {
    "transient_connection": {
        "backoff_base_s": 0.1,
        "backoff_cap_s": 0.1,
        "max_attempts": 3,
    },
    "memory": {"backoff_base_s": 0.1, "backoff_cap_s": 0.1},
}


@pytest.fixture
def queued_worker(tmp_path: Path) -> Iterator[str]:
    """A worker with quick retries on a queue of its own; yields the queue."""
    queue = f"{os.environ['CHUNKQ_QUEUE']}.reports.{uuid.uuid4().hex[:6]}"
    worker = start_worker(
        tmp_path,
        name="reports",
        queue=queue,
        env={
            "CHUNKQ_RETRY_RULES": json.dumps(FAST),
            "CHUNKQ_BATCH_SIZE_DEFAULT": "2",
            "CHUNKQ_BATCH_THRESHOLDS": "[]",
        },
    )
    yield queue
    worker.stop()


def _job(tmp_path: Path, name: str, texts: dict[str, str]) -> ChunkRequest:
    root = tmp_path / name
    root.mkdir()
    for document_id, text in texts.items():
        (root / document_id).write_text(f"{text}\n{root}")
    return ChunkRequest(
        operation_id=f"rep-{name}-{uuid.uuid4().hex[:8]}",
        collection_id=name,
        source_root=root,
        output_dir=tmp_path / "out",
        strategy="faulty",
        chunk_size=100,
        overlap=0,
    )


def _plain(count: int) -> dict[str, str]:
    return {f"a{i}.txt": f"plain {i} " + "w " * 40 for i in range(count)}


def _run(request: ChunkRequest, queue: str) -> object:
    try:
        return final_result(chunk_documents.apply_async((request,), queue=queue))
    except Exception as error:
        return error


def test_report_of_an_operation_that_ran_out_of_attempts(
    tmp_path: Path, queued_worker: str
) -> None:
    """Breakdown, timeline with the correlation id, attempts and advice are all there."""
    request = _job(tmp_path, "exhaust", {"z.txt": "#!fault connection 99", **_plain(2)})
    with correlation_scope("report-corr-1"):
        _run(request, queued_worker)

    report = stores().errors.create_error_report(request.operation_id)

    assert report.status == "partial"
    assert report.correlation_ids == ["report-corr-1"]
    assert report.error_breakdown == {"transient_connection": 3}
    assert [record.attempt for record in report.timeline] == [1, 2, 3]
    assert [a.outcome for a in report.recovery_attempts] == [
        "retry",
        "retry",
        "save_partial",
    ]
    assert any("connection" in advice for advice in report.recommendations)
    assert "z.txt" in report.documents_failed
    assert report.resource_usage.samples == 3


def test_patterns_count_errors_across_operations(
    tmp_path: Path, queued_worker: str
) -> None:
    """Two failing operations: their errors are counted by type, with the failing items."""
    for name in ("p1", "p2"):
        _run(_job(tmp_path, name, {"bad.txt": "#!fault connection 99"}), queued_worker)

    found = stores().errors.analyze_patterns(window_s=600)

    assert found.counts.get("transient_connection", 0) >= 6
    assert ("bad.txt", 2) in found.top_failing_items or found.operations >= 2


def test_cleanup_strategies_touch_only_their_operation(
    tmp_path: Path, queued_worker: str
) -> None:
    """rollback removes one operation's files and checkpoint; the other keeps its own."""
    kept = _job(tmp_path, "kept", _plain(3))
    gone = _job(tmp_path, "gone", _plain(3))
    for request in (kept, gone):
        _run(request, queued_worker)

    rolled = cleanup_operation(gone.operation_id, "rollback")
    discarded = cleanup_operation(kept.operation_id, "save_partial")

    assert rolled.files_removed == 3
    assert not list((tmp_path / "out" / "gone").glob("*.jsonl"))
    assert len(list((tmp_path / "out" / "kept").glob("*.jsonl"))) == 3
    assert stores().checkpoints.load(gone.operation_id).done == frozenset()
    assert discarded.status == "partial" and discarded.documents_kept == 3


def test_discard_with_fingerprints_lets_the_same_work_run_again(
    tmp_path: Path, queued_worker: str
) -> None:
    """Discarded with its fingerprints, the same work is not returned as already done."""
    request = _job(tmp_path, "again", _plain(2))
    _run(request, queued_worker)

    cleanup_operation(request.operation_id, "discard", forget_fingerprints=True)
    again = request.model_copy(update={"operation_id": f"again-{uuid.uuid4().hex[:6]}"})
    result = chunk_documents.apply_async((again,), queue=queued_worker)

    assert result.id == again.operation_id
    assert final_result(result)["documents_done"] == 2


def _chunkq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dead_letters_listed_shown_replayed_and_purged(
    tmp_path: Path, queued_worker: str
) -> None:
    """The dead CLI lists, shows and replays a dead letter with its correlation id."""
    root = tmp_path / "dl"
    request = _job(tmp_path, "dl", {"a.txt": "#!fault connection 3"})
    with correlation_scope("dead-corr-7"):
        _run(request, queued_worker)
    assert stores().errors.dead_letter_of(request.operation_id) is not None

    listed = _chunkq("dead", "list")
    shown = json.loads(_chunkq("dead", "show", request.operation_id).stdout)
    (root / "a.txt").write_text(f"fixed now\n{root}")
    replayed = _chunkq("dead", "replay", request.operation_id)
    summary = final_result(chunk_documents.AsyncResult(replayed.stdout.strip()))

    assert request.operation_id in listed.stdout
    assert shown["correlation_id"] == "dead-corr-7"
    assert summary["status"] == "completed"
    assert stores().states.get(request.operation_id)["correlation_id"] == "dead-corr-7"
    assert stores().errors.dead_letter_of(request.operation_id) is None
    assert _chunkq("dead", "purge").returncode == 0


def test_report_command_prints_a_readable_table(
    tmp_path: Path, queued_worker: str
) -> None:
    """``chunkq report`` shows errors, attempts and advice; ``--json`` is machine-readable."""
    request = _job(tmp_path, "cli", {"a.txt": "#!fault connection 99"})
    _run(request, queued_worker)

    shown = _chunkq("report", request.operation_id)
    as_json = json.loads(_chunkq("report", request.operation_id, "--json").stdout)

    assert shown.returncode == 0, shown.stderr
    assert "transient_connection 3" in shown.stdout
    assert "recommended:" in shown.stdout
    assert as_json["error_breakdown"] == {"transient_connection": 3}
