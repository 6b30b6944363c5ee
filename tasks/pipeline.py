"""The chunking job itself: batches of documents, a checkpoint after each.

:class:`OperationRunner` is independent of Celery: the task in :mod:`tasks.chunking`
builds one and hands it the request, the attempt number and a progress callback.

Order of work in a batch: every document is read, chunked and written to the sink
(each file replaced atomically); only then is the batch recorded in the checkpoint.
A crash in between redoes at most that batch on the next attempt, and since sink
writes replace whole files, redone documents leave one copy of their chunks.

Before every batch its size is chosen again from memory pressure, never above the
request's ``max_batch_size`` (a retry after a memory error lowers it).

Per document, only two kinds of failure are handled here: a document that cannot be
read or decoded is recorded as failed with its reason (the job goes on and ends
``partial``); a strategy that fails falls back along the fallback chain, and the
chunks record which strategy made them and why. Nothing else is caught: time limits,
memory errors, lost connections, shutdowns and retry requests stop the batch and
reach the task's recovery policy.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recovery.checkpoint import ITEMS_DONE, ITEMS_FAILED, Checkpoint, CheckpointStore
from recovery.classify import StrategyError
from recovery.lease import Lease, LeaseStore, StaleEpochError
from recovery.state import StateStore, Status
from recovery.task import AttemptContext
from tasks import engine
from tasks.errors import DocumentError, DocumentUnreadableError
from tasks.models import Chunk, ChunkRequest
from tasks.sinks import JsonlFolderSink, Staged
from tasks.sources import FolderSource, printable_id
from tasks.tokens import count_tokens

logger = logging.getLogger(__name__)

MAX_FAILURES_IN_RESULT = 100

NextStrategy = Callable[[str], str | None]
"""Given a strategy that failed, the simpler one to try, or ``None``."""


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
    text: str,
    *,
    document_id: str,
    request: ChunkRequest,
    next_strategy: NextStrategy = lambda _: None,
) -> list[Chunk]:
    """Cut one document's text into chunks, falling back when a strategy fails.

    Raises:
        DocumentUnreadableError: the requested strategy and every fallback failed.
    """
    return list(
        iter_chunks(
            text, document_id=document_id, request=request, next_strategy=next_strategy
        )
    )


def iter_chunks(
    text: str,
    *,
    document_id: str,
    request: ChunkRequest,
    next_strategy: NextStrategy = lambda _: None,
) -> Iterator[Chunk]:
    """Return the document's chunks one at a time (spans are found before the first).

    Chunks are built as the sink consumes them, so a document's chunks are never all
    in memory at once; only their offsets are.

    Raises:
        DocumentUnreadableError: the requested strategy and every fallback failed
            (raised by this call, before any chunk is produced).
    """
    strategy, spans, fallback_reason = _spans_with_fallback(
        text, document_id=document_id, request=request, next_strategy=next_strategy
    )
    return (
        Chunk.build(
            document_id=document_id,
            index=index,
            text=text[start:end],
            start=start,
            strategy=strategy,
            token_count=count_tokens(text[start:end]),
            fallback_reason=fallback_reason,
        )
        for index, (start, end) in enumerate(spans)
    )


def _spans_with_fallback(
    text: str, *, document_id: str, request: ChunkRequest, next_strategy: NextStrategy
) -> tuple[str, list[engine.Span], str | None]:
    spec = request.spec
    reasons: list[str] = []
    while True:
        try:
            return spec.strategy, engine.split(text, spec), "; ".join(reasons) or None
        except StrategyError as error:
            reasons.append(f"{spec.strategy} failed ({error.reason})")
            simpler = next_strategy(spec.strategy)
            if simpler is None:
                raise DocumentUnreadableError(
                    document_id=document_id,
                    reason="no strategy could chunk it: " + "; ".join(reasons),
                ) from error
            logger.info(
                "document.strategy_fell_back",
                extra={
                    "operation_id": request.operation_id,
                    "document_id": document_id,
                    "from_strategy": spec.strategy,
                    "to_strategy": simpler,
                },
            )
            spec = spec.converted_to(simpler)


def request_signature(request: ChunkRequest) -> str:
    """Return what, besides a document's bytes, decides its chunks."""
    return f"{request.strategy}/{request.chunk_size}/{request.overlap}/{engine.ENGINE_VERSION}"


def document_fingerprint(data: bytes, signature: str) -> str:
    """Return the SHA-256 of a document's bytes and the settings that chunk it."""
    digest = hashlib.sha256(signature.encode())
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


