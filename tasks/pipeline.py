"""The chunking job itself: batches of documents, a checkpoint after each.

:class:`OperationRunner` is independent of Celery: the task in :mod:`tasks.chunking`
builds one and hands it the request, the attempt number and a progress callback.

Order of work in a batch: every document is read, chunked and written to the sink
(each file replaced atomically); only then is the batch recorded in the checkpoint.
A crash in between redoes at most that batch on the next attempt, and since sink
writes replace whole files, redone documents leave one copy of their chunks.

A document that cannot be read or decoded is recorded as failed with its reason and
the job goes on; such a job ends as ``partial``. Nothing else is caught per document:
time limits, shutdowns and retry requests stop the batch and reach the task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recovery.checkpoint import ITEMS_DONE, ITEMS_FAILED, CheckpointStore
from recovery.state import StateStore, Status
from tasks import engine
from tasks.errors import DocumentError
from tasks.models import Chunk, ChunkRequest
from tasks.sinks import JsonlFolderSink
from tasks.sources import FolderSource
from tasks.tokens import count_tokens

logger = logging.getLogger(__name__)

MAX_FAILURES_IN_RESULT = 100


@dataclass(frozen=True, slots=True)
class Progress:
    """Figures of an operation after a checkpoint; bytes are UTF-8 bytes of input."""

    operation_id: str
    documents_total: int
    documents_done: int
    documents_failed: int
    chunks: int
    bytes_in: int
    batch_size: int
    batches: int

    @property
    def documents_finished(self) -> int:
        """Documents that need no more work, done or failed."""
        return self.documents_done + self.documents_failed

    def as_meta(self) -> dict[str, Any]:
        """Return the figures as a JSON-ready mapping."""
        return {**asdict(self), "documents_finished": self.documents_finished}


def chunk_document(
    text: str, *, document_id: str, request: ChunkRequest
) -> list[Chunk]:
    """Cut one document's text into chunks under the request's strategy."""
    strategy = request.strategy.value
    return [
        Chunk.build(
            document_id=document_id,
            index=index,
            text=text[start:end],
            start=start,
            strategy=strategy,
            token_count=count_tokens(text[start:end]),
        )
        for index, (start, end) in enumerate(engine.split(text, request.spec))
    ]


class OperationRunner:
    """Runs one chunking operation to its end, resuming from its checkpoint."""

    def __init__(
        self,
        *,
        checkpoints: CheckpointStore,
        states: StateStore,
        default_output_dir: Path,
        sink_fsync: bool,
        batch_size_for: Callable[[], int],
    ) -> None:
        """``batch_size_for`` is asked before every batch for its size in documents."""
        self._checkpoints = checkpoints
        self._states = states
        self._default_output_dir = default_output_dir
        self._sink_fsync = sink_fsync
        self._batch_size_for = batch_size_for

    def run(
        self,
        request: ChunkRequest,
        *,
        attempt: int,
        on_progress: Callable[[Progress], None],
    ) -> dict[str, Any]:
        """Process every unfinished document of the request; return the summary.

        Raises:
            tasks.errors.SourceRootError: the source folder is missing.
            OSError: the sink cannot write; finished batches stay recorded.
        """
        source = FolderSource(
            root=request.source_root, include=request.include, exclude=request.exclude
        )
        sink = JsonlFolderSink(
            output_dir=request.output_dir or self._default_output_dir,
            fsync=self._sink_fsync,
        )
        operation_id = request.operation_id
        started_s = time.monotonic()

        plan = self._plan(request, source)
        checkpoint = self._checkpoints.load(operation_id)
        remaining = [doc for doc in plan if doc not in checkpoint.finished]
        totals = dict(checkpoint.totals)
        batch_size = checkpoint.batch_size or self._batch_size_for()
        batches = checkpoint.batches
        logger.info(
            "operation.resumed" if checkpoint.batches else "operation.started",
            extra={
                "operation_id": operation_id,
                "attempt": attempt,
                "documents_total": len(plan),
                "documents_remaining": len(remaining),
            },
        )
        on_progress(self._progress(operation_id, plan, totals, batch_size, batches))

        while remaining:
            batch_size = self._batch_size_for()
            batch, remaining = remaining[:batch_size], remaining[batch_size:]
            done, failed = self._process_batch(request, source, sink, batch)
            totals = self._checkpoints.record_batch(
                operation_id,
                done=done,
                failed=failed,
                batch_size=batch_size,
                attempt=attempt,
            )
            batches += 1
            on_progress(self._progress(operation_id, plan, totals, batch_size, batches))

        return self._finish(request, sink, plan, attempt, time.monotonic() - started_s)

    def _plan(self, request: ChunkRequest, source: FolderSource) -> list[str]:
        existing = self._checkpoints.plan(request.operation_id)
        if existing is not None:
            return existing
        if request.document_ids is not None:
            documents = list(request.document_ids)
        else:
            documents = source.list_ids()
        return self._checkpoints.fix_plan(request.operation_id, documents)

    def _process_batch(
        self,
        request: ChunkRequest,
        source: FolderSource,
        sink: JsonlFolderSink,
        batch: list[str],
    ) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
        done: dict[str, dict[str, int]] = {}
        failed: dict[str, str] = {}
        for document_id in batch:
            try:
                text = source.read_text(document_id)
            except DocumentError as error:
                failed[document_id] = error.reason
                logger.info(
                    "document.failed",
                    extra={
                        "operation_id": request.operation_id,
                        "document_id": document_id,
                        "reason": error.reason,
                    },
                )
                continue
            chunks = chunk_document(text, document_id=document_id, request=request)
            bytes_out = sink.write(request.collection_id, document_id, chunks)
            done[document_id] = {
                "chunks": len(chunks),
                "bytes_in": len(text.encode()),
                "bytes_out": bytes_out,
            }
        return done, failed

    def _progress(
        self,
        operation_id: str,
        plan: list[str],
        totals: dict[str, int],
        batch_size: int,
        batches: int,
    ) -> Progress:
        return Progress(
            operation_id=operation_id,
            documents_total=len(plan),
            documents_done=totals.get(ITEMS_DONE, 0),
            documents_failed=totals.get(ITEMS_FAILED, 0),
            chunks=totals.get("chunks", 0),
            bytes_in=totals.get("bytes_in", 0),
            batch_size=batch_size,
            batches=batches,
        )

    def _finish(
        self,
        request: ChunkRequest,
        sink: JsonlFolderSink,
        plan: list[str],
        attempt: int,
        elapsed_s: float,
    ) -> dict[str, Any]:
        checkpoint = self._checkpoints.load(request.operation_id)
        status = Status.PARTIAL if checkpoint.failed else Status.COMPLETED
        self._states.update(request.operation_id, status=status.value, attempt=attempt)
        failures = dict(sorted(checkpoint.failed.items())[:MAX_FAILURES_IN_RESULT])
        logger.info(
            "operation.finished",
            extra={
                "operation_id": request.operation_id,
                "status": status.value,
                "documents_failed": len(checkpoint.failed),
            },
        )
        return {
            "operation_id": request.operation_id,
            "collection_id": request.collection_id,
            "status": status.value,
            "documents_total": len(plan),
            "documents_done": checkpoint.totals.get(ITEMS_DONE, 0),
            "documents_failed": checkpoint.totals.get(ITEMS_FAILED, 0),
            "chunks": checkpoint.totals.get("chunks", 0),
            "bytes_in": checkpoint.totals.get("bytes_in", 0),
            "bytes_out": checkpoint.totals.get("bytes_out", 0),
            "failures": failures,
            "output_dir": str(sink.output_dir / request.collection_id),
            "attempt": attempt,
            "elapsed_s": round(elapsed_s, 3),
        }
