"""The main job end to end: ``.delay()`` on real folders, a real worker, real Redis."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from tasks.chunking import chunk_documents
from tasks.errors import InvalidRequestError
from tasks.models import ChunkRequest
from tasks.pipeline import chunk_document
from tasks.sinks import JsonlFolderSink
from worker.local import WorkerProcess
from worker.runtime import stores

pytestmark = pytest.mark.integration

JOB_TIMEOUT_S = 120

MARKDOWN = """# Guide

chunkq cuts documents into pieces. Each piece keeps its offsets.

## Install

Run the installer. Then check the version: `chunkq --version`.
"""


def _corpus(root: Path, count: int = 12) -> dict[str, str]:
    """Write a small real corpus of text documents under ``root``; return id to text."""
    texts = {
        "guide.md": MARKDOWN,
        "notes/unicode.txt": "Grüße aus Köln. 日本語の文章です。 Ça va? 🙂\n" * 40,
    }
    for index in range(count - len(texts)):
        texts[f"pages/page-{index:03d}.txt"] = (
            f"Page {index}. " + "The quick brown fox jumps over the lazy dog. " * 60
        )
    for document_id, text in texts.items():
        path = root / document_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return texts


def _request(tmp_path: Path, operation_id: str, **fields: Any) -> ChunkRequest:
    return ChunkRequest(
        operation_id=operation_id,
        collection_id="docs",
        source_root=tmp_path / "src",
        output_dir=tmp_path / "out",
        chunk_size=300,
        overlap=50,
        **fields,
    )


def test_delay_writes_every_chunk(
    tmp_path: Path, worker: WorkerProcess, operation_id: str
) -> None:
    """Every document's chunks reach the sink, with exact offsets and hashes."""
    texts = _corpus(tmp_path / "src")
    request = _request(tmp_path, operation_id)

    summary = chunk_documents.delay(request).get(timeout=JOB_TIMEOUT_S)

    assert summary["status"] == "completed"
    assert summary["documents_done"] == len(texts)
    sink = JsonlFolderSink(output_dir=tmp_path / "out")
    total_chunks = 0
    for document_id, text in texts.items():
        written = sink.read("docs", document_id)
        expected = chunk_document(text, document_id=document_id, request=request)
        assert written == [chunk.to_record() for chunk in expected]
        assert all(text[c["start"] : c["end"]] == c["text"] for c in written)
        total_chunks += len(written)
    assert summary["chunks"] == total_chunks


def test_checkpoint_is_in_redis_with_its_ttl(
    tmp_path: Path, worker: WorkerProcess, operation_id: str
) -> None:
    """After the job, the checkpoint lists every document and each key has the 24 h TTL."""
    texts = _corpus(tmp_path / "src")

    chunk_documents.delay(_request(tmp_path, operation_id)).get(timeout=JOB_TIMEOUT_S)

    checkpoint = stores().checkpoints.load(operation_id)
    assert checkpoint.done == frozenset(texts)
    assert checkpoint.totals["items_done"] == len(texts)
    assert checkpoint.batch_size == 32
    ttls = stores().checkpoints.ttl_s(operation_id)
    keys = stores().keys.operation(operation_id)
    for key in (keys.done, keys.totals, keys.checkpoint, keys.plan, keys.state):
        assert 24 * 3600 - 120 < ttls[key] <= 24 * 3600


def test_progress_is_published_after_every_batch(
    tmp_path: Path, redis_url: str, operation_id: str
) -> None:
    """A worker with batches of 4 publishes PROGRESS after each batch, with the figures."""
    from tests.integration.support import start_worker  # noqa: PLC0415

    texts = _corpus(tmp_path / "src", count=12)
    request = _request(tmp_path, operation_id)
    messages = _subscribe(redis_url, f"celery-task-meta-{operation_id}")
    queue = f"{os.environ['CHUNKQ_QUEUE']}.batch4"
    small_batches = start_worker(
        tmp_path,
        name="batch4",
        env={"CHUNKQ_BATCH_SIZE_DEFAULT": "4", "CHUNKQ_BATCH_THRESHOLDS": "[]"},
        queue=queue,
    )
    try:
        chunk_documents.apply_async((request,), queue=queue).get(timeout=JOB_TIMEOUT_S)
    finally:
        small_batches.stop()

    progress = [m["result"] for m in messages.stop() if m["status"] == "PROGRESS"]
    finished = [p["documents_finished"] for p in progress]
    assert finished == [0, 4, 8, 12]
    assert all(
        p["documents_total"] == len(texts) and p["batch_size"] == 4 for p in progress
    )
    assert progress[-1]["chunks"] > 0


