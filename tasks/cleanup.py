"""Cleaning up after an operation: keep what finished, roll it back, or discard it all.

:func:`cleanup_operation` applies one strategy to one operation and touches nothing
of any other:

``save_partial``
    finished documents stay; unfinished ones are marked failed with the reason; the
    operation ends ``partial`` when at least one document is done, else ``failed``.
``rollback``
    every chunk file the operation wrote is removed, and its checkpoint (plan, done
    and failed documents, totals) is cleared, so running it again starts over; the
    state record and error history stay; the operation ends ``failed``.
``discard``
    as ``rollback``, and every Redis trace of the operation goes too: state, attempts,
    error history, lease, heartbeat watch, gated-queue entries. Its dead letter stays
    (``chunkq dead purge`` removes those). With ``forget_fingerprints``, the
    fingerprints of its documents and of its work are removed as well, so the same
    work is done again when submitted.

The sink files of other operations, other collections and other documents are never
removed: only the documents this operation's checkpoint lists as done.
"""

from __future__ import annotations

from pydantic import BaseModel

from config import get_settings
from config.settings import CleanupStrategy
from recovery.state import Status
from tasks.models import ChunkRequest
from tasks.sinks import JsonlFolderSink
from worker.runtime import stores


class CleanupResult(BaseModel):
    """What a cleanup did."""

    operation_id: str
    strategy: CleanupStrategy
    status: str
    documents_kept: int
    documents_marked_failed: int
    files_removed: int
    redis_keys_removed: int


class UnknownOperationError(LookupError):
    """No state record (or no request in it) exists for the operation.

    Attributes:
        operation_id: the id asked for.
    """

    def __init__(self, operation_id: str) -> None:
        self.operation_id = operation_id
        super().__init__(f"no operation {operation_id!r} (unknown, or expired)")


def stored_request(operation_id: str) -> ChunkRequest:
    """Return the request an operation was submitted with.

    Raises:
        UnknownOperationError: the operation is unknown or its state expired.
        recovery.errors.InvalidIdError: the id is not a safe key part.
    """
    raw = stores().states.get(operation_id).get("request")
    if not raw:
        raise UnknownOperationError(operation_id)
    return ChunkRequest.model_validate_json(raw)


def cleanup_operation(
    operation_id: str,
    strategy: CleanupStrategy | str,
    *,
    reason: str = "cleaned up",
    forget_fingerprints: bool = False,
) -> CleanupResult:
    """Apply ``strategy`` to the operation; return what was done.

    Raises:
        UnknownOperationError: the operation is unknown or its state expired.
    """
    strategy = CleanupStrategy(strategy)
    request = stored_request(operation_id)
    handles = stores()
    keys = handles.keys.operation(operation_id)
    sink = JsonlFolderSink(
        output_dir=request.output_dir or get_settings().output_dir,
        fsync=get_settings().sink_fsync,
    )
    checkpoint = handles.checkpoints.load(operation_id)
    plan = handles.checkpoints.plan(operation_id) or []

    if strategy is CleanupStrategy.SAVE_PARTIAL:
        unfinished = [doc for doc in plan if doc not in checkpoint.finished]
        if unfinished:
            handles.checkpoints.record_batch(
                operation_id,
                done={},
                failed=dict.fromkeys(unfinished, f"not processed: {reason}"),
                batch_size=checkpoint.batch_size or 1,
                attempt=checkpoint.attempt or 1,
            )
        status = Status.PARTIAL if checkpoint.done else Status.FAILED
        handles.states.update(
            operation_id, status=status.value, error=reason, cleanup=strategy.value
        )
        return CleanupResult(
            operation_id=operation_id,
            strategy=strategy,
            status=status.value,
            documents_kept=len(checkpoint.done),
            documents_marked_failed=len(unfinished),
            files_removed=0,
            redis_keys_removed=0,
        )

    removed = sum(sink.delete(request.collection_id, doc) for doc in checkpoint.done)
    trace: tuple[str, ...]
    if strategy is CleanupStrategy.ROLLBACK:
        trace = (keys.plan, keys.done, keys.failed, keys.totals, keys.checkpoint)
        handles.states.update(
            operation_id,
            status=Status.FAILED.value,
            error=reason,
            cleanup=strategy.value,
        )
    else:
        trace = keys.all()
        handles.client.zrem(handles.keys.running, operation_id)
        handles.gate.cancel(operation_id)
    keys_removed = int(handles.client.delete(*trace))
    if forget_fingerprints:
        keys_removed += _forget_fingerprints(request, sorted(checkpoint.done))
    return CleanupResult(
        operation_id=operation_id,
        strategy=strategy,
        status=Status.FAILED.value
        if strategy is CleanupStrategy.ROLLBACK
        else "discarded",
        documents_kept=0,
        documents_marked_failed=0,
        files_removed=removed,
        redis_keys_removed=keys_removed,
    )


def _forget_fingerprints(request: ChunkRequest, documents: list[str]) -> int:
    from tasks.chunking import work_fingerprint  # noqa: PLC0415 - it imports this module

    handles = stores()
    removed = 0
    if documents:
        scope = handles.keys.item_fingerprints(request.collection_id)
        removed += int(handles.client.hdel(scope, *documents) > 0)
    fingerprint = work_fingerprint(request)
    if fingerprint is not None:
        key = handles.keys.work_fingerprint(fingerprint)
        owner = handles.client.get(key)
        if isinstance(owner, bytes) and owner.decode() == request.operation_id:
            removed += int(handles.client.delete(key))
    return removed
