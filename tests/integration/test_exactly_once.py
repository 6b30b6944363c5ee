"""Fingerprints and fencing with a real worker and Redis: no work done twice."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from recovery.lease import StaleEpochError
from tasks.chunking import chunk_documents
from tasks.models import ChunkRequest
from tests.integration.faults import calls_key
from worker.local import WorkerProcess
from worker.runtime import stores

pytestmark = pytest.mark.integration

JOB_TIMEOUT_S = 120


def _folder(root: Path, count: int = 6) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    texts = {f"d{i}.txt": f"{root} document {i}. " + "text " * 60 for i in range(count)}
    for document_id, text in texts.items():
        (root / document_id).write_text(text)
    return texts


def _request(tmp_path: Path, **fields: object) -> ChunkRequest:
    values: dict[str, object] = {
        "operation_id": f"once-{uuid.uuid4().hex[:12]}",
        "collection_id": "c",
        "source_root": tmp_path / "src",
        "output_dir": tmp_path / "out",
        "strategy": "faulty",
        "chunk_size": 100,
        "overlap": 10,
    }
    return ChunkRequest.model_validate({**values, **fields})


def test_the_same_work_twice_returns_the_first_operation(
    tmp_path: Path, worker: WorkerProcess, redis_client: redis.Redis
) -> None:
    """Same folder, settings and files under a new operation id: the first comes back."""
    texts = _folder(tmp_path / "src")
    first = chunk_documents.delay(_request(tmp_path))
    first.get(timeout=JOB_TIMEOUT_S)

    second = chunk_documents.delay(_request(tmp_path))

    assert second.id == first.id
    assert all(
        int(redis_client.get(calls_key(text)) or 0) == 1 for text in texts.values()
    )


def test_a_rerun_chunks_only_documents_that_changed(
    tmp_path: Path, worker: WorkerProcess, redis_client: redis.Redis
) -> None:
    """After one file changes, a new operation on the collection chunks that file only."""
    texts = _folder(tmp_path / "src")
    chunk_documents.delay(_request(tmp_path)).get(timeout=JOB_TIMEOUT_S)
    changed = f"{tmp_path} changed document. " + "other " * 70
    (tmp_path / "src" / "d3.txt").write_text(changed)

    summary = chunk_documents.delay(_request(tmp_path)).get(timeout=JOB_TIMEOUT_S)

    assert summary["status"] == "completed"
    assert summary["documents_done"] == len(texts)
    calls = {
        doc: int(redis_client.get(calls_key(text)) or 0) for doc, text in texts.items()
    }
    assert calls == dict.fromkeys(texts, 1)  # chunked by the first run only
    assert int(redis_client.get(calls_key(changed)) or 0) == 1


def test_settings_change_chunks_everything_again(
    tmp_path: Path, worker: WorkerProcess, redis_client: redis.Redis
) -> None:
    """Other sizes are other work: every document is chunked again."""
    texts = _folder(tmp_path / "src", count=3)
    chunk_documents.delay(_request(tmp_path)).get(timeout=JOB_TIMEOUT_S)

    chunk_documents.delay(_request(tmp_path, chunk_size=80)).get(timeout=JOB_TIMEOUT_S)

    assert all(
        int(redis_client.get(calls_key(text)) or 0) == 2 for text in texts.values()
    )


def test_a_superseded_epoch_cannot_write_its_checkpoint(operation_id: str) -> None:
    """Once a newer attempt takes the lease, the older one's batch is refused."""
    handles = stores()
    old = handles.leases.take(operation_id, holder="zombie")
    new = handles.leases.take(operation_id, holder="successor")

    with pytest.raises(StaleEpochError):
        handles.checkpoints.record_batch(
            operation_id,
            done={"a": {"chunks": 1}},
            failed={},
            batch_size=1,
            attempt=1,
            fence=old,
        )
    handles.checkpoints.record_batch(
        operation_id,
        done={"b": {"chunks": 1}},
        failed={},
        batch_size=1,
        attempt=2,
        fence=new,
    )

    assert handles.checkpoints.load(operation_id).done == frozenset({"b"})
    assert not handles.leases.beat(old)
    assert handles.leases.beat(new)