def test_resumed_job_skips_finished_documents(
    tmp_path: Path, worker: WorkerProcess, operation_id: str
) -> None:
    """Documents recorded in the checkpoint by an earlier attempt are not processed again."""
    texts = _corpus(tmp_path / "src")
    finished_earlier = sorted(texts)[:5]
    checkpoints = stores().checkpoints
    checkpoints.fix_plan(operation_id, sorted(texts))
    checkpoints.record_batch(
        operation_id,
        done={doc: {"chunks": 1} for doc in finished_earlier},
        failed={},
        batch_size=5,
        attempt=1,
    )

    summary = chunk_documents.delay(_request(tmp_path, operation_id)).get(
        timeout=JOB_TIMEOUT_S
    )

    assert summary["documents_done"] == len(texts)
    sink = JsonlFolderSink(output_dir=tmp_path / "out")
    for document_id in texts:
        written = sink.path_for("docs", document_id).exists()
        assert written is (document_id not in finished_earlier)


def test_bad_documents_are_reported_and_others_succeed(
    tmp_path: Path, worker: WorkerProcess, operation_id: str
) -> None:
    """Binary, undecodable, escaping and vanished documents fail alone; empty is no error."""
    source = tmp_path / "src"
    texts = _corpus(source, count=4)
    (source / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (source / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (source / "empty.txt").write_text("")
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    (source / "escape.txt").symlink_to(outside)
    ids = [*texts, "image.png", "latin1.txt", "empty.txt", "escape.txt", "gone.txt"]

    summary = chunk_documents.delay(
        _request(tmp_path, operation_id, document_ids=tuple(ids))
    ).get(timeout=JOB_TIMEOUT_S)

    assert summary["status"] == "partial"
    assert set(summary["failures"]) == {
        "image.png",
        "latin1.txt",
        "escape.txt",
        "gone.txt",
    }
    assert "binary" in summary["failures"]["image.png"]
    assert "UTF-8" in summary["failures"]["latin1.txt"]
    assert "outside the source root" in summary["failures"]["escape.txt"]
    assert "does not exist" in summary["failures"]["gone.txt"]
    sink = JsonlFolderSink(output_dir=tmp_path / "out")
    assert sink.read("docs", "empty.txt") == []
    assert all(sink.read("docs", doc) for doc in texts)
    assert stores().states.get(operation_id)["status"] == "partial"


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"overlap": 500}, "overlap"),
        ({"collection_id": "a:b"}, "collection_id"),
        ({"operation_id": "x" * 65}, "operation_id"),
        ({"strategy": "semantic-magic"}, "strategy"),
        ({"document_ids": ["../etc/passwd"]}, "document_ids"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_parameters_are_refused_before_publishing(
    tmp_path: Path, redis_client: redis.Redis, fields: dict[str, Any], names: str
) -> None:
    """``.delay()`` with bad parameters raises at once, naming the field; nothing is queued."""
    queue = os.environ["CHUNKQ_QUEUE"]
    before = redis_client.llen(queue)
    arguments = {
        "source_root": str(tmp_path),
        "chunk_size": 300,
        "overlap": 50,
        **fields,
    }

    with pytest.raises(InvalidRequestError, match=names):
        chunk_documents.delay(**arguments)

    assert redis_client.llen(queue) == before


def test_missing_source_root_fails_without_retry(
    tmp_path: Path, worker: WorkerProcess, operation_id: str
) -> None:
    """A source folder missing on the worker ends the operation as failed, naming it."""
    request = _request(tmp_path, operation_id)

    result = chunk_documents.delay(request)

    with pytest.raises(Exception, match="does not exist"):
        result.get(timeout=JOB_TIMEOUT_S)
    assert stores().states.get(operation_id)["status"] == "failed"


class _Subscription:
    """Collects JSON messages published on one Redis channel, in a background thread."""

    def __init__(self, url: str, channel: str) -> None:
        self._pubsub = redis.Redis.from_url(url).pubsub()
        self._pubsub.subscribe(channel)
        self._pubsub.get_message(timeout=5)  # the subscription confirmation
        self._messages: list[dict[str, Any]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stopping.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                self._messages.append(json.loads(message["data"]))

    def stop(self) -> list[dict[str, Any]]:
        self._stopping.set()
        self._thread.join()
        self._pubsub.close()
        return self._messages


def _subscribe(url: str, channel: str) -> _Subscription:
    return _Subscription(url, channel)


def test_same_operation_id_with_other_parameters_is_refused(
    tmp_path: Path, worker: WorkerProcess, operation_id: str
) -> None:
    """An operation id names one piece of work: other parameters under it are refused."""
    _corpus(tmp_path / "src", count=3)
    chunk_documents.delay(_request(tmp_path, operation_id)).get(timeout=JOB_TIMEOUT_S)

    other = _request(tmp_path, operation_id).model_copy(update={"chunk_size": 500})
    with pytest.raises(InvalidRequestError, match="exists with other chunk_size"):
        chunk_documents.delay(other)


def test_resubmitting_a_finished_operation_runs_it_again_from_its_checkpoint(
    tmp_path: Path, worker: WorkerProcess, operation_id: str
) -> None:
    """A finished operation sent again waits for the new run, which skips done work."""
    texts = _corpus(tmp_path / "src", count=3)
    first = chunk_documents.delay(_request(tmp_path, operation_id)).get(
        timeout=JOB_TIMEOUT_S
    )
    (tmp_path / "out" / "docs" / "guide.md.jsonl").unlink()

    again = chunk_documents.delay(_request(tmp_path, operation_id)).get(
        timeout=JOB_TIMEOUT_S
    )

    assert again["documents_done"] == first["documents_done"] == len(texts)
    assert again["attempt"] == 2
    assert not (tmp_path / "out" / "docs" / "guide.md.jsonl").exists()


def test_submitting_an_active_operation_again_sends_no_second_copy(
    tmp_path: Path, redis_client: redis.Redis, operation_id: str
) -> None:
    """While an operation is pending, submitting it again returns it; the queue holds one."""
    _corpus(tmp_path / "src", count=2)
    queue = f"{os.environ['CHUNKQ_QUEUE']}.idle.{operation_id}"

    first = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),), queue=queue
    )
    second = chunk_documents.apply_async(
        (_request(tmp_path, operation_id),), queue=queue
    )

    assert first.id == second.id == operation_id
    assert redis_client.llen(queue) == 1
    redis_client.delete(queue)