def _unchanged(stored: str | None, fingerprint: str) -> int | None:
    """Return the chunk count stored with ``fingerprint``, or ``None`` if it differs."""
    if stored is None:
        return None
    value, _, chunks = stored.partition(":")
    return int(chunks) if value == fingerprint and chunks.isdigit() else None


@dataclass
class BatchOutcome:
    """What processing a batch produced, before it is committed."""

    done: dict[str, dict[str, int]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    staged: list[Staged] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def fail(self, request: ChunkRequest, error: DocumentError) -> None:
        """Record a document that cannot be processed."""
        self.failed[error.document_id] = error.reason
        logger.info(
            "document.failed",
            extra={
                "operation_id": request.operation_id,
                "document_id": error.document_id,
                "reason": error.reason,
            },
        )


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
        next_strategy: NextStrategy,
        leases: LeaseStore | None = None,
    ) -> None:
        """``batch_size_for`` is asked before every batch for its size in documents."""
        self._checkpoints = checkpoints
        self._states = states
        self._default_output_dir = default_output_dir
        self._sink_fsync = sink_fsync
        self._batch_size_for = batch_size_for
        self._next_strategy = next_strategy
        self._leases = leases

    def sink_for(self, request: ChunkRequest) -> JsonlFolderSink:
        """Return the sink the request's chunks go to."""
        return JsonlFolderSink(
            output_dir=request.output_dir or self._default_output_dir,
            fsync=self._sink_fsync,
        )

    def run(
        self,
        request: ChunkRequest,
        *,
        attempt: int,
        on_progress: Callable[[Progress], None],
        context: AttemptContext | None = None,
    ) -> dict[str, Any]:
        """Process every unfinished document of the request; return the summary.

        ``context``, when given, is kept up to date with the batch size, strategy and
        whether results are saved, for the recovery policy to read on failure.

        Raises:
            tasks.errors.SourceRootError: the source folder is missing.
            tasks.errors.OutputDirError: the output folder cannot be made or written.
            OSError: the sink failed later (disk full); finished batches stay recorded.
        """
        sink = self.sink_for(request)
        source = FolderSource(
            root=request.source_root,
            include=request.include,
            exclude=request.exclude,
            skip_dirs=(sink.output_dir,),
        )
        sink.prepare(request.collection_id)
        operation_id = request.operation_id
        started_s = time.monotonic()

        plan = self._plan(request, source)
        if attempt > 1:
            # An earlier attempt may have been killed between staging and committing.
            sink.sweep(
                request.collection_id, [doc for doc in plan if doc == printable_id(doc)]
            )
        checkpoint = self._checkpoints.load(operation_id)
        remaining = [
            doc for doc in plan if printable_id(doc) not in checkpoint.finished
        ]
        totals = dict(checkpoint.totals)
        batches = checkpoint.batches
        if context is not None:
            context.strategy = request.strategy
            context.has_partial_results = bool(checkpoint.done)
        logger.info(
            "operation.resumed" if batches else "operation.started",
            extra={
                "operation_id": operation_id,
                "attempt": attempt,
                "documents_total": len(plan),
                "documents_remaining": len(remaining),
            },
        )
        batch_size = self._next_batch_size(request, context)
        on_progress(self._progress(operation_id, plan, totals, batch_size, batches))

        while remaining:
            batch_size = self._next_batch_size(request, context)
            batch, remaining = remaining[:batch_size], remaining[batch_size:]
            lease = context.lease if context is not None else None
            outcome = self._process_batch(request, source, sink, batch)
            totals = self._commit_batch(
                request,
                sink,
                outcome,
                lease=lease,
                batch_size=batch_size,
                attempt=attempt,
            )
            batches += 1
            if context is not None and outcome.done:
                context.has_partial_results = True
            on_progress(self._progress(operation_id, plan, totals, batch_size, batches))

        checkpoint = self._checkpoints.load(operation_id)
        status = Status.PARTIAL if checkpoint.failed else Status.COMPLETED
        self._states.update(operation_id, status=status.value, attempt=attempt)
        logger.info(
            "operation.finished",
            extra={
                "operation_id": operation_id,
                "status": status.value,
                "documents_failed": len(checkpoint.failed),
            },
        )
        return summary(
            request,
            sink=sink,
            checkpoint=checkpoint,
            plan_size=len(plan),
            status=status,
            attempt=attempt,
            elapsed_s=time.monotonic() - started_s,
        )

    def _next_batch_size(
        self, request: ChunkRequest, context: AttemptContext | None
    ) -> int:
        size = self._batch_size_for()
        if request.max_batch_size is not None:
            size = min(size, request.max_batch_size)
        if context is not None:
            context.batch_size = size
        return size

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
    ) -> BatchOutcome:
        """Read, chunk and stage every document of the batch; nothing is committed."""
        outcome = BatchOutcome()
        try:
            self._stage_batch(request, source, sink, batch, outcome)
        except BaseException:
            # Time limit, full disk, lost Redis...: nothing of this batch stays behind.
            for staged in outcome.staged:
                sink.discard(staged)
            raise
        return outcome

    def _stage_batch(
        self,
        request: ChunkRequest,
        source: FolderSource,
        sink: JsonlFolderSink,
        batch: list[str],
        outcome: BatchOutcome,
    ) -> None:
        printable = {document_id: printable_id(document_id) for document_id in batch}
        known = self._checkpoints.fingerprints(
            request.collection_id,
            [name for doc, name in printable.items() if doc == name],
        )
        signature = request_signature(request)
        for document_id in batch:
            try:
                text = source.read_text(document_id)
            except DocumentError as error:
                outcome.fail(request, error)
                continue
            data = text.encode()
            fingerprint = document_fingerprint(data, signature)
            unchanged = _unchanged(known.get(document_id), fingerprint)
            if (
                unchanged is not None
                and sink.path_for(request.collection_id, document_id).exists()
            ):
                outcome.done[document_id] = {
                    "chunks": unchanged,
                    "bytes_in": len(data),
                    "unchanged": 1,
                }
                continue
            try:
                chunks = iter_chunks(
                    text,
                    document_id=document_id,
                    request=request,
                    next_strategy=self._next_strategy,
                )
            except DocumentError as error:
                outcome.fail(request, error)
                continue
            staged = sink.stage(request.collection_id, document_id, chunks)
            outcome.staged.append(staged)
            outcome.done[document_id] = {
                "chunks": staged.written.chunks,
                "bytes_in": len(data),
                "bytes_out": staged.written.size_bytes,
            }
            outcome.fingerprints[document_id] = f"{fingerprint}:{staged.written.chunks}"

    def _commit_batch(
        self,
        request: ChunkRequest,
        sink: JsonlFolderSink,
        outcome: BatchOutcome,
        *,
        lease: Lease | None,
        batch_size: int,
        attempt: int,
    ) -> dict[str, int]:
        """Put the staged files in place and record the batch, if still the holder.

        Raises:
            recovery.lease.StaleEpochError: another attempt holds the operation now;
                the staged files are dropped and nothing is recorded.
        """
        if lease is not None and self._leases is not None:
            try:
                self._leases.check(lease)
            except StaleEpochError:
                for staged in outcome.staged:
                    sink.discard(staged)
                raise
        try:
            for staged in outcome.staged:
                sink.commit(staged)
        except BaseException:
            for staged in outcome.staged:
                sink.discard(staged)
            raise
        return self._checkpoints.record_batch(
            request.operation_id,
            done=outcome.done,
            failed=outcome.failed,
            batch_size=batch_size,
            attempt=attempt,
            fence=lease,
            fingerprints=outcome.fingerprints,
            fingerprint_scope=request.collection_id,
        )

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


def summary(
    request: ChunkRequest,
    *,
    sink: JsonlFolderSink,
    checkpoint: Checkpoint,
    plan_size: int,
    status: Status,
    attempt: int,
    elapsed_s: float,
    error: str | None = None,
) -> dict[str, Any]:
    """Return the JSON-ready summary of an operation, as the task returns it."""
    result: dict[str, Any] = {
        "operation_id": request.operation_id,
        "collection_id": request.collection_id,
        "status": status.value,
        "documents_total": plan_size,
        "documents_done": checkpoint.totals.get(ITEMS_DONE, 0),
        "documents_failed": checkpoint.totals.get(ITEMS_FAILED, 0),
        "chunks": checkpoint.totals.get("chunks", 0),
        "bytes_in": checkpoint.totals.get("bytes_in", 0),
        "bytes_out": checkpoint.totals.get("bytes_out", 0),
        "failures": dict(sorted(checkpoint.failed.items())[:MAX_FAILURES_IN_RESULT]),
        "output_dir": str(sink.output_dir / request.collection_id),
        "attempt": attempt,
        "elapsed_s": round(elapsed_s, 3),
    }
    if error is not None:
        result["error"] = error
    return result