def test_unwritable_output_folder_fails_at_once_naming_it(
    tmp_path: Path, worker: WorkerProcess, operation_id: str
) -> None:
    """An output folder that is a file stops the job on its first attempt, named."""
    _corpus(tmp_path / "src", count=2)
    (tmp_path / "out").write_text("a file, not a folder")

    result = chunk_documents.delay(_request(tmp_path, operation_id))

    with pytest.raises(Exception, match="output folder"):
        result.get(timeout=JOB_TIMEOUT_S)
    assert stores().errors.resume_operation(operation_id).attempts == 1


def test_a_name_that_is_not_utf8_fails_alone(
    tmp_path: Path, worker: WorkerProcess, operation_id: str
) -> None:
    """A file whose name is not UTF-8 is a failed document; the others are written."""
    source = tmp_path / "src"
    texts = _corpus(source, count=3)
    with open(bytes(source) + b"/caf\xe9.txt", "wb") as handle:  # noqa: PTH123
        handle.write(b"hello")

    summary = chunk_documents.delay(_request(tmp_path, operation_id)).get(
        timeout=JOB_TIMEOUT_S
    )

    assert summary["status"] == "partial"
    assert summary["documents_done"] == len(texts)
    assert summary["failures"] == {"caf\\xe9.txt": "its name is not valid UTF-8"}
